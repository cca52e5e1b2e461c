"""Five-fold evaluation on real music: the 50 GTZAN clips in ../shared/data/gtzan-mini.

Leave one clip per genre out: fold k tests on the k-th clip of every genre (10 clips),
validates early stopping on the next clip of every genre, and trains on the other
three. Every clip is tested exactly once; the confusion matrix sums the five folds.
Track-level accuracy is the mean of segment probabilities per clip.

Besides the trained configurations (:data:`CONFIGS`), three that train nothing of their own
(:data:`DERIVED`):

- ``zero_shot``: the shipped tag mapping over musicnn's tags of both vocabularies
  (:func:`genre.zeroshot.genre_scores`), per segment, averaged over a clip's segments; all
  50 clips are test clips, scored per fold on the same folds as the others.
- ``musicnn_linear_blend``, ``musicnn_mlp_head_blend``: the head's clip probabilities mixed
  with the zero-shot prior, ``(1 − w)·head + w·prior``, ``w`` chosen per fold on that fold's
  validation clips (:func:`genre.posthoc.fit_blend_weight`), as the search's champion is.

Every configuration is also scored for calibration: ECE (15 bins) of the five folds' test
clips pooled, before and after a temperature fitted per fold on that fold's validation
clips. The zero-shot model has no validation clips of its own: its temperature for fold k is
fitted on the clips of the other four folds (cross-fitted: no clip calibrates itself), of
the genres its mapping covers (as ``jobs.label --calibrate-on`` fits it). With
``--refit`` the blend weight and the temperature are fitted on the validation predictions of
the early-stopped network, then applied to the refitted network's test predictions.

The clips are read where they lie; nothing is copied into the repository.

    python tests/bench/eval_gtzan_mini.py [--data ../shared/data/gtzan-mini]
        [--configs seed_cnn,short_chunk_cnn,crnn,musicnn_linear,zero_shot,musicnn_linear_blend]

Configurations on pretrained features extract the extractors they read (the derived ones
musicnn_msd and musicnn_mtt, for the prior); the pretrained weights must be installed
(``make install``). The ``vgg_*`` and ``musicnn_vgg_*`` configurations compare heads on
the wheel's VGG tagger (MSD) with the same heads on musicnn (MSD), and on both side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

#: name → (model settings, features, batch size). seed_cnn is the seed projects' MFCC CNN.
CONFIGS = {
    "seed_cnn": (
        {"kind": "cnn", "width": 64, "dropout": 0.3, "learning_rate": 1e-3},
        ("mfcc",),
        32,
    ),
    "short_chunk_cnn": (
        {"kind": "short_chunk_cnn", "width": 32, "dropout": 0.3, "learning_rate": 1e-3},
        ("mel",),
        32,
    ),
    "crnn": ({"kind": "crnn", "width": 32, "dropout": 0.3, "learning_rate": 1e-3}, ("mel",), 32),
    "cnn_mfcc_chroma": (
        {"kind": "cnn", "width": 64, "dropout": 0.3, "learning_rate": 1e-3},
        ("mfcc", "chroma"),
        32,
    ),
    "mlp": ({"kind": "mlp", "width": 64, "dropout": 0.5, "learning_rate": 1e-3}, ("mfcc",), 32),
    # Heads on the pooled features of the pretrained musicnn (MSD) model, frozen.
    "musicnn_linear": ({"kind": "linear", "learning_rate": 1e-3}, ("musicnn_msd_pool",), 32),
    "musicnn_mlp_head": (
        {"kind": "mlp_head", "width": 32, "depth": 1, "dropout": 0.3, "learning_rate": 1e-3},
        ("musicnn_msd_pool",),
        32,
    ),
    # The same heads on the wheel's VGG tagger (MSD): its five pools, or its last pool
    # (the embedding), and on musicnn's and the VGG's pools side by side.
    "vgg_linear": ({"kind": "linear", "learning_rate": 1e-3}, ("vgg_msd_pool",), 32),
    "vgg_mlp_head": (
        {"kind": "mlp_head", "width": 32, "depth": 1, "dropout": 0.3, "learning_rate": 1e-3},
        ("vgg_msd_pool",),
        32,
    ),
    "vgg_embedding_linear": ({"kind": "linear", "learning_rate": 1e-3}, ("vgg_msd",), 32),
    "musicnn_vgg_linear": (
        {"kind": "linear", "learning_rate": 1e-3},
        ("musicnn_msd_pool", "vgg_msd_pool"),
        32,
    ),
    "musicnn_vgg_mlp_head": (
        {"kind": "mlp_head", "width": 32, "depth": 1, "dropout": 0.3, "learning_rate": 1e-3},
        ("musicnn_msd_pool", "vgg_msd_pool"),
        32,
    ),
}

#: Configurations with no training of their own: name → the trained configuration whose
#: clip probabilities they blend with the zero-shot prior (``None``: the prior alone).
DERIVED = {
    "zero_shot": None,
    "musicnn_linear_blend": "musicnn_linear",
    "musicnn_mlp_head_blend": "musicnn_mlp_head",
}

#: Bins of the expected calibration error.
ECE_BINS = 15


def folds(track_ids: list[str], k: int = 5) -> list[dict[str, str]]:
    """Leave-one-clip-per-genre-out assignments (test clip k, validation clip k+1)."""
    by_genre: dict[str, list[str]] = {}
    for t in sorted(track_ids):
        by_genre.setdefault(t.split("/")[0], []).append(t)
    out = []
    for fold in range(k):
        assignment = {}
        for clips in by_genre.values():
            for i, t in enumerate(clips):
                assignment[t] = (
                    "test" if i % k == fold else "val" if i % k == (fold + 1) % k else "train"
                )
        out.append(assignment)
    return out


def _clip_truth(clips: np.ndarray, labels: list[str]) -> np.ndarray:
    """Class index of each clip (its genre is the folder: ``<genre>/<file>``)."""
    return np.array([labels.index(str(c).split("/")[0]) for c in clips], dtype=np.int64)


def _clip_probs(track_ids: np.ndarray, seg_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted clip ids and the mean of their segments' probabilities, rows summing to one."""
    from genre.report import segment_to_track

    clips, probs = segment_to_track(track_ids, seg_probs, aggregate="mean")
    probs = probs.astype(np.float64)
    return clips, probs / probs.sum(axis=1, keepdims=True)


def _predict(network, data, split: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Clip ids, clip probabilities and segment accuracy of ``network`` on one split."""
    seg_probs = network.predict(data.x[split], batch_size=256, verbose=0)
    segment_accuracy = float(np.mean(np.argmax(seg_probs, axis=1) == data.y[split]))
    return (*_clip_probs(data.track[split], seg_probs), segment_accuracy)


def train_folds(segments, name: str, *, max_epochs: int, patience: int, refit: bool) -> dict:
    """Train configuration ``name`` on each fold; its validation and test clip probabilities.

    Returns
    -------
    dict
        ``labels``; ``folds``: per fold ``{"val": (clips, probs), "test": (clips, probs)}``;
        ``segment``: segment accuracy per fold; ``seconds``.
    """
    from genre.models import ModelConfig
    from genre.training import fit, pooled, prepare

    settings, features, batch = CONFIGS[name]
    out: dict = {"folds": [], "segment": [], "labels": None}
    t0 = time.perf_counter()
    for fold, assignment in enumerate(folds(sorted(set(segments.track_id)))):
        data = prepare(segments, features=features, assignment=assignment)
        kwargs = {"batch_size": batch, "seed": fold}
        result = fit(
            data, ModelConfig(**settings), max_epochs=max_epochs, patience=patience, **kwargs
        )
        best_epoch = result.best_epoch + 1
        # Blend weight and temperature are chosen on the early-stopped network's validation
        # clips, which a refit would then have trained on.
        val = _predict(result.network, data, "val")
        if refit:
            # The usual last step: train again on training + validation clips for the number
            # of epochs validation chose (the test clips stay unseen; nothing is chosen on them).
            data = pooled(data)  # normalisation refitted, as the search's refit does
            result = fit(
                data,
                ModelConfig(**settings),
                max_epochs=best_epoch,
                patience=max_epochs,
                restore_best=False,
                **kwargs,
            )
        test = _predict(result.network, data, "test")
        out["labels"] = list(data.labels)
        out["folds"].append({"val": val[:2], "test": test[:2]})
        out["segment"].append(test[2])
        accuracy = np.mean(test[1].argmax(axis=1) == _clip_truth(test[0], data.labels))
        print(
            f"  {name} fold {fold + 1}: track {accuracy:.2f}, segment {test[2]:.2f}, "
            f"best epoch {best_epoch}",
            flush=True,
        )
    out["seconds"] = time.perf_counter() - t0
    return out


def zero_shot_prior(segments, labels: list[str]) -> dict:
    """The shipped tag mapping's probabilities of every clip, and its segment accuracy.

    Returns
    -------
    dict
        ``probs``: clip id → (classes,) probabilities; ``segment``: segment accuracy over all
        segments (the mapping reads both vocabularies' tags).
    """
    from genre.zeroshot import genre_scores, load_mapping

    tags = {e: segments.features[f"{e}_tags"] for e in ("musicnn_msd", "musicnn_mtt")}
    seg_probs = genre_scores(load_mapping(), tags, labels=labels)
    truth = _clip_truth(segments.track_id, labels)
    clips, probs = _clip_probs(segments.track_id, seg_probs)
    return {
        "probs": dict(zip(clips, probs, strict=True)),
        "segment": float(np.mean(seg_probs.argmax(axis=1) == truth)),
    }


def _prior_of(prior: dict, clips: np.ndarray) -> np.ndarray:
    return np.stack([prior["probs"][c] for c in clips])


def zero_shot_folds(segments, prior: dict) -> list[dict]:
    """The folds' test clips scored by the prior; each fold's "validation" clips (for the
    temperature only) are the other four folds' clips."""
    out = []
    for assignment in folds(sorted(set(segments.track_id))):
        test = np.array(sorted(t for t, s in assignment.items() if s == "test"), dtype=object)
        rest = np.array(sorted(t for t, s in assignment.items() if s != "test"), dtype=object)
        out.append({"val": (rest, _prior_of(prior, rest)), "test": (test, _prior_of(prior, test))})
    return out


def blend_folds(head: dict, prior: dict) -> tuple[list[dict], list[float]]:
    """Each fold's head mixed with the prior, the weight chosen on its validation clips."""
    from genre.posthoc import Blend, fit_blend_weight
    from genre.zeroshot import load_mapping

    mapping, out, weights = load_mapping(), [], []
    for fold in head["folds"]:
        val_clips, val_probs = fold["val"]
        y_val = _clip_truth(val_clips, head["labels"])
        weight, _ = fit_blend_weight(val_probs, _prior_of(prior, val_clips), y_val)
        blend = Blend(weight=weight, mapping=mapping)
        out.append(
            {
                split: (clips, blend.mix(probs, _prior_of(prior, clips)))
                for split, (clips, probs) in fold.items()
            }
        )
        weights.append(weight)
    return out, weights


def summarise(name: str, labels: list[str], fold_probs: list[dict], **extra) -> dict:
    """Accuracy (pooled and per fold) and ECE before/after each fold's temperature.

    ``fold_probs``: per fold ``{"val": (clips, probs), "test": (clips, probs)}``; the
    temperature of a fold is fitted on its ``val`` clips and applied to its ``test`` clips.
    """
    from genre.calibration import expected_calibration_error, fit_temperature, temperature_scale
    from genre.report import evaluate as score

    y, raw, calibrated, per_fold, temperatures = [], [], [], [], []
    for fold in fold_probs:
        (val_clips, val_probs), (test_clips, test_probs) = fold["val"], fold["test"]
        t = fit_temperature(val_probs, _clip_truth(val_clips, labels))
        truth = _clip_truth(test_clips, labels)
        per_fold.append(float(np.mean(test_probs.argmax(axis=1) == truth)))
        y.append(truth)
        raw.append(test_probs)
        calibrated.append(temperature_scale(test_probs, temperature=t))
        temperatures.append(t)
    y, raw, calibrated = np.concatenate(y), np.concatenate(raw), np.concatenate(calibrated)
    report = score(y_true=y, probs=raw, labels=labels)
    return {
        "name": name,
        "labels": labels,
        "report": report,
        "track": report["accuracy"],
        "n": len(y),
        "folds": per_fold,
        "ece_raw": expected_calibration_error(raw, y, bins=ECE_BINS),
        "ece_cal": expected_calibration_error(calibrated, y, bins=ECE_BINS),
        "temperatures": temperatures,
        "segment": None,
        "weights": None,
        "seconds": None,
        **extra,
    }


def zero_shot_result(name: str, segments, prior: dict, labels: list[str]) -> dict:
    """:func:`summarise` of the prior, its temperatures fitted as ``jobs.label --model
    zero-shot --calibrate-on`` fits them: on the clips of genres the mapping covers (a genre
    with no tag, reggae, scores exactly 0 on every clip, and fitted on, its clips drive
    ``T`` to the upper bound). ``"covered"``: the accuracy on those genres' clips."""
    from genre.zeroshot import load_mapping

    uncovered = [labels.index(g) for g in load_mapping().uncovered if g in labels]

    def covered(clips: np.ndarray) -> np.ndarray:
        return ~np.isin(_clip_truth(clips, labels), uncovered)

    fold_probs = [
        {
            "val": (f["val"][0][covered(f["val"][0])], f["val"][1][covered(f["val"][0])]),
            "test": f["test"],
        }
        for f in zero_shot_folds(segments, prior)
    ]
    result = summarise(name, labels, fold_probs, segment=prior["segment"])
    if uncovered:
        test_clips = np.concatenate([f["test"][0] for f in fold_probs])
        test_probs = np.concatenate([f["test"][1] for f in fold_probs])
        keep, truth = covered(test_clips), _clip_truth(test_clips, labels)
        result["covered"] = {
            "uncovered": [labels[i] for i in uncovered],
            "n": int(keep.sum()),
            "accuracy": float(np.mean(test_probs[keep].argmax(axis=1) == truth[keep])),
        }
    return result


def _labels(segments) -> list[str]:
    """The clips' genres in GTZAN order (as :func:`genre.training.prepare` orders them)."""
    from genre.config import GENRES

    present = {str(g) for g in segments.genre if g is not None}
    return [g for g in GENRES if g in present] + sorted(present - set(GENRES))


def evaluate_all(segments, names: list[str], args) -> list[dict]:
    """Every configuration of ``names``, in that order; a head is trained once even when
    its blend is asked for too (trained for the blend alone, it is not reported)."""
    labels = _labels(segments)
    prior = zero_shot_prior(segments, labels) if any(n in DERIVED for n in names) else None
    trained: dict[str, dict] = {}

    def heads(name: str) -> dict:
        if name not in trained:
            trained[name] = train_folds(
                segments,
                name,
                max_epochs=args.max_epochs,
                patience=args.patience,
                refit=args.refit,
            )
            if trained[name]["labels"] != labels:
                raise RuntimeError(f"{name}: labels {trained[name]['labels']} != {labels}")
        return trained[name]

    results = []
    for name in names:
        if name in CONFIGS:
            run = heads(name)
            extra = {"segment": float(np.mean(run["segment"])), "seconds": run["seconds"]}
            results.append(summarise(name, labels, run["folds"], **extra))
        elif DERIVED[name] is None:
            results.append(zero_shot_result(name, segments, prior, labels))
        else:
            fold_probs, weights = blend_folds(heads(DERIVED[name]), prior)
            results.append(summarise(name, labels, fold_probs, weights=weights))
    return results


def print_table(results: list[dict], *, refit: bool) -> None:
    """Accuracy, per-fold accuracy, segment accuracy, ECE raw → calibrated, blend weights."""
    protocol = "train 3 + validate 1, then refit on 4" if refit else "train 3, validate 1"
    n = results[0]["n"]
    print(
        f"\nfive-fold leave-one-clip-per-genre-out on {n} GTZAN clips "
        f"({protocol}, test 1 clip per genre; zero_shot trains nothing):"
    )
    print(
        f"  {'config':<24} {'track accuracy':<15} {'per fold (10 clips each)':<26} "
        f"{'segment':>7}   {'ECE raw → calibrated':<20} {'time':>6}"
    )
    for r in results:
        accuracy = f"{r['track']:.2f} ({int(round(r['track'] * r['n']))}/{r['n']})"
        per_fold = " ".join(f"{a:.2f}" for a in r["folds"])
        segment = f"{r['segment']:.2f}" if r["segment"] is not None else "—"
        ece = f"{r['ece_raw']:.3f} → {r['ece_cal']:.3f}"
        seconds = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "—"
        print(
            f"  {r['name']:<24} {accuracy:<15} {per_fold:<26} {segment:>7}   {ece:<20} {seconds:>6}"
        )
    print(
        f"\nECE: {ECE_BINS} equal-width bins over the {n} test clips of the five folds pooled; "
        "calibrated = each fold's temperature, fitted on its validation clips "
        "(zero_shot: on the other four folds' clips)."
    )
    for r in results:
        line = f"  {r['name']:<24} T per fold {' '.join(f'{t:.2f}' for t in r['temperatures'])}"
        if r["weights"] is not None:
            line += f"   blend weight (prior's share) per fold {' '.join(map(str, r['weights']))}"
        print(line)
        if "covered" in r:
            c = r["covered"]
            print(
                f"  {'':<24} without {', '.join(c['uncovered'])} (no tag in the mapping): "
                f"accuracy {c['accuracy']:.2f} ({int(round(c['accuracy'] * c['n']))}/{c['n']}); "
                "its temperatures are fitted on the other genres' clips, as --calibrate-on does"
            )


def _parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gtzan-mini"))
    ap.add_argument(
        "--configs",
        default="seed_cnn,short_chunk_cnn,crnn",
        help=f"comma-separated, of {','.join([*CONFIGS, *DERIVED])}",
    )
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--refit",
        action="store_true",
        help="retrain on training + validation clips for the epochs validation chose",
    )
    ap.add_argument(
        "--figure", default=None, help="write the best config's confusion matrix here (PNG)"
    )
    args = ap.parse_args(argv)
    unknown = [n for n in args.configs.split(",") if n not in CONFIGS and n not in DERIVED]
    if unknown:
        ap.error(
            f"unknown config(s) {','.join(unknown)}: choose from {','.join([*CONFIGS, *DERIVED])}"
        )
    if not Path(args.data).is_dir():
        sys.exit(
            f"error: {args.data} does not exist (the GTZAN clips are not part of the repository)"
        )
    return args


def _extract(data: str, shards: Path, names: list[str], *, cpus: int):
    """Shards of the clips with the hand-crafted features, the pretrained columns the
    configurations read, and both musicnn models' when a derived configuration needs the
    zero-shot prior (their tags feed it)."""
    import ray

    from genre.config import DEFAULT_PRETRAINED, FEATURES, FeatureConfig
    from genre.extraction import run_extract
    from genre.runtime import init_ray
    from genre.shards import read_segments

    read = tuple(f for n in names if n in CONFIGS for f in CONFIGS[n][1])
    prior = DEFAULT_PRETRAINED if any(n in DERIVED for n in names) else ()
    cfg = FeatureConfig(features=FEATURES + read + prior)
    init_ray(num_cpus=cpus)
    print(run_extract(data, str(shards), cfg=cfg).format())
    ray.shutdown()
    return read_segments(str(shards))


def main(argv=None) -> None:
    args = _parse_args(argv)
    from genre.backend import configure
    from genre.report import classification_report_text, plot_confusion

    names = args.configs.split(",")
    work = Path(tempfile.mkdtemp(prefix="eval-gtzan-"))
    try:
        segments = _extract(args.data, work / "shards", names, cpus=args.cpus)
        configure()
        results = evaluate_all(segments, names, args)
        print_table(results, refit=args.refit)
        best = max(results, key=lambda r: r["track"])
        print(
            f"\nbest: {best['name']}; confusion matrix "
            f"(rows true, columns predicted; {', '.join(best['labels'])}):"
        )
        for label, row in zip(best["labels"], best["report"]["confusion"], strict=True):
            print(f"  {label:>10} " + " ".join(f"{v:2d}" for v in row))
        print(classification_report_text(best["report"]))
        if args.figure:
            plot_confusion(
                np.asarray(best["report"]["confusion"]),
                best["labels"],
                title=f"GTZAN-mini, 5 folds — {best['name']}",
                path=args.figure,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
