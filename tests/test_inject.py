"""Tests for pipeline.inject: exact counts, ground truth that matches the arrays,
label-noise modes, reproducibility, configs and presets, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn.datasets import load_digits

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.inject import (
    CORRUPTED_KINDS,
    CORRUPTION_KINDS,
    KINDS,
    PRESETS,
    RATE_FIELDS,
    InjectionConfig,
    ground_truth,
    inject,
    resolve,
)

DIGIT_NAMES = [str(i) for i in range(10)]
EVERY_KIND = {name: 0.02 for name in RATE_FIELDS.values()}  # 11 kinds, 22 % in all


@pytest.fixture(scope="module")
def digits() -> Dataset:
    d = load_digits()
    images = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)
    return Dataset.create(images, d.target, DIGIT_NAMES, meta={"source": "digits"})


def synthetic(shape: tuple[int, ...], n: int = 200, k: int = 4, seed: int = 0) -> Dataset:
    """Random blobs on a dark background, ``k`` classes named without digits."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(n, *shape)).astype(np.uint8)
    h, w = shape[0], shape[1]
    images[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += 180
    labels = np.arange(n) % k
    names = [f"class-{c}" for c in "abcdefghij"[:k]]
    return Dataset.create(images, labels, names)


def by_kind(ds: Dataset) -> dict[str, np.ndarray]:
    injected = ds.columns["injected"].to_numpy()
    return {kind: np.flatnonzero(injected == kind) for kind in KINDS}


# --------------------------------------------------------------------------- counts
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_give_exact_counts(digits: Dataset, preset: str) -> None:
    n = len(digits)
    out = inject(digits, preset, seed=1)
    config = PRESETS[preset]
    expected = {kind: math.floor(config.rates()[kind] * n + 0.5) for kind in KINDS[1:]}
    rows = by_kind(out)
    assert {kind: rows[kind].size for kind in KINDS[1:]} == expected
    assert out.meta["injection"]["counts"] == expected
    assert out.meta["injection"]["preset"] == preset
    n_dup = expected["exact_duplicate"] + expected["near_duplicate"]
    assert len(out) == n + n_dup
    assert rows["clean"].size == n - sum(expected.values()) + n_dup
    # every touched original is touched by one kind only; duplicates come from distinct
    # clean originals
    gt = ground_truth(out)
    sources = gt.loc[gt.is_duplicate, "duplicate_source"].to_numpy()
    assert np.unique(sources).size == sources.size
    src_kinds = gt.set_index("sample_id").loc[sources, "injected"]
    assert (src_kinds == "clean").all()


def test_counts_round_half_up_and_allow_total_one() -> None:
    cfg = InjectionConfig(label_noise=0.25, blank=0.25, inverted=0.25, exact_duplicates=0.25)
    assert cfg.counts(10)["label_noise"] == 3  # 2.5 -> 3
    ds = synthetic((8, 8), n=12)
    out = inject(ds, cfg, seed=0)
    rows = by_kind(out)
    assert [rows[k].size for k in ("label_noise", "blank", "inverted", "exact_duplicate")] == [
        3,
        3,
        3,
        3,
    ]
    assert rows["clean"].size == 3  # only the duplicates' sources stay clean


def test_rate_of_zero_injects_nothing(digits: Dataset) -> None:
    out = inject(digits, InjectionConfig(), seed=0)
    assert len(out) == len(digits)
    assert (out.columns["injected"] == "clean").all()
    np.testing.assert_array_equal(out.images, digits.images)
    np.testing.assert_array_equal(out.columns["true_label"], digits.labels)
    assert (out.columns["duplicate_source"] == -1).all()


# --------------------------------------------------------------------------- ground truth
def test_ground_truth_matches_the_arrays(digits: Dataset) -> None:
    out = inject(digits, EVERY_KIND, seed=7)
    n = len(digits)
    rows = by_kind(out)
    orig = digits.images.astype(np.int64)
    new = out.images.astype(np.int64)
    true = out.columns["true_label"].to_numpy()
    source = out.columns["duplicate_source"].to_numpy()
    assert out.columns["true_label"].dtype == np.int64
    assert out.columns["duplicate_source"].dtype == np.int64

    # the originals keep their ids and positions
    np.testing.assert_array_equal(out.sample_ids[:n], digits.sample_ids)
    originals = np.arange(n)

    clean = np.intersect1d(rows["clean"], originals)
    np.testing.assert_array_equal(new[clean], orig[clean])
    np.testing.assert_array_equal(out.labels[clean], digits.labels[clean])

    ln = rows["label_noise"]
    assert np.all(out.labels[ln] != true[ln])
    np.testing.assert_array_equal(true[ln], digits.labels[ln])
    np.testing.assert_array_equal(new[ln], orig[ln])

    for kind in CORRUPTION_KINDS:
        idx = rows[kind]
        assert idx.size == round(0.02 * n)
        np.testing.assert_array_equal(out.labels[idx], digits.labels[idx])
        np.testing.assert_array_equal(true[idx], digits.labels[idx])
        assert np.all(np.any((new[idx] != orig[idx]).reshape(idx.size, -1), axis=1)), kind

    blank = new[rows["blank"]].reshape(rows["blank"].size, -1)
    assert np.all(blank == blank[:, :1])
    np.testing.assert_array_equal(new[rows["inverted"]], 255 - orig[rows["inverted"]])

    sp = rows["salt_pepper"]
    changed = new[sp] != orig[sp]
    assert np.all(np.isin(new[sp][changed], [0, 255]))

    bl = rows["blur"]
    tv_before = np.abs(np.diff(orig[bl], axis=2)).sum(axis=(1, 2))
    tv_after = np.abs(np.diff(new[bl], axis=2)).sum(axis=(1, 2))
    assert np.all(tv_after < tv_before)

    for i in rows["occlusion"]:  # one flat 0 or 255 rectangle covers every change
        ys, xs = np.nonzero(new[i] != orig[i])
        patch = new[i, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert np.all(patch == patch.flat[0]) and patch.flat[0] in (0, 255)

    ood = rows["ood"]
    assert np.all(true[ood] == -1)
    assert np.all((out.labels[ood] >= 0) & (out.labels[ood] < 10))

    assert np.all(source[:n] == -1)
    ex, near = rows["exact_duplicate"], rows["near_duplicate"]
    assert ex.min() >= n and near.min() >= n
    assert out.sample_ids[n:].min() == digits.sample_ids.max() + 1
    np.testing.assert_array_equal(out.images[ex], digits.images[source[ex]])
    for idx in (ex, near):
        np.testing.assert_array_equal(out.labels[idx], digits.labels[source[idx]])
        np.testing.assert_array_equal(true[idx], digits.labels[source[idx]])
    diff = np.abs(new[near] - orig[source[near]])
    assert np.all(diff.reshape(near.size, -1).max(axis=1) > 0)  # never byte-equal
    # close: a one-pixel shift of the source, or mild noise
    for i in near:
        src = orig[source[i]]
        padded = np.pad(src, 1, mode="edge")
        shifts = [
            padded[1 - dy : 1 - dy + 8, 1 - dx : 1 - dx + 8]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        is_shift = any(np.array_equal(new[i], s) for s in shifts)
        assert is_shift or np.abs(new[i] - src).max() <= 30


def test_ground_truth_table(digits: Dataset) -> None:
    out = inject(digits, EVERY_KIND, seed=3)
    gt = ground_truth(out)
    assert list(gt.columns[:5]) == [
        "sample_id",
        "label",
        "injected",
        "true_label",
        "duplicate_source",
    ]
    assert len(gt) == len(out)
    np.testing.assert_array_equal(gt["sample_id"], out.sample_ids)
    counts = out.meta["injection"]["counts"]
    assert gt.is_label_noise.sum() == counts["label_noise"]
    assert gt.is_corrupted.sum() == sum(counts[k] for k in CORRUPTED_KINDS)
    assert gt.is_ood.sum() == counts["ood"]
    assert gt.is_duplicate.sum() == counts["exact_duplicate"] + counts["near_duplicate"]
    assert gt.is_dirty.sum() == sum(counts.values())
    assert (gt.loc[gt.is_label_noise, "label"] != gt.loc[gt.is_label_noise, "true_label"]).all()
    with pytest.raises(DataError, match="no injection ground truth"):
        ground_truth(digits)


def test_meta_records_config_seed_and_counts(digits: Dataset) -> None:
    out = inject(digits, "mixed-mild", seed=5)
    record = out.meta["injection"]
    assert record["seed"] == 5
    assert record["config"] == PRESETS["mixed-mild"].to_dict()
    assert record["n_original"] == len(digits) and record["n_total"] == len(out)
    assert sum(record["ood_styles"].values()) == record["counts"]["ood"]
    assert out.meta["source"] == "digits"
    json.dumps(record)  # serialisable as is
    assert InjectionConfig.from_dict(record["config"]) == PRESETS["mixed-mild"]


# --------------------------------------------------------------------------- label noise
def test_symmetric_noise_goes_to_a_uniform_other_class(digits: Dataset) -> None:
    out = inject(digits, "labels-50", seed=11)
    idx = by_kind(out)["label_noise"]
    true = out.columns["true_label"].to_numpy()[idx]
    noisy = out.labels[idx]
    assert np.all(noisy != true)
    # offset (noisy - true) mod K is uniform over 1..K-1: about 100 each of 899
    offsets = np.bincount((noisy - true) % 10, minlength=10)
    assert offsets[0] == 0
    assert offsets[1:].min() > 60 and offsets[1:].max() < 140
    dest = np.bincount(noisy, minlength=10)
    assert dest.min() > 55 and dest.max() < 125


def test_asymmetric_follows_the_default_digit_pairs(digits: Dataset) -> None:
    out = inject(digits, "labels-asym-20", seed=2)
    idx = by_kind(out)["label_noise"]
    assert idx.size == round(0.2 * len(digits))
    pairs = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
    true = out.columns["true_label"].to_numpy()[idx]
    assert set(np.unique(true)) <= set(pairs)
    np.testing.assert_array_equal(out.labels[idx], [pairs[t] for t in true])


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([["class-a", "class-c"], ["class-b", "class-a"]], {0: 2, 1: 0}),
        ([[3, 1]], {3: 1}),
        ({"class-d": "class-b"}, {3: 1}),
        (None, {0: 1, 1: 2, 2: 3, 3: 0}),  # no digit names: the cycle i -> i + 1
    ],
)
def test_asymmetric_custom_pairs(pairs: object, expected: dict[int, int]) -> None:
    ds = synthetic((8, 8), n=400, k=4)
    cfg = {"label_noise": 0.2, "label_noise_mode": "asymmetric", "pairs": pairs}
    out = inject(ds, cfg, seed=0)
    idx = by_kind(out)["label_noise"]
    assert idx.size == 80
    true = out.columns["true_label"].to_numpy()[idx]
    np.testing.assert_array_equal(out.labels[idx], [expected[t] for t in true])
    assert set(np.unique(true)) == set(expected)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".json"])
def test_matrix_mode_follows_a_permutation(digits: Dataset, tmp_path, suffix: str) -> None:
    perm = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0])
    matrix = np.eye(10)[perm]  # row i: all mass on perm[i]
    path = tmp_path / f"t{suffix}"
    if suffix == ".npy":
        np.save(path, matrix)
    elif suffix == ".csv":
        np.savetxt(path, matrix, delimiter=",")
    else:
        path.write_text(json.dumps({"matrix": matrix.tolist()}))
    cfg = InjectionConfig(label_noise=0.3, label_noise_mode="matrix", transition_matrix=path)
    out = inject(digits, cfg, seed=4)
    idx = by_kind(out)["label_noise"]
    assert idx.size == round(0.3 * len(digits))
    true = out.columns["true_label"].to_numpy()[idx]
    np.testing.assert_array_equal(out.labels[idx], perm[true])


def test_matrix_mode_leaves_diagonal_rows_alone_and_weights_rows() -> None:
    ds = synthetic((8, 8), n=800, k=4)
    matrix = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],  # class 0 never flipped
            [0.0, 0.4, 0.6, 0.0],  # class 1 flips 3x as often as class 2, always to 2
            [0.0, 0.0, 0.8, 0.2],
            [0.5, 0.0, 0.5, 0.0],  # class 3 flips, to 0 or 2
        ]
    )
    cfg = {"label_noise": 0.1, "label_noise_mode": "matrix", "transition_matrix": matrix}
    out = inject(ds, cfg, seed=9)
    idx = by_kind(out)["label_noise"]
    true = out.columns["true_label"].to_numpy()[idx]
    noisy = out.labels[idx]
    assert 0 not in true
    assert np.all(noisy[true == 1] == 2) and np.all(noisy[true == 2] == 3)
    assert set(np.unique(noisy[true == 3])) == {0, 2}
    assert (true == 1).sum() > 1.5 * (true == 2).sum()


# --------------------------------------------------------------------------- reproducible
def test_same_seed_same_bytes_other_seed_other_bytes(digits: Dataset) -> None:
    a = inject(digits, "mixed-heavy", seed=3)
    b = inject(digits, "mixed-heavy", seed=3)
    c = inject(digits, "mixed-heavy", seed=4)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.content_hash() == b.content_hash()
    pd.testing.assert_frame_equal(a.manifest(), b.manifest())
    assert a.content_hash() != c.content_hash()
    assert not a.manifest()["injected"].equals(c.manifest()["injected"])


def test_input_is_not_mutated(digits: Dataset) -> None:
    ds = digits.with_columns(note=np.arange(len(digits)))
    before = (ds.images.copy(), ds.labels.copy(), ds.sample_ids.copy(), ds.columns.copy())
    meta = json.dumps(ds.meta, sort_keys=True)
    out = inject(ds, EVERY_KIND, seed=0)
    np.testing.assert_array_equal(ds.images, before[0])
    np.testing.assert_array_equal(ds.labels, before[1])
    np.testing.assert_array_equal(ds.sample_ids, before[2])
    pd.testing.assert_frame_equal(ds.columns, before[3])
    assert json.dumps(ds.meta, sort_keys=True) == meta
    assert not np.shares_memory(out.images, ds.images)
    # extra columns are carried over, and copied onto duplicates
    source = out.columns["duplicate_source"].to_numpy()
    dup = source >= 0
    np.testing.assert_array_equal(out.columns["note"].to_numpy()[dup], source[dup])


def test_sparse_sample_ids_and_second_injection(digits: Dataset) -> None:
    ds = digits.subset(np.arange(0, 600))
    ds = Dataset.create(ds.images, ds.labels, ds.class_names, sample_ids=np.arange(600) * 7 + 3)
    once = inject(ds, "mixed-mild", seed=0)
    assert once.sample_ids[600:].min() == 599 * 7 + 3 + 1
    twice = inject(once, {"blank": 0.05}, seed=1)
    first, second = ground_truth(once), ground_truth(twice)
    assert len(twice) == len(once)
    # earlier dirt is kept; only samples still clean were eligible
    dirty_before = first.is_dirty.to_numpy()
    np.testing.assert_array_equal(second.injected[dirty_before], first.injected[dirty_before])
    np.testing.assert_array_equal(second.true_label, first.true_label)
    np.testing.assert_array_equal(second.duplicate_source, first.duplicate_source)
    newly = (second.injected == "blank").to_numpy() & ~dirty_before
    assert newly.sum() == round(0.05 * len(once)) == twice.meta["injection"]["counts"]["blank"]
    assert twice.meta["injection"]["previous"] == once.meta["injection"]


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("shape", [(8, 8), (13, 17), (28, 28), (64, 64), (16, 16, 3), (8, 8, 1)])
def test_every_kind_works_on_any_shape(shape: tuple[int, ...]) -> None:
    ds = synthetic(shape, n=120)
    out = inject(ds, {name: 0.04 for name in RATE_FIELDS.values()}, seed=0)
    rows = by_kind(out)
    assert out.images.shape[1:] == shape and out.images.dtype == np.uint8
    assert all(rows[kind].size == 5 for kind in KINDS[1:])
    orig = ds.images.astype(np.int64)
    np.testing.assert_array_equal(out.images[rows["inverted"]], 255 - orig[rows["inverted"]])
    blank = out.images[rows["blank"]].reshape(5, -1)
    assert np.all(blank == blank[:, :1])
    source = out.columns["duplicate_source"].to_numpy()
    ex, near = rows["exact_duplicate"], rows["near_duplicate"]
    np.testing.assert_array_equal(out.images[ex], ds.images[source[ex]])
    assert all(not np.array_equal(out.images[i], ds.images[source[i]]) for i in near)
    for kind in (*CORRUPTION_KINDS, "ood"):
        idx = rows[kind]
        assert all(not np.array_equal(out.images[i], orig[i]) for i in idx), kind


def test_ood_images_are_varied_and_unlike_the_data(digits: Dataset) -> None:
    out = inject(digits, {"ood": 0.05}, seed=0)
    idx = by_kind(out)["ood"]
    assert len(out.meta["injection"]["ood_styles"]) >= 3
    flat = out.images[idx].reshape(idx.size, -1).astype(np.float64)
    assert np.unique(flat, axis=0).shape[0] == idx.size
    # farther from the class means than the real digits are
    data = digits.images.reshape(len(digits), -1).astype(np.float64)
    means = np.stack([data[digits.labels == c].mean(0) for c in range(10)])
    dist = lambda x: np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1)).min(1)  # noqa: E731
    assert np.median(dist(flat)) > np.median(dist(data))


def test_blur_matches_a_gaussian_filter() -> None:
    ds = synthetic((28, 28), n=50)
    out = inject(ds, {"blur": 0.1}, seed=0)
    idx = by_kind(out)["blur"]
    sigma = 28 / 9.0
    expected = ndimage.gaussian_filter(
        ds.images[idx].astype(np.float32), sigma=(0, sigma, sigma), mode="nearest"
    )
    np.testing.assert_array_equal(out.images[idx], np.clip(np.rint(expected), 0, 255))


# --------------------------------------------------------------------------- configs
def test_resolve_accepts_every_form(tmp_path) -> None:
    assert resolve("labels-20") is PRESETS["labels-20"]
    cfg = InjectionConfig(blur=0.1)
    assert resolve(cfg) is cfg
    assert resolve({"preset": "labels-20", "blur": 0.01}) == InjectionConfig(
        label_noise=0.2, blur=0.01
    )
    np.save(tmp_path / "perm.npy", np.eye(3)[[1, 2, 0]])
    (tmp_path / "c.json").write_text(
        json.dumps(
            {"label_noise": 0.1, "label_noise_mode": "matrix", "transition_matrix": "perm.npy"}
        )
    )
    from_json = resolve(tmp_path / "c.json")
    assert from_json.transition_matrix == str(tmp_path / "perm.npy")
    np.testing.assert_array_equal(from_json.matrix, np.eye(3)[[1, 2, 0]])
    (tmp_path / "c.toml").write_text(
        '[injection]\nlabel_noise = 0.1\nlabel_noise_mode = "asymmetric"\n'
        'pairs = [["0", "1"], [1, 0]]\nood = 0.02\n'
    )
    from_toml = resolve(str(tmp_path / "c.toml"))
    assert from_toml.pairs == (("0", "1"), (1, 0)) and from_toml.ood == 0.02
    assert hash(from_toml) == hash(resolve(str(tmp_path / "c.toml")))


def test_presets_are_sensible() -> None:
    required = {
        "labels-10",
        "labels-20",
        "labels-30",
        "labels-50",
        "labels-asym-20",
        "corrupt-5",
        "duplicates-5",
        "mixed-mild",
        "mixed-heavy",
    }
    assert required <= set(PRESETS)
    assert PRESETS["labels-30"].label_noise == 0.3
    assert PRESETS["labels-asym-20"].label_noise_mode == "asymmetric"
    corrupt = PRESETS["corrupt-5"].rates()
    assert math.isclose(sum(corrupt[k] for k in CORRUPTED_KINDS), 0.05)
    assert all(corrupt[k] > 0 for k in CORRUPTED_KINDS)
    dup = PRESETS["duplicates-5"]
    assert math.isclose(dup.exact_duplicates + dup.near_duplicates, 0.05)
    mild, heavy = PRESETS["mixed-mild"], PRESETS["mixed-heavy"]
    assert mild.label_noise < heavy.label_noise and mild.total_rate < heavy.total_rate


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"label_noise": 1.5}, r"`label_noise` must be in \[0, 1\)\. Got 1\.5 instead\."),
        ({"blur": -0.1}, r"`blur` must be in \[0, 1\)\. Got -0\.1 instead\."),
        ({"ood": 1.0}, r"`ood` must be in \[0, 1\)\. Got 1\.0 instead\."),
        ({"blank": float("nan")}, r"`blank` must be in \[0, 1\)\. Got nan instead\."),
        ({"inverted": "0.1"}, r"`inverted` must be in \[0, 1\)\. Got '0\.1' instead\."),
        ({"exact_duplicates": True}, r"`exact_duplicates` must be in \[0, 1\)"),
        ({"label_noise": 0.6, "blank": 0.5}, r"must sum to at most 1\. Got 1\.1 instead\."),
        ({"label_noise_mode": "random"}, r"`label_noise_mode` must be one of 'symmetric'"),
        (
            {"noise": 0.1},
            r"Unknown injection config key\(s\) \['noise'\]; valid keys .*"
            r"label_noise",
        ),
        (
            {"preset": "labels-99"},
            r"Unknown injection preset 'labels-99'; valid presets .*"
            r"labels-20",
        ),
        ({"label_noise": 0.1, "label_noise_mode": "matrix"}, r"needs `transition_matrix`"),
        ({"transition_matrix": [[0, 1], [1, 0]]}, r"only used with label_noise_mode='matrix'"),
        ({"pairs": [[1, 2]]}, r"only used with label_noise_mode='asymmetric'"),
        ({"label_noise_mode": "asymmetric", "pairs": [[1, 2, 3]]}, r"\(source, target\) pairs"),
        (
            {"label_noise_mode": "matrix", "transition_matrix": [[0.5, 0.6], [1, 0]]},
            r"Row 0 sums to 1\.1 instead",
        ),
        (
            {"label_noise_mode": "matrix", "transition_matrix": [[1.5, -0.5], [0, 1]]},
            r"must be non-negative",
        ),
        (
            {"label_noise_mode": "matrix", "transition_matrix": [[1, 0, 0], [0, 1, 0]]},
            r"must be square K x K",
        ),
        (
            {"label_noise_mode": "matrix", "transition_matrix": "missing.npy"},
            r"missing\.npy: transition matrix file not found",
        ),
    ],
)
def test_bad_configs_are_refused(config: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        resolve(config)


@pytest.mark.parametrize(
    ("config", "seed", "match"),
    [
        ("labels-99", 0, r"Unknown injection preset 'labels-99'; valid presets are none, "),
        ({"label_noise": 0.1}, -1, r"`seed` must be a non-negative integer\. Got -1 instead\."),
        ({"label_noise": 0.1}, 1.5, r"`seed` must be a non-negative integer"),
        (
            {"label_noise": 0.1, "label_noise_mode": "matrix", "transition_matrix": np.eye(3)},
            0,
            r"must be 10 x 10 for this dataset's 10 classes\. Got 3 x 3 instead\.",
        ),
        (
            {"label_noise": 0.1, "label_noise_mode": "matrix", "transition_matrix": np.eye(10)},
            0,
            r"only 0 samples belong to classes that mode 'matrix' can flip",
        ),
        (
            {"label_noise": 0.5, "label_noise_mode": "asymmetric", "pairs": [["1", "7"]]},
            0,
            r"asks for 899 flipped labels but only 182 samples",
        ),
        (
            {"label_noise": 0.1, "label_noise_mode": "asymmetric", "pairs": [["x", "1"]]},
            0,
            r"`pairs` names class 'x', which is not a class of this dataset",
        ),
        (
            {"label_noise": 0.1, "label_noise_mode": "asymmetric", "pairs": [[3, 3]]},
            0,
            r"`pairs` maps a class to itself",
        ),
        (
            {"label_noise": 0.1, "label_noise_mode": "asymmetric", "pairs": [[3, 1], [3, 2]]},
            0,
            r"more than one target",
        ),
        (
            {"label_noise": 0.1, "label_noise_mode": "asymmetric", "pairs": [[3, 10]]},
            0,
            r"class index 10; expected 0\.\.9",
        ),
    ],
)
def test_bad_injections_are_refused(digits: Dataset, config, seed, match: str) -> None:
    with pytest.raises(DataError, match=match):
        inject(digits, config, seed=seed)


def test_unknown_preset_or_file_and_too_much_for_a_second_pass(digits: Dataset, tmp_path) -> None:
    with pytest.raises(DataError, match=r"valid presets are .*mixed-heavy"):
        resolve("nonsense")
    with pytest.raises(DataError, match=r"nope\.toml: injection config file not found"):
        resolve(tmp_path / "nope.toml")
    bad = tmp_path / "bad.json"
    bad.write_text('{"label_noise": 2}')
    with pytest.raises(DataError, match=r"bad\.json: `label_noise` must be in \[0, 1\)"):
        resolve(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("label_noise = [")
    with pytest.raises(DataError, match=r"broken\.toml: could not read the injection config"):
        resolve(broken)
    with pytest.raises(DataError, match="Label noise needs at least 2 classes"):
        one_class = Dataset.create(digits.images[:20], np.zeros(20, dtype=np.int64), ["only"])
        inject(one_class, {"label_noise": 0.1})
    once = inject(digits, {"label_noise": 0.9}, seed=0)
    with pytest.raises(DataError, match=r"needs 182 distinct samples but only 180 clean"):
        inject(once, {"blank": 0.1, "inverted": 0.001}, seed=0)
