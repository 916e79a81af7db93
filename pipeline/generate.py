"""The generate-and-compare stage: the same conditional GAN on dirty and on cleaned data.

Three arms, same architecture, same seeds, same number of steps:

``dirty``        the raw dataset with its given labels;
``clean``        the cleaned dataset (drops and relabels applied);
``noise_aware``  the raw dataset, with the generator's labels passed through the estimated
                 label-noise transition matrix before the discriminator sees them
                 (Thekumparampil et al., 2018; Kaneko et al., 2019; see :mod:`models.gan`).

Each arm is trained from :data:`SEEDS` training seeds side by side (threads with one
torch thread each on CPU); every metric is the mean over the seeds and comes with its
uncertainty (:func:`pipeline.evaluate.metric_interval`: the spread between seeds plus a
bootstrap over the judged samples). The split, the judge and the latents the samples are
drawn from are the same for every seed and arm; only the GAN's weights, batches and
augmentation differ between seeds.

Before any GAN is trained a trusted slice is held out (:func:`pipeline.split.trusted_split`):
its judge-train part trains the judge classifier, its judge-test part is the real
reference of every metric (:mod:`pipeline.evaluate`). No arm trains on either part.

The noise matrix is the detection stage's estimate (cleanlab's confident joint),
``T[y, s] = P(given label s | true label y)`` (rows sum to 1; cleanlab's own
column-stochastic ``noise_matrix`` is accepted and transposed), made on the whole dataset.
It is re-estimated for the data the arm actually trains on: holding out believed-clean
samples raises the share of noisy labels among the rest, so the counts of the held-out
samples are taken off the diagonal of the estimated joint before normalising
(:func:`pipeline.noise_transition.transition_for_training`).

Outputs (``out_dir``, each file written atomically)
---------------------------------------------------
``metrics.json``          see :func:`compare_gans`
``samples_<arm>.png``     a grid per arm: one row per class, one column per latent; the same
                          latent in the same column of every arm, so cells compare one to one
``comparison.png``        the arms' grids side by side with their headline metrics
``loss_curves.png``       discriminator and generator losses per arm
``losses.csv``, ``losses.json``  the loss logs
``checkpoints/<arm>.pt``  the trained networks (``torch.load(..., weights_only=True)``)
``judge.pt``              the judge
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import artifacts, atomic
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.gan_figures import comparison_png, grid_image, loss_curves_png, png_bytes
from assay.pipeline.limits import MAX_STEPS, MIN_STEPS, check_int
from assay.pipeline.noise_transition import transition_for_training, transition_from_noise_matrix
from assay.pipeline.progress import Ticker
from assay.pipeline.progress import say as progress_line
from assay.pipeline.split import TrustedSplit, stratified_take, trusted_split

ARMS = ("dirty", "clean", "noise_aware")
#: Training seeds per arm. Two seeds are the fewest that measure the spread between seeds,
#: but the difference of two arms then has 2 degrees of freedom (95% t quantile 4.30); three
#: give 4 (2.78) for 50% more GAN time.
SEEDS = 3
#: Offset between consecutive training seeds (keeps the seeds' RNG streams apart).
SEED_STRIDE = 1000
#: Metrics averaged over seeds, with intervals.
SEEDED_METRICS = ("label_accuracy", "fid", "kid", "precision", "recall", "cas", "vae_flag_rate")


# ---------------------------------------------------------------------------- the stage
def _check_pair(dirty: Dataset, cleaned: Dataset) -> None:
    if dirty.image_shape != cleaned.image_shape:
        raise DataError(
            f"The dirty and cleaned datasets must have the same image shape. Got "
            f"{dirty.image_shape} and {cleaned.image_shape} instead."
        )
    if dirty.class_names != cleaned.class_names:
        raise DataError("The dirty and cleaned datasets must have the same class names.")


def _stratified_labels(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` labels drawn (stratified) to follow ``labels``' class proportions, sorted."""
    reps = int(math.ceil(n / max(len(labels), 1)))
    pool = np.tile(labels, reps)
    taken, _ = stratified_take(pool, n, rng=np.random.default_rng(seed))
    return np.sort(pool[taken]).astype(np.int64)


def _label_noise_share(ds: Dataset) -> float | None:
    if "true_label" not in ds.columns.columns:
        return None
    true = ds.columns["true_label"].to_numpy(dtype=np.int64)
    return float(np.mean(true != ds.labels)) if len(ds) else None


def compare_gans(
    dirty: Dataset,
    cleaned: Dataset,
    issues: pd.DataFrame,
    *,
    noise_matrix: np.ndarray | None,
    out_dir: str | Path,
    steps: int | None = None,
    device: str = "auto",
    seed: int = 0,
    seeds: int = SEEDS,
    vae_dir: str | Path | None = None,
    progress: bool = True,
    arms: Sequence[str] = ARMS,
    trusted_fraction: float = 0.1,
    judge_test_fraction: float = 0.4,
    min_trusted_per_class: int = 40,
    grid_columns: int = 8,
    gan_options: dict[str, Any] | None = None,
    judge_options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the same conditional GAN per arm and compare them on held-out real data.

    Parameters
    ----------
    dirty : Dataset
        The raw dataset (``N`` samples, given labels).
    cleaned : Dataset
        The cleaned dataset (a subset of ``dirty``'s ids, possibly relabelled).
    issues : pandas.DataFrame
        The detection table; decides the trusted slice when ``dirty`` has no ``injected``
        column.
    noise_matrix : ``(K, K)`` array or None, keyword-only
        ``T[true, given]`` as in the detection stage's ``noise_matrix.npy`` (rows sum to 1;
        see :func:`pipeline.noise_transition.transition_from_noise_matrix`); ``None`` skips
        ``noise_aware``.
    out_dir : path, keyword-only
        The ``gan/`` folder of the run.
    steps : int or None, keyword-only
        Generator updates per arm; ``None``: :meth:`models.gan.GANConfig.for_data`'s
        budget for the data and the device (750 steps of 128 images for images up to
        16 px on CPU, 1,500 otherwise).
    device : {"auto", "cpu", "cuda", "cuda:N"}, keyword-only
    seed : int, keyword-only
        One seed for the split, the judge and the latents; the first training seed.
    seeds : int, keyword-only
        Training seeds per arm (``seed``, ``seed + 1000``, ...), trained side by side.
    vae_dir : path or None, keyword-only
        The detection folder holding the VAE (``vae.pt``, ``vae.json``); adds each arm's
        ``vae_flag_rate``.
    progress : bool, keyword-only
        Print progress lines (stderr, or ``log``).
    arms : the arms to run, a subset of :data:`ARMS`.
    trusted_fraction, judge_test_fraction : size of the trusted slice (fraction of ``N``)
        and its judge-test share. The slice is kept small on purpose: it is taken from the
        believed-clean samples, so every image held out raises the share of wrong labels
        that the dirty and noise-aware arms train on (on MNIST with 50% noise, holding
        out 25% of the data would leave 67% of the remaining labels wrong; 10% leaves
        56%). On small data the slice is raised to ``min_trusted_per_class * K`` images
        (at most a quarter of ``N``): on 1,797 digits, 10% would leave 5 judge-test images
        per class, too few for FID or precision/recall to mean anything.
    min_trusted_per_class : see ``trusted_fraction``.
    grid_columns : latents (columns) per sample grid.
    gan_options : :class:`models.gan.GANConfig` fields to override (e.g. ``width``).
    judge_options : :class:`models.judge.JudgeConfig` fields to override (e.g. ``epochs``).
    log : where progress lines go instead of stderr.

    Returns
    -------
    dict
        The content of ``metrics.json``::

            {"arms": {arm: {"label_accuracy", "fid", "kid", "kid_std", "precision",
                            "recall", "cas", ["vae_flag_rate"] (means over seeds;
                            fid/kid None where not meaningful), "seeds" (the
                            training seeds), "seed_metrics" ({metric: [per seed]}),
                            "uncertainty" ({metric: metric_interval(...) or None}),
                            "steps", "seconds",
                            "images_per_second", "device", "batch_size", "n_train",
                            "train_label_noise", "final_loss_d", "final_loss_g",
                            "samples_png", "checkpoint"}},
             "reference": {metrics of real held-out images: "label_accuracy" (the
                           judge's accuracy), "fid"/"kid"/"precision"/"recall" of the
                           judge-train images against judge-test, "cas" (= the judge's
                           accuracy), ["vae_flag_rate"]},
             "judge": {...}, "split": {...}, "gan_config": {...}, "transition": [[...]],
             "arms_run": [...], "skipped": {arm: reason}, "device", "seed", "steps",
             "files": {...}}
    """
    if steps is not None:  # before gan/ exists
        steps = check_int("steps", steps, low=MIN_STEPS, high=MAX_STEPS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.work_dir(out_dir) as work:
        plan_dir = Path(work) / "plan"
        plan = prepare_comparison(
            dirty, cleaned, issues, noise_matrix=noise_matrix, out_dir=plan_dir, steps=steps,
            device=device, seed=seed, seeds=seeds, vae_dir=vae_dir, progress=progress,
            arms=arms, trusted_fraction=trusted_fraction, judge_test_fraction=judge_test_fraction,
            min_trusted_per_class=min_trusted_per_class, grid_columns=grid_columns,
            gan_options=gan_options, judge_options=judge_options, log=log,
        )  # fmt: skip
        arm_dirs = {}
        for arm in plan["arms"]:
            arm_dirs[arm] = Path(work) / arm
            train_arm(
                arm, dirty, cleaned, plan_dir=plan_dir, out_dir=arm_dirs[arm], steps=steps,
                device=device, seed=seed, progress=progress, log=log,
            )  # fmt: skip
        return finish_comparison(plan_dir, arm_dirs, out_dir=out_dir)


def _sayer(progress: bool, log: Callable[[str], None] | None) -> Callable[[str], None]:
    if not progress:
        return lambda line: None
    if log is not None:
        return log
    return progress_line


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(path, buf.getvalue())


def _write_model(model: Any, path: Path) -> None:
    """Write a model's :meth:`save` output to ``path`` atomically."""
    buf = io.BytesIO()
    model.save(buf)
    atomic.write_bytes(path, buf.getvalue())


def prepare_comparison(
    dirty: Dataset,
    cleaned: Dataset,
    issues: pd.DataFrame,
    *,
    noise_matrix: np.ndarray | None,
    out_dir: str | Path,
    steps: int | None = None,
    device: str = "auto",
    seed: int = 0,
    seeds: int = SEEDS,
    vae_dir: str | Path | None = None,
    progress: bool = True,
    arms: Sequence[str] = ARMS,
    trusted_fraction: float = 0.1,
    judge_test_fraction: float = 0.4,
    min_trusted_per_class: int = 40,
    grid_columns: int = 8,
    gan_options: dict[str, Any] | None = None,
    judge_options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The part of :func:`compare_gans` shared by every arm, written to a plan folder.

    Splits off the trusted slice, trains the judge, scores the real reference, fixes the
    GAN config, the noise-aware transition and the latents every arm samples with. Each
    arm can then be trained anywhere (another thread, process or Dask worker) by
    :func:`train_arm` from the plan folder alone (plus the two datasets), and
    :func:`finish_comparison` gathers them. Parameters as for :func:`compare_gans`.

    Returns
    -------
    dict
        The plan (``plan.json``): ``arms`` to train, ``skipped`` arms with reasons, the
        split, the judge's facts, the reference metrics and the GAN config.
    """
    import torch

    from assay.models.device import pick_device
    from assay.models.gan import GANConfig
    from assay.models.gan_losses import check_transition
    from assay.models.judge import Judge
    from assay.pipeline import evaluate

    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise DataError(f"`arms` must be a non-empty subset of {ARMS}. Got {list(arms)} instead.")
    if steps is not None:
        steps = check_int("steps", steps, low=MIN_STEPS, high=MAX_STEPS)
    if int(seeds) != seeds or seeds < 1:
        raise DataError(f"`seeds` must be a positive integer. Got {seeds!r} instead.")
    _check_pair(dirty, cleaned)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    say = _sayer(progress, log)
    k = dirty.n_classes
    t_start = time.perf_counter()

    split: TrustedSplit = trusted_split(
        dirty, issues, fraction=trusted_fraction, test_fraction=judge_test_fraction,
        min_per_class=min_trusted_per_class, seed=seed,
    )  # fmt: skip
    judge_train = split.train_set(dirty)
    judge_test = split.test_set(dirty)
    say(
        f"[gan] trusted split from {split.source}: {len(judge_train)} judge-train, "
        f"{len(judge_test)} judge-test images held out of every GAN"
    )
    judge = Judge(device=dev, seed=seed, **(judge_options or {}))
    tickers: list[Ticker] = []  # made at the first epoch, when the judge knows its epochs

    def judge_epoch(done: int, epochs: int) -> None:
        if not tickers:
            tickers.append(Ticker("[gan] judge epochs", epochs, enabled=progress, out=say))
        tickers[0].tick()

    judge.fit(judge_train.images, judge_train.labels, on_epoch=judge_epoch)
    judge_acc = judge.score(judge_test.images, judge_test.labels)
    say(f"[gan] judge trained in {judge.seconds_:.1f}s: held-out accuracy {judge_acc:.3f}")
    _write_model(judge, out_dir / "judge.pt")

    real_x, real_y = judge_test.images, judge_test.labels
    real_f = judge.features(real_x)
    train_f = judge.features(judge_train.images)
    n_tr, n_te, dim = len(train_f), len(real_f), real_f.shape[1]
    reference: dict[str, Any] = {
        "label_accuracy": judge_acc,
        "fid": evaluate.fid_from_features(train_f, real_f)
        if evaluate.fid_is_meaningful(n_tr, n_te, dim)
        else None,
        "kid": evaluate.kid_from_features(train_f, real_f, seed=seed)[0]
        if evaluate.kid_subset_size(n_tr, n_te) >= evaluate.KID_MIN_SUBSET
        else None,
        "cas": judge_acc,
        "n_judged": n_te,
    }
    if min(len(train_f), len(real_f)) > 3:
        reference["precision"], reference["recall"] = evaluate.precision_recall(train_f, real_f)
    else:  # a tiny dataset: too few images for k-NN precision/recall
        reference["precision"] = reference["recall"] = math.nan
        say(f"[gan] precision/recall not measured: {len(real_f)} held-out real images")
    if vae_dir is not None:
        reference["vae_flag_rate"] = evaluate.vae_flag_rate(vae_dir, real_x)
        for name in ("vae.pt", "vae.json"):  # the plan must not depend on another folder
            atomic.write_bytes(out_dir / "vae" / name, (Path(vae_dir) / name).read_bytes())

    skipped: dict[str, str] = {}
    transition = None
    if "noise_aware" in arms:
        if noise_matrix is None:
            skipped["noise_aware"] = "no noise matrix was given"
        else:
            t_full = transition_from_noise_matrix(noise_matrix)
            if t_full.shape != (k, k):
                raise DataError(
                    f"`noise_matrix` must be ({k}, {k}) for {k} classes. "
                    f"Got {t_full.shape} instead."
                )
            held_out = np.concatenate([judge_train.labels, real_y])
            transition = check_transition(
                transition_for_training(t_full, dirty.labels, held_out), k
            )
    run_arms = [a for a in arms if a not in skipped]
    for arm in run_arms:
        n_train = len(split.exclude(cleaned if arm == "clean" else dirty))
        if n_train < 2:
            raise DataError(f"The {arm} arm has {n_train} training images; need 2+.")

    budget = {} if steps is None else {"steps": int(steps)}  # None: the config's default
    config = GANConfig.for_data(
        dirty.image_shape, k, device=dev, seed=seed, **budget, **(gan_options or {})
    )
    # the same latents for every arm: evaluation set, CAS set and grid columns
    z_rng = torch.Generator().manual_seed(seed + 7)
    z_eval = torch.randn(len(real_y), config.z_dim, generator=z_rng)
    cas_labels = _stratified_labels(judge_train.labels, len(judge_train), seed)
    z_cas = torch.randn(len(cas_labels), config.z_dim, generator=z_rng)
    z_grid = torch.randn(grid_columns, config.z_dim, generator=z_rng)
    _save_npz(
        out_dir / "plan.npz",
        judge_train=split.judge_train,
        judge_test=split.judge_test,
        z_eval=z_eval.numpy(),
        z_cas=z_cas.numpy(),
        cas_labels=cas_labels,
        z_grid=z_grid.numpy(),
        transition=np.zeros((0, 0)) if transition is None else transition,
    )
    plan = {
        "arms": run_arms,
        "skipped": skipped,
        "reference": reference,
        "judge": {
            "accuracy": judge_acc,
            "train_accuracy": judge.train_accuracy_,
            "seconds": judge.seconds_,
            "config": judge.config_.to_dict(),
        },
        "split": split.to_dict(),
        "gan_config": config.to_dict(),
        "gan_options": dict(gan_options or {}),
        "grid_columns": int(grid_columns),
        "class_names": list(dirty.class_names),
        "has_vae": vae_dir is not None,
        "device": str(dev),
        "seed": int(seed),
        "train_seeds": [int(seed) + SEED_STRIDE * i for i in range(int(seeds))],
        "steps": int(config.steps),
        "seconds": time.perf_counter() - t_start,
    }
    atomic.write_json(out_dir / "plan.json", plan)
    return plan


def _read_plan(plan_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import json

    plan = json.loads((plan_dir / "plan.json").read_text())
    with np.load(plan_dir / "plan.npz", allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    return plan, arrays


def train_arm(
    arm: str,
    dirty: Dataset,
    cleaned: Dataset,
    *,
    plan_dir: str | Path,
    out_dir: str | Path,
    steps: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and score one arm of a plan written by :func:`prepare_comparison`.

    Every training seed of the plan is trained side by side (threads; on CPU one torch
    thread each) and scored on the same latents; the first seed's networks give the
    sample grid and the checkpoint. Writes ``metrics.json`` (this arm's metrics: means over
    seeds, the per-seed values and their intervals), ``samples_<arm>.png``, ``grid.npy``,
    ``losses.csv`` (first seed) and ``checkpoints/<arm>.pt`` to ``out_dir``; returns the
    metrics. ``seed`` and ``steps`` (when given) must be the plan's (they are checked).
    """
    import torch

    from assay.models.device import pick_device
    from assay.models.gan import GANConfig
    from assay.models.judge import Judge
    from assay.models.threads import side_by_side
    from assay.pipeline import evaluate

    plan_dir, out_dir = Path(plan_dir), Path(out_dir)
    plan, arrays = _read_plan(plan_dir)
    if arm not in plan["arms"]:
        raise DataError(f"The plan in {plan_dir} has no arm {arm!r}; it has {plan['arms']}.")
    if (steps is not None and int(steps) != plan["steps"]) or int(seed) != plan["seed"]:
        raise DataError(
            f"The plan in {plan_dir} was made for steps={plan['steps']}, seed={plan['seed']}; "
            f"got steps={steps}, seed={seed}."
        )
    _check_pair(dirty, cleaned)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = _sayer(progress, log)
    dev = pick_device(device)
    k = dirty.n_classes
    split = TrustedSplit(arrays["judge_train"], arrays["judge_test"], plan["split"]["source"],
                         plan["split"]["pool_size"])  # fmt: skip
    judge_test = split.test_set(dirty)
    real_y = judge_test.labels
    data = split.exclude(cleaned if arm == "clean" else dirty)
    train_seeds = [int(s) for s in plan.get("train_seeds", [plan["seed"]])]
    judge = Judge.load(plan_dir / "judge.pt", device=dev)
    cols = int(plan["grid_columns"])
    job = _ArmJob(
        arm=arm, data=data, judge_test=judge_test, judge=judge, arrays=arrays, device=dev,
        transition=arrays["transition"] if arm == "noise_aware" else None,
        vae_dir=plan_dir / "vae" if plan["has_vae"] else None,
        n_classes=k, grid_labels=np.repeat(np.arange(k), cols),
        z_grid=torch.from_numpy(arrays["z_grid"]).repeat(k, 1),  # row i, column j: latent j
        out_dir=out_dir, progress=progress, log=log,
    )  # fmt: skip
    configs = [
        GANConfig.for_data(
            dirty.image_shape,
            k,
            device=dev,
            steps=int(plan["steps"]),
            seed=s,
            **plan["gan_options"],
        )
        for s in train_seeds
    ]
    t0 = time.perf_counter()
    results = side_by_side([lambda c=c, i=i: job.run(c, i) for i, c in enumerate(configs)])
    wall = time.perf_counter() - t0
    first = results[0]
    scores = [r.scores for r in results]
    per_seed = {
        name: [sc.metrics.get(name) for sc in scores]
        for name in SEEDED_METRICS
        if name in scores[0].metrics
    }
    real_f = judge.features(judge_test.images)
    boot_seed = int(plan["seed"])
    boots: dict[str, np.ndarray | None] = {
        "label_accuracy": evaluate.bootstrap_accuracy(
            np.stack([sc.correct for sc in scores]), seed=boot_seed
        ),
        "cas": evaluate.bootstrap_accuracy(
            np.stack([sc.cas_correct for sc in scores]), seed=boot_seed
        ),
        "fid": evaluate.bootstrap_fid(real_f, [sc.fake_features for sc in scores], seed=boot_seed),
    }
    m: dict[str, Any] = {
        name: (None if any(evaluate.is_missing(v) for v in vals) else float(np.mean(vals)))
        for name, vals in per_seed.items()
    }
    kid_stds = [sc.metrics.get("kid_std") for sc in scores]
    m["kid_std"] = None if any(v is None for v in kid_stds) else float(np.mean(kid_stds))
    m["uncertainty"] = {
        name: evaluate.metric_interval(vals, boots.get(name)) for name, vals in per_seed.items()
    }
    m["seed_metrics"] = per_seed
    m["n_judged"] = len(real_y)
    trainer = first.trainer
    hist = trainer.history_
    images = sum(r.trainer.steps_ * trainer.config.n_dis * r.trainer.batch_size_ for r in results)
    m.update(
        seeds=train_seeds,
        steps=int(configs[0].steps),
        seconds=float(wall),
        seconds_per_seed=[float(r.trainer.seconds_) for r in results],
        images_per_second=float(images / max(wall, 1e-9)),
        device=str(trainer.device_),
        batch_size=int(trainer.batch_size_),
        n_train=len(data),
        train_label_noise=_label_noise_share(data),
        final_loss_d=float(hist["loss_d"].iloc[-1]),
        final_loss_g=float(hist["loss_g"].iloc[-1]),
        samples_png=f"samples_{arm}.png",
        checkpoint=f"checkpoints/{arm}.pt",
    )
    atomic.write_text(out_dir / "losses.csv", hist.to_csv(index=False))
    path = out_dir / artifacts.GAN_METRICS
    atomic.write_json(path, artifacts.to_json(artifacts.GanArmMetrics, m, source=path))
    la = m["uncertainty"]["label_accuracy"]

    def value(name: str, digits: int) -> str:
        return "n/a" if m[name] is None else f"{m[name]:.{digits}f}"

    say(
        f"[gan] {arm}: label accuracy {m['label_accuracy']:.3f} ± {la['half_width']:.3f} "
        f"({len(train_seeds)} seed(s)), FID {value('fid', 2)}, CAS {value('cas', 3)}, "
        f"precision {value('precision', 2)}, recall {value('recall', 2)}, {wall:.0f}s, "
        f"{m['images_per_second']:.0f} img/s"
    )
    return m


@dataclass
class _SeedResult:
    trainer: Any
    scores: Any


@dataclass
class _ArmJob:
    """What every training seed of one arm shares; :meth:`run` trains and scores one."""

    arm: str
    data: Dataset
    judge_test: Dataset
    judge: Any
    arrays: dict[str, np.ndarray]
    device: Any
    transition: np.ndarray | None
    vae_dir: Path | None
    n_classes: int
    grid_labels: np.ndarray
    z_grid: Any
    out_dir: Path
    progress: bool
    log: Callable[[str], None] | None

    def run(self, config: Any, index: int) -> _SeedResult:
        import torch

        from assay.models.gan import GANTrainer
        from assay.pipeline import evaluate

        first = index == 0
        name = self.arm if first else f"{self.arm}/seed{config.seed}"
        trainer = GANTrainer(
            config, device=self.device, progress=self.progress and first, log=self.log,
            name=name,
        )  # fmt: skip
        checkpoint = self.out_dir / "checkpoints" / f"{self.arm}.pt"
        trainer.fit(self.data.images, self.data.labels, transition=self.transition,
                    on_checkpoint=(lambda t: _write_model(t, checkpoint)) if first
                    else None)  # fmt: skip
        real_x, real_y = self.judge_test.images, self.judge_test.labels
        fake = trainer.sample(real_y, z=torch.from_numpy(self.arrays["z_eval"]))
        cas_labels = self.arrays["cas_labels"]
        cas_x = trainer.sample(cas_labels, z=torch.from_numpy(self.arrays["z_cas"]))
        scores = evaluate.score_samples(
            self.judge, real_x, real_y, fake, real_y, cas_images=cas_x, cas_labels=cas_labels,
            vae_dir=self.vae_dir, seed=config.seed,
        )  # fmt: skip
        if first:
            grid = grid_image(
                trainer.sample(self.grid_labels, z=self.z_grid),
                self.n_classes,
                len(self.grid_labels) // self.n_classes,
            )
            h, w = self.data.image_shape[:2]
            atomic.write_bytes(self.out_dir / artifacts.GAN_SAMPLES.format(arm=self.arm),
                               png_bytes(grid, min_cell=56, cell=max(h, w)))  # fmt: skip
            buf = io.BytesIO()
            np.save(buf, grid, allow_pickle=False)
            atomic.write_bytes(self.out_dir / "grid.npy", buf.getvalue())
        return _SeedResult(trainer, scores)


def finish_comparison(
    plan_dir: str | Path, arm_dirs: dict[str, str | Path], *, out_dir: str | Path
) -> dict[str, Any]:
    """Gather a plan and its trained arms into the ``gan/`` folder; returns ``metrics.json``."""
    import json

    plan_dir, out_dir = Path(plan_dir), Path(out_dir)
    plan, arrays = _read_plan(plan_dir)
    missing = [a for a in plan["arms"] if a not in arm_dirs]
    if missing:
        raise DataError(f"No trained result for arm(s) {missing} of the plan in {plan_dir}.")
    arms = [a for a in plan["arms"] if a in arm_dirs]
    results: dict[str, dict[str, Any]] = {}
    grids: dict[str, np.ndarray] = {}
    histories: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {"judge": "judge.pt"}
    atomic.write_bytes(out_dir / "judge.pt", (plan_dir / "judge.pt").read_bytes())
    for arm in arms:
        src = Path(arm_dirs[arm])
        results[arm] = json.loads((src / artifacts.GAN_METRICS).read_text())
        grids[arm] = np.load(src / "grid.npy", allow_pickle=False)
        histories[arm] = pd.read_csv(src / "losses.csv")
        png = artifacts.GAN_SAMPLES.format(arm=arm)
        atomic.write_bytes(out_dir / png, (src / png).read_bytes())
        ckpt = f"checkpoints/{arm}.pt"
        atomic.write_bytes(out_dir / ckpt, (src / ckpt).read_bytes())
        files[f"samples_{arm}"] = png

    atomic.write_bytes(out_dir / "comparison.png",
                       comparison_png(grids, results, plan["class_names"]))  # fmt: skip
    atomic.write_bytes(out_dir / artifacts.GAN_LOSS_CURVES, loss_curves_png(histories))
    losses = pd.concat(
        [frame.assign(arm=arm) for arm, frame in histories.items()], ignore_index=True
    )
    losses = losses[["arm", *[c for c in losses.columns if c != "arm"]]]
    atomic.write_text(out_dir / "losses.csv", losses.to_csv(index=False))
    atomic.write_json(
        out_dir / "losses.json",
        {arm: {c: frame[c].tolist() for c in frame.columns} for arm, frame in histories.items()},
    )
    files.update(
        comparison="comparison.png",
        loss_curves=artifacts.GAN_LOSS_CURVES,
        losses_csv="losses.csv",
        losses_json="losses.json",
    )
    transition = arrays["transition"]
    metrics: dict[str, Any] = {
        "arms": results,
        "arms_run": arms,
        "skipped": plan["skipped"],
        "reference": plan["reference"],
        "judge": plan["judge"],
        "split": plan["split"],
        "gan_config": plan["gan_config"],
        "transition": np.round(transition, 6).tolist() if transition.size else None,
        "device": plan["device"],
        "seed": plan["seed"],
        "train_seeds": plan.get("train_seeds", [plan["seed"]]),
        "steps": plan["steps"],
        "seconds_total": plan["seconds"] + sum(float(r["seconds"]) for r in results.values()),
        "files": files,
    }
    path = out_dir / artifacts.GAN_METRICS
    metrics = artifacts.to_json(artifacts.GanMetrics, metrics, source=path)
    atomic.write_json(path, metrics)
    return metrics
