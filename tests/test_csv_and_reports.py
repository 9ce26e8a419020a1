"""Honest outputs: CSV cells never run as spreadsheet formulas, reports say when a model is scored
on its own training cases, and tools/test.sh does not see missing libraries that are there."""

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_metaseg.core.csv_safe import (
    FORMULA_TRIGGERS,
    escape_cell,
    unescape_cell,
    write_csv,
)

HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "'=quoted",
           "''=twice"]


@pytest.fixture(autouse=True)
def _private_reviews(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))


def _cells(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [cell for row in csv.reader(f) for cell in row]


def _no_formula(cells):
    return all(c[:1] not in FORMULA_TRIGGERS for c in cells if not _is_number(c))


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("=+-@\t\r'ab1 ")), max_size=8))
def test_escaping_is_reversible_and_never_leaves_a_formula(text):
    out = escape_cell(text)
    assert out[:1] not in FORMULA_TRIGGERS
    assert unescape_cell(out) == text
    assert out == text or out == "'" + text


def test_numbers_stay_numbers(tmp_path):
    p = write_csv(pd.DataFrame({"case": ["-a"], "x": [-0.5], "n": [-3]}), tmp_path / "t.csv")
    assert p.read_text().splitlines() == ["case,x,n", "'-a,-0.5,-3"]


def test_review_export_quotes_hostile_notes_and_case_names(tmp_path):
    from napari_metaseg.io.review import ReviewStore, case_identity, sidecar_path

    gt = np.zeros((4, 4), np.uint8)
    ident = case_identity(gt, probs_shape=(4, 4, 2), case_id="=evil")
    table = pd.DataFrame({"case": ["=evil"] * len(HOSTILE), "kind": ["segment"] * len(HOSTILE),
                          "class": [1] * len(HOSTILE), "score": [0.5] * len(HOSTILE)})
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.set_proposals(table)
        for i, note in enumerate(HOSTILE):
            store.set_decision(i, "label_error", note=note)
        out = store.export_csv(tmp_path / "review.csv")
    cells = _cells(out)
    assert _no_formula(cells)
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert [unescape_cell(r["note"]) for r in rows] == HOSTILE
    assert {r["case"] for r in rows} == {"'=evil"}


def test_failed_csv_quotes_hostile_case_names_and_errors(tmp_path):
    from napari_metaseg.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "=cmd_softmax.npy").write_bytes(b"not an array")
    np.save(data / "ok_softmax.npy", np.full((8, 8, 2), 0.5, np.float32))
    assert main(["metrics", str(data), "--out", str(tmp_path / "out"), "-q"]) == 1
    cells = _cells(tmp_path / "out" / "failed.csv")
    assert cells[:2] == ["case", "error"] and cells[2] == "'=cmd" and _no_formula(cells)


def test_meta_dataset_csv_round_trips_hostile_case_names(tmp_path):
    from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table

    ds = MetaDataset()
    for i, name in enumerate([*HOSTILE[:5], "plain"]):
        ds.add(name, synthetic_metrics_table(10, random_state=i))
    p = ds.save(tmp_path / "train.csv")
    raw = pd.read_csv(p, dtype={"case": str}, keep_default_na=False)
    assert _no_formula(raw["case"].tolist())
    back = MetaDataset.load(p)
    assert back.cases == ds.cases
    pd.testing.assert_frame_equal(back.table, ds.table, check_dtype=False)


def test_cli_csv_outputs_quote_hostile_case_names(tmp_path):
    from napari_metaseg.cli import _read_one_table, _write_csv

    table = pd.DataFrame({"case": HOSTILE, "p_iou0": np.linspace(0, 1, len(HOSTILE))})
    _write_csv(table, tmp_path / "rank.csv")
    assert _no_formula(_cells(tmp_path / "rank.csv"))
    # read back (pandas splits a quoted bare CR into two rows, escaped or not: left out here)
    names = [n for n in HOSTILE if "\r" not in n]
    _write_csv(table[table["case"].isin(names)], tmp_path / "rank.csv")
    assert _read_one_table(tmp_path / "rank.csv")["case"].tolist() == names


def test_every_csv_writer_of_the_package_goes_through_the_helper():
    """DataFrames are written only by ``csv_safe.write_csv``; a module that uses ``csv.writer``
    escapes its rows (``escape_row`` / ``escape_cell``)."""
    root = Path(__file__).resolve().parents[1] / "napari_metaseg"
    offenders = []
    for py in root.rglob("*.py"):
        if py.name == "csv_safe.py":
            continue
        text = py.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            if ".to_csv(" in line or ("csv.writer(" in line and "escape_" not in text):
                offenders.append(f"{py.relative_to(root)}:{lineno}")
    assert not offenders, offenders


# ============================================================================================
# Reports on a model's own training cases
# ============================================================================================
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The README pipeline on two small cases: metrics, train, predict (on a training case and on
    an unseen one)."""
    from napari_metaseg.cli import main

    tmp = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(3)
    data = tmp / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        p = rng.dirichlet([0.4, 0.4, 0.4], size=(40, 40)).astype(np.float32)
        gt = p.argmax(-1).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.3] = 0
        np.save(data / f"{name}_softmax.npy", p)
        np.save(data / f"{name}_gt.npy", gt)
    train = [str(data / "a_softmax.npy"), str(data / "b_softmax.npy")]
    assert main(["metrics", *train, "--out", str(tmp / "m"), "-q"]) == 0
    assert main(["train", str(tmp / "m"), "--out", str(tmp / "model.json"), "--splits", "0", "-q",
                 "--min-interior", "0"]) == 0
    assert main(["predict", str(tmp / "model.json"), *train, "--out", str(tmp / "pred_seen"), "-q"]) == 0
    assert main(["predict", str(tmp / "model.json"), str(data / "c_softmax.npy"),
                 "--out", str(tmp / "pred_unseen"), "-q"]) == 0
    return tmp


def test_report_on_stored_predictions_of_training_cases_says_in_sample(pipeline, capsys):
    from napari_metaseg.cli import main

    out = pipeline / "report.html"
    capsys.readouterr()
    assert main(["report", str(pipeline / "pred_seen"), "--out", str(out), "--splits", "0", "-q",
                 "--min-interior", "0"]) == 0
    err = capsys.readouterr().err
    # said on stderr even with -q, and in the page
    assert "napari-metaseg: warning: report: in-sample: the predictions in" in err
    assert "trained on 2 of these cases (a, b)" in err
    assert "in-sample: the predictions in" in out.read_text()


def test_report_on_unseen_cases_says_nothing_of_the_sort(pipeline, capsys):
    from napari_metaseg.cli import main

    out = pipeline / "report2.html"
    capsys.readouterr()
    assert main(["report", str(pipeline / "pred_unseen"), "--out", str(out), "--splits", "0",
                 "--min-interior", "0"]) == 0
    assert "in-sample" not in capsys.readouterr().err and "in-sample" not in out.read_text()


def test_report_with_a_model_on_its_training_cases_says_in_sample(pipeline, capsys):
    from napari_metaseg.cli import main

    out = pipeline / "report3.html"
    capsys.readouterr()
    assert main(["report", str(pipeline / "m"), "--model", str(pipeline / "model.json"), "--out", str(out),
                 "--splits", "0", "-q", "--min-interior", "0"]) == 0
    assert "in-sample: the model was trained on 2 of these cases" in capsys.readouterr().err


def test_report_says_when_the_model_of_stored_predictions_is_gone(pipeline, tmp_path, capsys):
    from napari_metaseg.cli import main

    moved = tmp_path / "pred"
    shutil.copytree(pipeline / "pred_seen", moved)
    model = pipeline / "model.json"
    backup = model.read_bytes()
    try:
        model.write_bytes(backup.replace(b'"format_version": 1', b'"format_version": 1 '))
        assert main(["report", str(moved), "--out", str(tmp_path / "r.html"), "--splits", "0",
                     "--min-interior", "0"]) == 0
    finally:
        model.write_bytes(backup)
    assert "missing or changed since: whether these cases were in its training data cannot be checked" in \
        capsys.readouterr().err


def test_report_escapes_html_in_case_names_and_paths(tmp_path):
    from napari_metaseg.cli import main
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table

    evil = "<script>alert(1)</script>"
    t = synthetic_metrics_table(40, random_state=0)
    t.insert(0, "case", evil)
    src = tmp_path / "<img src=x onerror=alert(2)>.csv"
    t.to_csv(src, index=False)
    out = tmp_path / "r.html"
    assert main(["report", str(src), "--out", str(out), "--splits", "0", "-q"]) == 0
    page = out.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_train_and_evaluate_default_to_the_same_min_interior():
    from napari_metaseg.cli import _min_interior, build_parser

    parser = build_parser()
    a = parser.parse_args(["train", "t.parquet", "--out", "m.json"])
    b = parser.parse_args(["evaluate", "t.parquet"])
    assert _min_interior(a) == _min_interior(b) == 1


# ============================================================================================
# tools/test.sh
# ============================================================================================
def test_test_script_need_libs_is_not_fooled_by_sigpipe(tmp_path):
    """``ldconfig -p | grep -q`` under pipefail reported missing libraries when grep stopped
    reading early; with a long library list it did so every time."""
    script = (Path(__file__).resolve().parents[1] / "tools" / "test.sh").read_text()
    start = script.index("need_libs() {")
    func = script[start: script.index("\n}\n", start) + 3]
    fake = tmp_path / "bin"
    fake.mkdir()
    lines = ["\tlibxkbcommon-x11.so.0 (libc6,x86-64) => /lib/libxkbcommon-x11.so.0",
             "\tlibxcb-icccm.so.4 (libc6,x86-64) => /lib/libxcb-icccm.so.4",
             "\tlibEGL.so.1 (libc6,x86-64) => /lib/libEGL.so.1"]
    listing = "\n".join(lines + [f"\tlibfiller{i}.so (libc6,x86-64) => /lib/libfiller{i}.so"
                                 for i in range(20000)])
    (tmp_path / "listing.txt").write_text(listing + "\n")
    (fake / "ldconfig").write_text(f"#!/bin/sh\ncat {tmp_path / 'listing.txt'}\n")
    (fake / "xvfb-run").write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    loop = "for i in $(seq 20); do if need_libs; then echo missing; else echo ok; fi; done"
    body = f"set -euo pipefail\n{func}\n{loop}\n"
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["ok"] * 20
    # and a library that is really missing is still found missing
    (tmp_path / "listing.txt").write_text("\n".join(lines[:2]) + "\n")
    out = subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["missing"] * 20
