"""The whole pipeline on the built-in synthetic corpus, in one process: what ``make demo`` runs.

    synth ─▶ extract ─▶ tune (ASHA, MLflow, registered champion) ─▶ label (+ broken files)
          ─▶ zero-shot label (musicnn tags → genres)
          ─▶ results head, accuracy against the known genres, pictures
          ─▶ corrections: two tracks a reviewer looks at first corrected, one trial tuned
             again on them

Every step is the library call its job makes, so the demo shows exactly what the
jobs do; each step resumes, so re-running the demo after an interruption finishes
the work instead of starting over. Outputs, under one folder::

    corpus/          synthetic audio, <genre>/<genre>.NNNNN.<wav|flac|ogg>
    broken/          deliberately bad files for the label step
    shards/          extract output (Parquet segment shards)
    mlflow.db        MLflow runs and the model registry (``mlflow ui --backend-store-uri sqlite:///…``)
    mlartifacts/     MLflow artifacts (models, curves, confusion matrices)
    ray_results/     Ray Tune trial state
    labels/          label output (one row per file) and its review page, _report.html
    labels-zero-shot/  the same corpus labelled zero-shot (musicnn tags → genres, no training)
    figures/         confusion matrix, learning curves, per-genre waveform/log-mel/MFCC
    corrections.csv  two reviewed tracks' genres, as the review page downloads them; the
                     search tuned again with ``--labels`` on it registers ``genre-corrected``
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre import backend
from genre.audio import load
from genre.card import zero_shot_model
from genre.config import FEATURES, GENRES, FeatureConfig, SearchSettings
from genre.corrections import LabelCorrections
from genre.extraction import run_extract
from genre.labeling import LabelSettings, model_from_network, read_results, resolve_model, run_label
from genre.models import HEAD_KINDS, ModelConfig
from genre.report import plot_genre_panels
from genre.runtime import init_ray
from genre.shards import read_segments
from genre.synth import OTHER_STYLES, write_corpus, write_other
from genre.training import fit, prepare
from genre.tuning import run_search
from genre.zeroshot import load_mapping

__all__ = ["DemoSettings", "run_demo", "write_broken_files", "smoke_label"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults run in a few minutes on two cores.

    The shards hold the hand-crafted features and both musicnn models' columns, and the
    search tries the log-mel CNNs and the seed CNN beside heads (``mlp_head``, ``linear``)
    on the pooled musicnn features; the champion is blended with the zero-shot prior and
    its out-of-taxonomy score reads the musicnn embedding. ``corpus/_other/`` holds a few
    tracks of styles that are none of the ten: the search trains on some of them (outlier
    exposure), and label should flag the others for review.
    """

    output: str = "demo-out"
    per_genre: int = 10
    seconds: float = 30.0
    seed: int = 0
    features: tuple[str, ...] = FEATURES + ("musicnn_msd", "musicnn_mtt")
    per_style: int = 2  # tracks of each out-of-taxonomy style in corpus/_other/
    models: tuple[str, ...] = SearchSettings.models + HEAD_KINDS
    num_samples: int = SearchSettings.num_samples
    max_epochs: int = SearchSettings.max_epochs
    grace_epochs: int = SearchSettings.grace_epochs
    num_cpus: int | None = None
    docs: str | None = None  # also copy the figures here (the README's pictures)


def write_broken_files(folder: Path) -> list[Path]:
    """A few files of the kinds real collections hold: empty, not audio, truncated, too short."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(22050 * 6) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.mp3").write_text("not audio, only a name that says so\n" * 20)
    sf.write(folder / "cut.wav", tone, 22050)
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 3])
    sf.write(folder / "jingle.flac", tone[: 22050 // 2], 22050)
    return sorted(folder.iterdir())


def _step(name: str) -> float:
    print(f"\n=== {name} " + "=" * max(0, 66 - len(name)), flush=True)
    return time.perf_counter()


def run_demo(settings: DemoSettings) -> dict:
    """Run every step; return the headline figures (also printed)."""
    out = Path(settings.output).resolve()
    started = time.perf_counter()
    corpus = _synth_step(out / "corpus", settings)
    _extract_step(corpus, out / "shards", settings)
    outcome, tracking_uri = _tune_step(out, settings)
    model, broken, summary = _label_step(out, corpus, outcome, tracking_uri)
    zero_shot = _zero_shot_step(out, corpus)
    frame = _results_step(out / "labels", zero_shot)
    figures_ = _figures(outcome, tracking_uri, corpus, out / "figures", settings)
    scores = _accuracy(frame, model.card)
    corrected = _corrections_step(out, frame, settings, tracking_uri)
    print(
        f"\ntrack-level accuracy against the known genres (mean of segment probabilities):\n"
        f"  held-out test tracks, never seen in training: {scores['test']:.3f} "
        f"({scores['n_test']} tracks)\n"
        f"  every track of the corpus (training tracks included, so optimistic): "
        f"{scores['all']:.3f} ({scores['n_all']} tracks)\n"
        f"  zero-shot (no training; reggae is in no tag vocabulary): "
        f"{zero_shot['accuracy']:.3f} ({zero_shot['n']} tracks)\n"
        f"  genre sets on the held-out test tracks: {scores['sets']}\n"
        f"  needs review: {scores['test_flagged']} of {scores['n_test']} test tracks"
        f"{_reasons(scores['test_reasons'])}; {scores['other_flagged']} of {scores['n_other']} "
        f"held-out tracks of styles none of the ten (_other/, not trained on)"
        f"{_reasons(scores['other_reasons'])}\n"
        f"  broken files reported with an error: {scores['errors']} of {len(broken)}\n"
        f"\n{corrected}\n"
        f"\npictures: {', '.join(str(p) for p in figures_)}\n"
        f"results: {out / 'labels'} (pandas.read_parquet works on the folder; CSV at "
        f"{summary.csv}); zero-shot: {out / 'labels-zero-shot'}\n"
        f"MLflow: mlflow ui --backend-store-uri {tracking_uri}\n"
        f"demo finished in {time.perf_counter() - started:.0f} s"
    )
    return {
        "test_track_accuracy": outcome.test["track_accuracy"],
        "zero_shot_accuracy": zero_shot["accuracy"],
        **scores,
    }


def _synth_step(corpus: Path, settings: DemoSettings) -> Path:
    t0 = _step("1/7 synth: the built-in demo corpus")
    expected = len(GENRES) * settings.per_genre + len(OTHER_STYLES) * settings.per_style
    if corpus.is_dir() and sum(1 for p in corpus.rglob("*") if p.is_file()) == expected:
        print(f"corpus already written: {corpus} ({expected} tracks)")
        return corpus
    paths = write_corpus(
        corpus, per_genre=settings.per_genre, seconds=settings.seconds, seed=settings.seed
    )
    other = (
        write_other(
            corpus, per_style=settings.per_style, seconds=settings.seconds, seed=settings.seed
        )
        if settings.per_style
        else []
    )
    print(
        f"wrote {len(paths)} tracks of {settings.seconds:g} s to {corpus}, and {len(other)} "
        f"of styles none of the ten to {corpus / '_other'}, in {time.perf_counter() - t0:.1f} s"
    )
    return corpus


def _extract_step(corpus: Path, shards: Path, settings: DemoSettings) -> None:
    _step("2/7 extract: audio → Parquet segment shards (Ray Data)")
    init_ray(num_cpus=settings.num_cpus)
    cfg = FeatureConfig(features=settings.features)
    print(run_extract(str(corpus), str(shards), cfg=cfg).format())


def _tune_step(out: Path, settings: DemoSettings):
    _step("3/7 tune: Ray Tune + ASHA, logged to MLflow, best model registered")
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    search = SearchSettings(
        shards=str(out / "shards"),
        models=settings.models,
        num_samples=settings.num_samples,
        max_epochs=settings.max_epochs,
        grace_epochs=settings.grace_epochs,
        tracking_uri=tracking_uri,
        storage=str(out / "ray_results"),
        name="demo",
    )
    outcome = run_search(read_segments(str(out / "shards")), search, progress=False)
    print(outcome.format())
    return outcome, tracking_uri


def _label_step(out: Path, corpus: Path, outcome, tracking_uri: str):
    _step("4/7 label: the corpus plus a few broken files → results table")
    broken = write_broken_files(out / "broken")
    listing = out / "to_label.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(corpus.rglob("*.*")) + broken))
    model = resolve_model(outcome.model_uri, tracking_uri=tracking_uri)
    summary = run_label(
        str(listing), str(out / "labels"), model=model, settings=LabelSettings(csv=True)
    )
    print(summary.format())
    return model, broken, summary


def _zero_shot_step(out: Path, corpus: Path) -> dict:
    """The corpus labelled with musicnn's tags mapped to genres: no training at all."""

    _step("5/7 zero-shot: musicnn's tags mapped to genres, no training")
    model = zero_shot_model(load_mapping())
    print(run_label(str(corpus), str(out / "labels-zero-shot"), model=model).format())
    frame = read_results(str(out / "labels-zero-shot"))
    truth = frame.track_id.map(lambda t: Path(t).parent.name)
    ok = frame[frame.error.isna() & (truth != "_other")]
    right = ok.genre == truth[ok.index]
    return {"frame": frame, "accuracy": float(right.mean()), "n": len(ok)}


def _sample(frame):
    """A few rows to show: one per genre folder, two of ``_other/`` (the styles none of the
    ten), then every error row."""
    folder = frame.path.map(lambda p: Path(p).parent.name)
    ok = frame.error.isna()
    inside = frame[ok & (folder != "_other")].groupby(folder[ok], sort=False).head(1)
    other = frame[ok & (folder == "_other")].head(2)
    return frame.loc[[*inside.index[:6], *other.index, *frame.index[~ok]]]


def _results_step(labels: Path, zero_shot: dict):
    import pandas as pd

    _step("6/7 results")
    columns = [
        "file",
        "genre",
        "confidence",
        "genres",
        "review_reason",
        "n_segments",
        "model",
        "error_reason",
    ]
    with pd.option_context(
        "display.width", 160, "display.max_columns", 10, "display.max_colwidth", 60
    ):
        frame = read_results(str(labels))
        frame["file"] = frame.path.map(lambda p: "/".join(Path(p).parts[-2:]))
        shown = frame[columns].fillna("")
        shown["genres"] = frame.genres.map(lambda g: "" if g is None else ",".join(g) or "∅")
        print(shown.loc[_sample(frame).index].to_string(index=False))
        zs = zero_shot["frame"].copy()
        zs["file"] = zs.path.map(lambda p: "/".join(Path(p).parts[-2:]))
        zs["top tags"] = zs.tags.map(
            lambda t: (
                ", ".join(f"{d['tag']} {d['probability']:.2f}" for d in t[:3])
                if t is not None
                else ""
            )
        )
        print("\nzero-shot, with musicnn's top tags per track:")
        zs = _sample(zs)
        print(zs[["file", "genre", "confidence", "top tags"]].to_string(index=False))
    return frame


def _corrections_step(out: Path, frame, settings: DemoSettings, tracking_uri: str) -> str:
    """The review loop closed: the two tracks of the genre folders a reviewer looks at
    first (flagged, else the least confident: the demo's champion often flags none of
    them) corrected as a person would on the review page, to the genre the demo knows
    they are, and one trial
    tuned again with those corrections (``jobs.tune --labels``), registered apart as
    ``genre-corrected`` so the champion the demo labelled with stays the champion.

    Returns the line that says so."""
    import csv

    _step("7/7 corrections: two tracks corrected as on the review page, one trial tuned again")
    picks = _to_correct(frame)
    for pick in picks.itertuples():
        why = f"flagged {pick.review_reason}" if pick.needs_review else "not flagged"
        print(
            f"corrected {'/'.join(Path(pick.path).parts[-2:])}: labelled {pick.genre} at "
            f"confidence {pick.confidence:.2f} ({why}) → {pick.truth}"
        )
    path = out / "corrections.csv"
    with open(path, "w", newline="") as f:  # as the review page writes it
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows([("path", "genre"), *zip(picks.path, picks.truth, strict=True)])
    heads = [m for m in ("linear", "mlp_head") if m in settings.models]  # the quickest kind
    search = SearchSettings(
        shards=str(out / "shards"),
        models=(heads or list(settings.models))[:1],
        num_samples=1,
        max_epochs=min(settings.max_epochs, 10),
        grace_epochs=settings.grace_epochs,
        refit_folds=0,
        tracking_uri=tracking_uri,
        storage=str(out / "ray_results"),
        register_as="genre-corrected",
        labels=(str(path),),
    )
    outcome = run_search(read_segments(str(out / "shards")), search, progress=False)
    print(outcome.format())
    done = LabelCorrections.from_dict(outcome.corrections)
    return (
        f"corrections: {done.labels} labels from {path.name} ({done.relabelled} relabelled, "
        f"{done.confirmed} as the folder said) → {outcome.registered} version {outcome.version}"
    )


def _to_correct(frame, n: int = 2):
    """The ``n`` tracks of the genre folders a reviewer would correct first: flagged and
    wrong, then flagged, then the least confident; with their folder genre (``truth``)."""
    tracks = frame[frame.error.isna()].copy()
    tracks["truth"] = tracks.path.map(lambda p: Path(p).parent.name)
    tracks = tracks[tracks.truth != "_other"]
    flagged, right = tracks.needs_review.astype(bool), tracks.genre == tracks.truth
    tracks["order"] = (~flagged).astype(int) * 2 + right.astype(int)
    return tracks.sort_values(["order", "confidence", "path"]).head(n)


def _accuracy(frame, card) -> dict:
    """Track accuracy of the labels against the folder genres: on the card's test tracks,
    and on all."""
    splits = card.split_of()
    ok = frame[frame.error.isna()].copy()
    ok["truth"] = ok.track_id.map(lambda p: Path(p).parent.name)
    ok["split"] = ok.path.map(lambda p: splits.get("/".join(Path(p).parts[-2:]), ""))
    # The _other/ tracks the champion trained on (outlier exposure) would flatter it.
    other = ok[(ok.truth == "_other") & (ok.split != "other_train")]
    ok = ok[ok.truth != "_other"]
    test = ok[ok.split == "test"]
    return {
        "other_flagged": int(other.needs_review.sum()),
        "other_reasons": other.review_reason.value_counts().to_dict(),
        "n_other": len(other),
        "test_flagged": int(test.needs_review.sum()),
        "test_reasons": test.review_reason.value_counts().to_dict(),
        "sets": _set_figures(test),
        "test": float((test.genre == test.truth).mean()) if len(test) else float("nan"),
        "n_test": len(test),
        "all": float((ok.genre == ok.truth).mean()),
        "n_all": len(ok),
        "errors": int(frame.error.notna().sum()),
    }


def _reasons(counts: dict) -> str:
    """`` (none-fits 2, ambiguous 1)``; ``""`` when nothing was flagged."""
    return f" ({', '.join(f'{r} {n}' for r, n in counts.items())})" if counts else ""


def _set_figures(test) -> str:
    """Empirical coverage and mean size of the test tracks' genre sets, in words."""
    if not len(test) or test.genres.isna().any():
        return "none (the model has no genre sets)"
    held = sum(t in g for t, g in zip(test.truth, test.genres, strict=True))
    return (
        f"{held} of {len(test)} hold the true genre (coverage {held / len(test):.2f}), "
        f"mean size {test.genres.map(len).mean():.2f}"
    )


def _figures(
    outcome, tracking_uri: str, corpus: Path, figures: Path, settings: DemoSettings
) -> list[Path]:
    import mlflow

    figures.mkdir(parents=True, exist_ok=True)
    made = []
    for name in ("confusion_test.png", "curves_by_model.png"):
        path = mlflow.artifacts.download_artifacts(
            run_id=outcome.parent_run_id, artifact_path=name, tracking_uri=tracking_uri
        )
        made.append(Path(shutil.copy(path, figures / name)))
    examples = {}
    for genre in GENRES:
        first = sorted((corpus / genre).iterdir())[0]
        y, _ = load(str(first))
        middle = len(y) // 2 - 33075  # a 3 s excerpt from the middle of the track
        examples[genre] = y[max(0, middle) :]
    plot_genre_panels(examples, path=figures / "genre_panels.png")
    made.append(figures / "genre_panels.png")
    if settings.docs:
        os.makedirs(settings.docs, exist_ok=True)
        for path in made:
            shutil.copy(path, Path(settings.docs) / path.name)
    return made


def smoke_label(output: str | None = None, *, settings=None):
    """A tiny corpus, a one-epoch model trained here (no registry), labelled end to end.

    What ``jobs.label --smoke-test`` runs: it checks the wiring (decode tasks, predictor
    actors, results store) in well under a minute. Returns the label summary. Its corpus,
    shards and (without ``output``) labels live in a scratch folder removed at the end.
    """
    import tempfile

    settings = settings or LabelSettings()
    with tempfile.TemporaryDirectory(prefix="genre-label-smoke-") as work:
        write_corpus(f"{work}/corpus", per_genre=3, seconds=4.0)
        run_extract(
            f"{work}/corpus",
            f"{work}/shards",
            cfg=FeatureConfig(features=("mfcc",)),
            address=settings.address,
            num_cpus=settings.num_cpus,
        )
        backend.configure()
        data = prepare(read_segments(f"{work}/shards"), features=("mfcc",))
        network = fit(data, ModelConfig(kind="mlp", width=8), max_epochs=1).network
        model = model_from_network(network, data, name="smoke/1")
        return run_label(
            f"{work}/corpus", output or f"{work}/labels", model=model, settings=settings
        )
