"""Confidence you can act on, measured on the synthetic corpus and its out-of-taxonomy styles.

Writes the demo corpus plus ``jobs.synth --extra-styles`` (drone, techno, solo percussion,
speech-like noise in ``_other/``, which extract and tune leave unlabelled) and extracts
MFCC, log-mel and both musicnn models' columns, so every champion gets the blend with the
zero-shot prior and the entropy + Mahalanobis out-of-taxonomy score (:mod:`genre.posthoc`).
Then, per model family, labels the held-out test tracks and the ``_other/`` tracks:

- ``cnn``: a small search over networks trained from spectrograms (``--cnn-models``, by
  default ``short_chunk_cnn`` on log-mel; ``cnn`` reads MFCC), its champion;
- ``cnn_plain``: the same search without the blend with the zero-shot prior: what a model
  on the extract job's default features (no musicnn) gets in its review flags (only its
  ``domain_shift`` column, which no default flag reads, would be missing too);
- ``head``: a small search over heads on ``musicnn_msd_pool`` (``--head-models``);
- ``zero_shot``: the shipped tag mapping, no training (its ``ood_score`` is the entropy);
- ``zero_shot_cal``: the same, calibrated on the validation tracks
  (:func:`genre.labeling.calibrate_zero_shot`).

The searches train on the ``_other/`` tracks of their split's train part as outlier exposure
(``--outlier-weight``, λ; 0 turns it off), so every family is scored on the same held-out
``_other/`` tracks (the validation and test part of the same seeded split, never trained on)
and the same test tracks (the searches' seeded split). Printed per
family: test accuracy, ECE before → after calibration (from the card for the searches;
recomputed from the labels for zero-shot), AUROC of ``ood_score`` (test tracks vs
``_other/``), the share of test tracks flagged for review (label's defaults: the genre set
is empty or holds more than two genres), the accuracy of the unflagged, the share of
``_other/`` flagged, and the genre sets' empirical coverage and mean size on the test
tracks. For the champions also the AUROC of each part of the combined score: the entropy of
the calibrated probabilities (from the ``p_<genre>`` columns) and the Mahalanobis distance
(from the shards' musicnn embedding); and, to choose the conformal score, both
:data:`genre.conformal.METHODS` fitted on the validation tracks' labelled (calibrated)
probabilities and measured on the test and ``_other/`` tracks.

    python tests/bench/eval_ood.py [--per-genre 10] [--per-style 10] [--seconds 30]
        [--families cnn,head,zero_shot,zero_shot_cal] [--cnn-models short_chunk_cnn]
        [--num-samples 4] [--max-epochs 12] [--outlier-weight 0.5] [--cpus 2]

The last lines are machine-readable, one per family:
``family=<name> accuracy=<f> ece=<f> ece_raw=<f> auroc=<f> flagged=<f>
unflagged_accuracy=<f> other_flagged=<f> coverage=<f> set_size=<f>``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FAMILIES = ("cnn", "cnn_plain", "head", "zero_shot", "zero_shot_cal")
#: Columns extracted: the log-mel / MFCC networks' inputs and both musicnn models (the
#: head's input, the blend's tags, the Mahalanobis embedding).
EXTRACT = ("mfcc", "mel", "musicnn_msd", "musicnn_mtt")
SPLIT_SEED = 0  # SearchSettings' default seed: the searches split the tracks with it


def _parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-genre", type=int, default=10)
    ap.add_argument("--per-style", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each track")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--cnn-models", default="short_chunk_cnn")
    ap.add_argument("--head-models", default="linear")
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--outlier-weight", type=float, default=0.5, help="λ; 0: no outlier exposure")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args(argv)
    args.families = tuple(args.families.split(","))
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        ap.error(f"--families: unknown {','.join(unknown)}; choose from {','.join(FAMILIES)}")
    return args


def make_data(work: Path, args) -> tuple[Path, object]:
    """The corpus with its ``_other/`` styles, and its segments with :data:`EXTRACT`."""
    from genre.config import FeatureConfig
    from genre.extraction import run_extract
    from genre.runtime import init_ray
    from genre.shards import read_segments
    from genre.synth import write_corpus, write_other

    corpus = work / "corpus"
    write_corpus(corpus, per_genre=args.per_genre, seconds=args.seconds, seed=0)
    write_other(corpus, per_style=args.per_style, seconds=args.seconds, seed=0)
    init_ray(num_cpus=args.cpus)
    summary = run_extract(str(corpus), str(work / "shards"), cfg=FeatureConfig(features=EXTRACT))
    print(summary.format(), flush=True)
    return corpus, read_segments(str(work / "shards"))


def split_of(segments) -> dict[str, list[str]]:
    """``split → track ids``: the seeded split :func:`genre.training.prepare` makes for the
    searches (``split="auto"`` is ``random`` on the synthetic corpus)."""
    from genre.config import OTHER_FOLDER
    from genre.corpus import is_other, split_tracks

    labelled = np.array([g is not None for g in segments.genre])
    tracks, first = np.unique(segments.track_id[labelled], return_index=True)
    genres = segments.genre[labelled][first]
    assignment = split_tracks(list(tracks), list(genres), seed=SPLIT_SEED)
    split = {
        s: sorted(t for t, v in assignment.items() if v == s) for s in ("train", "val", "test")
    }
    # The _other/ tracks as genre.training.prepare splits them: one group, the same seed.
    others = sorted({str(t) for t in segments.track_id if is_other(t)})
    assigned = split_tracks(others, [OTHER_FOLDER] * len(others), seed=SPLIT_SEED)
    split["other_train"] = sorted(t for t, v in assigned.items() if v == "train")
    split["other"] = sorted(t for t, v in assigned.items() if v != "train")  # held out
    return split


def search_family(family: str, segments, work: Path, args):
    """Search one family; its champion (a :class:`genre.card.ResolvedModel`) and outcome."""
    from genre.config import SearchSettings
    from genre.labeling import resolve_model
    from genre.tuning import run_search

    uri = f"sqlite:///{work / 'mlflow.db'}"
    cnn = family in ("cnn", "cnn_plain")
    models = args.cnn_models if cnn else args.head_models
    settings = SearchSettings(
        shards=str(work / "shards"),
        models=tuple(models.split(",")),
        features=None if cnn else ("musicnn_msd_pool",),
        blend=family != "cnn_plain",
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        tracking_uri=uri,
        storage=str(work / "ray"),
        name=f"ood-{family}",
        register_as=f"ood-{family}",
        outlier_weight=args.outlier_weight,
    )
    outcome = run_search(segments, settings, progress=False)
    return resolve_model(outcome.model_uri, tracking_uri=uri), outcome


def label(model, tracks: list[str], corpus: Path, output: Path):
    """Label ``tracks`` (ids relative to ``corpus``) with ``model``; the results with
    ``other`` (an ``_other/`` track) and ``truth`` (its genre folder)."""
    from genre.labeling import LabelSettings, run_label
    from genre.results import read_results

    listing = output.with_suffix(".txt")
    listing.write_text("".join(f"{corpus / t}\n" for t in tracks))
    run_label(str(listing), str(output), model=model, settings=LabelSettings(tags=0))
    rows = read_results(str(output))
    if rows["error"].notna().any():
        raise RuntimeError(f"{int(rows['error'].notna().sum())} tracks failed to label")
    rows["other"] = rows.path.str.contains("/_other/")
    rows["truth"] = rows.path.map(lambda p: Path(p).parent.name)
    rows["corpus_id"] = rows.path.map(lambda p: Path(p).relative_to(corpus).as_posix())
    return rows


def zero_shot_models(split: dict, corpus: Path, work: Path):
    """The zero-shot model and the same calibrated on the validation tracks (a folder of
    links ``<genre>/<file>`` to them, as ``jobs.label --calibrate-on`` takes)."""
    from genre.card import zero_shot_model
    from genre.labeling import calibrate_zero_shot
    from genre.zeroshot import load_mapping

    model = zero_shot_model(load_mapping())
    folder = work / "calibrate-on"
    for track in split["val"]:
        link = folder / track
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(corpus / track)
    return model, calibrate_zero_shot(model, str(folder))


def _probs(rows, labels) -> np.ndarray:
    p = rows[[f"p_{g}" for g in labels]].to_numpy(np.float64)
    return p / p.sum(axis=1, keepdims=True)


def figures(rows, labels: tuple[str, ...]) -> dict:
    """What every family is scored by, from its label rows."""
    from genre.calibration import auroc, output_ood_score

    inside, outside = rows[~rows.other], rows[rows.other]
    unflagged = inside[~inside.needs_review]
    has_sets = inside.genres.map(lambda g: g is not None).all()
    entropy = output_ood_score(_probs(rows, labels), method="entropy")
    other = rows.other.to_numpy()
    return {
        "n_test": len(inside),
        "n_other": len(outside),
        "accuracy": float((inside.genre == inside.truth).mean()),
        "auroc": auroc(inside.ood_score.to_numpy(), outside.ood_score.to_numpy()),
        "auroc_entropy": auroc(entropy[~other], entropy[other]),
        "flagged": float(inside.needs_review.mean()),
        "n_unflagged": len(unflagged),
        "unflagged_accuracy": (
            float((unflagged.genre == unflagged.truth).mean()) if len(unflagged) else float("nan")
        ),
        "other_flagged": float(outside.needs_review.mean()),
        "other_out_of_taxonomy": float((outside.review_reason == "out-of-taxonomy").mean()),
        "other_reasons": {k: int(v) for k, v in outside.review_reason.value_counts().items()},
        "test_reasons": {k: int(v) for k, v in inside.review_reason.value_counts().items()},
        "coverage": (
            float(np.mean([t in g for t, g in zip(inside.truth, inside.genres, strict=True)]))
            if has_sets
            else float("nan")
        ),
        "set_size": float(inside.genres.map(len).mean()) if has_sets else float("nan"),
        # What --review-domain-shift would add: domain_shift above 1 (NaN: no embedding).
        "test_shifted": float((inside.domain_shift > 1).mean()),
        "other_shifted": float((outside.domain_shift > 1).mean()),
    }


def _test_ece(rows, labels, temperature: float | None) -> tuple[float, float]:
    """ECE of the test rows' probabilities as labelled, and without the temperature."""
    from genre.calibration import expected_calibration_error, temperature_scale

    inside = rows[~rows.other]
    probs = _probs(inside, labels)
    y = np.array([labels.index(t) for t in inside.truth], dtype=np.int64)
    raw = probs if temperature is None else temperature_scale(probs, temperature=1 / temperature)
    return expected_calibration_error(raw, y), expected_calibration_error(probs, y)


def mahalanobis_parts(rows, labels: tuple[str, ...], calibration, segments) -> dict:
    """AUROC of the Mahalanobis distance alone (from the shards' embedding of the labelled
    tracks), and how far the combined score recomputed from its parts is from ``ood_score``."""
    from genre.calibration import auroc, output_ood_score
    from genre.posthoc import embedding, track_distances

    ids = rows.corpus_id.to_numpy().astype(str)
    keep = np.isin(segments.track_id.astype(str), ids)
    owner = segments.track_id[keep].astype(str)
    emb = embedding(segments.features, calibration.ood_column)[keep]
    distances = track_distances(calibration.mahalanobis, owner, emb)
    distances = dict(zip(np.unique(owner), distances, strict=True))
    d = np.array([distances[t] for t in ids])
    other = rows.other.to_numpy()
    scale = calibration.ood["scale"]
    entropy = output_ood_score(_probs(rows, labels), method="entropy")
    combined = np.maximum(entropy / scale["entropy"], d / scale["mahalanobis"])
    return {
        "auroc_mahalanobis": auroc(d[~other], d[other]),
        "combined_gap": float(np.max(np.abs(combined - rows.ood_score.to_numpy()))),
    }


def compare_methods(val, rows, labels: tuple[str, ...], coverage: float) -> dict:
    """Each conformal score fitted on the validation rows' calibrated probabilities, measured
    on the test rows (coverage, mean size, empty) and the ``_other/`` rows (flagged by label's
    default rule: empty or more than two genres)."""
    from genre.conformal import METHODS, fit_conformal, set_metrics

    y = np.array([labels.index(t) for t in val.truth], dtype=np.int64)
    inside, outside = rows[~rows.other], rows[rows.other]
    ty = np.array([labels.index(t) for t in inside.truth], dtype=np.int64)
    out = {}
    for method in METHODS:
        fitted = fit_conformal(_probs(val, labels), y, coverage=coverage, method=method)
        test = set_metrics(fitted.sets(_probs(inside, labels)), ty)
        size = fitted.sets(_probs(outside, labels)).sum(axis=1)
        in_size = fitted.sets(_probs(inside, labels)).sum(axis=1)
        out[method] = {
            **test,
            "flagged": float(np.mean((in_size == 0) | (in_size > 2))),
            "other_flagged": float(np.mean((size == 0) | (size > 2))),
            "other_empty": float(np.mean(size == 0)),
        }
    return out


def evaluate_champion(family: str, segments, split: dict, corpus: Path, work: Path, args) -> dict:
    """Search a family, label the test and ``_other/`` tracks with its champion, score it."""
    model, outcome = search_family(family, segments, work, args)
    card = model.card
    if sorted(card.splits["test"]) != split["test"]:
        raise RuntimeError(f"{family}: the search's test split is not the expected one")
    if list(card.splits.get("other_train", ())) != split["other_train"]:
        raise RuntimeError(f"{family}: the search's _other/ split is not the expected one")
    rows = label(model, split["test"] + split["other"], corpus, work / f"labels-{family}")
    val = label(model, split["val"], corpus, work / f"labels-{family}-val")
    calibration = card.calibration
    result = {"family": family, **figures(rows, card.labels)}
    result["methods"] = compare_methods(val, rows, card.labels, calibration.conformal.coverage)
    result["card_sets"] = (
        f"card: {calibration.conformal.method}, test coverage "
        f"{calibration.conformal.test_coverage:.3f}, mean size "
        f"{calibration.conformal.test_mean_size:.2f}"
    )
    result.update(ece_raw=calibration.ece_before, ece_cal=calibration.ece_after)
    result["ece_rows"] = _test_ece(rows, card.labels, None)[1]
    if calibration.mahalanobis is not None:
        result.update(mahalanobis_parts(rows, card.labels, calibration, segments))
    blend = card.blend
    report = blend.report if blend is not None else {}
    result["model"] = f"{outcome.best['kind']} ({outcome.best['features']})"
    result["details"] = (
        f"head's test accuracy {outcome.test['track_accuracy']:.3f}; blend weight "
        f"{blend.weight if blend is not None else '—'} "
        f"(test accuracy head {report.get('test_accuracy_head', '—')}"
        f", blend {report.get('test_accuracy_blend', '—')}, prior "
        f"{report.get('test_accuracy_prior', '—')}); T = {calibration.temperature:.2f}; "
        f"review threshold {calibration.min_confidence:.2f}; ood {calibration.ood['method']}, "
        f"threshold {calibration.ood['threshold']:.3f}; {len(outcome.trials)} trials"
    )
    return result


def evaluate_zero_shot(families, segments, split: dict, corpus: Path, work: Path) -> list[dict]:
    """The zero-shot model, and the same calibrated on the validation tracks."""
    other = split["other"]  # the champions' held-out _other/ tracks, for the same figures
    plain, calibrated = zero_shot_models(split, corpus, work)
    out = []
    for family, model in (("zero_shot", plain), ("zero_shot_cal", calibrated)):
        if family not in families:
            continue
        rows = label(model, split["test"] + other, corpus, work / f"labels-{family}")
        labels = model.card.labels
        result = {"family": family, "model": model.name, **figures(rows, labels)}
        if model.card.calibration is None:
            result["ece_raw"], result["ece_cal"] = _test_ece(rows, labels, None)[1], float("nan")
            result["details"] = "no calibration: ood_score is the entropy, nothing is flagged"
        else:
            c = model.card.calibration
            result["ece_raw"], result["ece_cal"] = _test_ece(rows, labels, c.temperature)
            result["details"] = (
                f"calibrated on {c.n_val_tracks} validation tracks: T = {c.temperature:.2f}, "
                f"review threshold {c.min_confidence:.2f}, ood {c.ood['method']} threshold "
                f"{c.ood['threshold']:.3f}"
            )
        out.append(result)
    return out


def _fmt(value: float, spec: str = ".3f") -> str:
    return "—" if value is None or value != value else format(value, spec)


def print_report(results: list[dict], split: dict) -> None:
    """The table, one family per row; its details; the machine-readable lines."""
    n = results[0]
    print(
        f"\n{n['n_test']} in-taxonomy test tracks vs {n['n_other']} held-out _other/ tracks "
        f"({len(split['train'])} train, {len(split['val'])} validation tracks; "
        f"{len(split['other_train'])} _other/ tracks trained on as outlier exposure):"
    )
    print(
        f"  {'family':<14} {'accuracy':>8}  {'ECE raw → cal':<15} {'AUROC':>6} "
        f"{'entropy':>7} {'mahal.':>6}  {'test flagged':<13} {'unflagged acc':<15} "
        f"{'_other flagged (ood)':<20}"
    )
    for r in results:
        ece = f"{_fmt(r['ece_raw'])} → {_fmt(r['ece_cal'])}"
        flagged = f"{r['flagged']:.0%} ({round(r['flagged'] * r['n_test'])})"
        unflagged = f"{_fmt(r['unflagged_accuracy'])} ({r['n_unflagged']})"
        other = f"{r['other_flagged']:.0%} ({r['other_out_of_taxonomy']:.0%})"
        print(
            f"  {r['family']:<14} {r['accuracy']:>8.3f}  {ece:<15} {r['auroc']:>6.3f} "
            f"{r['auroc_entropy']:>7.3f} {_fmt(r.get('auroc_mahalanobis')):>6}  {flagged:<13} "
            f"{unflagged:<15} {other:<20}"
        )
    print(
        "  (AUROC: of ood_score; entropy: of the labelled probabilities' entropy alone; mahal.: "
        "of the Mahalanobis distance alone)"
    )
    print("\ngenre sets (label's defaults: coverage from the card, review when empty or > 2):")
    for r in results:
        print(
            f"  {r['family']:<14} test coverage {_fmt(r['coverage'])}, mean set size "
            f"{_fmt(r['set_size'], '.2f')}; test flagged by reason {r['test_reasons']}; "
            f"_other/ by reason {r['other_reasons']}; domain_shift > 1: test "
            f"{r['test_shifted']:.0%}, _other/ {r['other_shifted']:.0%}"
        )
        for method, m in r.get("methods", {}).items():
            print(
                f"    {method}: test coverage {m['coverage']:.3f}, mean size "
                f"{m['mean_size']:.2f}, empty {m['empty']:.0%}, flagged {m['flagged']:.0%}; "
                f"_other/ flagged {m['other_flagged']:.0%} (empty {m['other_empty']:.0%})"
            )
        if "card_sets" in r:
            print(f"    {r['card_sets']}")
    for r in results:
        print(f"  {r['family']}: {r['model']}; {r['details']}")
        if "combined_gap" in r:
            print(
                f"    checks: ECE of the labelled test rows {r['ece_rows']:.4f} (card "
                f"{r['ece_cal']:.4f}); max |max(entropy/s, distance/s) − ood_score| "
                f"{r['combined_gap']:.2e}"
            )
    for r in results:
        print(
            f"family={r['family']} accuracy={r['accuracy']:.4f} ece={r['ece_cal']:.4f} "
            f"ece_raw={r['ece_raw']:.4f} auroc={r['auroc']:.4f} flagged={r['flagged']:.4f} "
            f"unflagged_accuracy={r['unflagged_accuracy']:.4f} "
            f"other_flagged={r['other_flagged']:.4f} coverage={r['coverage']:.4f} "
            f"set_size={r['set_size']:.4f}"
        )


def main(argv=None) -> None:
    args = _parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="eval-ood-"))
    try:
        corpus, segments = make_data(work, args)
        split = split_of(segments)
        results = [
            evaluate_champion(family, segments, split, corpus, work, args)
            for family in ("cnn", "cnn_plain", "head")
            if family in args.families
        ]
        if {"zero_shot", "zero_shot_cal"} & set(args.families):
            results += evaluate_zero_shot(args.families, segments, split, corpus, work)
        print_report(results, split)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
