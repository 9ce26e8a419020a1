"""CLI `scores` and `quality` (train / predict / evaluate) and the quality workflows, on small
synthetic case files."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.cli import main
from napari_metaseg.core import image_features, segment_metrics, segmentation_scores
from napari_metaseg.core.progress import drain
from napari_metaseg.io.cases import Case
from napari_metaseg.workflows import error_detection, image_rows, load_quality_model

SHAPE = (18, 20, 12)


def _volume(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*SHAPE, 3))
    logits = np.cumsum(np.cumsum(logits, axis=0), axis=1) / 5 * rng.uniform(0.5, 2.0)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    pred = p.argmax(-1)
    flip = rng.random(SHAPE) < (1 - p.max(-1)) * rng.uniform(0.3, 1.2, SHAPE[2])[None, None, :]
    gt = np.where(flip, (pred + 1) % 3, pred).astype(np.uint8)
    gt[0, 0, 0] = 255
    return p, gt


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    arrays = {}
    for i in range(4):
        p, gt = _volume(i)
        np.save(root / f"c{i}_softmax.npy", p)
        np.save(root / f"c{i}_gt.npy", gt)
        arrays[f"c{i}"] = (p, gt)
    np.save(root / "nogt_softmax.npy", _volume(9)[0])
    return root, arrays


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_scores_per_case_per_slice_and_groups(data, tmp_path, capsys):
    root, arrays = data
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"FG": [1, 2]}))
    code, out, _ = _run(capsys, "scores", root / "c0_softmax.npy", root / "c1_softmax.npy", "--out",
                        tmp_path / "s", "--per-slice", "--groups", groups, "-q")
    assert code == 0
    cases = pd.read_csv(tmp_path / "s" / "scores.csv")
    slices = pd.read_csv(tmp_path / "s" / "scores_slices.csv")
    for name in ("c0", "c1"):
        p, gt = arrays[name]
        want = segmentation_scores(p.argmax(-1), gt, groups={"FG": [1, 2]}, n_classes=3).iloc[0]
        got = cases[cases["case"] == name].iloc[0]
        for col in ("mean_iou", "mean_dice", "pixel_accuracy", "iou_2", "iou_FG"):
            assert got[col] == pytest.approx(want[col])
        per = segmentation_scores(p.argmax(-1), gt, per="slice", n_classes=3)
        assert slices.loc[slices["case"] == name, "mean_iou"].to_numpy() == pytest.approx(
            per["mean_iou"].to_numpy())
    assert "| c0 |" in out and "iou_FG" in out and "mean of 2 cases" in out


def test_scores_errors(data, tmp_path, capsys):
    root, _ = data
    bad = tmp_path / "bad.json"
    bad.write_text('{"WT": "1,2"}')
    code, _, err = _run(capsys, "scores", root / "c0_softmax.npy", "--out", tmp_path / "s", "--groups", bad)
    assert code == 2 and "--groups" in err and "list of class ids" in err
    code, _, err = _run(capsys, "scores", root / "c0_softmax.npy", root / "nogt_softmax.npy", "--out",
                        tmp_path / "s2", "-q")
    assert code == 1 and "nogt" in err and "no ground truth" in err
    assert (tmp_path / "s2" / "scores.csv").is_file() and (tmp_path / "s2" / "failed.csv").is_file()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    root, _ = data
    model = tmp_path_factory.mktemp("qmodel") / "quality.json"
    code = main(["quality", "train", str(root / "c0_softmax.npy"), str(root / "c1_softmax.npy"), "--out",
                 str(model), "--kind", "linear", "-q"])
    assert code == 0
    return model


def test_quality_train_writes_model_and_rows(trained, data):
    arrays = data[1]
    assert trained.is_file() and trained.with_name("quality.images.csv").is_file()
    model = load_quality_model(trained)
    assert model.by == "slice" and model.target == "mean_iou" and model.fail_below == 0.7
    assert model.segmentation["mode"] == "slices" and len(model.training_rows) == 2 * SHAPE[2]
    # the rows are the engine's features and scores of each slice
    p, gt = arrays["c0"]
    _, table = segment_metrics(p, gt, mode="slices")
    want = image_features(table, by="slice")
    got = model.training_rows[model.training_rows["case"] == "c0"].reset_index(drop=True)
    assert got["E_mean"].to_numpy() == pytest.approx(want["E_mean"].to_numpy())
    assert got["mean_iou"].to_numpy() == pytest.approx(
        segmentation_scores(p.argmax(-1), gt, per="slice", n_classes=3)["mean_iou"].to_numpy())


def test_quality_predict_and_evaluate(trained, data, tmp_path, capsys):
    root, _ = data
    out = tmp_path / "pred.csv"
    code, _, err = _run(capsys, "quality", "predict", trained, root / "c2_softmax.npy",
                        root / "nogt_softmax.npy", "--out", out)
    assert code == 0, err
    pred = pd.read_csv(out)
    assert set(pred["case"]) == {"c2", "nogt"} and len(pred) == 2 * SHAPE[2]
    model = load_quality_model(trained)
    rows = drain(image_rows([Case("c2", root / "c2_softmax.npy", root / "c2_gt.npy")],
                            {"by": "slice"})).table
    want = model.regressor.predict(rows[list(model.regressor.feature_names_in_)])
    assert pred.loc[pred["case"] == "c2", "quality_pred"].to_numpy() == pytest.approx(want)
    assert (pred["pass_pred"] == (pred["quality_pred"] >= 0.7)).all()

    code, text, err = _run(capsys, "quality", "evaluate", trained, root / "c2_softmax.npy",
                           root / "c3_softmax.npy", "--fail-below", "0.5", "--out", tmp_path / "ev.csv")
    assert code == 0, err
    for name in ("| regressor |", "| mean max-probability |", "| size and segment count |", "AUROC 95 % CI"):
        assert name in text
    # the regressor's AUROC is compared with each baseline's on the same bootstrap resamples
    for name in ("mean max-probability", "size and segment count"):
        assert f"regressor vs {name}: AUROC difference" in text
    code, _, err = _run(capsys, "quality", "evaluate", trained, root / "c0_softmax.npy", "-q")
    assert code == 0 and "optimistic" in err


def test_quality_refuses_other_models_and_bad_settings(trained, data, tmp_path, capsys):
    root, _ = data
    code, _, err = _run(capsys, "metrics", root / "c0_softmax.npy", root / "c1_softmax.npy", "--out",
                        tmp_path / "m", "-q")
    assert code == 0
    seg_model = tmp_path / "seg.json"
    code, _, err = _run(capsys, "train", tmp_path / "m", "--out", seg_model, "--splits", "0",
                        "--min-interior", "0", "-q")
    assert code == 0, err
    code, _, err = _run(capsys, "quality", "predict", seg_model, root / "c2_softmax.npy", "--out",
                        tmp_path / "p.csv")
    assert code == 2 and "not an image-quality model" in err
    code, _, err = _run(capsys, "quality", "predict", trained, root / "c2_softmax.npy", "--out",
                        tmp_path / "p.csv", "--mode", "3d")
    assert code == 2 and "mode" in err
    code, _, err = _run(capsys, "quality", "train", root / "c0_softmax.npy", "--out", tmp_path / "q.json",
                        "--mode", "3d")
    assert code == 2 and "slice-wise" in err
    code, _, err = _run(capsys, "quality", "train", root / "nogt_softmax.npy", "--out", tmp_path / "q.json")
    assert code == 2 and "ground truth" in err


def test_quality_by_case_rows(data):
    root, arrays = data
    cases = [Case(f"c{i}", root / f"c{i}_softmax.npy", root / f"c{i}_gt.npy") for i in range(2)]
    rows = drain(image_rows(cases, {"by": "case"})).table
    assert rows["case"].tolist() == ["c0", "c1"] and "slice" not in rows
    p, gt = arrays["c1"]
    assert rows.loc[1, "mean_dice"] == pytest.approx(
        segmentation_scores(p.argmax(-1), gt, n_classes=3).loc[0, "mean_dice"])


def test_error_detection_job(data):
    root, _ = data
    cases = [Case(f"c{i}", root / f"c{i}_softmax.npy", root / f"c{i}_gt.npy") for i in range(3)]
    steps = []
    res = drain(error_detection(cases[:2], cases[2:], {}, measures=("E", "V"), target_recalls=(0.5, 0.8)),
                lambda f, s: steps.append(f))
    assert steps[-1] == pytest.approx(1.0) and steps == sorted(steps)
    assert set(res.scores["case"]) == {"c0", "c1", "c2"} and set(res.scores["measure"]) == {"E", "V"}
    assert len(res.flags) == 3 * 2 * 2 * 3  # cases x measures x recalls x methods
    train = res.flags[res.flags["role"] == "train"]
    assert (train["recall"] > 0).all()


def test_quality_train_needs_ten_rows(data, tmp_path, capsys):
    root, _ = data
    code, _, err = _run(capsys, "quality", "train", root / "c0_softmax.npy", "--by", "case", "--out",
                        tmp_path / "q.json")
    assert code == 2 and "at least 10" in err


def test_segment_commands_refuse_an_image_quality_model_up_front(trained, data, tmp_path, capsys):
    """An image-quality model given where a segment model is expected is refused before any case
    is read (was: every case failed with a column mismatch)."""
    from napari_metaseg.cli import main
    from napari_metaseg.core.meta_io import MetaModelFileError
    from napari_metaseg.workflows import load_model

    with pytest.raises(MetaModelFileError, match="image-quality model"):
        load_model(trained)
    code = main(["predict", str(trained), str(data[0]), "--out", str(tmp_path / "p"), "-q"])
    assert code == 2 and "image-quality model" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
