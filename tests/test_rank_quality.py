"""Ranking by predicted image-level quality (issue 18): the image scores in segment tables, the
image-level regressor a model carries (train, save, load, refit), the two orders and their
fallback, the minimum foreground, ``slice_quality`` and the CLI's ``rank --by``. No Qt."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core.active_learning import ORDER_IMAGE, ORDER_SEGMENTS, below_min_foreground, rank_cases
from napari_metaseg.core.progress import drain
from napari_metaseg.names import IMAGE_SCORE_COLUMNS, RANK_MIN_FOREGROUND
from napari_metaseg.workflows import (
    MetaModels,
    QualityModel,
    load_model,
    refit,
    save_model,
    slice_quality,
    train,
)


# ---------------------------------------------------------------------------------------------
# Hand-made tables
# ---------------------------------------------------------------------------------------------
def slice_table(v, pred, fg, *, case=None):
    """One case, slice s: a background segment (S 1000) and one foreground segment of size fg[s]
    with dispersion V = v[s] and predicted IoU_adj pred[s]. Every column image_features needs."""
    n = len(v)
    rows = []
    for s in range(n):
        for cls, size, vv, p in ((0, 1000, 0.01, 1.0), (1, fg[s], v[s], pred[s])):
            rows.append({"index": len(rows) + 1, "slice": s, "class": cls, "S": size, "S_in": size // 2,
                         "S_bd": size - size // 2, "V": vv, "E": vv, "cprob0": 1 - vv, "cprob1": vv,
                         "iou_adj_pred": p, "p_iou0": 1 - p})
    t = pd.DataFrame(rows)
    if case is not None:
        t.insert(0, "case", case)
    return t


def v_regressor():
    """An image regressor that predicts exactly 1 - V_mean: a linear fit on rows where it holds."""
    from napari_metaseg.core.image_quality import fit_image_regressor

    v = np.linspace(0.05, 0.6, 12)
    rows = pd.DataFrame({"V_mean": v})
    return fit_image_regressor(rows, 1.0 - v, kind="linear", columns=["V_mean"])


V = [0.30, 0.10, 0.55, 0.20, 0.45, 0.05]          # predicted slice quality 1 - V: 0.70 0.90 0.45 ...
PRED = [0.20, 0.95, 0.90, 0.10, 0.50, 0.60]        # the segment mean orders otherwise
FG = [500, 400, 300, 600, 350, 450]


def test_the_image_regressor_orders_by_its_prediction():
    reg = v_regressor()
    np.testing.assert_allclose(reg.predict(pd.DataFrame({"V_mean": [0.3, 0.1]})), [0.7, 0.9], atol=1e-9)
    t = slice_table(V, PRED, FG)
    qm = QualityModel(reg, "slice", "mean_iou", 0.7)
    out = slice_quality(t, MetaModels(image_quality=qm))
    # the foreground segment alone counts (background 0 left out): V_mean = V, prediction 1 - V
    expected = sorted(range(6), key=lambda s: 1 - V[s])
    assert out["slice"].tolist() == expected
    np.testing.assert_allclose(out["quality_pred"], [1 - V[s] for s in expected], atol=1e-9)
    np.testing.assert_allclose(out["priority"], [V[s] for s in expected], atol=1e-9)
    assert (out["order"] == ORDER_IMAGE).all() and out["rank"].tolist() == list(range(1, 7))
    assert out["foreground"].tolist() == [FG[s] for s in expected]
    assert "image regressor" in out.attrs["note"]
    assert list(out.columns) == ["rank", "slice", "quality_pred", "order", "foreground", "n_segments",
                                 "iou_adj_pred_mean", "priority"]
    # the engine's rank_cases with the same regressor over two cases: each case's slices in that order
    both = pd.concat([slice_table(V, PRED, FG, case="a"), slice_table(V[::-1], PRED, FG[::-1], case="b")])
    r = rank_cases(both, image_model=reg)
    np.testing.assert_allclose(r["quality_pred"], np.sort(1 - np.array(V + V)), atol=1e-9)
    assert r[r["case"] == "a"]["slice"].tolist() == expected
    assert (r["order"] == ORDER_IMAGE).all()


def test_without_an_image_regressor_the_segment_mean_orders_and_says_so():
    t = slice_table(V, PRED, FG)
    by_case = QualityModel(v_regressor(), "case", "mean_iou", 0.7)
    for models in (MetaModels(), None, MetaModels(image_quality=by_case)):
        out = slice_quality(t, models)
        expected = sorted(range(6), key=lambda s: PRED[s])  # size-weighted mean of one segment: PRED
        assert out["slice"].tolist() == expected
        np.testing.assert_allclose(out["quality_pred"], [PRED[s] for s in expected])
        assert (out["order"] == ORDER_SEGMENTS).all()
        assert out.attrs["note"].startswith("segment mean")
    # an image regressor that rates cases cannot order slices: said
    assert "rates cases, this ranking is by slice" in out.attrs["note"]
    # two foreground segments: the mean is weighted by size (hand: (100 * 0.2 + 300 * 0.6) / 400)
    t2 = pd.DataFrame({"slice": [0, 0, 0], "class": [0, 1, 2], "S": [1000, 100, 300],
                       "iou_adj_pred": [1.0, 0.2, 0.6]})
    got = slice_quality(t2, None)
    assert got["quality_pred"].iloc[0] == pytest.approx((100 * 0.2 + 300 * 0.6) / 400)
    assert got["foreground"].iloc[0] == 400


def test_min_foreground_puts_tiny_slices_last():
    assert RANK_MIN_FOREGROUND == 0.01
    # slices 2 and 5 have 5 and 4 px of foreground: below 0.01 * 600 = 6 (slice 2 is the worst predicted)
    fg = [500, 400, 5, 600, 350, 4]
    t = slice_table(V, PRED, fg)
    reg = v_regressor()
    models = MetaModels(image_quality=QualityModel(reg, "slice", "mean_iou", 0.7))
    out = slice_quality(t, models)
    assert out["slice"].tolist()[-2:] == [2, 5]  # last, worst predicted first among them
    assert out["priority"].iloc[-2:].isna().all() and out["priority"].iloc[:-2].notna().all()
    assert out["slice"].tolist()[:4] == sorted([0, 1, 3, 4], key=lambda s: 1 - V[s])
    # 0 ranks every slice by its quality: slice 2 (1 - 0.55) first; exactly at the minimum counts
    assert slice_quality(t, models, min_foreground=0.0)["slice"].iloc[0] == 2
    at = slice_quality(slice_table(V, PRED, [500, 400, 5, 600, 350, 6]), models)
    assert at["slice"].tolist()[-1] == 2 and at["priority"].isna().sum() == 1
    # the threshold is relative to the largest slice of the same case, and inclusive
    s = pd.DataFrame({"case": ["a", "a", "a", "b", "b"], "slice": [0, 1, 2, 0, 1],
                      "size": [1000, 10, 9, 500, 4], "n_segments": [1, 1, 1, 1, 1]})
    assert below_min_foreground(s, 0.01).tolist() == [False, False, True, False, True]
    # by case (no slice column): relative to the largest case; no counted segment is always below
    c = pd.DataFrame({"case": ["a", "b", "c"], "size": [1000, 9, 0], "n_segments": [3, 1, 0]})
    assert below_min_foreground(c, 0.01).tolist() == [False, True, True]
    assert below_min_foreground(c, 0.0).tolist() == [False, False, True]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"min_foreground must lie in \[0, 1\)"):
            slice_quality(t, models, min_foreground=bad)


def test_slice_quality_errors():
    t = slice_table(V, PRED, FG)
    with pytest.raises(ValueError, match="no segment predictions"):
        slice_quality(t.drop(columns=["iou_adj_pred", "p_iou0"]), MetaModels())
    with pytest.raises(ValueError, match="one case"):
        slice_quality(pd.concat([t.assign(case="a"), t.assign(case="b")]), None)
    with pytest.raises(ValueError, match="needs a 'slice' column"):
        slice_quality(t.drop(columns="slice"), None, by="slice")


# ---------------------------------------------------------------------------------------------
# Image scores in the segment tables
# ---------------------------------------------------------------------------------------------
def _slow_mean_iou(pred, gt, ignore=255, background=0):
    """Mean IoU over the non-background classes present in GT or prediction, pixel by pixel."""
    keep = gt != ignore
    ious = []
    for c in range(int(max(pred.max(), gt[keep].max() if keep.any() else 0)) + 1):
        if c == background:
            continue
        p, g = (pred == c) & keep, (gt == c) & keep
        if p.any() or g.any():
            ious.append((p & g).sum() / (p | g).sum())
    return float(np.mean(ious)) if ious else np.nan


@pytest.mark.parametrize("slice_axis", [0, -1])
def test_analysis_tables_carry_the_scores_of_each_segments_slice(slice_axis):
    from test_cli import blocky_case

    from napari_metaseg.core import segment_metrics
    from napari_metaseg.workflows import analyse

    p, gt = blocky_case((12, 10, 6), 3, seed=3)
    gt = gt.copy()
    gt[0, :3, :] = 255  # ignored pixels
    gt[:, :, 2] = 0     # slice z = 2 of GT is background only
    res = drain(analyse(p, gt, mode="slices", slice_axis=slice_axis, heatmaps=()))
    t = res.table
    pred = p.argmax(-1)
    for _, row in t.iterrows():
        k = int(row["slice"])
        sl = [slice(None)] * 3
        sl[slice_axis] = k
        want = _slow_mean_iou(pred[tuple(sl)], gt[tuple(sl)])
        assert row["image_mean_iou"] == pytest.approx(want, nan_ok=True, rel=1e-12)
        assert np.isfinite(row["image_mean_dice"]) == np.isfinite(want)
    # whole volume in 3D, whole image in 2D
    t3 = drain(analyse(p, gt, mode="3d", heatmaps=())).table
    assert np.allclose(t3["image_mean_iou"], _slow_mean_iou(pred, gt))
    p2, g2 = blocky_case((16, 12), 3, seed=4)
    t2 = drain(analyse(p2, g2, heatmaps=())).table
    assert np.allclose(t2["image_mean_iou"], _slow_mean_iou(p2.argmax(-1), g2))
    # without GT: none; and the engine's segment_metrics itself is unchanged
    no_gt = drain(analyse(p, None, mode="slices", heatmaps=())).table
    assert not set(IMAGE_SCORE_COLUMNS) & set(no_gt.columns)
    assert not set(IMAGE_SCORE_COLUMNS) & set(segment_metrics(p, gt, mode="slices")[1].columns)


def test_measured_case_files_carry_the_image_scores(tmp_path):
    from test_cli import write_nifti_case

    from napari_metaseg.io.cases import Case
    from napari_metaseg.workflows import case_settings, measure_file

    p, gt, _ = write_nifti_case(tmp_path / "v", shape=(14, 12, 5), seed=2)
    case = Case("v", tmp_path / "v" / "softmax.nii.gz", tmp_path / "v" / "gt.nii.gz")
    _, t, _ = measure_file(case, case_settings(mode="slices"))
    want = {k: _slow_mean_iou(p.argmax(-1)[:, :, k], gt[:, :, k]) for k in range(5)}
    np.testing.assert_allclose(t["image_mean_iou"], t["slice"].map(want), rtol=1e-12)
    _, no_gt, _ = measure_file(Case("v", case.softmax, None), case_settings(mode="slices"))
    assert "image_mean_iou" not in no_gt.columns


def test_image_scores_are_never_features():
    from napari_metaseg.core.image_quality import _is_score_column, image_feature_columns
    from napari_metaseg.core.meta_dataset import feature_columns, synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor
    from napari_metaseg.workflows.quality import image_training_rows

    t = synthetic_metrics_table(300, random_state=0).assign(case="a", slice=np.arange(300) // 30)
    rng = np.random.default_rng(0)
    scored = t.assign(image_mean_iou=rng.random(300), image_mean_dice=rng.random(300))
    assert feature_columns(scored) == feature_columns(t)
    for cls in (MetaClassifier, MetaRegressor):
        a, b = cls(kind="lasso", random_state=0).fit(t), cls(kind="lasso", random_state=0).fit(scored)
        assert list(a.feature_names_in_) == list(b.feature_names_in_)
        pa = a.predict_proba(t) if cls is MetaClassifier else a.predict(t)
        pb = b.predict_proba(scored) if cls is MetaClassifier else b.predict(scored)
        np.testing.assert_array_equal(pa, pb)
    assert _is_score_column("image_mean_iou") and _is_score_column("image_mean_dice")
    rows = image_training_rows(scored, by="slice")
    assert {"mean_iou", "mean_dice"} <= set(rows.columns)
    assert not {"mean_iou", "mean_dice", "image_mean_iou"} & set(image_feature_columns(rows))
    # the targets are the table's values per slice
    np.testing.assert_allclose(rows["mean_iou"], scored.groupby("slice")["image_mean_iou"].first())


# ---------------------------------------------------------------------------------------------
# Train, save, load, refit
# ---------------------------------------------------------------------------------------------
def scored_table(case, n_slices=14, seed=0):
    """A slice-wise synthetic table whose slice mean IoU follows its segments' mean V."""
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table

    t = synthetic_metrics_table(30 * n_slices, random_state=seed)
    t["slice"] = np.arange(len(t)) // 30
    v = t.groupby("slice")["V"].transform("mean")
    t["image_mean_iou"] = (1.0 - v).clip(0, 1)
    t["image_mean_dice"] = t["image_mean_iou"]
    cols = ["index", "slice"] + [c for c in t.columns if c not in ("index", "slice")]
    return t[cols].assign(case=case)


def test_train_save_load_keeps_the_image_regressor(tmp_path):
    from napari_metaseg.core.image_quality import predict_image_quality

    seg = {"mode": "slices", "slice_axis": -1, "ignore_index": 255}
    r = drain(train(table=(pd.concat([scored_table("a"), scored_table("b", seed=1)]), seg), n_splits=0))
    assert r.image_quality is not None and r.image_quality.by == "slice"
    assert r.image_note == "fitted (lasso, by slice, 28 rows of 2 case(s))"
    rows = r.image_quality.training_rows
    p = save_model(tmp_path / "m.json.gz", r)
    m = load_model(p)
    qm = m.image_quality
    assert (qm.by, qm.target, qm.background, qm.fail_below) == ("slice", "mean_iou", 0, 0.7)
    assert list(qm.regressor.feature_names_in_) == list(r.image_quality.regressor.feature_names_in_)
    np.testing.assert_array_equal(predict_image_quality(qm.regressor, rows),
                                  predict_image_quality(r.image_quality.regressor, rows))
    # the same model file: segment models and the image regressor under one checksum
    import gzip
    payload = json.loads(gzip.decompress(p.read_bytes()))["payload"]
    assert set(payload["image_quality"]) == {"regressor", "by", "target", "background", "fail_below"}
    # a model without one: no entry, loads as before
    r2 = drain(train(table=(scored_table("a").drop(columns=list(IMAGE_SCORE_COLUMNS)), seg), n_splits=0))
    assert r2.image_quality is None and "no image_mean_iou" in r2.image_note
    p2 = save_model(tmp_path / "old.json", r2)
    assert "image_quality" not in json.loads(p2.read_text())["payload"]
    assert load_model(p2).image_quality is None
    # too few rows: said, not fitted
    r3 = drain(train(table=(scored_table("a", n_slices=9), seg), n_splits=0))
    assert r3.image_quality is None and r3.image_note.startswith("not fitted: 9 slice row(s)")
    # ranking a table with the loaded model uses it
    t = scored_table("c", seed=5)
    from napari_metaseg.core.meta_model import predict_table

    out = slice_quality(predict_table(t, *m.pair), m)
    assert (out["order"] == ORDER_IMAGE).all() and out["quality_pred"].is_monotonic_increasing
    np.testing.assert_allclose(out.sort_values("slice")["mean_iou"],
                               t.groupby("slice")["image_mean_iou"].first())


def test_refit_refits_the_image_regressor_and_fits_one_when_the_data_allow(tmp_path):
    seg = {"mode": "slices", "slice_axis": -1, "ignore_index": 255}
    r = drain(train(table=(scored_table("a"), seg), n_splits=0))
    before = r.image_quality.regressor
    new = drain(refit(r, table=(scored_table("b", seed=3), seg)))
    after = new.image_quality.regressor
    assert after is not before
    assert new.image_note.startswith("refitted (lasso, by slice, 28 rows of 2 case(s))")
    assert sorted(after.training_cases_) == ["a", "b"] and before.training_cases_ == ["a"]
    # a model trained before the image scores were recorded gains a regressor once the data allow
    old_table = scored_table("a").drop(columns=list(IMAGE_SCORE_COLUMNS))
    r0 = drain(train(table=(old_table, seg), n_splits=0))
    assert r0.image_quality is None
    r1 = drain(refit(r0, table=(scored_table("b", seed=3), seg)))
    assert r1.image_quality is not None and r1.image_quality.regressor.training_cases_ == ["b"]
    assert r1.dataset.table.loc[r1.dataset.table["case"] == "a", "image_mean_iou"].isna().all()
    # new tables measured before the image scores were recorded join data that has them (NaN there)
    mixed = drain(refit(r, table=(scored_table("f", seed=7).drop(columns=list(IMAGE_SCORE_COLUMNS)), seg)))
    assert mixed.dataset.table.loc[mixed.dataset.table["case"] == "f", "image_mean_iou"].isna().all()
    assert mixed.image_quality.regressor.training_cases_ == ["a"]  # rows without a target left out
    # and keeps the previous one when the new data allow none (here: its training data unknown)
    bare = MetaModels(r.classifier, r.regressor, segmentation=seg, image_quality=r.image_quality)
    kept = drain(refit(bare, table=(scored_table("d", n_slices=3, seed=4), seg)))
    assert kept.image_quality is r.image_quality and "previous image regressor is kept" in kept.image_note
    # save -> load -> refit: the loaded regressor's kind carries over
    path = save_model(tmp_path / "r.json", new)
    again = drain(refit(load_model(path), table=(scored_table("e", seed=6), seg)))
    assert again.image_quality.regressor.kind == "lasso"
    assert sorted(again.image_quality.regressor.training_cases_) == ["a", "b", "e"]


# ---------------------------------------------------------------------------------------------
# The dataset job and the CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Three small volumes (8 axial slices each), metrics in slices mode, a model trained on two."""
    from test_cli import write_nifti_case

    from napari_metaseg.cli import main

    tmp = tmp_path_factory.mktemp("vols")
    for i in range(3):
        write_nifti_case(tmp / "train" / f"v{i}", shape=(24, 20, 8), seed=10 + i)
        write_nifti_case(tmp / "new" / f"w{i}", shape=(24, 20, 8), seed=30 + i)
    assert main(["metrics", str(tmp / "train"), "--mode", "slices", "--out", str(tmp / "m"), "-q"]) == 0
    return tmp


def test_cli_train_says_whether_the_image_regressor_was_fitted(volumes, capsys):
    from napari_metaseg.cli import main

    code = main(["train", str(volumes / "m"), "--min-interior", "0", "--splits", "0",
                 "--out", str(volumes / "model.json"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("image-level regressor (ranks slices and cases): fitted (lasso, by slice, 24 rows of 3 case(s))"
            in out)
    assert load_model(volumes / "model.json").image_quality.by == "slice"
    code = main(["refit", str(volumes / "model.json"), str(volumes / "m"), "--out", str(volumes / "re.json"),
                 "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "image-level regressor (ranks slices and cases): refitted (lasso" in out


def test_cli_tables_with_and_without_image_scores_train_together(volumes, tmp_path, capsys):
    from napari_metaseg.cli import main

    t = pd.read_parquet(volumes / "m" / "metrics.parquet")
    old = t[t["case"] == "v0"].drop(columns=list(IMAGE_SCORE_COLUMNS))
    old.to_csv(tmp_path / "old.csv", index=False)
    t[t["case"] != "v0"].to_csv(tmp_path / "new.csv", index=False)
    code = main(["train", str(tmp_path / "old.csv"), str(tmp_path / "new.csv"), "--min-interior", "0",
                 "--splits", "0", "--out", str(tmp_path / "m.json"), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "fitted (lasso, by slice, 16 rows of 2 case(s))" in out


def test_cli_rank_by_slice_lists_every_slice(volumes, capsys):
    from napari_metaseg.cli import main
    from napari_metaseg.core import segment_metrics
    from napari_metaseg.core.image_quality import image_features, predict_image_quality
    from napari_metaseg.core.meta_model import predict_table

    model = volumes / "model.json"
    if not model.exists():
        assert main(["train", str(volumes / "m"), "--min-interior", "0", "--splits", "0", "--out", str(model),
                     "-q"]) == 0
    out = volumes / "rank.csv"
    code = main(["rank", str(model), str(volumes / "new"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "by image regressor: predicted mean IoU of each slice" in err
    r = pd.read_csv(out)
    assert len(r) == 3 * 8  # every slice of every case (each holds segments)
    assert list(r.columns[:6]) == ["rank", "case", "slice", "quality_pred", "priority", "order"]
    assert (r["order"] == "image regressor").all() and r["rank"].tolist() == list(range(1, 25))
    assert "mean_iou" in r.columns  # the new cases have GT
    # quality_pred computed independently of the ranking code, from the loaded model
    m = load_model(model)
    import nibabel as nib

    for case in ("w0", "w1", "w2"):
        p = np.asarray(nib.load(volumes / "new" / case / "softmax.nii.gz").dataobj, np.float32)
        table = predict_table(segment_metrics(p, mode="slices")[1], *m.pair)
        want = predict_image_quality(m.image_quality.regressor, image_features(table, by="slice"))
        got = r[r["case"] == case].sort_values("slice")["quality_pred"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9)
    ok = r[r["priority"].notna()]
    assert ok["quality_pred"].is_monotonic_increasing
    # by case with a slice regressor: the segment mean, said; one row per case
    code = main(["rank", str(model), str(volumes / "new"), "--by", "case", "--out", str(volumes / "rc.csv")])
    err = capsys.readouterr().err
    rc = pd.read_csv(volumes / "rc.csv")
    assert code == 0 and len(rc) == 3 and (rc["order"] == "segment mean").all()
    assert "the model's image-level regressor rates slices, this ranking is by case" in err
    assert "slice" not in rc.columns
    # a bad minimum foreground is a usage error
    with pytest.raises(SystemExit) as exc:
        main(["rank", str(model), str(volumes / "new"), "--min-foreground", "1.5", "--out", str(out)])
    assert exc.value.code == 2 and "expected a number in [0, 1), got '1.5'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Real data: the "done when"
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_new_order_beats_the_old_on_the_brain_data(shared_data):
    from scipy.stats import spearmanr

    from napari_metaseg.core.meta_model import predict_table
    from napari_metaseg.io.cases import Case
    from napari_metaseg.workflows import case_settings, measure_file

    settings = case_settings(mode="slices")
    c = {s: Case(s, shared_data / "brain" / s / "softmax_rf.nii.gz", shared_data / "brain" / s / "gt.nii.gz")
         for s in ("sub-01", "sub-02")}
    tables = {s: measure_file(case, settings)[1] for s, case in c.items()}
    for tr, te in (("sub-01", "sub-02"), ("sub-02", "sub-01")):
        m = drain(train(cases=[c[tr]], settings=settings, n_splits=0))
        assert m.image_quality is not None
        t = predict_table(tables[te], *m.pair)
        figs = {}
        for name, models in (("old", MetaModels(m.classifier, m.regressor)), ("new", m)):
            r = slice_quality(t, models)
            ok = r[np.isfinite(r["mean_iou"]) & r["priority"].notna()]
            figs[name] = (spearmanr(ok["quality_pred"], ok["mean_iou"]).statistic,
                          ok["mean_iou"].head(20).mean())
        assert figs["new"][0] > figs["old"][0] + 0.2, figs  # docs: -0.151 -> 0.219, 0.033 -> 0.396
        assert figs["new"][1] < figs["old"][1] - 0.03, figs  # docs: 0.616 -> 0.526, 0.746 -> 0.687


def test_save_models_checks_the_image_entry_before_writing(tmp_path):
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_io import save_models
    from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor

    clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(200, random_state=0))
    good = {"regressor": v_regressor(), "by": "slice", "target": "mean_iou", "background": 0,
            "fail_below": 0.7}
    for bad, error, message in (({"by": "volume"}, ValueError, "'by' must be 'slice' or 'case'"),
                                ({"target": "iou_adj"}, ValueError, "'target' must be one of"),
                                ({"regressor": clf}, TypeError, "must be a fitted MetaRegressor"),
                                ({"regressor": MetaRegressor().fit(np.random.default_rng(0).random((20, 2)),
                                                                   np.random.default_rng(1).random(20))},
                                 ValueError, "without column names")):
        with pytest.raises(error, match=message):
            save_models(tmp_path / "m.json", clf, image_quality={**good, **bad})
        assert not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match="OoD region model holds no image-quality regressor"):
        save_models(tmp_path / "m.json", clf, ood={"threshold": 0.5, "measure": "E"}, image_quality=good)
