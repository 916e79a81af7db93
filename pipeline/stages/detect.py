"""The detect stage: every detector over the snapshot -> ``detection/``."""

from __future__ import annotations

import time
from pathlib import Path

from assay.pipeline.atomic import atomic_dir
from assay.pipeline.hashing import tree_hash
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import DetectParams, DetectSummary


def _detection_hash(run: RunFolder) -> str:
    """Hash of the detection files later stages read (``summary.json`` also holds
    timings, which differ between identical runs)."""
    return tree_hash(
        run.paths.detection,
        only=[p.relative_to(run.paths.detection).as_posix()
              for p in (run.paths.issues, run.paths.noise_matrix)],
    )  # fmt: skip


def fit_fold(run: RunFolder, params: DetectParams, fold: int, out_file: Path) -> None:
    """Train the classifier of one fold and predict every sample -> ``out_file``."""
    from assay.pipeline.detect.oof import fit_fold as train_fold

    result = train_fold(run.dataset(), fold, n_folds=params.folds, seed=params.seed,
                        device=params.device, progress=False)  # fmt: skip
    result.save(out_file)


def detect(
    run: RunFolder,
    params: DetectParams,
    *,
    fold_files: list[Path] | None = None,
    progress: bool = True,
) -> DetectSummary:
    """Run every detector on the snapshot -> ``detection/``.

    ``fold_files``, when given, are the results of :func:`fit_fold` for every fold, in
    order; they are assembled and the classifier is not trained again.
    """
    from assay.pipeline.detect import run_detection
    from assay.pipeline.detect.oof import FoldResult, assemble_oof

    start = time.perf_counter()
    dataset = run.dataset()
    oof = None
    if fold_files:
        folds = [FoldResult.load(f) for f in fold_files]
        oof = assemble_oof(dataset, folds, seed=params.seed)
    with atomic_dir(run.paths.detection) as tmp:
        result = run_detection(dataset, out_dir=tmp, seed=params.seed, device=params.device,
                               folds=params.folds, progress=progress, oof=oof)  # fmt: skip
    counts = result.summary.get("counts", {})
    return DetectSummary(
        output_hash=_detection_hash(run),
        n=len(dataset),
        n_dirty=int(result.summary.get("n_dirty", 0)),
        counts={str(k): int(v) for k, v in counts.items()},
        seconds=round(time.perf_counter() - start, 3),
    )
