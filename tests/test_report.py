"""Tests of the HTML report: built from hand-made run folders written file by file."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from assay.pipeline.report import compute_verdict, detection_metrics, figures, render_report

EVIL = "<script>alert(1)</script>"
CLASS_NAMES = ["zero", "one", "two", "three", EVIL, "five", "six", "seven", "eight", "nine"]
ARMS = ("dirty", "clean", "noise_aware")


# ============================================================================ run-folder builder
def _strokes(labels: np.ndarray, *, hw: int, rng: np.random.Generator) -> np.ndarray:
    """``(N, hw, hw)`` uint8: class ``c`` is a bright line at angle ``18 * c`` degrees."""
    n = labels.size
    yy, xx = np.mgrid[0:hw, 0:hw] - (hw - 1) / 2
    out = np.zeros((n, hw, hw), dtype=np.float64)
    for i, c in enumerate(labels):
        theta = np.deg2rad(18 * c + rng.normal(0, 4))
        dist = np.abs(-np.sin(theta) * xx + np.cos(theta) * yy)
        out[i] = np.clip(1.6 - dist, 0, 1) * (np.hypot(xx, yy) < hw * 0.4)
    out = out * 255 + rng.normal(0, 8, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_run(
    root: Path,
    *,
    n: int = 200,
    hw: int = 28,
    channels: int | None = None,
    names: list[str] | None = None,
    parts: tuple[str, ...] = ("validation", "detection", "cleaned", "gan"),
    with_truth: bool = True,
    summary_metrics: dict | None = None,
    dirty_share: float = 0.15,
    seed: int = 0,
) -> Path:
    """Write a realistic run folder of ``n`` samples; return its root."""
    rng = np.random.default_rng(seed)
    names = list(names or CLASS_NAMES)
    k = len(names)
    true = rng.integers(0, k, n)
    images = _strokes(true, hw=hw, rng=rng)
    labels = true.copy()
    injected = np.array(["clean"] * n, dtype=object)
    dup_src = np.full(n, -1, dtype=np.int64)
    n_dirty = int(dirty_share * n)
    pos = rng.permutation(n)
    lab, noise, blank, dup = np.array_split(pos[:n_dirty], 4)
    labels[lab] = (labels[lab] + rng.integers(1, k, lab.size)) % k
    injected[lab] = "label_noise"
    images[noise] = rng.integers(0, 256, (noise.size, hw, hw), dtype=np.uint8)
    injected[noise] = "gaussian_noise"
    images[blank] = 0
    injected[blank] = "blank"
    src = pos[n_dirty : n_dirty + dup.size]
    images[dup] = images[src]
    labels[dup] = labels[src]
    true[dup] = true[src]
    injected[dup] = "exact_duplicate"
    dup_src[dup] = src
    if channels:
        images = np.repeat(images[..., None], channels, axis=3)
        images[..., 0] = 255 - images[..., 0]
    sample_ids = np.arange(n, dtype=np.int64) + 1000  # ids deliberately not row numbers

    ds = root / "dataset"
    ds.mkdir(parents=True)
    np.save(ds / "images.npy", images)
    manifest = pd.DataFrame({"sample_id": sample_ids, "label": labels})
    if with_truth:
        manifest["injected"] = injected.astype(str)
        manifest["true_label"] = np.where(injected == "gaussian_noise", -1, true).astype(np.int64)
        manifest["duplicate_source"] = np.where(dup_src >= 0, sample_ids[dup_src], -1)
    manifest.to_parquet(ds / "manifest.parquet", index=False)
    counts = np.bincount(labels, minlength=k)
    (ds / "dataset.json").write_text(json.dumps({
        "n": n, "image_shape": list(images.shape[1:]), "channels": channels or 1,
        "n_classes": k, "class_names": names,
        "class_counts": {c: int(x) for c, x in zip(names, counts, strict=True)},
        "value_range": [0, 255], "content_hash": "ab" * 32, "source": "synthetic strokes",
        "meta": {"format": "memory"},
    }))

    run = {
        "run_id": "20260101-000000-abcd", "created_at": "2026-01-01T00:00:00+00:00",
        "parameters": {"data": "synthetic", "inject": "demo", "policy": "relabel", "steps": 300},
        "versions": {"python": "3.11", "numpy": np.__version__},
        "timings": {"ingest": 0.4},
        "hashes": {"dataset": "ab" * 32},
        "stages": {"ingest": "done"},
    }

    if "validation" in parts:
        run["stages"]["validate"] = "done"
        val = root / "validation"
        (val / "data_docs").mkdir(parents=True)
        (val / "data_docs" / "index.html").write_text("<html>docs</html>")
        blank_ids = [int(s) for s in sample_ids[blank]]
        (val / "validation.json").write_text(json.dumps({
            "success_critical": True,
            "results": [
                {"expectation": "expect_column_values_to_be_between", "column": "ink_fraction",
                 "severity": "warning", "success": False, "observed_value": {"min": 0.0},
                 "unexpected_count": len(blank_ids), "unexpected_sample_ids": blank_ids,
                 "description": "Every image has some ink (blank images are suspicious)."},
                {"expectation": "expect_column_values_to_be_unique", "column": "content_hash",
                 "severity": "warning", "success": False, "unexpected_count": int(dup.size),
                 "unexpected_sample_ids": [int(s) for s in sample_ids[dup]], "meta": {}},
                {"expectation": "expect_column_distinct_values_to_be_in_set",
                 "column": "label", "severity": "critical", "success": True,
                 "observed_value": list(range(k)), "unexpected_count": 0,
                 "unexpected_sample_ids": [], "meta": {"notes": f"Labels are {EVIL} 0..K-1."}},
                {"expectation": "expect_table_row_count_to_be_between", "column": None,
                 "severity": "critical", "success": True, "observed_value": n},
            ],
        }))

    if "detection" in parts:
        run["stages"]["detect"] = "done"
        det = root / "detection"
        det.mkdir()
        label_score = rng.uniform(0.3, 1.0, n)
        is_label = np.zeros(n, dtype=bool)
        caught = lab[: max(1, int(0.8 * lab.size))]
        is_label[caught] = True
        is_label[pos[-2:]] = True  # two false alarms
        label_score[is_label] = rng.uniform(0.0, 0.1, is_label.sum())
        suggested = labels.copy()
        suggested[caught] = true[caught]
        suggested[pos[-2:]] = (labels[pos[-2:]] + 1) % k
        outlier_score = rng.uniform(0.2, 1.0, n)
        is_outlier = np.zeros(n, dtype=bool)
        is_outlier[noise] = True
        outlier_score[noise] = rng.uniform(0.0, 0.05, noise.size)
        vae_score = rng.uniform(0.2, 1.0, n)
        is_vae = np.zeros(n, dtype=bool)
        is_vae[np.concatenate([noise, blank])] = True
        vae_score[is_vae] = rng.uniform(0, 0.1, is_vae.sum())
        is_exact = np.zeros(n, dtype=bool)
        is_exact[dup] = True
        duplicate_of = np.full(n, -1, dtype=np.int64)
        duplicate_of[dup] = sample_ids[src]
        dark_score = np.clip(images.reshape(n, -1).mean(axis=1) / 40, 0, 1)
        is_dark = dark_score < 0.02
        reasons = []
        for i in range(n):
            r = []
            if is_label[i]:
                r.append(f"label looks wrong: {names[labels[i]]} -> {names[suggested[i]]}")
            if is_outlier[i]:
                r.append("outlier in feature space")
            if is_exact[i]:
                r.append(f"exact copy of sample {duplicate_of[i]}")
            reasons.append("; ".join(r))
        dirty = is_label | is_outlier | is_vae | is_exact | is_dark
        issues = pd.DataFrame({
            "sample_id": sample_ids, "given_label": labels, "suggested_label": suggested,
            "suggested_label_confidence": np.where(is_label, 0.93, 0.99),
            "label_score": label_score, "is_label_issue": is_label,
            "outlier_score": outlier_score, "is_outlier": is_outlier,
            "vae_score": vae_score, "is_vae_issue": is_vae,
            "is_exact_duplicate": is_exact, "is_near_duplicate": np.zeros(n, dtype=bool),
            "duplicate_of": duplicate_of, "dark_score": dark_score, "is_dark_issue": is_dark,
            "is_dirty": dirty, "reasons": reasons,
        })
        issues.to_parquet(det / "issues.parquet", index=False)
        noise_matrix = np.full((k, k), 0.02 / (k - 1))
        np.fill_diagonal(noise_matrix, 0.98)
        noise_matrix[1, 7], noise_matrix[7, 7] = 0.1, 0.88
        summary = {
            "counts": {"label": int(is_label.sum()), "outlier": int(is_outlier.sum()),
                       "vae": int(is_vae.sum()), "exact_duplicate": int(is_exact.sum()),
                       "class_imbalance": 0},
            "oof_accuracy": 0.91, "noise_matrix": noise_matrix.tolist(),
            "timings": {"classifier": 3.2, "vae": 5.0},
        }
        if summary_metrics is not None:
            summary["metrics"] = summary_metrics
        (det / "summary.json").write_text(json.dumps(summary))

    if "cleaned" in parts:
        run["stages"]["clean"] = "done"
        cl = root / "cleaned"
        cl.mkdir()
        issues = pd.read_parquet(root / "detection" / "issues.parquet")
        decision = np.where(issues["is_label_issue"], "relabel", "keep").astype(object)
        decision[issues["is_outlier"] | issues["is_exact_duplicate"]] = "drop"
        decision[issues["is_vae_issue"] & (decision == "keep")] = "review"
        new = np.where(decision == "relabel", issues["suggested_label"], issues["given_label"])
        decisions = pd.DataFrame({
            "sample_id": issues["sample_id"], "decision": decision.astype(str),
            "reason": np.where(decision == "keep", "", issues["reasons"] + " <b>bold?</b>"),
            "old_label": issues["given_label"], "new_label": new.astype(np.int64),
        })
        decisions.to_parquet(cl / "decisions.parquet", index=False)
        (cl / "dataset.json").write_text(json.dumps(
            {"n": int((decision != "drop").sum()), "class_names": names}))

    if "gan" in parts:
        run["stages"]["generate"] = "done"
        gan = root / "gan"
        gan.mkdir()
        arms = {
            "dirty": {"fid": 48.2, "label_accuracy": 0.71, "cas": 0.64,
                      "precision": 0.6, "recall": 0.5, "vae_flag_rate": 0.12},
            "clean": {"fid": 31.5, "label_accuracy": 0.89, "cas": 0.8,
                        "precision": 0.7, "recall": 0.55, "vae_flag_rate": 0.05},
            "noise_aware": {"fid": 40.0, "label_accuracy": 0.83, "cas": 0.75,
                            "precision": 0.65, "recall": 0.52, "vae_flag_rate": 0.08},
        }
        for i, arm in enumerate(ARMS):
            arms[arm].update({"steps": 300, "seconds": 20.5 + i, "images_per_second": 1500.0,
                              "device": "cpu"})
            grid = _strokes(np.repeat(np.arange(k), 8), hw=hw, rng=rng)
            tiles = grid.reshape(k, 8, hw, hw).transpose(0, 2, 1, 3).reshape(k * hw, 8 * hw)
            Image.fromarray(tiles).save(gan / f"samples_{arm}.png")
            steps = np.arange(0, 300, 5)
            pd.DataFrame({"step": steps, "d_loss": 1.2 - 0.001 * steps + 0.05 * rng.random(60),
                          "g_loss": 0.8 + 0.002 * steps + 0.05 * rng.random(60)}).to_csv(
                gan / f"losses_{arm}.csv", index=False)
        (gan / "metrics.json").write_text(json.dumps(
            {"arms": arms, "judge": {"accuracy": 0.985, "trained_on": "held-out real data"}}))

    (root / "run.json").write_text(json.dumps(run))
    return root


# ============================================================================ HTML helpers
class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        self.tags.append((tag, d))
        if d.get("id"):
            self.ids.add(str(d["id"]))


def _parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


def _external_refs(html: str) -> list[str]:
    bad = []
    for _, attrs in _parse(html).tags:
        for key in ("src", "href", "srcset", "data", "poster", "action"):
            v = (attrs.get(key) or "").strip().lower()
            if v.startswith(("http://", "https://", "//", "ftp:")):
                bad.append(v)
    for m in re.finditer(r"url\(\s*['\"]?\s*(https?:|//)|@import|@font-face", html, re.I):
        bad.append(m.group(0))
    return bad


SECTIONS = ("verdict", "dataset", "validation", "issues", "scores", "noise-matrix", "cleaning",
            "detection-quality", "generation", "run-details")


# ============================================================================ tests
@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_run(tmp_path_factory.mktemp("run") / "run")
    path = render_report(root)
    return path, path.read_text(encoding="utf-8")


def test_full_run_renders_every_section(full_report: tuple[Path, str]) -> None:
    path, html = full_report
    assert path == path.parent / "report.html" and path.is_file()
    ids = _parse(html).ids
    assert set(SECTIONS) <= ids
    # sections come in the agreed reading order
    offsets = [html.index(f'id="{s}"') for s in SECTIONS]
    assert offsets == sorted(offsets)
    assert not list(path.parent.glob(".report.html.*"))  # atomic write left no temp file


def test_full_run_content(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    # verdict: cleaned beats dirty on FID and accuracies -> "helped"
    assert "cleaning helped the GAN" in html
    assert "FID 48.2 → 31.5" in html
    # validation in words, with the Data Docs link as a relative href
    assert "Every image has some ink" in html
    assert "2 of 4 checks passed" in html
    assert 'href="validation/data_docs/index.html"' in html
    # galleries per issue type, with pictures
    for anchor in ("gallery-label", "gallery-outlier", "gallery-vae", "gallery-exact_duplicate",
                   "gallery-dark"):
        assert f'id="{anchor}"' in html
    imgs = [a for t, a in _parse(html).tags if t == "img"]
    assert sum(str(a.get("src", "")).startswith("data:image/png;base64,") for a in imgs) > 50
    assert sum(str(a.get("src", "")).startswith("data:image/svg+xml;base64,") for a in imgs) >= 4
    # noise matrix, decisions, detection quality, generation
    assert "Average diagonal" in html and "labelled “one”" in html
    assert "relabel" in html and "The cleaned dataset has" in html
    assert "Wrong labels (label issues)" in html and "Caught, by kind of injected dirt" in html
    for arm in ARMS:
        assert f"samples generated by the {arm} arm" in html
    assert "−" in html or "-16.7" in html
    assert "Training losses per arm" in html


def test_strings_are_escaped(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold?</b>" not in html and "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert not any(tag == "script" for tag, _ in _parse(html).tags)


def test_self_contained(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    assert _external_refs(html) == []
    for tag, attrs in _parse(html).tags:
        if tag in ("img", "script", "link", "style", "iframe", "source"):
            src = attrs.get("src") or attrs.get("href") or ""
            assert src == "" or src.startswith("data:"), (tag, src[:80])
    assert "<link" not in html


def test_verdict_numbers(full_report: tuple[Path, str]) -> None:
    path, _ = full_report
    verdict = compute_verdict(path.parent)
    issues = pd.read_parquet(path.parent / "detection" / "issues.parquet")
    assert verdict["dirty_fraction"] == pytest.approx(issues["is_dirty"].mean())
    assert verdict["helped"] is True
    assert verdict["tone"] == "good"
    assert any(p.startswith("What was done") for p in verdict["points"])


def test_gallery_shows_worst_first_and_is_capped(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", n=120, dirty_share=0.6, parts=("detection",))
    html = render_report(root, gallery_size=5).read_text()
    issues = pd.read_parquet(root / "detection" / "issues.parquet")
    flagged = issues[issues["is_vae_issue"]].sort_values("vae_score")
    section = html.split('id="gallery-vae"')[1].split("<h3")[0]
    shown = re.findall(r'alt="sample (\d+)"', section)
    assert shown == [str(s) for s in flagged["sample_id"].head(5)]
    assert f"{len(flagged) - 5} more not shown" in section


def test_label_gallery_shows_given_and_suggested(full_report: tuple[Path, str]) -> None:
    path, html = full_report
    issues = pd.read_parquet(path.parent / "detection" / "issues.parquet")
    worst = issues[issues["is_label_issue"]].sort_values("label_score").iloc[0]
    section = html.split('id="gallery-label"')[1].split("<h3")[0]
    card = section.split(f"#{worst['sample_id']} ·")[1].split('<div class="card">')[0]
    given, suggested = CLASS_NAMES[worst["given_label"]], CLASS_NAMES[worst["suggested_label"]]
    esc = {EVIL: "&lt;script&gt;alert(1)&lt;/script&gt;"}
    assert f"given <b>{esc.get(given, given)}</b>" in card
    assert f"→ {esc.get(suggested, suggested)} (93.0%)" in card
    assert f"score {worst['label_score']:.3f}" in card


def test_only_dataset_renders(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", parts=())
    html = render_report(root).read_text()
    assert set(SECTIONS) <= _parse(html).ids
    assert "The validate stage has not run" in html
    assert "The detect stage has not run" in html
    assert "The clean stage has not run" in html
    assert "The generate stage has not run" in html
    assert "No detection result yet: only the dataset snapshot is available." in html
    assert "Random examples, one row per class" in html
    assert _external_refs(html) == []


def test_empty_folder_renders(tmp_path: Path) -> None:
    html = render_report(tmp_path).read_text()
    assert "This run folder holds no results yet." in html
    assert "The ingest stage has not run" in html


def test_failed_and_skipped_stages_are_named(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", parts=("validation",))
    run = json.loads((root / "run.json").read_text())
    run["stages"].update({"detect": "failed", "clean": "skipped", "generate": "skipped"})
    run["errors"] = {"detect": "CUDA out of memory <oops>"}
    (root / "run.json").write_text(json.dumps(run))
    html = render_report(root).read_text()
    assert "The detect stage failed, so there is no detection result." in html
    assert "CUDA out of memory &lt;oops&gt;" in html
    assert "The clean stage was skipped" in html
    assert 'class="stage failed"' in html
    verdict = compute_verdict(root)
    assert verdict["tone"] == "bad" and verdict["headline"].startswith("The detect stage failed")


def test_corrupt_files_are_reported_not_fatal(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run")
    (root / "detection" / "issues.parquet").write_bytes(b"not parquet at all")
    (root / "gan" / "metrics.json").write_text("{broken json")
    (root / "gan" / "samples_dirty.png").write_bytes(b"not a png")
    html = render_report(root).read_text()
    assert "detection/issues.parquet could not be read" in html
    assert "gan/metrics.json could not be read" in html
    assert "gan/samples_dirty.png is not a readable picture" in html
    assert 'id="cleaning"' in html and "relabel" in html  # later sections still render


def test_mismatched_images_drop_pictures_only(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", n=60, parts=("detection",))
    np.save(root / "dataset" / "images.npy", np.zeros((3, 28, 28), dtype=np.uint8))
    html = render_report(root).read_text()
    assert "holds 3 images but the manifest lists 60 samples" in html
    assert "no image" in html and 'id="gallery-label"' in html


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_large_rgb_images_are_reduced(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", channels=3, hw=120, parts=("detection",), n=60)
    html = render_report(root).read_text()
    thumb = re.search(r'src="(data:image/png;base64,[^"]+)" alt="sample', html).group(1)
    assert _decode(thumb).mode == "RGB" and _decode(thumb).size == (84, 84)
    montage = re.search(r'src="(data:image/png;base64,[^"]+)" alt="random examples', html)
    assert max(_decode(montage.group(1)).size) <= 12 * 49  # 12 tiles of at most 48 px + gaps


def test_detection_metrics_computed_from_ground_truth(tmp_path: Path) -> None:
    manifest = pd.DataFrame({
        "sample_id": [1, 2, 3, 4, 5, 6],
        "label": [0, 1, 1, 0, 0, 1],
        "injected": ["clean", "label_noise", "label_noise", "blank", "clean", "clean"],
        "true_label": [0, 0, 0, 0, 0, 1],
    })
    issues = pd.DataFrame({
        "sample_id": [1, 2, 3, 4, 5, 6],
        "is_label_issue": [True, True, False, False, False, False],
        "is_outlier": [False, False, False, True, False, False],
        "is_vae_issue": [False, False, False, False, True, False],
        "is_dirty": [True, True, False, True, True, False],
    })
    rows = {r["key"]: r for r in detection_metrics(manifest, issues)}
    # label: truth {2, 3}, flagged {1, 2} -> P = 1/2, R = 1/2
    assert rows["label"]["precision"] == pytest.approx(0.5)
    assert rows["label"]["recall"] == pytest.approx(0.5)
    # any: truth {2, 3, 4}, flagged {1, 2, 4, 5} -> P = 2/4, R = 2/3, F1 = 4/7
    assert rows["any"]["precision"] == pytest.approx(0.5)
    assert rows["any"]["recall"] == pytest.approx(2 / 3)
    assert rows["any"]["f1"] == pytest.approx(4 / 7)
    # image: truth {4}, flagged by outlier or vae {4, 5} -> P = 1/2, R = 1
    assert rows["image"]["precision"] == pytest.approx(0.5)
    assert rows["image"]["recall"] == pytest.approx(1.0)
    assert "exact_duplicate" not in rows  # no such dirt injected


def test_summary_metrics_are_used_when_present(tmp_path: Path) -> None:
    metrics = {"label": {"precision": 0.875, "recall": 0.625, "f1": 0.729},
               "any": {"precision": 0.9, "recall": 0.8, "f1": 0.847}}
    root = make_run(tmp_path / "run", n=80, parts=("detection",), summary_metrics=metrics)
    html = render_report(root).read_text()
    section = html.split('id="detection-quality"')[1].split("<section")[0]
    assert "detection/summary.json" in section
    assert "87.5%" in section and "62.5%" in section
    assert compute_verdict(root)["points"][1].startswith("Against the injected ground truth")


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [([[1, 0, 0], [0, 1, 0]], "has shape (2, 3); expected a square"),
     ("not a matrix", "could not be read")],
)
def test_bad_noise_matrix_is_described(tmp_path: Path, matrix: object, expected: str) -> None:
    root = make_run(tmp_path / "run", n=40, parts=("validation", "detection"))
    summary = json.loads((root / "detection" / "summary.json").read_text())
    summary["noise_matrix"] = matrix
    (root / "detection" / "summary.json").write_text(json.dumps(summary))
    validation = json.loads((root / "validation" / "validation.json").read_text())
    validation["results"] = validation["results"][:3]  # exactly one passed check
    (root / "validation" / "validation.json").write_text(json.dumps(validation))
    html = render_report(root).read_text()
    section = html.split('id="noise-matrix"')[1].split("<section")[0]
    assert expected in section
    assert "1 passed check<" in html


def test_no_ground_truth_says_so(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", n=60, with_truth=False, parts=("detection",))
    html = render_report(root).read_text()
    assert "No ground truth" in html


def test_worse_cleaned_arm_is_reported(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", n=60, parts=("gan",))
    metrics = json.loads((root / "gan" / "metrics.json").read_text())
    metrics["arms"]["clean"].update(fid=60.0, label_accuracy=0.6, cas=0.5)
    (root / "gan" / "metrics.json").write_text(json.dumps(metrics))
    verdict = compute_verdict(root)
    assert verdict["helped"] is False and verdict["tone"] == "warn"
    assert verdict["headline"] == "Cleaning hurt the GAN (FID 48.2 → 60)."
    html = render_report(root).read_text()
    assert '<span class="delta worse">+11.8</span>' in html


def test_loss_curves_png_preferred(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", parts=("gan",))
    Image.new("RGB", (60, 40), "white").save(root / "gan" / "loss_curves.png")
    html = render_report(root).read_text()
    fig = html.split('alt="GAN training losses"')[0].rsplit("<img", 1)[1]
    assert "data:image/png;base64," in fig


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="`gallery_size` must be an integer >= 1. Got 0"):
        render_report(tmp_path, gallery_size=0)


def test_thumbnail_is_nearest_neighbour() -> None:
    img = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    png = figures.thumbnail_png(img, side=8)
    out = np.asarray(Image.open(io.BytesIO(png)))
    assert out.shape == (8, 8)
    np.testing.assert_array_equal(out, np.kron(img, np.ones((4, 4), dtype=np.uint8)))
    big = figures.thumbnail_png(np.zeros((300, 150), dtype=np.uint8), side=84)
    assert Image.open(io.BytesIO(big)).size == (42, 84)


def test_plot_text_disables_mathtext() -> None:
    assert figures.plot_text("$x$") == r"\$x\$"
    assert figures.plot_text("a" * 40, limit=10) == "a" * 9 + "…"
    # a class name with dollars must not break the heatmap
    uri = figures.heatmap_uri(np.eye(2), row_labels=["$a", "b$"], col_labels=["$a", "b$"],
                              row_title="given", col_title="true")
    assert uri.startswith("data:image/svg+xml;base64,")


def test_mnist_sized_report_is_small(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", n=10_000, dirty_share=0.2, parts=("validation",
                    "detection", "cleaned", "gan"))
    path = render_report(root)
    size = path.stat().st_size
    assert size <= 5 * 1024 * 1024, f"report is {size / 1e6:.1f} MB"
    html = path.read_text()
    imgs = sum(1 for t, _ in _parse(html).tags if t == "img")
    assert imgs < 400


# ============================================================================ headless browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_opens_in_headless_chromium(full_report: tuple[Path, str], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    path, _ = full_report
    shot = tmp_path / "report.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        # no network at all: any attempt to fetch from a host fails loudly
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--screenshot={shot}", "--window-size=1200,3000", path.resolve().as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 90 s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10  # not a blank page
    page_errors = [line for line in proc.stderr.splitlines()
                   if re.search(r"CONSOLE|Uncaught|ERR_|Failed to load", line)]
    assert page_errors == []


def test_headline_cites_the_metric_that_decided(tmp_path: Path) -> None:
    """FID slightly worse but both accuracies clearly better: the headline names an accuracy."""
    root = make_run(tmp_path / "run", n=60, parts=("gan",))
    metrics = json.loads((root / "gan" / "metrics.json").read_text())
    metrics["arms"]["clean"].update(fid=49.0, label_accuracy=0.93, cas=0.96)
    metrics["arms"]["dirty"].update(fid=48.2, label_accuracy=0.87, cas=0.93)
    (root / "gan" / "metrics.json").write_text(json.dumps(metrics))
    verdict = compute_verdict(root)
    assert verdict["helped"] is True
    assert verdict["headline"] == "Cleaning helped the GAN (label accuracy 87.0% → 93.0%)."
