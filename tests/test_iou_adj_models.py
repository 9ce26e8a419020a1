"""Models know which IoU_adj their regressor learned (the paper's or the local variant).

A model trained on tables measured with ``metrics --iou-adj local`` records it; every job that
measures cases for that model (predict, label errors, the panel's analysis and refit of the
current case) measures the local IoU_adj too, and tables of the other definition are refused
when training or refitting, instead of mixing two targets in one regressor. The local and the
paper IoU_adj share their numerator, so P(IoU_adj = 0), the classifier's target, is the same.
"""

import numpy as np
import pandas as pd
import pytest
from _cases import save_cases, smooth_volume

from napari_metaseg.cli import main
from napari_metaseg.core import segment_metrics
from napari_metaseg.core.meta_io import MetaModelFileError, load_models, save_models
from napari_metaseg.core.meta_model import MetaRegressor
from napari_metaseg.core.progress import drain
from napari_metaseg.io.results import read_settings, write_table
from napari_metaseg.workflows import analyse, iou_adj_of, load_model, refit_case
from napari_metaseg.workflows.models import recorded_segmentation

SHAPE = (24, 26, 6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("iou_adj")
    arrays = {f"c{i}": smooth_volume(i, SHAPE, error_rate=0.6) for i in range(4)}
    save_cases(root, arrays)
    return root, arrays


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _local(arrays, name, mode="slices"):
    p, gt = arrays[name]
    return segment_metrics(p, gt, mode=mode, slice_axis=-1, iou_adj="local")[1]


@pytest.fixture(scope="module")
def local_model(data, tmp_path_factory):
    root, arrays = data
    tmp = tmp_path_factory.mktemp("local_model")
    # the data must tell the definitions apart, or nothing below could fail
    p, gt = arrays["c0"]
    paper = segment_metrics(p, gt, mode="slices", slice_axis=-1)[1]["iou_adj"].to_numpy()
    assert (paper != _local(arrays, "c0")["iou_adj"].to_numpy()).mean() > 0.05
    code = main([str(a) for a in ("metrics", root / "c0_softmax.npy", root / "c1_softmax.npy", "--out",
                                  tmp / "local", "--mode", "slices", "--iou-adj", "local", "-q")])
    assert code == 0
    model = tmp / "local.json"
    code = main([str(a) for a in ("train", tmp / "local", "--out", model, "--splits", "0",
                                  "--min-interior", "0", "-q")])
    assert code == 0
    return model, tmp


def test_the_model_records_the_local_definition(local_model):
    model, _ = local_model
    models = load_model(model)
    assert iou_adj_of(models.segmentation) == "local"
    assert models.segmentation["mode"] == "slices"


def test_predict_measures_cases_with_the_models_definition(data, local_model, tmp_path, capsys):
    root, arrays = data
    model, _ = local_model
    code, _, err = _run(capsys, "predict", model, root / "c2_softmax.npy", "--out", tmp_path / "pred", "-q")
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    want = _local(arrays, "c2")
    np.testing.assert_allclose(table["iou_adj"].to_numpy(), want["iou_adj"].to_numpy())
    settings = read_settings(tmp_path / "pred" / "predictions.parquet")
    assert settings["iou_adj"] == "local" and recorded_segmentation(settings)["iou_adj"] == "local"


def test_training_on_a_mix_of_definitions_is_refused(data, local_model, tmp_path, capsys):
    root, _ = data
    _, tmp = local_model
    code, _, _ = _run(capsys, "metrics", root / "c2_softmax.npy", "--out", tmp_path / "paper", "--mode",
                      "slices", "-q")
    assert code == 0
    code, _, err = _run(capsys, "train", tmp / "local", tmp_path / "paper", "--out", tmp_path / "m.json",
                        "--splits", "0", "--min-interior", "0", "-q")
    assert code == 2 and "mix the paper's and the local IoU_adj" in err
    assert not (tmp_path / "m.json").exists()


def test_refit_takes_tables_of_the_models_definition_only(data, local_model, tmp_path, capsys):
    root, _ = data
    model, _ = local_model
    code, _, _ = _run(capsys, "metrics", root / "c3_softmax.npy", "--out", tmp_path / "paper", "--mode",
                      "slices", "-q")
    assert code == 0
    code, _, err = _run(capsys, "refit", model, tmp_path / "paper", "--out", tmp_path / "r.json",
                        "--min-interior", "0", "-q")
    assert code == 2 and "IoU_adj" in err
    code, _, _ = _run(capsys, "metrics", root / "c3_softmax.npy", "--out", tmp_path / "local", "--mode",
                      "slices", "--iou-adj", "local", "-q")
    code, _, err = _run(capsys, "refit", model, tmp_path / "local", "--out", tmp_path / "r.json",
                        "--min-interior", "0", "-q")
    assert code == 0, err
    assert iou_adj_of(load_model(tmp_path / "r.json").segmentation) == "local"


def test_tables_written_before_the_record_carried_the_definition(data, tmp_path):
    """Local tables of the previous release record the request's ``iou_adj`` but a segmentation
    record without it: they still count as local."""
    _, arrays = data
    old = {"mode": "slices", "slice_axis": -1, "ignore_index": 255, "class_axis": -1, "iou_adj": "local",
           "segmentation": {"mode": "slices", "slice_axis": -1, "ignore_index": 255}}
    path = write_table(_local(arrays, "c0").assign(case="c0"), tmp_path / "old.parquet", settings=old)
    assert recorded_segmentation(read_settings(path))["iou_adj"] == "local"
    paper = {**old, "iou_adj": "paper"}
    assert "iou_adj" not in recorded_segmentation(paper)
    assert recorded_segmentation(None) is None


def test_the_panels_analysis_and_refit_use_the_models_definition(data, local_model):
    _, arrays = data
    model, _ = local_model
    models = load_model(model)
    p, gt = arrays["c3"]
    got = drain(analyse(p, gt, mode="slices", heatmaps=(), models=models))
    np.testing.assert_allclose(got.table["iou_adj"].to_numpy(), _local(arrays, "c3")["iou_adj"].to_numpy())
    assert iou_adj_of(got.segmentation) == "local"
    with pytest.raises(ValueError, match="trained on the local IoU_adj"):
        drain(analyse(p, gt, mode="slices", heatmaps=(), models=models, iou_adj="paper"))
    # without a model the paper's definition, as before
    plain = drain(analyse(p, gt, mode="slices", heatmaps=()))
    np.testing.assert_allclose(plain.table["iou_adj"].to_numpy(),
                               segment_metrics(p, gt, mode="slices")[1]["iou_adj"].to_numpy())
    result = drain(refit_case(models, p, gt, case_id="c3", mode="slices"))
    np.testing.assert_allclose(result.measured.table["iou_adj"].to_numpy(),
                               _local(arrays, "c3")["iou_adj"].to_numpy())
    assert iou_adj_of(result.segmentation) == "local"


def test_classifier_target_is_the_same_under_both_definitions(data):
    """Same numerator: IoU_adj = 0 exactly when the segment meets no ground truth of its class."""
    _, arrays = data
    for name in arrays:
        p, gt = arrays[name]
        for mode in ("slices", "3d"):
            paper = segment_metrics(p, gt, mode=mode)[1]["iou_adj"].to_numpy()
            local = _local(arrays, name, mode)["iou_adj"].to_numpy()
            np.testing.assert_array_equal(paper == 0, local == 0)


def test_model_files_store_the_definition_and_refuse_a_foreign_one(tmp_path):
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"E": rng.random(40), "S": rng.integers(1, 50, 40)})
    reg = MetaRegressor(kind="linear").fit(x, rng.random(40))
    seg = {"mode": "3d", "slice_axis": None, "ignore_index": 255}
    save_models(tmp_path / "l.json", regressor=reg, segmentation={**seg, "iou_adj": "local"})
    assert load_models(tmp_path / "l.json")[2]["segmentation"]["iou_adj"] == "local"
    save_models(tmp_path / "p.json", regressor=reg, segmentation={**seg, "iou_adj": "paper"})
    assert "iou_adj" not in load_models(tmp_path / "p.json")[2]["segmentation"]  # paper: the default
    for bad in ("exec('x')", 1, ["local"]):
        with pytest.raises((MetaModelFileError, ValueError, TypeError), match="iou_adj"):
            save_models(tmp_path / "b.json", regressor=reg, segmentation={**seg, "iou_adj": bad})
