"""Bad input, hostile values and faults: one clear line, a non-zero exit, nothing changed.

Every case runs the real command in-process (``assay.flows.cli.main``) in a scratch folder
and checks five things: the exit code; that stderr names the file or option at fault;
that stderr holds no traceback; that nothing was left behind (no output folder, no
temporary file); and that the input is unchanged (every file under the scratch folder is
hashed before and after). Signals and closed pipes need a real process and run as
subprocesses.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import prefect.main  # noqa: F401  Prefect's log handlers bind to the stream of this moment
import pytest
from PIL import Image

from assay.flows.cli import main
from assay.pipeline import atomic
from assay.pipeline.errors import DataError

# (importing prefect.main above sets them up at collection, on a stream that outlives every
# test; set up inside a test, they would keep writing to its closed capsys stream).

# ----------------------------------------------------------------------------- builders
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
LABELS = np.arange(12) % 3


def npz(name: str, **arrays) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        np.savez(root / name, **arrays)

    return build


def raw(name: str, data: bytes) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return build


def text(name: str, content: str) -> Callable[[Path], None]:
    return raw(name, content.encode("utf-8"))


def csv_rows(rows: list[list[object]], header: bool = False) -> str:
    lines = [",".join(["label", *[f"p{i}" for i in range(len(rows[0]) - 1)]])] if header else []
    return "\n".join(lines + [",".join(str(v) for v in r) for r in rows]) + "\n"


GOOD_ROWS = [[i % 2, *([i * 10 % 256] * 4)] for i in range(6)]  # 2x2 images


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + np.array(dims, ">u4").tobytes() + payload


def idx_pair(
    *,
    img_dims: tuple[int, ...] = (4, 3, 3),
    img_payload: bytes | None = None,
    lab_dims: tuple[int, ...] = (4,),
    lab_payload: bytes | None = None,
    img_magic: int = 2051,
    lab_magic: int = 2049,
    gz: bool = True,
    folder: str = "idx",
) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        img = idx_bytes(img_magic, img_dims, img_payload if img_payload is not None else bytes(36))
        lab = idx_bytes(
            lab_magic, lab_dims, lab_payload if lab_payload is not None else bytes([0, 1, 0, 1])
        )
        sfx = ".gz" if gz else ""
        (d / f"t10k-images-idx3-ubyte{sfx}").write_bytes(gzip.compress(img) if gz else img)
        (d / f"t10k-labels-idx1-ubyte{sfx}").write_bytes(gzip.compress(lab) if gz else lab)

    return build


def _header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()  # magic, version and header


def lying_npz(name: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    """An .npz whose images member claims ``shape`` but holds 64 bytes."""

    def build(root: Path) -> None:
        lab = io.BytesIO()
        np.save(lab, LABELS)
        with zipfile.ZipFile(root / name, "w") as zf:
            zf.writestr("images.npy", _header(shape, "|u1") + bytes(64))
            zf.writestr("labels.npy", lab.getvalue())

    return build


def image_folder(folder: str, per_class: int, classes: int = 2, size: int = 8):
    def build(root: Path) -> None:
        for c in range(classes):
            d = root / folder / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = RNG.integers(0, 256, size=(size, size), dtype=np.uint8)
                arr[c % size, :] = 255
                Image.fromarray(arr).save(d / f"{i}.png")

    return build


def assay_dataset(folder: str, mutate: Callable[[Path], None] | None = None):
    def build(root: Path) -> None:
        from assay.pipeline import io as aio
        from assay.pipeline.dataset import Dataset

        aio.save(Dataset.create(IMAGES, LABELS), root / folder)
        if mutate is not None:
            mutate(root / folder)

    return build


def run_folder(folder: str):
    def build(root: Path) -> None:
        (root / folder / "dataset").mkdir(parents=True)
        (root / folder / "run.json").write_text("{}")

    return build


def several(*builders):
    def build(root: Path) -> None:
        for b in builders:
            b(root)

    return build


def _set_json(key, value):
    def mutate(folder: Path) -> None:
        info = json.loads((folder / "dataset.json").read_text())
        info[key] = value
        (folder / "dataset.json").write_text(json.dumps(info))

    return mutate


GOOD_NPZ = npz("good.npz", images=IMAGES, labels=LABELS)


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], None]
    argv: str  # "{in}" is the input folder, "{out}" a fresh output location
    code: int
    names: tuple[str, ...]  # each must appear in stderr


def C(id, build, argv, names, code=2):  # noqa: N802  (a table row)
    return Case(id, build, argv, code, tuple([names] if isinstance(names, str) else names))


CASES = [
    # ---- issue 14: resource exhaustion from one value
    C("label-2^62-npz", npz("big.npz", images=IMAGES, labels=np.array([0] * 11 + [2**62])),
      "info --data {in}/big.npz", ("big.npz", "at most 1,000")),
    C("label-2^62-csv", text("big.csv", csv_rows([[2**62, 1, 2, 3, 4], [0, 1, 2, 3, 4]])),
      "info --data {in}/big.csv", ("big.csv", "classes")),
    C("100k-classes", npz("many.npz", images=np.zeros((100_000, 2, 2), np.uint8),
                          labels=np.arange(100_000)),
      "info --data {in}/many.npz", ("many.npz", "100,000 classes")),
    C("100k-classes-detect", npz("many.npz", images=np.zeros((100_000, 2, 2), np.uint8),
                                 labels=np.arange(100_000)),
      "detect --data {in}/many.npz --run-dir {out}", ("many.npz", "100,000 classes")),
    C("idx-header-huge-gz", idx_pair(img_dims=(2**31, 65535, 65535)),
      "info --data {in}/idx", ("t10k-images-idx3-ubyte.gz", "header says")),
    C("idx-header-huge-raw", idx_pair(img_dims=(2**31, 65535, 65535), gz=False),
      "info --data {in}/idx", ("t10k-images-idx3-ubyte", "the file holds")),
    C("idx-labels-huge", idx_pair(lab_dims=(2**31,), gz=False),
      "info --data {in}/idx", ("t10k-labels-idx1-ubyte", "header says")),
    C("npz-member-claims-huge", lying_npz("lie.npz", (2**31, 65535, 65535)),
      "info --data {in}/lie.npz", ("lie.npz", "claims shape")),
    C("npz-member-claims-more", lying_npz("lie2.npz", (10, 8, 8)),
      "info --data {in}/lie2.npz", ("lie2.npz", "holds only")),
    C("image-side-limit", npz("wide.npz", images=np.zeros((1, 2, 5000), np.uint8),
                              labels=np.array([0])),
      "info --data {in}/wide.npz", ("wide.npz", "4096")),
    C("channels-limit", npz("chan.npz", images=np.zeros((2, 4, 4, 7), np.uint8),
                            labels=np.array([0, 1])),
      "info --data {in}/chan.npz", ("chan.npz", "channels")),
    # ---- issue 14: output locations
    C("inject-out-inside-input", idx_pair(), "inject --data {in}/idx --out {in}/idx/dirty",
      ("--out", "inside the input")),
    C("inject-out-is-input", assay_dataset("ds"), "inject --data {in}/ds --out {in}/ds",
      ("--out", "is the input")),
    C("inject-out-existing-file", several(GOOD_NPZ, text("f.txt", "x")),
      "inject --data {in}/good.npz --out {in}/f.txt", ("f.txt", "--out", "existing file")),
    C("detect-run-dir-inside-image-folder", image_folder("imgs", 3),
      "detect --data {in}/imgs --run-dir {in}/imgs/run", ("--run-dir", "inside the input")),
    C("validate-run-dir-inside-input", image_folder("imgs", 3),
      "validate --data {in}/imgs --run-dir {in}/imgs/class0/r", ("--run-dir", "inside")),
    C("validate-run-dir-existing-file", several(GOOD_NPZ, text("f.txt", "x")),
      "validate --data {in}/good.npz --run-dir {in}/f.txt", ("f.txt", "--run-dir")),
    C("detect-run-dir-existing-file", several(GOOD_NPZ, text("f.txt", "x")),
      "detect --data {in}/good.npz --run-dir {in}/f.txt", ("f.txt", "--run-dir")),
    C("detect-run-dir-under-a-file", several(GOOD_NPZ, text("f.txt", "x")),
      "detect --data {in}/good.npz --run-dir {in}/f.txt/sub", ("f.txt", "--run-dir")),
    C("clean-run-dir-existing-file", text("f.txt", "x"), "clean --run-dir {in}/f.txt",
      ("f.txt", "--run-dir")),
    C("gan-run-dir-existing-file", text("f.txt", "x"), "gan --run-dir {in}/f.txt --steps 5",
      ("f.txt", "--run-dir")),
    C("report-run-dir-existing-file", text("f.txt", "x"), "report --run-dir {in}/f.txt",
      ("f.txt", "--run-dir")),
    C("run-run-dir-existing-file", text("f.txt", "x"), "run --run-dir {in}/f.txt",
      ("f.txt", "--run-dir")),
    C("run-runs-root-existing-file", text("f.txt", "x"), "run --runs-root {in}/f.txt",
      ("f.txt", "--runs-root")),
    C("run-runs-root-inside-input", image_folder("imgs", 3),
      "run --data {in}/imgs --runs-root {in}/imgs/runs", ("--runs-root", "inside")),
    C("run-run-dir-inside-input", idx_pair(), "run --data {in}/idx --run-dir {in}/idx/r",
      ("--run-dir", "inside")),
    C("learn-out-is-input", text("d.csv", csv_rows(GOOD_ROWS)),
      "expectations learn --data {in}/d.csv --out {in}/d.csv", ("--out", "is the input")),
    C("learn-out-is-folder", several(GOOD_NPZ, lambda r: (r / "adir").mkdir()),
      "expectations learn --data {in}/good.npz --out {in}/adir", ("adir", "--out", "folder")),
    # ---- issue 14: options out of bounds
    C("detect-folds-0", GOOD_NPZ, "detect --data {in}/good.npz --run-dir {out} --folds 0",
      "`folds`"),
    C("detect-folds-neg", GOOD_NPZ, "detect --data {in}/good.npz --run-dir {out} --folds -1",
      "`folds`"),
    C("detect-folds-1", GOOD_NPZ, "detect --data {in}/good.npz --run-dir {out} --folds 1",
      "`folds`"),
    C("detect-folds-1e9", GOOD_NPZ, "detect --data {in}/good.npz --run-dir {out} --folds 1e9",
      "--folds"),
    C("detect-folds-10^9", GOOD_NPZ,
      "detect --data {in}/good.npz --run-dir {out} --folds 1000000000", "`folds`"),
    C("run-folds-0", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --folds 0", "`folds`"),
    C("run-folds-neg", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --folds -1",
      "`folds`"),
    C("run-folds-1", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --folds 1", "`folds`"),
    C("run-folds-1e9", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --folds 1e9",
      "--folds"),
    C("run-folds-10^9", GOOD_NPZ,
      "run --data {in}/good.npz --run-dir {out} --folds 1000000000", "`folds`"),
    C("run-steps-0", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --steps 0", "`steps`"),
    C("run-steps-huge", GOOD_NPZ,
      "run --data {in}/good.npz --run-dir {out} --steps 10000000", "`steps`"),
    C("run-steps-neg", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --steps -5",
      "`steps`"),
    C("run-seed-neg", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --seed -1", "`seed`"),
    C("run-device-tpu", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --device tpu",
      "`device`"),
    C("run-runner-bogus", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --runner bogus",
      "runner"),
    C("run-policy-bogus", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --policy keepall",
      "--policy"),
    C("detect-folds-text", GOOD_NPZ, "detect --data {in}/good.npz --run-dir {out} --folds five",
      "--folds"),
    # ---- issue 14: config files
    C("config-not-utf8-yaml", raw("c.yaml", b"steps: 10\n\xff\xfe\n"), "run --config {in}/c.yaml",
      ("c.yaml", "UTF-8")),
    C("config-not-utf8-toml", raw("c.toml", b"steps = 10\n# \xe9\xff\n"),
      "run --config {in}/c.toml", ("c.toml", "UTF-8")),
    C("config-not-utf8-json", raw("c.json", b'{"steps": 10, "x": "\xff"}'),
      "run --config {in}/c.json", ("c.json", "UTF-8")),
    C("config-unknown-key", text("c.yaml", "stepz: 10\n"), "run --config {in}/c.yaml",
      ("c.yaml", "stepz")),
    C("config-wrong-type", text("c.yaml", "steps: many\n"), "run --config {in}/c.yaml",
      ("c.yaml", "`steps`")),
    C("config-steps-too-many", text("c.yaml", "steps: 99999999\n"), "run --config {in}/c.yaml",
      ("c.yaml", "`steps`")),
    C("config-folds-huge", text("c.toml", "folds = 1000000000\n"), "run --config {in}/c.toml",
      ("c.toml", "`folds`")),
    C("config-top-level-list", text("c.yaml", "- 1\n- 2\n"), "run --config {in}/c.yaml",
      ("c.yaml", "mapping")),
    C("config-bad-syntax", text("c.yaml", "steps: [1, 2\n"), "run --config {in}/c.yaml",
      ("c.yaml", "parse")),
    C("config-bad-toml", text("c.toml", "steps = = 3\n"), "run --config {in}/c.toml",
      ("c.toml", "parse")),
    C("config-unknown-suffix", text("c.ini", "[assay]\n"), "run --config {in}/c.ini",
      ("c.ini", "unknown config format")),
    C("config-missing", lambda r: None, "run --config {in}/nope.yaml", ("nope.yaml", "not found")),
    C("config-workers-0", text("c.yaml", "workers: 0\n"), "run --config {in}/c.yaml",
      ("c.yaml", "`workers`")),
    # ---- issue 14: quieter defects
    C("npz-random-bytes", raw("rand.npz", RNG.integers(0, 256, 4096, np.uint8).tobytes()),
      "info --data {in}/rand.npz", ("rand.npz", "not a valid .npz")),
    C("npz-zero-bytes", raw("empty.npz", b""), "info --data {in}/empty.npz",
      ("empty.npz", "not a valid .npz")),
    C("npz-truncated-zip", lambda r: (np.savez(r / "t.npz", images=IMAGES, labels=LABELS),
                                      (r / "t.npz").write_bytes((r / "t.npz").read_bytes()[:300])),
      "info --data {in}/t.npz", ("t.npz", ".npz")),
    C("csv-semicolons", text("semi.csv", "\n".join(";".join(["1"] * 5) for _ in range(3))),
      "info --data {in}/semi.csv", ("semi.csv", "semicolons")),
    C("csv-tabs", text("tab.csv", "\n".join("\t".join(["1"] * 5) for _ in range(3))),
      "info --data {in}/tab.csv", ("tab.csv", "tabs")),
    C("one-sample-detect", npz("one.npz", images=IMAGES[:1], labels=LABELS[:1]),
      "detect --data {in}/one.npz --run-dir {out}", ("one.npz", "detection needs")),
    C("one-class-detect", npz("mono.npz", images=IMAGES, labels=np.zeros(12, int)),
      "detect --data {in}/mono.npz --run-dir {out}", ("mono.npz", "two classes")),
    C("three-samples-detect", npz("three.npz", images=IMAGES[:3], labels=LABELS[:3]),
      "detect --data {in}/three.npz --run-dir {out}", ("three.npz", "at least 4")),
    # ---- npz: more of our own
    C("npz-no-known-keys", npz("k.npz", a=IMAGES, b=LABELS), "info --data {in}/k.npz",
      ("k.npz", "Found keys")),
    C("npz-object-array", lambda r: np.savez(r / "o.npz", images=np.array([1, "a"], object),
                                             labels=LABELS), "info --data {in}/o.npz",
      ("o.npz", "pickle")),
    C("npz-single-npy", lambda r: (np.save(r / "a.npy", IMAGES), os.rename(r / "a.npy",
                                                                           r / "a.npz")),
      "info --data {in}/a.npz", ("a.npz", "single array")),
    C("npz-images-1d", npz("d1.npz", images=np.arange(10, dtype=np.uint8), labels=LABELS[:10]),
      "info --data {in}/d1.npz", ("d1.npz", "shape")),
    C("npz-flat-not-square", npz("fl.npz", images=np.zeros((12, 10), np.uint8), labels=LABELS),
      "info --data {in}/fl.npz", ("fl.npz", "not a square")),
    C("npz-count-mismatch", npz("cm.npz", images=IMAGES, labels=LABELS[:5]),
      "info --data {in}/cm.npz", ("cm.npz", "counts differ")),
    C("npz-nan-pixels", npz("nan.npz", images=np.full((3, 2, 2), np.nan), labels=LABELS[:3]),
      "info --data {in}/nan.npz", ("nan.npz", "NaN")),
    C("npz-negative-pixels", npz("neg.npz", images=-np.ones((3, 2, 2), int), labels=LABELS[:3]),
      "info --data {in}/neg.npz", ("neg.npz", "0..255")),
    C("npz-pixels-over-255", npz("hi.npz", images=np.full((3, 2, 2), 300), labels=LABELS[:3]),
      "info --data {in}/hi.npz", ("hi.npz", "0..255")),
    C("npz-float-pixels-over-255", npz("hf.npz", images=np.full((3, 2, 2), 255.5),
                                       labels=LABELS[:3]),
      "info --data {in}/hf.npz", ("hf.npz", "0..255")),
    C("npz-labels-2d", npz("l2.npz", images=IMAGES, labels=np.zeros((12, 3))),
      "info --data {in}/l2.npz", ("l2.npz", "one label per image")),
    C("npz-labels-fractional", npz("lf.npz", images=IMAGES[:2], labels=np.array([0.5, 1.0])),
      "info --data {in}/lf.npz", ("lf.npz", "whole-number")),
    C("npz-labels-negative", npz("ln.npz", images=IMAGES[:2], labels=np.array([0, -3])),
      "info --data {in}/ln.npz", ("ln.npz", ">= 0")),
    C("npz-labels-beyond-names", npz("lb.npz", images=IMAGES[:2], labels=np.array([0, 5]),
                                     class_names=np.array(["a", "b"])),
      "info --data {in}/lb.npz", ("lb.npz", "must be < 2")),
    C("npz-class-names-2d", npz("cn.npz", images=IMAGES, labels=LABELS,
                                class_names=np.array([["a", "b"]])),
      "info --data {in}/cn.npz", ("cn.npz", "class_names")),
    C("npz-empty-images", npz("e.npz", images=np.zeros((0, 4, 4), np.uint8),
                              labels=np.zeros(0, int)),
      "info --data {in}/e.npz", ("e.npz", "empty")),
    C("npz-five-dims", npz("5d.npz", images=np.zeros((2, 2, 2, 2, 2), np.uint8),
                           labels=np.array([0, 1])),
      "info --data {in}/5d.npz", ("5d.npz", "shape")),
    C("npz-duplicate-ids", npz("ids.npz", images=IMAGES[:2], labels=np.array([0, 1]),
                               sample_ids=np.array([7, 7])),
      "info --data {in}/ids.npz", ("ids.npz", "unique")),
    C("npz-string-pixels", npz("sp.npz", images=np.array([[["a"]]]), labels=np.array([0])),
      "info --data {in}/sp.npz", ("sp.npz", "numbers")),
    # ---- csv
    C("csv-empty", text("e.csv", ""), "info --data {in}/e.csv", ("e.csv", "empty")),
    C("csv-header-only", text("h.csv", "label,p0,p1,p2,p3\n"), "info --data {in}/h.csv",
      ("h.csv", "no data rows")),
    C("csv-not-square", text("ns.csv", "1,2,3\n4,5,6\n"), "info --data {in}/ns.csv",
      ("ns.csv", "not a square")),
    C("csv-bad-cell", text("bc.csv", csv_rows(GOOD_ROWS) + "1,2,x,4,5\n"),
      "info --data {in}/bc.csv", ("bc.csv", "line 7")),
    C("csv-ragged", text("rg.csv", csv_rows(GOOD_ROWS) + "1,2,3\n"), "info --data {in}/rg.csv",
      ("rg.csv", "line 7")),
    C("csv-not-utf8", raw("nu.csv", b"1,2,3,4,5\n\xff\xfe,1,1,1,1\n"),
      "info --data {in}/nu.csv", ("nu.csv", "UTF-8")),
    C("csv-binary", raw("bin.csv", bytes(range(256)) * 4), "info --data {in}/bin.csv",
      "bin.csv"),
    C("csv-pixel-300", text("p3.csv", csv_rows([[0, 300, 1, 1, 1], [1, 1, 1, 1, 1]])),
      "info --data {in}/p3.csv", ("p3.csv", "0..255")),
    C("csv-pixel-negative", text("pn.csv", csv_rows([[0, -1, 1, 1, 1], [1, 1, 1, 1, 1]])),
      "info --data {in}/pn.csv", ("pn.csv", "0..255")),
    C("csv-label-fraction", text("lf.csv", csv_rows([[1.5, 1, 1, 1, 1], [1, 1, 1, 1, 1]])),
      "info --data {in}/lf.csv", ("lf.csv", "whole-number")),
    C("csv-label-negative", text("ln.csv", csv_rows([[-2, 1, 1, 1, 1], [1, 1, 1, 1, 1]])),
      "info --data {in}/ln.csv", ("ln.csv", ">= 0")),
    # ---- idx
    C("idx-wrong-magic", idx_pair(img_magic=1234), "info --data {in}/idx",
      ("t10k-images", "magic")),
    C("idx-swapped", idx_pair(img_magic=2049), "info --data {in}/idx", ("t10k-images", "swapped")),
    C("idx-truncated-data", idx_pair(img_payload=bytes(20)), "info --data {in}/idx",
      ("t10k-images", "truncated")),
    C("idx-extra-data", idx_pair(img_payload=bytes(50), gz=False), "info --data {in}/idx",
      ("t10k-images", "header")),
    C("idx-truncated-header", raw("idx/t10k-images-idx3-ubyte", b"\x00\x00\x08\x03\x00"),
      "info --data {in}/idx/t10k-images-idx3-ubyte", "t10k-"),
    C("idx-missing-partner", raw("idx/t10k-images-idx3-ubyte", idx_bytes(2051, (1, 1, 1), b"\0")),
      "info --data {in}/idx", ("t10k-images", "partner")),
    C("idx-bad-gzip", several(idx_pair(), raw("idx/t10k-images-idx3-ubyte.gz", b"not gzip")),
      "info --data {in}/idx", ("t10k-images-idx3-ubyte.gz", "gzip")),
    C("idx-count-mismatch", idx_pair(lab_dims=(3,), lab_payload=bytes(3)), "info --data {in}/idx",
      ("t10k-images", "counts differ")),
    # ---- paths and folders
    C("missing-path", lambda r: None, "info --data {in}/nothing.npz", ("nothing.npz", "no such")),
    C("unknown-suffix", text("d.txt", "x"), "info --data {in}/d.txt", ("d.txt", "unknown data")),
    C("empty-folder", lambda r: (r / "void").mkdir(), "info --data {in}/void",
      ("void", "empty")),
    C("folder-of-junk", several(text("junk/a.txt", "x"), text("junk/b.bin", "y")),
      "info --data {in}/junk", ("junk", "unknown data format")),
    C("run-folder-as-data", run_folder("r"), "info --data {in}/r", ("r", "run folder")),
    C("dataset-missing-files", assay_dataset("ds", lambda f: (f / "images.npy").unlink()),
      "info --data {in}/ds", ("ds", "images.npy missing")),
    C("dataset-json-garbage", assay_dataset("ds", lambda f: (f / "dataset.json").write_text("{")),
      "info --data {in}/ds", ("dataset.json", "JSON")),
    C("dataset-newer-schema", assay_dataset("ds", _set_json("schema_version", 99)),
      "info --data {in}/ds", ("dataset.json", "newer")),
    C("dataset-shape-lies", assay_dataset("ds", _set_json("shape", [3, 8, 8])),
      "info --data {in}/ds", ("images.npy", "shape")),
    C("dataset-manifest-garbage",
      assay_dataset("ds", lambda f: (f / "manifest.parquet").write_bytes(b"PAR1junk")),
      "info --data {in}/ds", ("manifest.parquet", "Parquet")),
    C("dataset-images-not-npy", assay_dataset("ds", lambda f: (f / "images.npy").write_bytes(
        b"junk" * 10)), "info --data {in}/ds", "images.npy"),
    C("image-folder-strict-junk", several(image_folder("imgs", 2),
                                          text("imgs/class0/notes.png", "not an image")),
      "info --data {in}/imgs --strict", "notes.png"),
    # ---- command arguments
    C("inject-unknown-preset", GOOD_NPZ, "inject --data {in}/good.npz --out {out} --preset zzz",
      "zzz"),
    C("inject-config-missing", GOOD_NPZ,
      "inject --data {in}/good.npz --out {out} --config {in}/none.toml", "none.toml"),
    C("validate-suite-missing", GOOD_NPZ,
      "validate --data {in}/good.npz --run-dir {out} --suite {in}/nosuite.json", "nosuite.json"),
    C("validate-reference-missing", GOOD_NPZ,
      "validate --data {in}/good.npz --run-dir {out} --reference {in}/ref.npz", "ref.npz"),
    C("validate-bad-data", raw("rand.npz", bytes(100)),
      "validate --data {in}/rand.npz --run-dir {out}", "rand.npz"),
    C("run-bad-inject", GOOD_NPZ, "run --data {in}/good.npz --run-dir {out} --inject nopreset",
      "nopreset"),
    C("run-suite-missing", GOOD_NPZ,
      "run --data {in}/good.npz --run-dir {out} --suite {in}/s.json", "s.json"),
    C("run-data-missing", lambda r: None, "run --data {in}/absent --run-dir {out}", "absent"),
    C("clean-missing-detection", lambda r: None, "clean --run-dir {out}", "{out}"),
    C("gan-missing-inputs", lambda r: None, "gan --run-dir {out} --steps 5", "run"),
    C("info-missing-data-option", lambda r: None, "info", "--data"),
]


# ----------------------------------------------------------------------------- checks
def tree_state(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a content hash for files, ``dir`` for folders."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        state[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses an option before main's handlers run
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def expand(argv: str, root: Path) -> list[str]:
    return argv.replace("{in}", str(root / "in")).replace("{out}", str(root / "out")).split()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never start a server
    (tmp_path / "in").mkdir()
    case.build(tmp_path / "in")
    before = tree_state(tmp_path)
    code, out, err = run_cli(expand(case.argv, tmp_path), capsys)
    assert code == case.code, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out, err
    for name in case.names:
        name = name.replace("{out}", str(tmp_path / "out"))
        assert name in err, f"{name!r} not in stderr: {err}"
    assert tree_state(tmp_path) == before, "files were changed or left behind"


# ----------------------------------------------------------------------------- faults
def _fail_with(errno_: int):
    def fail(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))

    return fail


@pytest.mark.parametrize(
    "argv, patch, err_no",
    [
        ("inject --data {in}/good.npz --out {out}", "assay.pipeline.io.write_json", errno.ENOSPC),
        ("inject --data {in}/good.npz --out {out}", "assay.pipeline.io.write_json", errno.EROFS),
        ("validate --data {in}/good.npz --run-dir {out}",
         "assay.pipeline.atomic._new_temp_file", errno.ENOSPC),
        ("validate --data {in}/good.npz --run-dir {out}",
         "assay.pipeline.atomic._new_temp_file", errno.EROFS),
        ("expectations learn --data {in}/good.npz --out {out}",
         "assay.pipeline.atomic._new_temp_file", errno.ENOSPC),
    ],
    ids=["inject-full-disk", "inject-read-only", "validate-full-disk", "validate-read-only",
         "learn-full-disk"],
)  # fmt: skip
def test_full_or_read_only_disk(argv, patch, err_no, tmp_path, capsys, monkeypatch):
    """One line naming the path, exit 2, and no empty or half-written folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    GOOD_NPZ(tmp_path / "in")
    monkeypatch.setattr(patch, _fail_with(err_no))
    before = tree_state(tmp_path)
    code, out, err = run_cli(expand(argv, tmp_path), capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert str(tmp_path / "out") in err and os.strerror(err_no) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert tree_state(tmp_path) == before


def test_validate_relative_run_dir_and_abs_gx(tmp_path, capsys, monkeypatch):
    """GX needs an absolute Data Docs folder; a relative --run-dir works all the same."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "good.npz", images=IMAGES, labels=LABELS)
    code, out, err = run_cli(
        ["validate", "--data", "good.npz", "--run-dir", "rel/run"], capsys
    )
    assert code in (0, 3), err  # 3: a critical expectation failed on random pixels
    assert "Traceback" not in err
    assert (tmp_path / "rel/run/validation/validation.json").is_file()
    assert not [p for p in (tmp_path / "rel/run").rglob("*.tmp")]


def test_gan_steps_zero_writes_nothing(tmp_path):
    from assay.pipeline.dataset import Dataset
    from assay.pipeline.generate import compare_gans

    ds = Dataset.create(IMAGES, LABELS)
    for steps in (0, -1, 10**9, 2.5):
        with pytest.raises(DataError, match="`steps` must be an integer in"):
            compare_gans(ds, ds, None, noise_matrix=None, out_dir=tmp_path / "gan", steps=steps)
        assert not (tmp_path / "gan").exists()


def test_run_detection_refuses_bad_folds_before_writing(tmp_path):
    from assay.pipeline.dataset import Dataset
    from assay.pipeline.detect import run_detection

    ds = Dataset.create(IMAGES, LABELS)
    for folds in (0, 1, -1, 51, 10**9, True, 2.0):
        with pytest.raises(DataError, match="`folds`"):
            run_detection(ds, out_dir=tmp_path / "det", folds=folds)
    assert not (tmp_path / "det").exists()


# ----------------------------------------------------------------------------- atomic
def test_files_follow_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic.write_json(tmp_path / "a.json", {"x": 1})
        with atomic.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        from assay.pipeline import io as aio
        from assay.pipeline.dataset import Dataset

        aio.save(Dataset.create(IMAGES, LABELS), tmp_path / "ds")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755
    for name in ("images.npy", "manifest.parquet", "dataset.json"):
        assert stat.S_IMODE((tmp_path / "ds" / name).stat().st_mode) == 0o644, name


def test_files_follow_umask_027(tmp_path):
    old = os.umask(0o027)
    try:
        f = atomic.write_bytes(tmp_path / "b.bin", b"x")
        with atomic.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".x.json.{dead}.abc123.tmp").write_text("half")
    (tmp_path / f".x.json.{alive}.def456.tmp").write_text("a concurrent writer")
    (tmp_path / f".detection.{dead}.zz.tmp").mkdir()
    (tmp_path / f".detection.{dead}.zz.tmp" / "issues.parquet").write_text("half")
    (tmp_path / f".detection.old-{dead}").mkdir()
    atomic.write_json(tmp_path / "x.json", {})
    with atomic.atomic_dir(tmp_path / "detection") as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["x.json", "detection", f".x.json.{alive}.def456.tmp"]
    )


def test_work_dir_removed_and_stale_ones_cleaned(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".work.{dead}.q.tmp").mkdir()
    with atomic.work_dir(tmp_path) as work:
        (work / "x").write_text("x")
        assert work.parent == tmp_path
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), atomic.work_dir(tmp_path) as work:
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_file_cleans_up_and_keeps_old(tmp_path, exc):
    target = atomic.write_text(tmp_path / "t.txt", "old")
    with pytest.raises(exc), atomic.atomic_file(target) as tmp:
        tmp.write_text("new, half")
        raise exc
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_full_disk_names_destination(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic.write_bytes(tmp_path / "out.bin", b"x")
    assert info.value.filename == str(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- processes
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "assay.flows.cli", *args]


def test_broken_pipe_is_quiet(tmp_path):
    """`assay info --data digits | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        _cli("info", "--data", "digits"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def _read_until(proc: subprocess.Popen, marker: bytes) -> list[bytes]:
    """The output lines of ``proc`` up to the first one containing ``marker``."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return seen
    proc.wait()
    pytest.fail(f"no line with {marker!r}:\n" + b"".join(seen).decode())


def test_sigterm_during_detect_leaves_no_temp(tmp_path):
    """SIGTERM wherever it lands (in a fold's thread pool, while writing, after the work):
    exit 143, one line, no temporary file, the input unchanged."""
    np.savez(tmp_path / "good.npz", images=IMAGES, labels=LABELS)
    run = tmp_path / "run"
    before = hashlib.sha256((tmp_path / "good.npz").read_bytes()).hexdigest()
    proc = subprocess.Popen(
        _cli("detect", "--data", str(tmp_path / "good.npz"), "--run-dir", str(run)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # progress lines may go to either stream
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = _read_until(proc, b"[detect] cnn")  # in the middle of detection: the CNN trains
    proc.send_signal(signal.SIGTERM)
    out = (b"".join(seen) + proc.stdout.read()).decode()
    proc.wait(timeout=120)
    if proc.returncode == 0:
        pytest.skip("detection finished before the signal arrived")
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    said = [line for line in out.splitlines() if line.startswith("assay:")]
    assert said == ["assay: terminated; finished stages are kept and a re-run resumes."], said
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]
    assert leftovers == []
    assert hashlib.sha256((tmp_path / "good.npz").read_bytes()).hexdigest() == before


@pytest.mark.slow
def test_sigterm_during_gan_training_ends_the_run_promptly(tmp_path):
    """SIGTERM while the GAN's seeds train side by side in threads: the run ends within
    seconds with 143 and one line, not after the arm's 200,000 steps."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = tmp_path / "digits.npz"
    np.savez(data, images=np.round(digits.images[:300] * 255 / 16).astype(np.uint8),
             labels=digits.target[:300])  # fmt: skip
    proc = subprocess.Popen(
        _cli("run", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--folds", "2",
             "--steps", "200000", "--seeds", "2", "--device", "cpu"),  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = _read_until(proc, b"training 200000 steps")
    time.sleep(1.0)  # both seeds are inside their step loops
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    out = (b"".join(seen) + rest).decode()
    assert proc.returncode == 143, out
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in out, out
    said = [line for line in out.splitlines() if line.startswith("assay:")]
    assert said == ["assay: terminated; finished stages are kept and a re-run resumes."], said


@pytest.mark.slow
def test_prefect_server_dies_with_killed_parent(tmp_path):
    """kill -9 of the process that started Prefect's temporary server kills the server."""
    script = (
        "import time\n"
        "from assay.flows.server_guard import guard_ephemeral_server\n"
        "server = guard_ephemeral_server()\n"
        "print(server.server_process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        server_pid = int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{server_pid}/stat") as fh:
            if fh.read().split()[2] == "Z":
                return  # dead, waiting to be reaped by init
        time.sleep(0.5)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("the Prefect server outlived its parent")


def test_die_with_parent_preexec_kills_orphan(tmp_path):
    """The parent-death signal itself, without Prefect: a child of a killed parent dies."""
    from assay.flows.server_guard import die_with_parent

    if die_with_parent() is None:
        pytest.skip("no parent-death signal on this OS")
    script = (
        "import subprocess, sys, time\n"
        "from assay.flows.server_guard import popen_guarded\n"
        "child = popen_guarded([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


@pytest.mark.slow
def test_twenty_image_folder_runs_every_stage(tmp_path, capsys, monkeypatch):
    """Small data adapts instead of crashing: 20 images, 2 classes of 10, through every
    stage; what cannot be measured on so few images is said, not a traceback."""
    monkeypatch.chdir(tmp_path)
    image_folder("imgs", 10)(tmp_path)
    before = tree_state(tmp_path / "imgs")
    code, out, err = run_cli(
        ["detect", "--data", "imgs", "--run-dir", "run", "--device", "cpu"], capsys
    )
    assert code == 0, err
    code, out, err = run_cli(["clean", "--run-dir", "run"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["gan", "--run-dir", "run", "--steps", "5", "--seeds", "2",
                              "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    assert "precision/recall not measured" in err
    code, out, err = run_cli(["report", "--run-dir", "run"], capsys)
    assert code == 0 and "Traceback" not in err, err
    verdict = json.loads((tmp_path / "run" / "run.json").read_text())["verdict"]
    assert verdict["outcome"] in {"too_short_to_judge", "no_clear_difference"}, verdict
    assert (tmp_path / "run" / "report.html").is_file()
    assert tree_state(tmp_path / "imgs") == before
