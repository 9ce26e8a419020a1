"""The workflows layer: one job each, shared by panels, CLI and batch; one model file format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import write_npy_cases

from napari_metaseg import workflows as wf
from napari_metaseg.cli import main
from napari_metaseg.core.progress import drain, rescaled
from napari_metaseg.io.cases import Case


def _payload(path):
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)["payload"]


# ---------------------------------------------------------------------------------------------
# the progress protocol
# ---------------------------------------------------------------------------------------------
def test_drain_returns_the_result_and_reports_every_step():
    def job():
        yield 0.25, "a"
        yield 0.75, "b"
        return "done"

    seen = []
    assert drain(job(), lambda f, s: seen.append((f, s))) == "done"
    assert seen == [(0.25, "a"), (0.75, "b")]


def test_rescaled_maps_nested_progress_into_its_span():
    def inner():
        yield 0.0, "start"
        yield 0.5, "half"
        yield 1.0, "end"
        return 7

    def outer():
        r = yield from rescaled(inner(), 0.2, 0.6, prefix="x: ")
        yield 1.0, "outer"
        return r * 2

    seen = []
    assert drain(outer(), lambda f, s: seen.append((round(f, 6), s))) == 14
    assert seen == [(0.2, "x: start"), (0.4, "x: half"), (0.6, "x: end"), (1.0, "outer")]


def test_every_job_is_a_generator_that_stops_when_closed(tmp_path):
    """Cancelling a panel closes the job at a yield: nothing after it runs."""
    write_npy_cases(tmp_path / "d", 3, shape=(32, 32))
    from napari_metaseg.io.cases import find_cases

    cases = find_cases([tmp_path / "d"])
    job = wf.measure_cases(cases, tmp_path / "out", wf.case_settings())
    fraction, stage = next(job)
    assert 0 < fraction < 1 and "done" in stage
    job.close()
    assert not (tmp_path / "out" / "metrics.parquet").exists()
    assert len(list((tmp_path / "out" / "cases").glob("*.parquet"))) == 1


# ---------------------------------------------------------------------------------------------
# one model file, whichever front end saved it
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    arrays = write_npy_cases(tmp / "d", 4, shape=(64, 64))
    assert main(["metrics", str(tmp / "d"), "--out", str(tmp / "m"), "-q"]) == 0
    return tmp, arrays


def test_cli_and_panel_workflow_save_models_with_the_same_keys(measured):
    tmp, arrays = measured
    # the CLI
    cli_model = tmp / "cli.json.gz"
    assert main(["train", str(tmp / "m"), "--min-interior", "0", "--splits", "2", "-q",
                 "--out", str(cli_model)]) == 0
    # the meta panel's workflow: the analysis result of each case as "current" tables
    tables = pd.read_parquet(tmp / "m" / "metrics.parquet")
    seg = wf.analyse(arrays["case00"][0], arrays["case00"][1])
    analysis = drain(seg)
    assert analysis.segmentation == {"mode": "2d", "slice_axis": None, "ignore_index": 255}
    others = tables[tables["case"] != "case00"]
    result = drain(wf.train(current=("case00", analysis.table, analysis.segmentation),
                            table=(others, None), min_interior=0, n_splits=2, plots=True))
    panel_model = wf.save_model(tmp / "panel.json.gz", result)
    # the active-learning panel's refit
    new_case = Case("case03b", tmp / "d" / "case03_softmax.npy", tmp / "d" / "case03_gt.npy")
    refit = drain(wf.refit(wf.load_model(panel_model), cases=[new_case], settings=wf.case_settings()))
    refit_model = wf.save_model(tmp / "refit.json.gz", refit)

    payloads = [_payload(p) for p in (cli_model, panel_model, refit_model)]
    keys = [set(p) for p in payloads]
    assert keys[0] == keys[1] == keys[2]
    assert {"segmentation", "training_data", "evaluation"} <= keys[0]
    for p in payloads:
        assert p["segmentation"] == {"mode": "2d", "slice_axis": None, "ignore_index": 255}
        ref = p["training_data"]
        assert set(ref) == {"file", "sha256", "cases", "n_segments", "min_interior"}
    assert payloads[0]["evaluation"] is not None and payloads[1]["evaluation"] is not None
    assert sorted(payloads[0]["training_data"]["cases"]) == sorted(payloads[1]["training_data"]["cases"])
    assert payloads[2]["training_data"]["cases"][-1] == "case03b"
    assert len(payloads[2]["training_data"]["cases"]) == 5
    # the same contents load the same way, with the dataset beside the file
    for path, n in ((cli_model, 4), (panel_model, 4), (refit_model, 5)):
        m = wf.load_model(path)
        assert m.dataset is not None and len(m.dataset.cases) == n, m.note
        assert m.segmentation["mode"] == "2d"


def test_a_changed_training_dataset_is_left_out_on_load(measured):
    tmp, _ = measured
    model = tmp / "changed.json"
    assert main(["train", str(tmp / "m"), "--min-interior", "0", "--splits", "0", "-q",
                 "--out", str(model)]) == 0
    ds_file = wf.dataset_path(model)
    assert wf.load_model(model).dataset is not None
    ds_file.write_text(ds_file.read_text() + "\n")
    m = wf.load_model(model)
    assert m.dataset is None and "changed since the model was saved" in m.note
    ds_file.unlink()
    m = wf.load_model(model)
    assert m.dataset is None and "no training data" in m.note


def test_refit_lists_a_replaced_case_and_keeps_the_others(measured):
    tmp, _ = measured
    model = tmp / "base.json"
    assert main(["train", str(tmp / "m"), "--min-interior", "0", "--splits", "0", "-q",
                 "--out", str(model)]) == 0
    base = wf.load_model(model)
    case = Case("case01", tmp / "d" / "case01_softmax.npy", tmp / "d" / "case01_gt.npy")
    r = drain(wf.refit(base, cases=[case], settings=wf.case_settings()))
    assert r.replaced == ["case01"]
    assert sorted(r.dataset.cases) == ["case00", "case01", "case02", "case03"]
    assert r.previous_cases == ["case00", "case02", "case03"] and r.added_cases == ["case01"]
    assert [rec.get("refit", False) for rec in r.classifier.provenance_] == [False, True]


def test_cli_refit_extends_the_saved_training_data(measured, capsys):
    tmp, _ = measured
    model = tmp / "half.json"
    half = pd.read_parquet(tmp / "m" / "metrics.parquet")
    half[half["case"].isin(["case00", "case01"])].to_csv(tmp / "half.csv", index=False)
    half[half["case"].isin(["case02", "case03"])].to_csv(tmp / "rest.csv", index=False)
    assert main(["train", str(tmp / "half.csv"), "--min-interior", "0", "--splits", "0", "-q",
                 "--out", str(model)]) == 0
    assert main(["refit", str(model), str(tmp / "rest.csv"), "-q", "--out", str(tmp / "full.json")]) == 0
    out = capsys.readouterr().out
    assert "refitted on 4 cases" in out
    full = wf.load_model(tmp / "full.json")
    assert sorted(full.dataset.cases) == ["case00", "case01", "case02", "case03"]
    assert len(full.classifier.provenance_) == 2
    # tables of cases already in the training data replace them, and the CLI says so
    assert main(["refit", str(tmp / "full.json"), str(tmp / "half.csv"), "-q", "--out",
                 str(tmp / "again.json")]) == 0
    assert "replaced in the training data: case00, case01" in capsys.readouterr().out
    assert sorted(wf.load_model(tmp / "again.json").dataset.cases) == ["case00", "case01", "case02", "case03"]


# ---------------------------------------------------------------------------------------------
# segmentation compatibility: one check for CLI and panels
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "asked", "expected"), [
    ({"mode": "slices", "slice_axis": 2}, (None, None), ("slices", 2)),
    ({"mode": "slices", "slice_axis": -1}, ("slices", 2), ("slices", 2)),  # -1 is axis 2 of a volume
    ({"mode": "slices", "slice_axis": 2}, ("2d", None), ("2d", None)),
    ({"mode": "3d", "slice_axis": None}, (None, None), ("3d", None)),
    ({"mode": "2d", "slice_axis": None}, (None, None), (None, None)),
    ({"mode": "auto", "slice_axis": None}, ("3d", None), ("3d", None)),
    (None, ("slices", 0), ("slices", 0)),
])
def test_check_segmentation_takes_the_models_mode(model, asked, expected):
    assert wf.check_segmentation(model, mode=asked[0], slice_axis=asked[1]) == expected


@pytest.mark.parametrize(("model", "asked"), [
    ({"mode": "slices", "slice_axis": 2}, ("3d", None)),
    ({"mode": "slices", "slice_axis": 2}, ("slices", 0)),
    ({"mode": "3d", "slice_axis": None}, ("slices", None)),
    ({"mode": "3d", "slice_axis": None}, ("2d", None)),
])
def test_check_segmentation_refuses_another_kind_of_segments(model, asked):
    with pytest.raises(ValueError, match="was trained on segments made"):
        wf.check_segmentation(model, mode=asked[0], slice_axis=asked[1])


def test_analyse_refuses_a_model_of_another_segmentation(measured):
    _, arrays = measured
    p = arrays["case00"][0]
    volume = np.stack([p] * 3, axis=2)
    models = wf.MetaModels(classifier=None, regressor=None, segmentation={"mode": "3d", "slice_axis": None,
                                                                           "ignore_index": 255})
    with pytest.raises(ValueError, match="trained on segments made in 3d"):
        drain(wf.analyse(volume, mode="slices", models=models))


# ---------------------------------------------------------------------------------------------
# the model file's training-data reference is untrusted input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"file": "../x.csv"}, {"file": "/etc/passwd"}, {"file": ""}, {"sha256": "ab"},
    {"sha256": "Z" * 64}, {"cases": "a"}, {"cases": [1, 2]}, {"n_segments": -1},
    {"n_segments": 10**400}, {"min_interior": True}, {"min_interior": "1"},
])
def test_a_crafted_training_data_reference_is_refused(measured, bad):
    from napari_metaseg.core.meta_io import FORMAT_NAME, FORMAT_VERSION, MetaModelFileError, _canonical

    tmp, _ = measured
    model = tmp / "ref.json"
    if not model.exists():
        assert main(["train", str(tmp / "m"), "--min-interior", "0", "--splits", "0", "-q",
                     "--out", str(model)]) == 0
    payload = _payload(model)
    payload["training_data"] = {**payload["training_data"], **bad}
    import hashlib

    canonical = _canonical(payload)
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
           "sha256": hashlib.sha256(canonical.encode()).hexdigest(), "payload": payload}
    crafted = tmp / "crafted.json"
    crafted.write_text(json.dumps(doc))
    with pytest.raises(MetaModelFileError, match="training_data"):
        wf.load_model(crafted)


# ---------------------------------------------------------------------------------------------
# over cases: input order, failures listed, the run goes on
# ---------------------------------------------------------------------------------------------
def test_rank_keeps_going_past_a_broken_case_and_lists_it(measured, tmp_path):
    tmp, _ = measured
    model = tmp / "rank.json"
    assert main(["train", str(tmp / "m"), "--min-interior", "0", "--splits", "0", "-q",
                 "--out", str(model)]) == 0
    broken = tmp_path / "broken_softmax.npy"
    broken.write_bytes(b"not a numpy file")
    cases = [Case("case00", tmp / "d" / "case00_softmax.npy", None), Case("broken", broken, None),
             Case("case01", tmp / "d" / "case01_softmax.npy", None)]
    stages = []
    result = drain(wf.rank(cases, model, wf.case_settings()), lambda f, s: stages.append(s))
    assert sorted(result.ranking["case"]) == ["case00", "case01"]
    assert [c for c, _ in result.failed] == ["broken"]
    assert any(s.startswith("case broken failed: ") for s in stages)
    # the panel's models (objects) rank exactly like the CLI's model file
    same = drain(wf.rank(cases, wf.load_model(model), wf.case_settings()))
    pd.testing.assert_frame_equal(same.ranking, result.ranking)


def test_too_few_segments_says_what_would_give_more():
    """3D segments of a small volume are few: the error names slice-wise mode and min interior 0."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1], size=(6, 6, 4)).astype(np.float32)
    p[..., 0] = np.where(np.arange(6)[:, None, None] < 3, 0.9, 0.1)
    p[..., 1] = 1 - p[..., 0]
    gt = (p[..., 1] > 0.5).astype(np.uint8)
    analysis = drain(wf.analyse(p, gt, mode="3d", heatmaps=()))
    assert len(analysis.table) < 10
    with pytest.raises(ValueError) as err:
        drain(wf.train(current=("vol", analysis.table, analysis.segmentation), n_splits=0, min_interior=1))
    msg = str(err.value)
    assert "usable segments" in msg and "slice by slice" in msg and "min interior to 0 (now 1" in msg
    # 3D's default already keeps every segment: the hint does not propose it again
    with pytest.raises(ValueError) as err:
        drain(wf.train(current=("vol", analysis.table, analysis.segmentation), n_splits=0))
    msg = str(err.value)
    assert "slice by slice" in msg and "min interior" not in msg


def test_resume_recomputes_tables_made_before_the_image_scores(tmp_path, capsys):
    """A case table written before tables carried the image scores (no ``table_version``) is
    recomputed when its case has ground truth (else ``train`` could not fit the image regressor);
    one without ground truth has nothing to add and stays done."""
    from napari_metaseg.cli import main
    from napari_metaseg.io.results import read_settings, write_table

    rng = np.random.default_rng(5)
    data, out = tmp_path / "d", tmp_path / "out"
    data.mkdir()
    for name, with_gt in (("g", True), ("n", False)):
        p = rng.dirichlet([1, 1, 1], size=(20, 24)).astype(np.float32)
        np.save(data / f"{name}_softmax.npy", p)
        if with_gt:
            np.save(data / f"{name}_gt.npy", p.argmax(-1).astype(np.uint8))
    assert main(["metrics", str(data), "--out", str(out), "-q"]) == 0
    assert "image_mean_iou" in pd.read_parquet(out / "cases" / "g.parquet").columns
    for name in ("g", "n"):  # as an older version wrote them
        path = out / "cases" / f"{name}.parquet"
        table = pd.read_parquet(path).drop(columns=["image_mean_iou", "image_mean_dice"], errors="ignore")
        write_table(table, path, settings={k: v for k, v in read_settings(path).items()
                                           if k != "table_version"})
    capsys.readouterr()
    assert main(["metrics", str(data), "--out", str(out)]) == 0
    assert "1 computed, 1 already done" in capsys.readouterr().err
    assert "image_mean_iou" in pd.read_parquet(out / "cases" / "g.parquet").columns
    assert read_settings(out / "cases" / "g.parquet")["table_version"] == 2
