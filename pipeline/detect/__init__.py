"""Detection: which samples are dirty, how sure we are, and why.

:func:`run_detection` profiles the dataset, runs every registered detector
(:data:`pipeline.detect.base.REGISTRY`) with one shared :class:`DetectionContext`, merges
their results (:func:`pipeline.detect.combine.combine`) and writes::

    out_dir/issues.parquet     one row per sample (columns: pipeline.detect.combine)
    out_dir/summary.json       counts per issue type, classifier accuracy, noise matrix,
                               timings, per-detector summaries, errors, skipped detectors
    out_dir/noise_matrix.npy   float64 (K, K), T[i, j] = P(given label j | true label i)
    out_dir/vae.pt, vae.json   the VAE detector's model (when it ran)

Detectors run in the order of :data:`DEFAULT_DETECTORS`; names that are not registered are
skipped and listed in the summary. A detector that raises is reported by name under
``errors`` and leaves the others' output untouched.

>>> result = run_detection(dataset, out_dir=None, seed=0)   # doctest: +SKIP
>>> result.issues.loc[result.issues.is_dirty, ["sample_id", "reasons"]]  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import io as _io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import artifacts, atomic
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect import datalab as _datalab  # noqa: F401  (registers detectors)
from assay.pipeline.detect import duplicate as _duplicate  # noqa: F401
from assay.pipeline.detect import label as _label  # noqa: F401
from assay.pipeline.detect.base import REGISTRY, DetectorResult
from assay.pipeline.detect.combine import (
    DATASET_LEVEL,
    OUTLIER_METHOD,
    OUTLIER_SOURCES,
    REASONS,
    combine,
)
from assay.pipeline.detect.context import DetectionContext
from assay.pipeline.detect.datalab import DetectorUnavailable
from assay.pipeline.detect.oof import OOFResult
from assay.pipeline.limits import MAX_FOLDS, MIN_FOLDS, check_detectable, check_int

for _module in ("assay.pipeline.detect.vae", "assay.pipeline.detect.image_properties"):
    try:
        __import__(_module)
    except ImportError:  # pragma: no cover - a detector module that is not there yet
        pass

__all__ = [
    "DEFAULT_DETECTORS",
    "DetectionContext",
    "DetectionResult",
    "DetectorResult",
    "REGISTRY",
    "run_detection",
]

#: Detectors run by default, in this order (unregistered names are skipped).
DEFAULT_DETECTORS: tuple[str, ...] = (
    "label",
    "exact_duplicate",
    "knn_outlier",
    "near_duplicate",
    "non_iid",
    "class_imbalance",
    "vae",
    "image_property",
)


@dataclass
class DetectionResult:
    """What :func:`run_detection` returns.

    Attributes
    ----------
    issues : DataFrame
        The ``issues.parquet`` table, ``N`` rows in dataset order.
    summary : dict
        The ``summary.json`` content.
    noise_matrix : ndarray
        float64 ``(K, K)``, ``T[i, j] = P(given label j | true label i)`` (identity when
        the label detector did not run).
    results : dict of str to DetectorResult
        Every detector that ran successfully.
    oof : OOFResult or None
        The cross-validated classifier's predictions, when it ran.
    """

    issues: pd.DataFrame
    summary: dict[str, Any]
    noise_matrix: np.ndarray
    results: dict[str, DetectorResult] = field(default_factory=dict)
    oof: OOFResult | None = None


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def run_detection(
    dataset: Dataset,
    *,
    out_dir: str | Path | None,
    seed: int = 0,
    device: str = "auto",
    folds: int = 5,
    progress: bool = True,
    detectors: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    outlier_method: str = OUTLIER_METHOD,
    profile: pd.DataFrame | None = None,
    classifier: dict[str, Any] | None = None,
    oof: OOFResult | None = None,
) -> DetectionResult:
    """Run every detector on ``dataset`` and merge the results.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images of ``K`` classes.
    out_dir : path or None, keyword-only
        Folder for ``issues.parquet``, ``summary.json``, ``noise_matrix.npy`` (and the
        VAE's ``vae.pt``/``vae.json``); ``None`` writes nothing.
    seed : int, keyword-only
        Seeds the fold split and every model; same seed + same device -> same issues.
    device : str, keyword-only
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    folds : int, keyword-only
        Cross-validation folds of the classifier (2..50; fewer are used when a class has
        fewer samples, see :func:`pipeline.detect.oof.make_folds`).
    progress : bool, keyword-only
        Print one line per step.
    detectors : sequence of str, optional, keyword-only
        Names to run (default :data:`DEFAULT_DETECTORS`).
    options : dict, optional, keyword-only
        Per-detector keyword options, ``{"vae": {"k": 4.0}, ...}``.
    outlier_method : str, keyword-only
        How ``outlier_score`` combines its sources (see
        :func:`pipeline.detect.combine.combine_outlier_scores`).
    profile : DataFrame, optional, keyword-only
        The validation profile; computed here when not given.
    classifier : dict, optional, keyword-only
        Keyword arguments for :func:`pipeline.detect.oof.out_of_fold` (``model``,
        ``config``, ``workers``), e.g. ``{"model": "svc"}`` for a quick run.
    oof : OOFResult, optional, keyword-only
        Out-of-fold predictions already computed for ``dataset`` with the same folds and
        seed (e.g. folds trained in parallel by :func:`pipeline.detect.oof.fit_fold` and
        merged by :func:`pipeline.detect.oof.assemble_oof`); the classifier is then not
        trained again.

    Returns
    -------
    DetectionResult
    """
    folds = check_int("folds", folds, low=MIN_FOLDS, high=MAX_FOLDS)
    check_detectable(dataset)
    names = tuple(DEFAULT_DETECTORS if detectors is None else detectors)
    options = dict(options or {})
    t_start = time.perf_counter()
    out_path = Path(out_dir) if out_dir is not None else None

    context = DetectionContext(
        dataset=dataset,
        seed=int(seed),
        device=str(device),
        n_folds=int(folds),
        progress=bool(progress),
        out_dir=out_path,
    )
    classifier = dict(classifier or {})
    context.classifier = str(classifier.pop("model", "auto"))
    context.classifier_options = classifier
    if oof is not None:
        if oof.pred_probs.shape != (len(dataset), dataset.n_classes):
            raise ValueError(
                f"`oof` holds {oof.pred_probs.shape} probabilities; this dataset needs "
                f"({len(dataset)}, {dataset.n_classes})."
            )
        context._oof = oof
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}

    if profile is None:
        t0 = time.perf_counter()
        try:
            from assay.pipeline.profile import profile as _profile

            profile = _profile(dataset)
        except Exception as exc:  # the profile only helps; detection goes on without it
            errors["profile"] = f"{type(exc).__name__}: {exc}"
        timings["profile"] = round(time.perf_counter() - t0, 3)
    context.profile = profile

    results: dict[str, DetectorResult] = {}
    for name in names:
        fn = REGISTRY.get(name)
        if fn is None:
            skipped[name] = "not registered"
            context.log(f"{name}: skipped (no such detector registered)")
            continue
        opts = dict(options.get(name, {}))
        if out_path is not None and "out_dir" not in opts and _accepts(fn, "out_dir"):
            opts["out_dir"] = out_path
        context.log(f"{name}: running")
        t0 = time.perf_counter()
        try:
            result = fn(dataset, context, **opts)
            if not isinstance(result, DetectorResult):
                raise TypeError(
                    f"detector {name!r} returned {type(result).__name__}, not a DetectorResult"
                )
            if result.name != name:
                raise ValueError(f"detector {name!r} returned a result named {result.name!r}")
            result.check(dataset.sample_ids)
            results[name] = result
            context.log(result.summary)
        except DetectorUnavailable as exc:
            skipped[name] = str(exc)
            context.log(f"{name}: skipped ({exc})")
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            context.log(f"{name}: FAILED ({errors[name]})")
        timings[name] = round(time.perf_counter() - t0, 3)
    timings.update({f"shared:{k}": v for k, v in context.timings.items()})

    issues = combine(dataset, results, outlier_method=outlier_method)
    k = dataset.n_classes
    noise_matrix = np.eye(k)
    if "label" in results:
        noise_matrix = np.asarray(results["label"].info["noise_matrix"], dtype=np.float64)
    timings["total"] = round(time.perf_counter() - t_start, 3)
    summary = _summary(
        dataset,
        issues,
        results,
        context,
        errors=errors,
        skipped=skipped,
        timings=timings,
        noise_matrix=noise_matrix,
        outlier_method=outlier_method,
        folds=folds,
    )
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        artifacts.check_columns(issues, artifacts.ISSUE_COLUMNS, source=artifacts.ISSUES)
        atomic.write_parquet(out_path / artifacts.ISSUES, issues)
        buf = _io.BytesIO()
        np.save(buf, noise_matrix, allow_pickle=False)
        atomic.write_bytes(out_path / artifacts.NOISE_MATRIX, buf.getvalue())
        path = out_path / artifacts.DETECTION_SUMMARY
        atomic.write_json(path, artifacts.to_json(artifacts.DetectionSummary, summary,
                                                  source=path))
    context.log(
        f"{summary['n_dirty']} of {len(dataset)} samples dirty ({timings['total']:.1f}s)"
    )
    return DetectionResult(
        issues=issues,
        summary=summary,
        noise_matrix=noise_matrix,
        results=results,
        oof=context._oof,
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 10_000 else f"<array {obj.shape}>"
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _summary(
    dataset: Dataset,
    issues: pd.DataFrame,
    results: dict[str, DetectorResult],
    context: DetectionContext,
    *,
    errors: dict[str, str],
    skipped: dict[str, str],
    timings: dict[str, float],
    noise_matrix: np.ndarray,
    outlier_method: str,
    folds: int,
) -> dict[str, Any]:
    counts = {
        "label": int(issues["is_label_issue"].sum()),
        "outlier": int(issues["is_outlier"].sum()),
        "exact_duplicate": int(issues["is_exact_duplicate"].sum()),
        "near_duplicate": int(issues["is_near_duplicate"].sum()),
    }
    for name, res in results.items():
        if name not in counts and name != "label":
            counts[name] = int(res.table[res.flag_column].sum())
    counts["dirty"] = int(issues["is_dirty"].sum())
    primary = issues["primary_reason"].value_counts()
    oof = context._oof
    label_info = results["label"].info if "label" in results else {}
    return {
        "n": len(dataset),
        "n_classes": dataset.n_classes,
        "class_names": list(dataset.class_names),
        "counts": counts,
        "n_dirty": counts["dirty"],
        "primary_reasons": {r: int(primary.get(r, 0)) for r in REASONS},
        "dirty_fraction": counts["dirty"] / max(len(dataset), 1),
        "folds": int(folds),
        "seed": context.seed,
        "device": context.device,
        "oof_accuracy": None if oof is None else float(oof.accuracy),
        "classifier": None if oof is None else oof.summary(),
        "noise_matrix": {
            "convention": "T[i, j] = P(given label j | true label i); rows sum to 1",
            "estimated": "label" in results,
            "matrix": noise_matrix.tolist(),
            "estimated_noise_rate": label_info.get("estimated_noise_rate"),
        },
        "outlier_score": {
            "method": outlier_method,
            "sources": [s for s in OUTLIER_SOURCES if s in results],
        },
        "dataset_level": list(DATASET_LEVEL),
        "detectors": {
            name: {"summary": res.summary, "info": _jsonable(res.info)}
            for name, res in results.items()
        },
        "errors": errors,
        "skipped": skipped,
        "timings": timings,
    }
