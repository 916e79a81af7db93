"""Contract tests of the HTML report: rendered from the artifacts the real stages wrote on a
small real run (the session's ``real_run`` fixture), never from hand-made imitations."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from assay.pipeline import evaluate, inject
from assay.pipeline.errors import DataError
from assay.pipeline.report import figures, render_report
from assay.pipeline.report.format import fmt_pct
from assay.pipeline.report.sections.issues import issue_types
from assay.pipeline.runfolder import MissingArtifactError, RunFolder
from assay.pipeline.verdict import compute_verdict

SECTIONS = ("verdict", "dataset", "validation", "issues", "scores", "noise-matrix", "cleaning",
            "detection-quality", "generation", "run-details")


class _Page(HTMLParser):
    """Tags with their attributes, and the text of each section by its id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.sections: dict[str, list[str]] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section or ""] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None and data.strip():
            self.sections[self._section].append(data.strip())

    def text(self, section: str) -> str:
        return " ".join(self.sections[section])


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _copy(run: RunFolder, dest: Path) -> RunFolder:
    shutil.copytree(run.root, dest)
    return RunFolder(dest)


@pytest.fixture(scope="module")
def rendered(real_run: RunFolder, tmp_path_factory: pytest.TempPathFactory):
    run = _copy(real_run, tmp_path_factory.mktemp("report") / "run")
    path = render_report(run.root)
    html = path.read_text(encoding="utf-8")
    return run, html, _parse(html)


# ============================================================================ every section
def test_every_section_renders_its_content(rendered) -> None:
    run, html, page = rendered
    assert list(page.sections) == list(SECTIONS)
    assert "could not be read" not in html
    assert "has not run" not in html and "no detection result" not in html.lower()
    # the only placeholders: galleries of issue types the run flagged nothing of
    notes = re.findall(r'<p class="note">(.*?)</p>', html, flags=re.S)
    issues = run.issues()
    types = issue_types(issues)
    empty = [t for t in types if not issues[t.flag].any()]
    assert notes == ["None flagged."] * len(empty)
    assert len(empty) < len(types)
    for section in SECTIONS:
        assert len(page.text(section)) > 40, section


def test_verdict_is_computed_once_stored_and_rendered(rendered) -> None:
    run, html, page = rendered
    stored = run.read_run_json().verdict
    assert stored is not None
    assert stored == compute_verdict(run)
    assert stored.headline in page.text("verdict")
    for point in stored.points:
        assert point in page.text("verdict")
    assert stored.dirty_fraction == pytest.approx(run.detection_summary().dirty_fraction)


def test_validation_shows_why_and_pictures_of_failing_samples(rendered) -> None:
    run, html, page = rendered
    report = run.validation()
    failed = [r for r in report.results if not r.success and r.id_column == "sample_id"]
    assert failed, "the real run must fail a per-sample expectation (injected blank images)"
    text = page.text("validation")
    for r in report.results:
        assert r.why and r.why in text
    alts = {a["alt"] for t, a in page.tags if t == "img" and a.get("alt", "").startswith("sample")}
    for r in failed:
        assert r.first_unexpected_ids
        assert f"sample {r.first_unexpected_ids[0]}" in alts


def test_noise_matrix_is_a_table(rendered) -> None:
    run, html, page = rendered
    matrix = run.noise_matrix()
    k = matrix.shape[0]
    table = html.split('<table class="noise">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
    assert len(rows) == k + 1
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows[1:]]
    assert all(len(c) == k for c in cells)
    for i in range(k):
        assert cells[i][i] == f"{100 * matrix[i, i]:.1f}"
    assert "largest estimated confusion" in page.text("noise-matrix")


def test_detection_quality_comes_from_evaluate(rendered) -> None:
    run, html, page = rendered
    truth = inject.ground_truth(run.dataset())
    table = evaluate.detection_table(run.issues(), truth)
    dirty = table.set_index("detector").loc["dirty"]
    text = page.text("detection-quality")
    assert f"Any dirt (is_dirty) {fmt_pct(dirty.precision)} {fmt_pct(dirty.recall)}" in text
    kinds = evaluate.detection_by_kind(run.issues(), truth)
    assert set(kinds["kind"]) >= {"label_noise", "blank", "clean"}
    for kind in kinds.itertuples():
        assert f"{kind.n:,} {kind.flagged:,} {fmt_pct(kind.share)}" in text


def test_galleries_link_the_full_list(rendered) -> None:
    run, html, page = rendered
    issues = run.issues()
    hrefs = [a["href"] for t, a in page.tags if t == "a" and "href" in a]
    csv_uri = next(h for h in hrefs if h.startswith("data:text/csv"))
    embedded = pd.read_csv(io.BytesIO(base64.b64decode(csv_uri.split(",", 1)[1])))
    flag_cols = [c for c in issues.columns if c.startswith("is_") and issues[c].dtype == bool]
    flagged = issues.loc[issues[flag_cols].any(axis=1), "sample_id"]
    assert embedded["sample_id"].tolist() == flagged.tolist()
    beside = pd.read_csv(run.paths.issues_csv)
    pd.testing.assert_frame_equal(beside, embedded)
    assert unquote(next(h for h in hrefs if h.endswith(".csv"))) == "detection/issues.csv"
    label = page.text("issues")
    assert "Label issues" in label and "given" in label
    n_label = int(issues["is_label_issue"].sum())
    assert n_label > 0
    if n_label > 24:
        assert "more not shown: the full list" in label
        assert "#flagged-list" in hrefs


def test_a_short_gallery_links_the_full_list(real_run: RunFolder, tmp_path: Path) -> None:
    run = _copy(real_run, tmp_path / "run")
    page = _parse(render_report(run.root, gallery_size=1).read_text())
    assert "more not shown: the full list" in page.text("issues")
    assert "#flagged-list" in [a["href"] for t, a in page.tags if t == "a" and "href" in a]


def test_label_gallery_shows_given_and_suggested(rendered) -> None:
    run, html, page = rendered
    issues = run.issues()
    worst = issues.loc[issues["is_label_issue"]].sort_values(["label_score", "sample_id"]).iloc[0]
    names = run.dataset().class_names
    gallery = html.split('id="gallery-label"', 1)[1].split("<h3", 1)[0]
    first = gallery.split('<div class="card', 2)[1]
    assert f"#{worst.sample_id} · given <b>" in first
    if worst.suggested_label != worst.given_label:
        assert f"→ {names[worst.suggested_label]}".replace("<", "&lt;").replace(
            ">", "&gt;") in first


def test_only_label_issues_get_a_suggested_label_on_their_cards(rendered) -> None:
    run, html, page = rendered
    issues = run.issues().set_index("sample_id")
    cards = html.split('<div class="card')[1:]  # each piece starts with one card
    seen = {"label": 0, "other": 0}
    for card in cards:
        found = re.search(r"#(\d+) · given", card)
        if not found:
            continue
        reason = issues.loc[int(found.group(1)), "primary_reason"]
        kind = "label" if reason == "label" else "other"
        seen[kind] += 1
        if kind == "other":
            assert "sugg" not in card.split('<div class="card')[0], card
    assert seen["label"] and seen["other"]  # both kinds of card are on the page


def test_generation_shows_each_arm_with_class_labels(rendered) -> None:
    run, html, page = rendered
    gan = run.gan_metrics()
    alts = [a["alt"] for t, a in page.tags if t == "img"]
    for arm, metrics in gan.arms.items():
        assert f"samples generated by the {arm} arm, one row per class" in alts
        assert fmt_pct(metrics.label_accuracy) in page.text("generation")
    section = html.split('id="generation"', 1)[1].split("</section>", 1)[0]
    assert section.count('<div class="rows">') == len(gan.arms)
    assert "Share of generated samples that the judge classifies" in page.text("generation")
    assert "Batch size" not in page.text("generation")
    assert "Batch size" in page.text("run-details")


def test_strings_are_escaped_and_page_is_self_contained(rendered) -> None:
    run, html, page = rendered
    assert "<b>four</b>" not in html
    assert "&lt;b&gt;four&lt;/b&gt;" in html
    assert "<script" not in html
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key, "")
            assert not re.match(r"(https?:)?//", value), (tag, value)


# ============================================================================ partial runs
def test_stages_not_run_are_named(real_run: RunFolder, tmp_path: Path) -> None:
    run = _copy(real_run, tmp_path / "run")
    shutil.rmtree(run.paths.gan)
    shutil.rmtree(run.paths.cleaned)
    page = _parse(render_report(run.root).read_text())
    assert "The clean stage has not run" in page.text("cleaning")
    assert "The generate stage has not run" in page.text("generation")
    assert "Label issues" in page.text("issues")
    assert run.read_run_json().verdict.outcome == "not_compared"


def test_only_the_dataset(real_run: RunFolder, tmp_path: Path) -> None:
    run = _copy(real_run, tmp_path / "run")
    for part in (run.paths.validation, run.paths.detection, run.paths.cleaned, run.paths.gan):
        shutil.rmtree(part)
    page = _parse(render_report(run.root).read_text())
    assert "300" in page.text("dataset") or "Samples" in page.text("dataset")
    assert "The detect stage has not run" in page.text("issues")
    assert "The validate stage has not run" in page.text("validation")


def test_an_artifact_off_its_schema_is_an_error_naming_the_file(
    real_run: RunFolder, tmp_path: Path
) -> None:
    run = _copy(real_run, tmp_path / "run")
    summary = json.loads(run.paths.detection_summary.read_text())
    summary["noise_matrix"] = summary["noise_matrix"]["matrix"]  # the shape nothing writes
    run.paths.detection_summary.write_text(json.dumps(summary))
    with pytest.raises(DataError, match=r"summary\.json: does not match the DetectionSummary"):
        render_report(run.root)


def test_bad_arguments(real_run: RunFolder, tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match="run `assay validate --data SPEC"):
        render_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="`gallery_size` must be an integer >= 1. Got 0"):
        render_report(real_run.root, gallery_size=0)


# ============================================================================ figures
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
    uri = figures.heatmap_uri(np.eye(2), row_labels=["$a", "b$"], col_labels=["$a", "b$"],
                              row_title="given", col_title="true")
    assert uri.startswith("data:image/svg+xml;base64,")


# ============================================================================ headless browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_opens_in_headless_chromium(rendered, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    run, _, _ = rendered
    shot = tmp_path / "report.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        # no network at all: any attempt to fetch from a host fails loudly
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--screenshot={shot}", "--window-size=1200,3000", run.paths.report.resolve().as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 120 s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10  # not a blank page
    page_errors = [line for line in proc.stderr.splitlines()
                   if re.search(r"CONSOLE|Uncaught|ERR_|Failed to load", line)]
    assert page_errors == []


def test_dataset_level_findings_carry_their_detectors_words(rendered) -> None:
    """The non-iid row says what the test found (and, for data read class by class, that
    the order explains it): the detector's own summary of this run, escaped."""
    run, html, page = rendered
    said = run.detection_summary().detectors["non_iid"].summary
    assert said.startswith("non-iid: ")
    assert said in page.text("issues")
