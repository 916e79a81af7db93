"""Render ``report.html`` from a run folder.

The report is one self-contained HTML file: inline CSS, no scripts, no fonts, every picture
a ``data:`` URI. It reads whatever the run folder holds — stages run by other processes may
have failed or not run at all — and says so plainly where a part is missing. Every string
that reaches the page goes through Jinja2's autoescaping.

The page reads top to bottom: verdict, dataset, validation, issues (counts and galleries of
the worst samples), score distributions, the estimated label-noise matrix, cleaning
decisions, detection quality against injected ground truth, and the GAN comparison.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
import pandas as pd

from assay.pipeline import atomic
from assay.pipeline.report import figures

#: Samples shown per issue type unless ``gallery_size`` says otherwise.
DEFAULT_GALLERY_SIZE = 24

#: Rows of the cleaning-decisions sample table.
DECISION_ROWS = 30

#: Pipeline stages in order, with the names a run.json may use for each.
STAGES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "dataset", "load"),
    "validate": ("validate", "validation"),
    "detect": ("detect", "detection"),
    "clean": ("clean", "cleaning", "cleaned"),
    "generate": ("generate", "generation", "gan", "compare"),
}

_KNOWN_TYPES: dict[str, tuple[str, str]] = {
    "label": (
        "Label issues",
        "A classifier that never saw the sample in training (out-of-fold) is confident that "
        "its given label is wrong.",
    ),
    "outlier": (
        "Outliers",
        "Images that do not belong here: the best of the feature-space distance, the VAE's "
        "reconstruction error and the image checks, combined.",
    ),
    "knn_outlier": (
        "Outliers in feature space (Datalab)",
        "Far from their nearest neighbours in the classifier's learned feature space "
        "(cleanlab Datalab's outlier check).",
    ),
    "image_property": (
        "Image property issues",
        "Blank or constant, too dark or too light, low information or pure noise.",
    ),
    "class_imbalance": (
        "Class imbalance",
        "Samples of a class far rarer than the others.",
    ),
    "non_iid": (
        "Non-iid ordering (Datalab)",
        "The dataset's order is not random: neighbours in feature space sit next to each "
        "other in the file (a dataset-level finding).",
    ),
    "vae": (
        "Poorly reconstructed images (VAE)",
        "A variational autoencoder trained on this data reconstructs these images badly: "
        "they do not look like the rest.",
    ),
    "exact_duplicate": ("Exact duplicates", "Pixel-for-pixel copies of another sample."),
    "near_duplicate": ("Near duplicates", "Almost identical to another sample."),
}

#: GAN metrics: key -> (title, better direction: "lower" | "higher" | None, is a fraction).
_GAN_METRICS: dict[str, tuple[str, str | None, bool]] = {
    "fid": ("FID in the judge's feature space", "lower", False),
    "label_accuracy": ("Label accuracy of generated samples (GAN-test)", "higher", True),
    "cas": ("Accuracy of a classifier trained on generated samples (CAS)", "higher", True),
    "precision": ("Precision (fidelity)", "higher", True),
    "recall": ("Recall (diversity)", "higher", True),
    "vae_flag_rate": ("Generated samples the VAE flags as odd", "lower", True),
    "steps": ("Training steps", None, False),
    "seconds": ("Training time (s)", None, False),
    "images_per_second": ("Images per second", None, False),
    "device": ("Device", None, False),
}

_ARM_NOTES = {
    "dirty": "trained on the data as given",
    "cleaned": "trained on the cleaned data",
    "clean": "trained on the cleaned data",
    "noise_aware": "trained on the data as given, with a loss that uses the estimated "
    "label-noise matrix",
}

_DECISION_ORDER = ("keep", "relabel", "drop", "review")

_IMAGE_DIRT_EXCLUDE = {"clean", "label_noise", "exact_duplicate", "near_duplicate", ""}


# ============================================================================ public API
def render_report(run_dir: Path, *, gallery_size: int = DEFAULT_GALLERY_SIZE) -> Path:
    """Render ``run_dir/report.html`` from the files of a run folder and return its path.

    Parameters
    ----------
    run_dir : Path
        A run folder (see ``pipeline.runfolder``). Any part may be missing; the report says
        which stages did not run or failed.
    gallery_size : int, keyword-only
        Most samples pictured per issue type (the worst first), at least 1.

    Returns
    -------
    Path
        ``run_dir / "report.html"``, written atomically.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a folder.
    ValueError
        When ``gallery_size`` is smaller than 1.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist or is not a folder.")
    if not isinstance(gallery_size, int | np.integer) or gallery_size < 1:
        raise ValueError(f"`gallery_size` must be an integer >= 1. Got {gallery_size!r} instead.")
    context = build_context(run_dir, gallery_size=int(gallery_size))
    html = _environment().get_template("report.html").render(**context)
    return atomic.write_text(run_dir / "report.html", html)


def compute_verdict(run_dir: Path) -> dict[str, Any]:
    """The report's verdict without the rest of the page.

    Returns
    -------
    dict
        ``headline`` (one sentence), ``points`` (list of sentences), ``tone``
        (``"good"``, ``"warn"``, ``"bad"`` or ``"neutral"``), ``dirty_fraction``
        (float or None) and ``helped`` (True, False or None when not measured).
    """
    return build_context(Path(run_dir), gallery_size=1, pictures=False)["verdict"]


# ============================================================================ loading
class _Files:
    """Reads the run folder defensively: a missing file is ``None``; a broken one is
    ``None`` plus a note in :attr:`errors`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: dict[str, str] = {}

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def _guard(self, rel: str, read: Callable[[Path], Any]) -> Any:
        path = self.root / rel
        if not path.exists():
            return None
        try:
            return read(path)
        except Exception as exc:  # any unreadable file becomes a note on the page
            self.errors[rel] = f"{type(exc).__name__}: {exc}"
            return None

    def json(self, rel: str) -> dict[str, Any] | None:
        def read(path: Path) -> dict[str, Any]:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            return data

        return self._guard(rel, read)

    def parquet(self, rel: str) -> pd.DataFrame | None:
        return self._guard(rel, pd.read_parquet)

    def npy(self, rel: str) -> np.ndarray | None:
        return self._guard(rel, lambda p: np.load(p, allow_pickle=False, mmap_mode="r"))

    def bytes(self, rel: str) -> bytes | None:
        return self._guard(rel, lambda p: p.read_bytes())

    def problem(self, *rels: str) -> list[str]:
        return [f"{rel} could not be read ({self.errors[rel]})." for rel in rels
                if rel in self.errors]


@dataclass
class _Samples:
    """Looks up sample images and label names by ``sample_id``."""

    names: list[str]
    images: np.ndarray | None = None
    rows: dict[int, int] = field(default_factory=dict)
    truth: dict[int, str] = field(default_factory=dict)
    pictures: bool = True
    _cache: dict[int, str | None] = field(default_factory=dict)

    def label(self, value: Any) -> str:
        i = _as_int(value)
        if i is None or i < 0:
            return "—"
        if i < len(self.names):
            return self.names[i]
        return str(i)

    def thumb(self, sample_id: Any) -> str | None:
        sid = _as_int(sample_id)
        if not self.pictures or sid is None or self.images is None or sid not in self.rows:
            return None
        if sid not in self._cache:
            try:
                self._cache[sid] = figures.thumbnail_uri(np.asarray(self.images[self.rows[sid]]))
            except Exception:  # a broken image shows as a blank tile, not a failed report
                self._cache[sid] = None
        return self._cache[sid]


# ============================================================================ context
def build_context(
    run_dir: Path, *, gallery_size: int = DEFAULT_GALLERY_SIZE, pictures: bool = True
) -> dict[str, Any]:
    """Everything the template needs, as plain dicts, lists and strings.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    gallery_size : int, keyword-only
        Most samples pictured per issue type.
    pictures : bool, keyword-only
        Draw thumbnails and plots (False gives only the numbers; much faster).
    """
    files = _Files(Path(run_dir))
    run = files.json("run.json") or {}
    ds_info = files.json("dataset/dataset.json") or {}
    manifest = files.parquet("dataset/manifest.parquet")
    images = files.npy("dataset/images.npy")
    issues = files.parquet("detection/issues.parquet")
    summary = files.json("detection/summary.json")
    validation = files.json("validation/validation.json")
    decisions = files.parquet("cleaned/decisions.parquet")
    cleaned_info = files.json("cleaned/dataset.json")
    gan = files.json("gan/metrics.json")

    names = _class_names(ds_info, manifest, issues)
    samples = _Samples(names=names, pictures=pictures)
    image_problem = None
    if images is not None:
        n_rows = len(manifest) if manifest is not None else None
        if images.ndim not in (3, 4):
            image_problem = f"dataset/images.npy has shape {images.shape}; expected (N, H, W[, C])."
        elif n_rows is not None and images.shape[0] != n_rows:
            image_problem = (
                f"dataset/images.npy holds {images.shape[0]} images but the manifest lists "
                f"{n_rows} samples, so no pictures are shown."
            )
        else:
            samples.images = images
            ids = (
                manifest["sample_id"].to_numpy()
                if manifest is not None and "sample_id" in manifest
                else np.arange(images.shape[0])
            )
            samples.rows = {int(s): i for i, s in enumerate(ids)}

    if manifest is not None and "sample_id" in manifest and (
            "injected" in manifest or "true_label" in manifest):
        samples.truth = _truth_words(manifest, samples)
    stages = _stages(run, files)
    dataset = _dataset_section(files, ds_info, manifest, images, samples, stages, image_problem)
    valid = _validation_section(files, validation, samples, stages)
    detection = _detection_section(files, issues, summary, samples, stages, gallery_size)
    cleaning = _cleaning_section(files, decisions, cleaned_info, samples, stages)
    truth = _truth_section(manifest, issues, summary)
    generation = _generation_section(files, gan, stages)
    verdict = _verdict(run, stages, dataset, valid, detection, cleaning, truth, generation)

    return {
        "title": f"assay report — {run.get('run_id') or Path(run_dir).name}",
        "run": _run_section(run, Path(run_dir)),
        "stages": stages,
        "verdict": verdict,
        "dataset": dataset,
        "validation": valid,
        "detection": detection,
        "cleaning": cleaning,
        "truth": truth,
        "generation": generation,
    }


def _truth_words(manifest: pd.DataFrame, samples: _Samples) -> dict[int, str]:
    """sample_id -> what the injected ground truth says about it, in a few words."""
    n = len(manifest)
    kinds = (manifest["injected"].fillna("clean").astype(str).to_numpy() if "injected" in manifest
             else np.array(["clean"] * n, dtype=object))
    given = pd.to_numeric(manifest.get("label"), errors="coerce").to_numpy() if (
        "label" in manifest) else np.full(n, np.nan)
    true = (pd.to_numeric(manifest["true_label"], errors="coerce").to_numpy()
            if "true_label" in manifest else np.full(n, np.nan))
    out = {}
    for sid, kind, g, t in zip(manifest["sample_id"].to_numpy(), kinds, given, true,
                               strict=True):
        if np.isfinite(t) and np.isfinite(g) and t >= 0 and t != g:
            words = f"truth: {kind}, really “{samples.label(t)}”" if kind != "clean" else (
                f"truth: really “{samples.label(t)}”")
        elif kind != "clean":
            words = f"truth: {kind}"
        else:
            words = "truth: clean"
        out[int(sid)] = words
    return out


# ---------------------------------------------------------------------------- stages
def _stages(run: Mapping[str, Any], files: _Files) -> dict[str, dict[str, Any]]:
    """Stage -> {name, state, error, note}: run.json's word first, else what exists."""
    recorded = run.get("stages") if isinstance(run.get("stages"), dict) else {}
    errors = run.get("errors") if isinstance(run.get("errors"), dict) else {}
    evidence = {
        "ingest": "dataset/manifest.parquet",
        "validate": "validation/validation.json",
        "detect": "detection/issues.parquet",
        "clean": "cleaned/decisions.parquet",
        "generate": "gan/metrics.json",
    }
    out: dict[str, dict[str, Any]] = {}
    for stage, aliases in STAGES.items():
        state, error = None, None
        for alias in aliases:
            value = recorded.get(alias)
            if isinstance(value, dict):
                state = value.get("state") or value.get("status")
                error = value.get("error") or value.get("message")
            elif value is not None:
                state = value
            if alias in errors:
                error = errors[alias]
            if state is not None:
                break
        state = str(state).lower() if state is not None else None
        if state is None:
            state = "done" if files.exists(evidence[stage]) else "not run"
        out[stage] = {"name": stage, "state": state, "error": _short(error) if error else None}
    return out


def _absent(stage: dict[str, Any], what: str) -> str:
    """A plain sentence saying why a section has nothing to show."""
    name, state = stage["name"], stage["state"]
    if state == "failed":
        msg = f"The {name} stage failed, so there is no {what}."
        if stage.get("error"):
            msg += f" Error: {stage['error']}"
        return msg
    if state == "skipped":
        return f"The {name} stage was skipped, so there is no {what}."
    if state in ("done", "cached", "completed"):
        return f"The {name} stage is marked done, but its {what} is missing from the run folder."
    return f"The {name} stage has not run, so there is no {what}."


# ---------------------------------------------------------------------------- run
def _run_section(run: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    def pairs(obj: Any) -> list[tuple[str, str]]:
        if not isinstance(obj, dict):
            return []
        return [(str(k), _short(_fmt_value(v), 160)) for k, v in obj.items()]

    timings = run.get("timings") if isinstance(run.get("timings"), dict) else {}
    return {
        "run_id": str(run.get("run_id") or run_dir.name),
        "created_at": str(run.get("created_at") or run.get("started_at") or "unknown"),
        "parameters": pairs(run.get("parameters")),
        "versions": pairs(run.get("versions")),
        "timings": [(str(k), _fmt_seconds(v)) for k, v in timings.items()],
        "hashes": pairs(run.get("hashes")),
        "has_run_json": bool(run),
    }


# ---------------------------------------------------------------------------- dataset
def _class_names(
    info: Mapping[str, Any], manifest: pd.DataFrame | None, issues: pd.DataFrame | None
) -> list[str]:
    names = info.get("class_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    k = 0
    for frame, col in ((manifest, "label"), (issues, "given_label")):
        if frame is not None and col in frame and len(frame):
            top = _as_int(pd.to_numeric(frame[col], errors="coerce").max())
            k = max(k, top + 1 if top is not None else 0)
    return [str(i) for i in range(k)]


def _dataset_section(
    files: _Files,
    info: Mapping[str, Any],
    manifest: pd.DataFrame | None,
    images: np.ndarray | None,
    samples: _Samples,
    stages: dict[str, dict[str, Any]],
    image_problem: str | None,
) -> dict[str, Any]:
    problems = files.problem("dataset/dataset.json", "dataset/manifest.parquet",
                             "dataset/images.npy")
    if image_problem:
        problems.append(image_problem)
    if manifest is None and images is None and not info:
        return {"present": False, "note": _absent(stages["ingest"], "dataset snapshot"),
                "problems": problems}

    n = len(manifest) if manifest is not None else (
        int(images.shape[0]) if images is not None else _as_int(info.get("n")))
    shape = (
        list(images.shape[1:]) if images is not None and images.ndim in (3, 4)
        else info.get("image_shape") or info.get("shape")
    )
    names = samples.names
    counts: list[int] = []
    if manifest is not None and "label" in manifest and len(manifest):
        labels = pd.to_numeric(manifest["label"], errors="coerce").dropna().astype(int)
        labels = labels[labels >= 0]
        counts = np.bincount(labels.to_numpy(), minlength=len(names)).tolist()
    elif isinstance(info.get("class_counts"), dict):
        counts = [int(info["class_counts"].get(c, 0)) for c in names]
    meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
    source = info.get("source") or meta.get("source") or "unknown"

    facts = [
        ("Source", str(source)),
        ("Samples", _fmt_int(n)),
        ("Image shape", " × ".join(str(s) for s in shape) if shape else "unknown"),
        ("Classes", f"{len(names)}"),
    ]
    if counts and sum(counts):
        lo, hi = min(counts), max(counts)
        facts.append(("Samples per class", f"{_fmt_int(lo)} to {_fmt_int(hi)}"
                      + (f" (largest/smallest = {hi / lo:.2f})" if lo else "")))
    if images is not None:
        pixel = images.dtype.name if images.dtype == np.uint8 else (
            f"{images.dtype.name} (expected uint8)")
        span = info.get("value_range")
        if isinstance(span, list) and len(span) == 2:
            pixel += f", {_fmt_value(span[0])}–{_fmt_value(span[1])}"
        facts.append(("Pixel values", pixel))
    if info.get("content_hash"):
        facts.append(("Content hash", str(info["content_hash"])[:16] + "…"))
    extra = [(k, v) for k, v in meta.items()
             if k != "source" and isinstance(v, str | int | float | bool | list)]
    for key, value in extra[:6]:
        facts.append((str(key).replace("_", " ").capitalize(), _short(_fmt_value(value), 120)))

    injected: list[dict[str, Any]] = []
    if manifest is not None and "injected" in manifest:
        kinds = manifest["injected"].astype(str).value_counts()
        total = int(n or 0)
        for kind, cnt in kinds.items():
            if kind == "clean":
                continue
            injected.append({"kind": kind, "count": _fmt_int(cnt),
                             "share": _fmt_pct(cnt / total if total else None)})
        dirty = int(kinds.drop("clean", errors="ignore").sum())
        facts.append(("Injected dirt (ground truth)",
                      f"{_fmt_int(dirty)} samples ({_fmt_pct(dirty / n if n else None)})"))

    count_names = [samples.label(i) for i in range(len(counts))]
    classes = [{"name": name, "count": _fmt_int(c)}
               for name, c in zip(count_names, counts, strict=True)]
    class_plot = montage = None
    if samples.pictures and counts and sum(counts):
        class_plot = _safe(lambda: figures.class_counts_uri(counts, count_names))
    if samples.pictures and samples.images is not None and manifest is not None:
        montage = _safe(lambda: _class_montage(manifest, samples))
    return {
        "present": True,
        "facts": facts,
        "classes": classes,
        "class_plot": class_plot,
        "montage": montage,
        "montage_rows": min(len(names), 20),
        "injected": injected,
        "problems": problems,
    }


def _class_montage(manifest: pd.DataFrame, samples: _Samples, *, per_class: int = 12) -> str:
    """Up to ``per_class`` random examples per class (first 20 classes), one row each."""
    if samples.images is None:
        raise ValueError("no images to draw a montage from.")
    rng = np.random.default_rng(0)
    labels = pd.to_numeric(manifest["label"], errors="coerce").to_numpy()
    ids = manifest["sample_id"].to_numpy()
    tiles: list[np.ndarray] = []
    blank = np.zeros_like(np.asarray(samples.images[0]))
    blank[...] = 255
    k = min(len(samples.names), 20)
    for c in range(k):
        pos = np.flatnonzero(labels == c)
        pick = rng.choice(pos, size=min(per_class, pos.size), replace=False) if pos.size else []
        row = [np.asarray(samples.images[samples.rows[int(ids[p])]]) for p in np.sort(pick)]
        tiles.extend(row + [blank] * (per_class - len(row)))
    h = max(samples.images.shape[1:3])
    scale = max(1, min(6, 64 // max(1, h)))
    return figures.montage_uri(np.stack(tiles), rows=k, cols=per_class, scale=scale)


# ---------------------------------------------------------------------------- validation
def _validation_section(
    files: _Files,
    validation: Mapping[str, Any] | None,
    samples: _Samples,
    stages: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    problems = files.problem("validation/validation.json")
    docs = _data_docs_href(files.root)
    if validation is None:
        return {"present": False, "note": _absent(stages["validate"], "validation result"),
                "problems": problems, "docs_href": docs}
    raw = validation.get("results")
    results = [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []
    rows = []
    for r in results:
        severity = str(r.get("severity") or "warning").lower()
        success = bool(r.get("success"))
        meta = r.get("meta") if isinstance(r.get("meta"), dict) else {}
        ids = r.get("unexpected_sample_ids") or []
        ids = list(ids) if isinstance(ids, list | tuple) else []
        row = {
            "expectation": str(r.get("expectation") or "unnamed check"),
            "column": str(r["column"]) if r.get("column") not in (None, "") else None,
            "severity": severity,
            "success": success,
            "words": _expectation_words(r, meta),
            "observed": _short(_fmt_value(r.get("observed_value")), 160)
            if r.get("observed_value") is not None else None,
            "unexpected": _fmt_int(r.get("unexpected_count"))
            if r.get("unexpected_count") is not None else None,
            "thumbs": [],
        }
        if not success and samples.pictures:
            for sid in ids[:8]:
                uri = samples.thumb(sid)
                if uri:
                    row["thumbs"].append({"uri": uri, "sample_id": str(sid)})
        rows.append(row)
    failed = [r for r in rows if not r["success"]]
    critical = [r for r in failed if r["severity"] == "critical"]
    warnings = [r for r in failed if r["severity"] != "critical"]
    passed = [r for r in rows if r["success"]]
    success_critical = validation.get("success_critical")
    if success_critical is None:
        success_critical = not critical
    success_critical = bool(success_critical)
    if not rows:
        sentence = "The validation result lists no checks."
    elif not failed:
        sentence = f"All {len(rows)} checks passed."
    else:
        sentence = f"{len(passed)} of {len(rows)} checks passed."
        if critical:
            sentence += (f" {len(critical)} critical check{'s' if len(critical) != 1 else ''} "
                         "failed: the data should not be used as it is.")
        elif success_critical is False:
            sentence += " The validation result marks a critical failure."
        else:
            sentence += " No critical check failed."
        if warnings:
            sentence += (f" {len(warnings)} warning{'s' if len(warnings) != 1 else ''}: the "
                         "samples involved are marked and shown below.")
    return {
        "present": True,
        "sentence": sentence,
        "success_critical": bool(success_critical),
        "n_checks": len(rows),
        "n_passed": len(passed),
        "critical": critical,
        "warnings": warnings,
        "passed": passed,
        "docs_href": docs,
        "problems": problems,
    }


def _expectation_words(result: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    for key in ("description", "notes", "message"):
        text = result.get(key) or meta.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip()
    name = str(result.get("expectation") or "")
    words = re.sub(r"^expect_", "", name).replace("_", " ").strip()
    column = result.get("column")
    if column:
        return f"“{column}”: {words}." if words else f"Check on “{column}”."
    return (words[:1].upper() + words[1:] + ".") if words else "Unnamed check."


def _data_docs_href(root: Path) -> str | None:
    docs = root / "validation" / "data_docs"
    if not docs.is_dir():
        return None
    direct = docs / "index.html"
    found = direct if direct.is_file() else None
    if found is None:
        candidates = sorted(docs.rglob("index.html"), key=lambda p: (len(p.parts), str(p)))
        found = candidates[0] if candidates else None
    if found is None:
        return None
    return "/".join(quote(part) for part in found.relative_to(root).parts)


# ---------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class _IssueType:
    key: str
    title: str
    about: str
    flag: str
    score: str | None

    @property
    def noun(self) -> str:
        """Plural noun for sentences: "label issues", "VAE outliers"."""
        return _NOUNS.get(self.key, self.key.replace("_", " ") + " issues")


_NOUNS = {"label": "label issues", "outlier": "outliers", "vae": "VAE outliers",
          "exact_duplicate": "exact duplicates", "near_duplicate": "near duplicates",
          "knn_outlier": "feature-space outliers", "image_property": "image property issues",
          "class_imbalance": "samples of a rare class", "non_iid": "non-iid findings"}


def _issue_types(issues: pd.DataFrame) -> list[_IssueType]:
    cols = set(issues.columns)
    found: dict[str, tuple[str, str | None]] = {}
    if "is_outlier" in cols:
        found["outlier"] = ("is_outlier", "outlier_score" if "outlier_score" in cols else None)
    for key in ("exact_duplicate", "near_duplicate"):
        if f"is_{key}" in cols:
            score = f"{key}_score" if f"{key}_score" in cols else None
            found[key] = (f"is_{key}", score)
    for col in issues.columns:
        m = re.fullmatch(r"is_(.+)_issue", str(col))
        if m and m.group(1) not in found:
            key = m.group(1)
            found[key] = (col, f"{key}_score" if f"{key}_score" in cols else None)
    order = [k for k in _KNOWN_TYPES if k in found] + [k for k in found if k not in _KNOWN_TYPES]
    out = []
    for key in order:
        title, about = _KNOWN_TYPES.get(
            key, (key.replace("_", " ").capitalize() + " issues", "")
        )
        flag, score = found[key]
        out.append(_IssueType(key, title, about, flag, score))
    return out


def _detection_section(
    files: _Files,
    issues: pd.DataFrame | None,
    summary: Mapping[str, Any] | None,
    samples: _Samples,
    stages: dict[str, dict[str, Any]],
    gallery_size: int,
) -> dict[str, Any]:
    problems = files.problem("detection/issues.parquet", "detection/summary.json")
    summary = summary or {}
    errors = summary.get("errors")
    if isinstance(errors, dict):
        problems += [f"The {k} detector failed: {_short(str(v))}" for k, v in errors.items()]
    elif isinstance(errors, list):
        problems += [f"A detector failed: {_short(str(v))}" for v in errors]
    if issues is None or "sample_id" not in issues:
        if issues is not None:
            problems.append("detection/issues.parquet has no sample_id column.")
        return {"present": False, "note": _absent(stages["detect"], "detection result"),
                "problems": problems, "noise": _noise_section(files, summary, samples)}
    n = len(issues)
    types = _issue_types(issues)
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    rows = []
    galleries = []
    score_data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in types:
        flagged = issues[t.flag].fillna(False).astype(bool).to_numpy()
        count = int(flagged.sum())
        rows.append({"title": t.title, "key": t.key, "count": _fmt_int(count),
                     "share": _fmt_pct(count / n if n else None), "anchor": f"gallery-{t.key}"})
        if t.score is not None:
            values = pd.to_numeric(issues[t.score], errors="coerce").to_numpy()
            score_data[t.noun[:1].upper() + t.noun[1:]] = (values, flagged)
        galleries.append(_gallery(issues, t, flagged, samples, gallery_size))
    shown = {t.key for t in types} | {t.flag for t in types}
    for key, value in counts.items():
        if key in shown or f"is_{key}" in shown or f"is_{key}_issue" in shown:
            continue
        if key in ("dirty", "is_dirty", "total", "any"):
            continue
        if isinstance(value, int | float):
            rows.append({"title": str(key).replace("_", " ").capitalize(), "key": str(key),
                         "count": _fmt_int(value), "share": "—", "anchor": None})
    if "is_dirty" in issues:
        dirty = issues["is_dirty"].fillna(False).astype(bool).to_numpy()
    elif types:
        dirty = np.zeros(n, dtype=bool)
        for t in types:
            dirty |= issues[t.flag].fillna(False).astype(bool).to_numpy()
    else:
        dirty = np.zeros(n, dtype=bool)
    n_dirty = int(dirty.sum())
    oof = summary.get("oof_accuracy")
    hist = None
    if samples.pictures and score_data:
        hist = _safe(lambda: figures.score_histograms_uri(score_data))
    return {
        "present": True,
        "n": n,
        "n_dirty": n_dirty,
        "dirty_fraction": n_dirty / n if n else None,
        "dirty_text": f"{_fmt_int(n_dirty)} of {_fmt_int(n)} samples "
        f"({_fmt_pct(n_dirty / n if n else None)})",
        "oof_accuracy": _fmt_pct(oof) if isinstance(oof, int | float) else None,
        "rows": rows,
        "type_counts": {t.noun: int(issues[t.flag].fillna(False).astype(bool).sum())
                        for t in types},
        "galleries": galleries,
        "histograms": hist,
        "noise": _noise_section(files, summary, samples),
        "timings": [(str(k), _fmt_seconds(v)) for k, v in
                    (summary.get("timings") or {}).items()]
        if isinstance(summary.get("timings"), dict) else [],
        "problems": problems,
    }


def _gallery(
    issues: pd.DataFrame,
    t: _IssueType,
    flagged: np.ndarray,
    samples: _Samples,
    gallery_size: int,
) -> dict[str, Any]:
    sub = issues.loc[flagged]
    if t.score is not None:
        sub = sub.assign(_s=pd.to_numeric(sub[t.score], errors="coerce"))
        sub = sub.sort_values(["_s", "sample_id"], na_position="last", kind="stable")
    else:
        sub = sub.sort_values("sample_id", kind="stable")
    cards = []
    for _, row in sub.head(gallery_size).iterrows():
        given = row.get("given_label")
        suggested = row.get("suggested_label")
        sid = _as_int(row["sample_id"])
        card = {
            "sample_id": str(sid),
            "thumb": samples.thumb(row["sample_id"]),
            "given": samples.label(given),
            "suggested": None,
            "confidence": None,
            "score": _fmt_score(row.get(t.score)) if t.score else None,
            "reasons": _short(str(row.get("reasons") or ""), 140) or None,
            "truth": samples.truth.get(sid) if sid is not None else None,
            "pair": None,
        }
        if _as_int(suggested) is not None and _as_int(suggested) != _as_int(given):
            card["suggested"] = samples.label(suggested)
            conf = row.get("suggested_label_confidence")
            if _is_number(conf):
                card["confidence"] = _fmt_pct(float(conf))
        if t.key.endswith("duplicate"):
            other = _as_int(row.get("duplicate_of"))
            if other is not None and other >= 0:
                card["pair"] = {"sample_id": str(other), "thumb": samples.thumb(other)}
        cards.append(card)
    flagged_n = int(flagged.sum())
    return {
        "key": t.key,
        "anchor": f"gallery-{t.key}",
        "title": t.title,
        "about": t.about,
        "count": _fmt_int(flagged_n),
        "cards": cards,
        "more": _fmt_int(flagged_n - len(cards)) if flagged_n > len(cards) else None,
        "ordered_by": f"{t.score}, lowest (most suspicious) first" if t.score else "sample id",
    }


def _noise_section(
    files: _Files, summary: Mapping[str, Any], samples: _Samples
) -> dict[str, Any] | None:
    raw = summary.get("noise_matrix")
    matrix = None
    try:
        if raw is not None:
            matrix = np.asarray(raw, dtype=float)
        elif files.exists("detection/noise_matrix.npy"):
            arr = files.npy("detection/noise_matrix.npy")
            matrix = np.asarray(arr, dtype=float) if arr is not None else None
    except (TypeError, ValueError) as exc:
        return {"plot": None, "text": f"The noise matrix could not be read ({exc}).",
                "worst": None}
    if matrix is None:
        return None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.size:
        return {"plot": None, "text": f"The noise matrix has shape {matrix.shape}; expected "
                "a square K × K matrix.", "worst": None}
    k = matrix.shape[0]
    names = [samples.label(i) for i in range(k)]
    cols_sum = np.allclose(np.nansum(matrix, axis=0), 1.0, atol=1e-3)
    rows_sum = np.allclose(np.nansum(matrix, axis=1), 1.0, atol=1e-3)
    if cols_sum or not rows_sum:
        # cleanlab's convention: noise_matrix[i, j] = P(given label = i | true label = j)
        row_title, col_title = "given label", "true label (estimated)"
        reading = ("Each column is a true class and shows where its samples' labels ended "
                   "up: the diagonal is the share labelled correctly, off-diagonal cells are "
                   "the estimated share mislabelled as the row's class (percent).")
    else:
        row_title, col_title = "true label (estimated)", "given label"
        reading = ("Each row is a true class and shows where its samples' labels ended up "
                   "(percent); off-diagonal cells are estimated mislabelling.")
    diag = float(np.nanmean(np.diag(matrix)))
    worst = None
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    if np.isfinite(off).any() and np.nanmax(off) > 0:
        i, j = np.unravel_index(int(np.nanargmax(off)), off.shape)
        if row_title == "given label":
            worst = (f"The largest estimated confusion: {_fmt_pct(off[i, j])} of true "
                     f"“{names[j]}” samples are labelled “{names[i]}”.")
        else:
            worst = (f"The largest estimated confusion: {_fmt_pct(off[i, j])} of true "
                     f"“{names[i]}” samples are labelled “{names[j]}”.")
    plot = None
    if samples.pictures:
        plot = _safe(lambda: figures.heatmap_uri(matrix, row_labels=names, col_labels=names,
                                                 row_title=row_title, col_title=col_title))
    return {
        "plot": plot,
        "text": f"{reading} Average diagonal: {_fmt_pct(diag)}.",
        "worst": worst,
    }


# ---------------------------------------------------------------------------- cleaning
def _cleaning_section(
    files: _Files,
    decisions: pd.DataFrame | None,
    cleaned_info: Mapping[str, Any] | None,
    samples: _Samples,
    stages: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    problems = files.problem("cleaned/decisions.parquet", "cleaned/dataset.json")
    if decisions is None or "decision" not in decisions:
        if decisions is not None:
            problems.append("cleaned/decisions.parquet has no decision column.")
        return {"present": False, "note": _absent(stages["clean"], "cleaning decision"),
                "problems": problems}
    n = len(decisions)
    kinds = decisions["decision"].astype(str)
    vc = kinds.value_counts()
    order = [d for d in _DECISION_ORDER if d in vc.index] + [
        d for d in vc.index if d not in _DECISION_ORDER]
    counts = [{"decision": d, "count": _fmt_int(vc[d]), "share": _fmt_pct(vc[d] / n if n else None),
               "raw": int(vc[d])} for d in order]
    changed = decisions.loc[kinds != "keep"]
    reasons = []
    if "reason" in decisions and len(changed):
        for reason, cnt in changed["reason"].fillna("").astype(str).value_counts().head(10).items():
            reasons.append({"reason": _short(reason or "(no reason given)", 160),
                            "count": _fmt_int(cnt)})
    table = []
    if len(changed):
        per = max(1, DECISION_ROWS // max(1, changed["decision"].nunique()))
        rank = {d: i for i, d in enumerate(order)}
        picked = (changed.assign(_r=changed["decision"].astype(str).map(rank))
                  .sort_values(["_r", "sample_id"], kind="stable")
                  .groupby("decision", sort=False, group_keys=False).head(per)
                  .head(DECISION_ROWS))
        for _, row in picked.iterrows():
            table.append({
                "sample_id": str(_as_int(row.get("sample_id"))),
                "thumb": samples.thumb(row.get("sample_id")),
                "decision": str(row["decision"]),
                "old": samples.label(row.get("old_label")),
                "new": samples.label(row.get("new_label"))
                if _as_int(row.get("new_label")) is not None
                and _as_int(row.get("new_label")) != _as_int(row.get("old_label")) else "",
                "reason": _short(str(row.get("reason") or ""), 160),
            })
    n_after = None
    if isinstance(cleaned_info, dict) and _as_int(cleaned_info.get("n")) is not None:
        n_after = _as_int(cleaned_info.get("n"))
    elif n:
        n_after = int(n - vc.get("drop", 0))
    count_of = {d: int(vc.get(d, 0)) for d in vc.index}
    parts = []
    for d, verb in (("relabel", "relabelled"), ("drop", "dropped"), ("review", "sent to review")):
        if count_of.get(d):
            parts.append(f"{_fmt_int(count_of[d])} {verb}")
    sentence = (f"Of {_fmt_int(n)} samples, {_fmt_int(count_of.get('keep', 0))} were kept as they "
                "are" + (", " + ", ".join(parts) if parts else "") + ".")
    if n_after is not None:
        sentence += f" The cleaned dataset has {_fmt_int(n_after)} samples."
    return {
        "present": True,
        "sentence": sentence,
        "counts": counts,
        "count_of": count_of,
        "reasons": reasons,
        "table": table,
        "table_note": f"{len(table)} of {_fmt_int(len(changed))} changed samples"
        if len(changed) > len(table) else None,
        "n_after": n_after,
        "problems": problems,
    }


# ---------------------------------------------------------------------------- ground truth
def _truth_section(
    manifest: pd.DataFrame | None,
    issues: pd.DataFrame | None,
    summary: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Detection quality against injected dirt: from summary.json, or computed here."""
    has_truth = manifest is not None and (
        "injected" in manifest or "true_label" in manifest)
    metrics = (summary or {}).get("metrics")
    if metrics:
        columns, rows = _metric_rows(metrics)
        if rows:
            return {"present": True, "source": "detection/summary.json", "columns": columns,
                    "rows": rows,
                    "by_kind": _recall_by_kind(manifest, issues) if has_truth else [],
                    "overall": _overall(rows)}
    if not has_truth or issues is None or "sample_id" not in issues:
        return {"present": False, "has_truth": bool(has_truth)}
    rows = detection_metrics(manifest, issues)
    if not rows:
        return {"present": False, "has_truth": True}
    shown = [{"name": r["name"], "values": [_fmt_pct(r["precision"]), _fmt_pct(r["recall"]),
                                            _fmt_pct(r["f1"]), _fmt_int(r["support"]),
                                            _fmt_int(r["flagged"])]}
             for r in rows]
    return {
        "present": True,
        "source": "computed from the manifest's injected ground truth",
        "columns": ["precision", "recall", "F1", "injected", "flagged"],
        "rows": shown,
        "by_kind": _recall_by_kind(manifest, issues),
        "overall": next(((r["precision"], r["recall"]) for r in rows
                         if r["key"] == "any"), None),
    }


def detection_metrics(manifest: pd.DataFrame, issues: pd.DataFrame) -> list[dict[str, Any]]:
    """Precision, recall and F1 of each detector family against injected ground truth.

    Parameters
    ----------
    manifest : DataFrame
        ``sample_id``, ``label`` and ``injected`` (str, ``"clean"`` when untouched) and/or
        ``true_label`` (int, -1 for out-of-distribution).
    issues : DataFrame
        The detection table (``sample_id``, ``is_dirty``, ``is_label_issue``, …).

    Returns
    -------
    list of dict
        One row per family with ground truth present: ``key``, ``name``, ``precision``,
        ``recall``, ``f1`` (floats), ``support`` (dirty samples injected) and ``flagged``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    cols = ["sample_id"] + [c for c in ("label", "injected", "true_label") if c in manifest]
    merged = issues.merge(manifest[cols], on="sample_id", how="inner")
    if not len(merged):
        return []
    injected = (merged["injected"].fillna("clean").astype(str) if "injected" in merged
                else pd.Series("clean", index=merged.index))
    given = pd.to_numeric(merged.get("label", merged.get("given_label")), errors="coerce")
    if "true_label" in merged:
        true = pd.to_numeric(merged["true_label"], errors="coerce")
        label_truth = ((true >= 0) & (true != given)).to_numpy()
    else:
        label_truth = (injected == "label_noise").to_numpy()
    any_truth = (injected != "clean").to_numpy() | label_truth
    if "true_label" in merged:
        any_truth |= (pd.to_numeric(merged["true_label"], errors="coerce") < 0).to_numpy()

    def flag(*names: str) -> np.ndarray | None:
        present = [n for n in names if n in merged]
        if not present:
            return None
        out = np.zeros(len(merged), dtype=bool)
        for n in present:
            out |= merged[n].fillna(False).astype(bool).to_numpy()
        return out

    image_flags = [c for c in merged.columns
                   if re.fullmatch(r"is_(.+)_issue", str(c)) and c != "is_label_issue"]
    image_flags = [c for c in image_flags if "duplicate" not in str(c)]
    if "is_outlier" in merged:
        image_flags.append("is_outlier")
    image_truth = (~injected.isin(_IMAGE_DIRT_EXCLUDE)).to_numpy()
    families: list[tuple[str, str, np.ndarray, np.ndarray | None]] = [
        ("any", "Any dirt (is_dirty)", any_truth,
         flag("is_dirty") if "is_dirty" in merged else flag(*[
             c for c in merged.columns if str(c).startswith("is_")])),
        ("label", "Wrong labels (label issues)", label_truth, flag("is_label_issue")),
        ("image", "Corrupted or foreign images (outlier, VAE, image checks)", image_truth,
         flag(*image_flags) if image_flags else None),
        ("exact_duplicate", "Exact duplicates", (injected == "exact_duplicate").to_numpy(),
         flag("is_exact_duplicate")),
        ("near_duplicate", "Near duplicates", (injected == "near_duplicate").to_numpy(),
         flag("is_near_duplicate")),
    ]
    rows = []
    for key, name, truth, pred in families:
        if pred is None or not truth.any():
            continue
        p, r, f, _ = precision_recall_fscore_support(
            truth, pred, average="binary", zero_division=0
        )
        rows.append({"key": key, "name": name, "precision": float(p), "recall": float(r),
                     "f1": float(f), "support": int(truth.sum()), "flagged": int(pred.sum())})
    return rows


def _recall_by_kind(
    manifest: pd.DataFrame | None, issues: pd.DataFrame | None
) -> list[dict[str, str]]:
    if manifest is None or issues is None or "injected" not in manifest:
        return []
    if "is_dirty" not in issues or "sample_id" not in issues:
        return []
    merged = issues[["sample_id", "is_dirty"]].merge(
        manifest[["sample_id", "injected"]], on="sample_id", how="inner")
    out = []
    for kind, grp in merged.groupby(merged["injected"].astype(str), sort=True):
        if kind == "clean":
            continue
        caught = int(grp["is_dirty"].fillna(False).astype(bool).sum())
        out.append({"kind": str(kind), "injected": _fmt_int(len(grp)),
                    "caught": _fmt_int(caught), "recall": _fmt_pct(caught / len(grp))})
    clean = merged.loc[merged["injected"].astype(str) == "clean"]
    if len(clean):
        wrong = int(clean["is_dirty"].fillna(False).astype(bool).sum())
        out.append({"kind": "clean (false alarms)", "injected": _fmt_int(len(clean)),
                    "caught": _fmt_int(wrong), "recall": _fmt_pct(wrong / len(clean))})
    return out


def _metric_rows(metrics: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """summary.json's ``metrics`` (dict of dicts, or list of dicts) as columns and rows."""
    if isinstance(metrics, dict):
        items = [(str(k), v) for k, v in metrics.items() if isinstance(v, dict)]
        scalars = {k: v for k, v in metrics.items() if _is_number(v)}
        if scalars and not items:
            items = [("overall", scalars)]
    elif isinstance(metrics, list):
        items = [(str(m.get("name") or m.get("type") or i), m)
                 for i, m in enumerate(metrics) if isinstance(m, dict)]
    else:
        return [], []
    preferred = ["precision", "recall", "f1", "support", "n_true", "n_pred", "flagged"]
    keys: list[str] = [k for k in preferred if any(k in v for _, v in items)]
    for _, v in items:
        keys += [k for k, x in v.items() if _is_number(x) and k not in keys]
    rows = []
    for name, v in items:
        values = []
        for k in keys:
            x = v.get(k)
            if not _is_number(x):
                values.append("—")
            elif k in ("precision", "recall", "f1", "accuracy") or (
                isinstance(x, float) and 0 <= x <= 1 and not float(x).is_integer()):
                values.append(_fmt_pct(float(x)))
            else:
                values.append(_fmt_value(x))
        rows.append({"name": name.replace("_", " "), "values": values, "raw": v})
    return keys, rows


def _overall(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    for row in rows:
        raw = row["raw"]
        if row["name"] in ("any", "overall", "dirty", "is dirty", "all") and _is_number(
                raw.get("precision")) and _is_number(raw.get("recall")):
            return float(raw["precision"]), float(raw["recall"])
    return None


# ---------------------------------------------------------------------------- generation
def _generation_section(
    files: _Files, gan: Mapping[str, Any] | None, stages: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    problems = files.problem("gan/metrics.json")
    arms_raw = (gan or {}).get("arms")
    arms: dict[str, dict[str, Any]] = (
        {str(k): v for k, v in arms_raw.items() if isinstance(v, dict)}
        if isinstance(arms_raw, dict) else {}
    )
    gan_dir = files.root / "gan"
    pictures = []
    sample_files = sorted(gan_dir.glob("samples_*.png")) if gan_dir.is_dir() else []
    by_arm = {p.stem[len("samples_"):]: p for p in sample_files}
    for arm in list(arms) + [a for a in by_arm if a not in arms]:
        path = by_arm.get(arm)
        uri = None
        if path is not None:
            payload = files.bytes(f"gan/{path.name}")
            uri = _safe(lambda p=payload: figures.png_file_uri(p)) if payload else None
            if uri is None:
                problems.append(f"gan/{path.name} is not a readable picture.")
        pictures.append({"arm": arm, "note": _ARM_NOTES.get(arm, ""), "uri": uri})
    if not arms and not sample_files:
        return {"present": False, "note": _absent(stages["generate"], "GAN comparison"),
                "problems": problems}

    base = "dirty" if "dirty" in arms else (next(iter(arms)) if arms else None)
    keys = [k for k in _GAN_METRICS if any(k in a for a in arms.values())]
    keys += sorted({k for a in arms.values() for k, v in a.items()
                    if k not in keys and (_is_number(v) or isinstance(v, str))})
    table = []
    for key in keys:
        title, better, frac = _GAN_METRICS.get(key, (key.replace("_", " ").capitalize(), None,
                                                      False))
        cells = []
        for arm, values in arms.items():
            v = values.get(key)
            cell = {"value": _fmt_metric(v, frac), "delta": None, "tone": ""}
            b = arms[base].get(key) if base else None
            if arm != base and _is_number(v) and _is_number(b) and key not in ("steps",):
                d = float(v) - float(b)
                cell["delta"] = _fmt_delta(d, frac)
                if better and abs(d) > _tolerance(key, float(b)):
                    good = (d < 0) if better == "lower" else (d > 0)
                    cell["tone"] = "better" if good else "worse"
            cells.append(cell)
        arrow = {"lower": "lower is better", "higher": "higher is better"}.get(better or "", "")
        table.append({"key": key, "title": title, "hint": arrow, "cells": cells})

    loss_uri = None
    if files.exists("gan/loss_curves.png"):
        payload = files.bytes("gan/loss_curves.png")
        loss_uri = _safe(lambda: figures.png_file_uri(payload)) if payload else None
    if loss_uri is None:
        curves = {}
        csvs = {p.stem[len("losses_"):]: p for p in sorted(gan_dir.glob("losses_*.csv"))
                } if gan_dir.is_dir() else {}
        for arm in [a for a in arms if a in csvs] + [a for a in csvs if a not in arms]:
            series = _read_loss_csv(csvs[arm])
            if series:
                curves[arm] = series
            else:
                problems.append(f"gan/{csvs[arm].name} holds no numeric loss columns.")
        if curves:
            loss_uri = _safe(lambda: figures.loss_curves_uri(curves))
    judge = gan.get("judge") if isinstance(gan, dict) else None
    judge_rows = ([(str(k).replace("_", " "), _short(_fmt_value(v), 120))
                   for k, v in judge.items() if not isinstance(v, dict | list)]
                  if isinstance(judge, dict) else [])
    return {
        "present": True,
        "arms": list(arms),
        "arm_notes": [_ARM_NOTES.get(a, "") for a in arms],
        "base": base,
        "table": table,
        "pictures": pictures,
        "loss_curves": loss_uri,
        "judge": judge_rows,
        "raw": arms,
        "problems": problems,
    }


def _read_loss_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        frame = pd.read_csv(path)
    except Exception:  # a broken CSV is reported by the caller as "no numeric columns"
        return {}
    frame = frame.apply(pd.to_numeric, errors="coerce")
    step_col = next((c for c in frame.columns
                     if str(c).lower() in ("step", "steps", "iteration", "iter", "epoch")), None)
    step = frame[step_col].to_numpy(dtype=float) if step_col else np.arange(len(frame), dtype=float)
    out = {}
    for col in frame.columns:
        if col == step_col or not frame[col].notna().any():
            continue
        if str(col).lower() in ("time", "seconds", "wall", "timestamp"):
            continue
        out[str(col)] = (step, frame[col].to_numpy(dtype=float))
    return out


def _tolerance(key: str, base: float) -> float:
    """Changes smaller than this count as no change."""
    if key == "fid":
        return max(0.5, 0.02 * abs(base))
    return 0.01


# ---------------------------------------------------------------------------- verdict
def _verdict(
    run: Mapping[str, Any],
    stages: dict[str, dict[str, Any]],
    dataset: dict[str, Any],
    validation: dict[str, Any],
    detection: dict[str, Any],
    cleaning: dict[str, Any],
    truth: dict[str, Any],
    generation: dict[str, Any],
) -> dict[str, Any]:
    points: list[str] = []
    tone = "neutral"
    headline_parts: list[str] = []
    dirty_fraction = None
    helped: bool | None = None

    if validation.get("present"):
        if not validation["success_critical"]:
            points.append("Validation: a critical check failed — " + validation["sentence"])
            headline_parts.append("a critical validation check failed")
            tone = "bad"
        else:
            points.append("Validation: " + validation["sentence"])

    if detection.get("present"):
        dirty_fraction = detection["dirty_fraction"]
        top = sorted(((c, t) for t, c in detection["type_counts"].items() if c),
                     reverse=True)[:4]
        detail = ", ".join(f"{_fmt_int(c)} {t}" for c, t in top)
        points.append(f"How dirty: {detection['dirty_text']} look dirty"
                      + (f" ({detail}; a sample can have several)." if detail else "."))
        headline_parts.append(f"{_fmt_pct(dirty_fraction)} of the data looks dirty")
        if truth.get("present") and truth.get("overall"):
            p, r = truth["overall"]
            points.append(f"Against the injected ground truth, detection found "
                          f"{_fmt_pct(r)} of the dirty samples, and {_fmt_pct(p)} of what it "
                          "flagged was really dirty.")
    else:
        points.append("How dirty: not measured — " + _lower_first(detection["note"]))

    if cleaning.get("present"):
        points.append("What was done: " + cleaning["sentence"])
        c = cleaning["count_of"]
        done = [f"{w} {_fmt_int(c[d])}" for d, w in (("relabel", "relabelled"),
                                                       ("drop", "dropped")) if c.get(d)]
        if done:
            headline_parts.append("cleaning " + " and ".join(done) + " samples")
    else:
        points.append("What was done: nothing yet — " + _lower_first(cleaning["note"]))

    if generation.get("present") and generation.get("raw"):
        arms = generation["raw"]
        base = generation["base"]
        for arm in arms:
            if arm == base:
                continue
            outcome, words = _compare_arms(arms[base], arms[arm])
            name = {"cleaned": "the cleaned data", "clean": "the cleaned data",
                    "noise_aware": "the dirty data with the noise-aware loss"}.get(
                arm, f"“{arm}”")
            if outcome is None:
                continue
            verb = {1: "helped", -1: "hurt", 0: "made no clear difference"}[outcome]
            points.append(f"Did it help: training on {name} instead of “{base}” {verb}"
                          + (f" ({words})." if words else "."))
            if arm in ("cleaned", "clean") or (helped is None and arm != "noise_aware"):
                helped = {1: True, -1: False, 0: None}[outcome]
                first = words.split(", ")[0]
                headline_parts.append(f"cleaning {verb} the GAN" + (f" ({first})" if first
                                                                    else ""))
        if helped is None and not any(p.startswith("Did it help") for p in points):
            points.append("Did it help: the GAN arms have no comparable metrics.")
    else:
        points.append("Did it help: not measured — " + _lower_first(generation.get(
            "note", "the generate stage has not run.")))

    failed = [s["name"] for s in stages.values() if s["state"] == "failed"]
    if failed:
        tone = "bad"
        headline_parts.insert(0, f"the {' and '.join(failed)} stage{'s' if len(failed) > 1 else ''}"
                              " failed")
    if tone != "bad":
        if helped is True:
            tone = "good"
        elif helped is False or (dirty_fraction is not None and dirty_fraction > 0.05):
            tone = "warn"
        elif dirty_fraction is not None:
            tone = "good"
    if headline_parts:
        headline = "; ".join(headline_parts) + "."
        headline = headline[0].upper() + headline[1:]
    elif dataset.get("present"):
        have = ("the dataset snapshot and its validation are" if validation.get("present")
                else "the dataset snapshot is")
        headline = f"No detection result yet: only {have} available."
    else:
        headline = "This run folder holds no results yet."
    # A verdict the run recorded in its own words; a dict is this function's own output
    # (written by the flow) and would only repeat the headline.
    recorded = run.get("verdict")
    if not isinstance(recorded, str) or recorded.strip() == headline.strip():
        recorded = None
    return {
        "headline": headline,
        "points": points,
        "tone": tone,
        "dirty_fraction": dirty_fraction,
        "helped": helped,
        "recorded": _short(str(recorded), 400) if recorded else None,
    }


def _compare_arms(base: Mapping[str, Any], arm: Mapping[str, Any]) -> tuple[int | None, str]:
    """(+1 better, -1 worse, 0 no clear change, None not comparable) and the evidence.

    Each metric that moved beyond its tolerance votes; the evidence lists the metrics that
    agree with the outcome first, so its first item is always a reason for the verdict.
    """
    score, compared = 0, 0
    votes: list[tuple[int, str]] = []
    for key, label in (("fid", "FID"), ("label_accuracy", "label accuracy"),
                       ("cas", "CAS accuracy")):
        b, a = base.get(key), arm.get(key)
        if not (_is_number(b) and _is_number(a)):
            continue
        compared += 1
        _, better, frac = _GAN_METRICS[key]
        d = float(a) - float(b)
        vote = 0
        if abs(d) > _tolerance(key, float(b)):
            vote = 1 if ((d < 0) if better == "lower" else (d > 0)) else -1
        score += vote
        votes.append((vote, f"{label} {_fmt_metric(b, frac)} → {_fmt_metric(a, frac)}"))
    if not compared:
        return None, ""
    outcome = int(np.sign(score))
    votes.sort(key=lambda v: v[0] != outcome)  # stable: agreeing metrics first
    return outcome, ", ".join(words for _, words in votes)


# ============================================================================ formatting
def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_) and math.isfinite(float(x))


def _as_int(x: Any) -> int | None:
    if x is None or isinstance(x, bool | np.bool_):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return int(f)


def _fmt_int(x: Any) -> str:
    i = _as_int(x)
    return "—" if i is None else f"{i:,}"


def _fmt_pct(x: Any) -> str:
    if not _is_number(x):
        return "—"
    v = 100 * float(x)
    return f"{v:.1f}%" if abs(v) < 99.95 or v == 100 else f"{v:.2f}%"


def _fmt_score(x: Any) -> str | None:
    return f"{float(x):.3f}" if _is_number(x) else None


def _fmt_seconds(x: Any) -> str:
    if not _is_number(x):
        return _short(str(x), 40)
    s = float(x)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _fmt_metric(v: Any, frac: bool) -> str:
    if _is_number(v):
        if frac:
            return _fmt_pct(v)
        f = float(v)
        if float(f).is_integer() and abs(f) < 1e12:
            return f"{int(f):,}"
        return f"{f:,.1f}" if abs(f) >= 100 else f"{f:.3g}"
    if v is None:
        return "—"
    return _short(str(v), 40)


def _fmt_delta(d: float, frac: bool) -> str:
    if frac:
        return f"{100 * d:+.1f} pts"
    return f"{d:+,.1f}" if abs(d) >= 100 else f"{d:+.3g}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if _is_number(v):
        f = float(v)
        return f"{int(f):,}" if f.is_integer() and abs(f) < 1e15 else f"{f:.4g}"
    if isinstance(v, str):
        return v
    try:
        return json.dumps(v, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(v)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _short(text: str, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe(make: Callable[[], str]) -> str | None:
    """Run a picture-drawing callable; a failure leaves the picture out, not the report."""
    try:
        return make()
    except Exception:  # pictures are optional; the numbers next to them still render
        return None


# ============================================================================ template
@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


__all__: Sequence[str] = ["render_report", "compute_verdict", "build_context",
                          "detection_metrics"]
