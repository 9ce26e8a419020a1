"""OoD regions over case files: annotations on disk, `napari-metaseg ood`, `train` on region
tables, region model files (saved, loaded, refused where a segment model is expected)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.cli import main
from napari_metaseg.core.ood import ood_regions, region_hits

SHAPE = (20, 20, 10)
#: two annotated OoD cubes (uniform probabilities, E = 1) ...
CUBES = ((slice(3, 6), slice(3, 6), slice(2, 5)), (slice(12, 15), slice(12, 15), slice(5, 8)))
#: ... and two unannotated sheets of E = 0.78 (false alarms of the entropy threshold)
SHEETS = ((slice(9, 10), slice(2, 8), slice(2, 8)), (slice(17, 18), slice(10, 16), slice(1, 7)))
N_CUBE, N_SHEET = 27, 36


def ood_case(seed=0):
    """Probabilities (3 classes), ground truth with 255 on the cubes, and the cube mask."""
    rng = np.random.default_rng(seed)
    p = np.zeros((*SHAPE, 3), np.float32)
    p[:] = (0.98, 0.01, 0.01)
    p[..., : SHAPE[1] // 2, :, :] = (0.01, 0.98, 0.01)  # two confident "tissues"
    for sl in SHEETS:
        p[sl] = (0.5, 0.45, 0.05)
    for sl in CUBES:
        p[sl] = 1.0 / 3.0
    p += rng.uniform(0, 1e-3, p.shape).astype(np.float32)  # cases differ slightly
    p /= p.sum(-1, keepdims=True)
    gt = p.argmax(-1).astype(np.uint8)
    ood = np.zeros(SHAPE, bool)
    for sl in CUBES:
        ood[sl] = True
    gt[ood] = 255
    return p, gt, ood


def write_cases(folder, seeds, *, label=True):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for s in seeds:
        p, gt, ood = ood_case(s)
        name = f"c{s}"
        np.save(folder / f"{name}_softmax.npy", p)
        if label:
            np.save(folder / f"{name}_gt.npy", gt)
        out[name] = (p, gt, ood)
    return out


def run(argv, capsys=None):
    code = main([str(a) for a in argv])
    return code, (capsys.readouterr() if capsys is not None else None)


@pytest.fixture
def trained(tmp_path, capsys):
    """`ood` on three annotated cases, then `train` on its region table."""
    cases = write_cases(tmp_path / "train", (0, 1, 2))
    code, _ = run(["ood", tmp_path / "train", "--out", tmp_path / "tr", "-q"], capsys)
    assert code == 0
    model = tmp_path / "region_model.json"
    code, out = run(["train", tmp_path / "tr", "--out", model, "-q"], capsys)
    assert code == 0, out.err
    return tmp_path, cases, model, out


def test_ood_writes_tables_hits_maps_and_the_evaluation(trained):
    tmp, cases, _, _ = trained
    out = tmp / "tr"
    for name, (p, _, ood) in cases.items():
        t = pd.read_parquet(out / "cases" / f"{name}_ood.parquet")
        ids, expected = ood_regions(p, threshold=0.5)
        # the same regions as the engine, with the hits of the independent annotation
        assert t["S"].tolist() == expected["S"].tolist()
        assert sorted(t["S"].tolist()) == [N_CUBE, N_CUBE, N_SHEET, N_SHEET]
        assert t["hit"].tolist() == region_hits(ids, ood).tolist()
        assert sorted(t["hit"].tolist()) == [0, 0, 1, 1]
        assert (t["case"] == name).all() and "p_hit" not in t
        kept = np.load(out / "maps" / f"{name}_ood_regions.npy")
        np.testing.assert_array_equal(kept, ids)  # no model: every candidate is kept
    combined = pd.read_parquet(out / "ood_regions.parquet")
    assert len(combined) == 12 and sorted(combined["case"].unique()) == sorted(cases)
    obj = pd.read_csv(out / "ood_objects.csv")
    row = obj.iloc[0]
    # per case: both cubes touched (TP 2), both sheets false alarms (FP 2), no cube missed
    assert (row["keep"], row["tp"], row["fp"], row["fn"], row["n_objects"]) == ("all", 6, 6, 0, 6)
    assert row["f1"] == pytest.approx(12 / 18)
    n_vox = np.prod(SHAPE)
    assert row["id_voxels"] == 3 * (n_vox - 2 * N_CUBE) and row["id_flagged"] == 3 * 2 * N_SHEET
    px = pd.read_csv(out / "ood_pixels.csv").set_index("measure")
    assert px.loc["E", "auroc"] == pytest.approx(1.0)  # the cubes have the highest entropy
    assert px.loc["E", "n_ood"] == 3 * 2 * N_CUBE


def test_train_on_region_tables_and_apply_the_model(trained, capsys):
    tmp, _, model, out = trained
    assert "OoD region classifier" in out.out and "12 regions of 3 case(s), 6 touching OoD" in out.out
    doc = json.loads(model.read_text())
    assert doc["payload"]["ood"] == {"threshold": 0.5, "measure": "E", "exclude_classes": []}
    assert doc["payload"]["regressor"] is None
    assert "hit" not in doc["payload"]["feature_names"] and "share0" in doc["payload"]["feature_names"]
    test = write_cases(tmp / "test", (7,))
    code, res = run(["ood", tmp / "test", "--out", tmp / "te", "--model", model], capsys)
    assert code == 0, res.err
    t = pd.read_parquet(tmp / "te" / "cases" / "c7_ood.parquet")
    # the model keeps the two cubes and drops the two sheets
    assert ((t["p_hit"] >= 0.5) == (t["hit"] == 1)).all()
    obj = pd.read_csv(tmp / "te" / "ood_objects.csv").set_index("keep")
    assert obj.loc["meta", ["tp", "fp", "fn", "kept"]].tolist() == [2, 0, 0, 2]
    assert obj.loc["meta", "f1"] == 1.0 and obj.loc["meta", "id_flagged"] == 0
    assert "| 0.5 | meta | 4 | 2 | 2 | 0 | 0 | 1.000 |" in res.out
    p, _, _ = test["c7"]
    ids, _ = ood_regions(p, threshold=0.5)
    kept = np.load(tmp / "te" / "maps" / "c7_ood_regions.npy")
    keep_ids = t.loc[t["p_hit"] >= 0.5, "index"].to_numpy()
    np.testing.assert_array_equal(kept, np.where(np.isin(ids, keep_ids), ids, 0))


def test_region_and_segment_models_are_refused_in_each_others_place(trained, capsys):
    tmp, _, model, _ = trained
    # a segment model (fitted on a metrics table)
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier
    from napari_metaseg.workflows import MetaModels, save_model

    clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(100, random_state=0))
    seg_model = save_model(tmp / "seg_model.json", MetaModels(clf, segmentation={"mode": "3d"}))
    assert "ood" not in json.loads(seg_model.read_text())["payload"]
    code, res = run(["predict", model, tmp / "train", "--out", tmp / "p", "-q"], capsys)
    assert code == 2 and "is an OoD region model" in res.err
    code, res = run(["ood", tmp / "train", "--out", tmp / "o", "--model", seg_model, "-q"], capsys)
    assert code == 2 and "is a segment model" in res.err
    # a model trained at one threshold refuses another (and says how to use its own)
    code, res = run(["ood", tmp / "train", "--out", tmp / "o", "--model", model, "--threshold", "0.3"],
                    capsys)
    assert code == 2 and "threshold = 0.5" in res.err and "leave it out" in res.err
    code, res = run(["ood", tmp / "train", "--out", tmp / "o", "--model", model, "--mode", "slices"],
                    capsys)
    assert code == 2 and "in 3d" in res.err


def test_annotation_files_nifti_maps_and_cases_without_annotations(tmp_path, capsys):
    import nibabel as nib

    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    p, gt, ood = ood_case(3)
    # the first cube is predicted as class 2 (excluded below), the second as class 0
    p[CUBES[0]] = (0.32, 0.33, 0.35)
    p[CUBES[1]] = (0.35, 0.33, 0.32)
    folder = tmp_path / "data" / "caseA"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(p, affine), folder / "softmax.nii.gz")
    gt_plain = gt.copy()
    gt_plain[ood] = 1  # the GT holds no OoD label: the annotation comes from ood.nii.gz
    nib.save(nib.Nifti1Image(gt_plain, affine), folder / "gt.nii.gz")
    lesions = np.zeros(SHAPE, np.uint8)
    lesions[CUBES[0]] = 1  # only the first cube is annotated in the file
    nib.save(nib.Nifti1Image(lesions, affine), folder / "ood.nii.gz")
    # a case file with <case>_ood.npy beside it, and one without annotation
    p2, _, ood2 = ood_case(4)
    p2[CUBES[0]] = p2[CUBES[1]] = (0.35, 0.33, 0.32)
    np.save(tmp_path / "data" / "caseB_softmax.npy", p2)
    np.save(tmp_path / "data" / "caseB_ood.npy", ood2.astype(np.uint8))
    np.save(tmp_path / "data" / "caseC_softmax.npy", p2)
    code, res = run(["ood", tmp_path / "data", "--out", tmp_path / "out", "--exclude-class", "2"], capsys)
    assert code == 0, res.err
    out = tmp_path / "out"
    ta = pd.read_parquet(out / "cases" / "caseA_ood.parquet")
    # no candidate where class 2 is predicted: the first cube is gone, the second cube and the
    # two sheets remain; the file annotates the first cube only
    assert sorted(ta["S"].tolist()) == [N_CUBE, N_SHEET, N_SHEET] and int(ta["hit"].sum()) == 0
    tb = pd.read_parquet(out / "cases" / "caseB_ood.parquet")
    assert int(tb["hit"].sum()) == 2
    tc = pd.read_parquet(out / "cases" / "caseC_ood.parquet")
    assert "hit" not in tc
    img = nib.load(out / "maps" / "caseA_ood_regions.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    ids, _ = ood_regions(p, threshold=0.5, mask=p.argmax(-1) != 2)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ids)
    assert "evaluation on 2 cases" in res.out
    objects = pd.read_csv(out / "ood_objects.csv").iloc[0]
    # caseA: the annotated cube was excluded (FN 1), three candidates touch nothing (FP 3);
    # caseB: both cubes touched (TP 2), both sheets false alarms (FP 2)
    assert (objects["tp"], objects["fn"], objects["fp"]) == (2, 1, 5)


def test_train_refuses_region_tables_without_settings_or_hits(trained, capsys):
    tmp, _, _, _ = trained
    table = pd.read_parquet(tmp / "tr" / "ood_regions.parquet")
    table.to_csv(tmp / "regions.csv", index=False)
    code, res = run(["train", tmp / "regions.csv", "--out", tmp / "x.json"], capsys)
    assert code == 2 and "without the settings" in res.err
    write_cases(tmp / "nolabel", (5, 6), label=False)
    code, _ = run(["ood", tmp / "nolabel", "--out", tmp / "nl", "-q"], capsys)
    assert code == 0
    code, res = run(["train", tmp / "nl", "--out", tmp / "x.json"], capsys)
    assert code == 2 and "no hit column" in res.err
    code, res = run(["train", tmp / "tr", "--out", tmp / "x.json", "--target", "regression"], capsys)
    assert code == 2 and "classifier (of hit) only" in res.err


def test_region_model_round_trip_and_file_kind(trained):
    from napari_metaseg.core.meta_io import MetaModelFileError, load_models
    from napari_metaseg.workflows import load_model

    tmp, _, model, _ = trained
    with pytest.raises(MetaModelFileError, match="is an OoD region model"):
        load_model(model)
    m = load_model(model, table_kind="ood_regions")
    assert m.ood == {"threshold": 0.5, "measure": "E", "exclude_classes": []}
    assert m.segmentation["mode"] == "3d" and m.regressor is None
    _, _, info = load_models(model, table_kind=None)
    assert info["table_kind"] == "ood_regions"
    table = pd.read_parquet(tmp / "tr" / "ood_regions.parquet")
    p = m.classifier.predict_proba(table)[:, 1]
    assert ((p >= 0.5) == (table["hit"] == 1)).all()
    with pytest.raises(ValueError, match="table_kind"):
        load_models(model, table_kind="regions")


def test_ood_has_no_ignore_label_option(tmp_path, capsys):
    """OoD voxels come from --ood-label or an annotation file; an --ignore-index that did nothing
    is not offered (usage error, exit 2, nothing written)."""
    with pytest.raises(SystemExit) as exc:
        main(["ood", str(tmp_path / "x_softmax.npy"), "--out", str(tmp_path / "o"), "--ignore-index", "3"])
    assert exc.value.code == 2
    assert "--ignore-index" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
