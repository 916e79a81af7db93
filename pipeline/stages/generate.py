"""The generate stage: the same conditional GAN on dirty and cleaned data -> ``gan/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from assay.pipeline.atomic import atomic_dir
from assay.pipeline.dataset import Dataset
from assay.pipeline.hashing import tree_hash
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import GenerateParams, GenerateSummary


def _gan_inputs(run: RunFolder) -> tuple[Dataset, Dataset, Any, Any]:
    """The dirty and cleaned datasets, the issues and the noise matrix (in the order of
    the stages that write them, so a missing one names the earliest stage to run)."""
    dirty, issues, noise_matrix = run.dataset(), run.issues(), run.noise_matrix()
    return dirty, run.cleaned(), issues, noise_matrix


def _generate_summary(run: RunFolder, metrics: dict[str, Any], start: float) -> GenerateSummary:
    arms = {
        str(arm): {
            str(k): v
            for k, v in values.items()
            if v is None or isinstance(v, bool | int | float | str)
        }
        for arm, values in metrics.get("arms", {}).items()
    }
    return GenerateSummary(
        output_hash=tree_hash(run.paths.gan),
        arms=arms,
        seconds=round(time.perf_counter() - start, 3),
    )


def generate(run: RunFolder, params: GenerateParams, *, progress: bool = True) -> GenerateSummary:
    """Train the GAN arms on the dirty and the cleaned data and score them -> ``gan/``."""
    from assay.pipeline.generate import compare_gans

    start = time.perf_counter()
    dirty, cleaned, issues, noise_matrix = _gan_inputs(run)
    with atomic_dir(run.paths.gan) as tmp:
        metrics = compare_gans(dirty, cleaned, issues, noise_matrix=noise_matrix, out_dir=tmp,
                               steps=params.steps, device=params.device, seed=params.seed,
                               seeds=params.seeds, vae_dir=run.paths.detection,
                               progress=progress)  # fmt: skip
    return _generate_summary(run, metrics, start)


def prepare_generate(
    run: RunFolder, params: GenerateParams, out_dir: Path, *, progress: bool = True
) -> list[str]:
    """Split off the trusted slice, train the judge and plan the arms -> ``out_dir``.

    Returns the arms to train (each with :func:`train_arm`).
    """
    from assay.pipeline.generate import prepare_comparison

    dirty, cleaned, issues, noise_matrix = _gan_inputs(run)
    plan = prepare_comparison(dirty, cleaned, issues, noise_matrix=noise_matrix,
                              out_dir=out_dir, steps=params.steps, device=params.device,
                              seed=params.seed, seeds=params.seeds,
                              vae_dir=run.paths.detection,
                              progress=progress)  # fmt: skip
    return [str(a) for a in plan["arms"]]


def train_arm(
    run: RunFolder,
    params: GenerateParams,
    arm: str,
    *,
    plan_dir: Path,
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and score one arm of the plan in ``plan_dir`` -> ``out_dir``."""
    from assay.pipeline.generate import train_arm as train

    return train(arm, run.dataset(), run.cleaned(), plan_dir=plan_dir, out_dir=out_dir,
                 steps=params.steps, device=params.device, seed=params.seed,
                 progress=progress)  # fmt: skip


def finish_generate(run: RunFolder, plan_dir: Path, arm_dirs: dict[str, Path]) -> GenerateSummary:
    """Gather the plan and its trained arms into ``gan/``."""
    from assay.pipeline.generate import finish_comparison

    start = time.perf_counter()
    with atomic_dir(run.paths.gan) as tmp:
        metrics = finish_comparison(plan_dir, arm_dirs, out_dir=tmp)
    return _generate_summary(run, metrics, start)
