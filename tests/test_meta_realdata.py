"""Meta models on the real brain data (../shared/data/brain): train sub-01, evaluate sub-02.

sub-01 is the subject the RandomForest segmenter was trained on; sub-02 is unseen and has a
stronger bias field. Besides the numbers quoted in docs/meta_models.md, these tests pin down the
finding of the investigation there: the regression beats the entropy baseline on sub-02, the
classification beats it within every class and on mixed splits, but not pooled across the
subject change, because the share of IoU_adj = 0 per class flips between the subjects.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.meta_dataset import MetaDataset
from napari_metaseg.core.meta_io import load_models, save_models
from napari_metaseg.core.meta_model import (
    MetaClassifier,
    MetaRegressor,
    _auroc,
    evaluate,
    predict_table,
    refit,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def brain_tables(shared_data):
    from napari_metaseg.io import read_nifti, read_nifti_probabilities

    out = {}
    for sub in ("sub-01", "sub-02"):
        d = shared_data / "brain" / sub
        probs, _ = read_nifti_probabilities(d / "softmax_rf.nii.gz")
        gt, _ = read_nifti(d / "gt.nii.gz")
        out[sub, "slices"] = segment_metrics(probs, gt, mode="slices", slice_axis=-1)[1]
        labels, table = segment_metrics(probs, gt, mode="3d")
        # centre of mass along y (posterior -> anterior) of every 3D segment, to cut a case in two
        com = ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, table["index"].to_numpy())
        out[sub, "3d"] = table
        out[sub, "3d_y"] = np.array([c[1] for c in com])
    return out


def _dataset(tables, mode, min_interior):
    ds = MetaDataset(min_interior=min_interior)
    for sub in ("sub-01", "sub-02"):
        ds.add(sub, tables[sub, mode])
    return ds


def _row(ev, task, model, metric, col="val_mean"):
    return ev.table.loc[(task, model, metric), col]


@pytest.fixture(scope="session")
def slices_fixed(brain_tables):
    ds = _dataset(brain_tables, "slices", 1)
    return ds, evaluate(ds, validation_cases=["sub-02"], models=("linear",))


#: Axial slices of sub-01 whose pixels trained the segmenter (data README: z = 4, 10, ..., 148).
RF_TRAINING_SLICES = frozenset(range(4, 149, 6))


@pytest.fixture(scope="session")
def slices_unseen(brain_tables):
    """MetaSeg's protocol: the meta model learns from segmenter outputs on data the segmenter
    was not trained on, so sub-01's 25 training slices of the random forest are left out."""
    t = brain_tables["sub-01", "slices"]
    ds = MetaDataset(min_interior=1)
    ds.add("sub-01", t[~t["slice"].isin(RF_TRAINING_SLICES)])
    ds.add("sub-02", brain_tables["sub-02", "slices"])
    return ds, evaluate(ds, validation_cases=["sub-02"], models=("linear",))


def test_slicewise_sub01_to_sub02_regression_beats_entropy(slices_fixed):
    ds, ev = slices_fixed
    assert ev.grouping == "fixed" and ev.details["training_cases"] == ["sub-01"]
    assert ev.n_segments == len(ds.training_table())
    r2_model = _row(ev, "regression", "linear", "R2")
    r2_e = _row(ev, "regression", "entropy", "R2")
    assert r2_model > r2_e + 0.03  # measured 40.3 % vs 34.1 %
    assert _row(ev, "regression", "linear", "sigma") < _row(ev, "regression", "entropy", "sigma")


def test_slicewise_sub01_to_sub02_classification_beats_entropy(slices_fixed):
    """Even with the segmenter's own training slices in the meta model's training data, pooled
    AUROC on sub-02 beats entropy since the LASSO strength is chosen by 5-fold cross-validation
    (seed 0: 84.33 vs 83.81 %; seeds 0-9: 83.71-84.33 %, above entropy for 9 of 10; with one
    inner split it did not: 83.64 %)."""
    _, ev = slices_fixed
    assert _row(ev, "classification", "linear", "AUROC") > \
        _row(ev, "classification", "entropy", "AUROC")


def test_slicewise_unseen_sub01_to_sub02_beats_entropy(slices_unseen):
    """Trained on the sub-01 slices the segmenter never saw: full-metric AUROC and R^2 beat the
    entropy baseline on sub-02 (measured with seed 0 of the strength selection's folds: 85.30 vs
    83.81 % and 41.35 vs 35.04 %; over seeds 0-9 the AUROC is 84.93-85.30 %, mean 85.19, above
    entropy for all 10)."""
    ds, ev = slices_unseen
    assert ev.grouping == "fixed" and ev.details["training_cases"] == ["sub-01"]
    train = ds.training_table()
    assert not set(train.loc[train["case"] == "sub-01", "slice"]) & RF_TRAINING_SLICES
    auroc_e = _row(ev, "classification", "entropy", "AUROC")
    assert _row(ev, "classification", "linear", "AUROC") > auroc_e
    assert _row(ev, "regression", "linear", "R2") > _row(ev, "regression", "entropy", "R2") + 0.03
    # not one lucky set of folds (the LASSO strength is chosen on them): the mean over 5 seeds too
    aurocs = [_row(evaluate(ds, validation_cases=["sub-02"], models=("linear",), random_state=rs),
                   "classification", "linear", "AUROC") for rs in range(1, 6)]
    assert np.mean(aurocs) > auroc_e + 0.005


def test_why_classification_does_not_transfer(brain_tables, slices_fixed):
    ds, _ = slices_fixed
    t = ds.training_table()
    tr, va = t[t["case"] == "sub-01"], t[t["case"] == "sub-02"]
    # the prior shift: IoU_adj = 0 shares per class change a lot between the subjects
    share = t.assign(zero=t["iou_adj"] == 0).groupby(["case", "class"])["zero"].mean()
    assert share["sub-02", 1] > 10 * share["sub-01", 1]  # CSF: 0.1 % -> 7 %
    assert share["sub-02", 2] > 3 * share["sub-01", 2]  # GM: 1.2 % -> 5.9 %
    assert share["sub-02", 3] < share["sub-01", 3] / 5  # WM: 3.2 % -> 0.3 %
    # ... while within each class the meta classifier ranks better than entropy
    clf = MetaClassifier(kind="lasso", random_state=0).fit(tr)
    p = clf.predict_proba(va)[:, 1]
    y = (va["iou_adj"] > 0).to_numpy()
    e = va["E"].to_numpy()
    for c in (1, 2):
        m = (va["class"] == c).to_numpy()
        assert (~y[m]).sum() >= 15
        assert _auroc(y[m], p[m]) > _auroc(y[m], -e[m])


def test_slicewise_mixed_splits_beat_entropy(brain_tables):
    """Both subjects in training: the published gap appears (grouped by slice, 10 splits)."""
    ds = _dataset(brain_tables, "slices", 1)
    ev = evaluate(ds, group=("case", "slice"), models=("linear",))
    assert ev.grouping == "case+slice" and ev.n_splits == 10
    assert _row(ev, "classification", "linear", "AUROC") > \
        _row(ev, "classification", "entropy", "AUROC") + 0.03  # measured 95.7 vs 88.9 %
    assert _row(ev, "regression", "linear", "R2") > \
        _row(ev, "regression", "entropy", "R2") + 0.03  # measured 60.6 vs 52.9 %


def test_3d_mode(brain_tables):
    # with 26-connectivity almost no 3D segment has an interior voxel
    assert len(_dataset(brain_tables, "3d", 1).training_table()) < 20
    ds = _dataset(brain_tables, "3d", 0)
    fixed = evaluate(ds, validation_cases=["sub-02"], models=("linear",))
    assert _row(fixed, "regression", "linear", "R2") > _row(fixed, "regression", "entropy", "R2")
    mixed = evaluate(ds, group=None, models=("linear",))
    assert _row(mixed, "classification", "linear", "AUROC") > \
        _row(mixed, "classification", "entropy", "AUROC") + 0.1  # measured 85.5 vs 57.9 %


def test_3d_why_classification_does_not_transfer(brain_tables):
    """3D: the same class-prior shift, stronger (nearly every 3D segment is a speck of a few
    voxels whose verdict depends on the class's error pattern), and again the meta classifier
    ranks better than entropy within each class that has both targets on sub-02."""
    t1, t2 = brain_tables["sub-01", "3d"], brain_tables["sub-02", "3d"]
    zero1 = (t1["iou_adj"] == 0).groupby(t1["class"]).mean()
    zero2 = (t2["iou_adj"] == 0).groupby(t2["class"]).mean()
    assert zero1[1] < 0.45 and zero2[1] > 0.75  # CSF specks: 37 % -> 82 % with IoU_adj = 0
    assert zero1[3] > 0.6 and zero2[3] < 0.1  # WM specks: 67 % -> 5 %
    clf = MetaClassifier(kind="lasso", random_state=0).fit(t1)
    p = clf.predict_proba(t2)[:, 1]
    y = (t2["iou_adj"] > 0).to_numpy()
    auroc_e = _auroc(y, -t2["E"].to_numpy())
    assert _auroc(y, p) < auroc_e  # pooled: the model loses (measured 45.7 vs 56.0 %)
    for c in (1, 3):  # CSF 252/56 segments with IoU_adj = 0/> 0, WM 20/390
        m = (t2["class"] == c).to_numpy()
        assert min((~y[m]).sum(), y[m].sum()) >= 20
        assert _auroc(y[m], p[m]) > _auroc(y[m], -t2["E"].to_numpy()[m])  # 80.0 vs 66.7, 58.3 vs 55.7


def _halves(brain_tables, mode):
    """sub-01 (segmenter's training slices left out slice-wise) plus sub-02 cut in two halves:
    3D at the median y of the segments' centres (posterior / anterior), slice-wise at z = 77
    (inferior / superior)."""
    t2 = brain_tables["sub-02", mode]
    if mode == "3d":
        y = brain_tables["sub-02", "3d_y"]
        first = y < np.median(y)
        names = ("sub-02/posterior", "sub-02/anterior")
        t1 = brain_tables["sub-01", "3d"]
    else:
        first = (t2["slice"] < 77).to_numpy()
        names = ("sub-02/inferior", "sub-02/superior")
        t1 = brain_tables["sub-01", "slices"]
        t1 = t1[~t1["slice"].isin(RF_TRAINING_SLICES)]
    return t1, {names[0]: t2[first], names[1]: t2[~first]}


@pytest.mark.parametrize("mode, min_interior", [("3d", 0), ("slices", 1), ("slices", 0)])
def test_refit_with_corrected_half_of_new_subject_beats_entropy(brain_tables, mode, min_interior):
    """The reviewer's loop on a new subject: correct half of sub-02, refit on sub-01 plus that
    half, predict the other half. Full-metric AUROC and R^2 then beat the entropy baseline
    (trained on the same data) by a wide margin in every mode, where the sub-01-only model did
    not (3D: 88.6 / 93.1 vs 55.5 / 57.4 %, see docs/meta_models.md)."""
    t1, halves = _halves(brain_tables, mode)
    for held_out in halves:
        ds = MetaDataset(min_interior=min_interior)
        ds.add("sub-01", t1)
        clf = MetaClassifier(kind="lasso", random_state=0).fit(ds)
        reg = MetaRegressor(kind="linear").fit(ds)
        (corrected, table), = ((k, v) for k, v in halves.items() if k != held_out)
        ds.add(corrected, table)
        clf2, reg2 = refit(clf, ds), refit(reg, ds)
        assert clf2.training_cases_ == ["sub-01", corrected]
        assert clf2.provenance_[-1]["added_cases"] == [corrected]
        va = halves[held_out]
        va = va[va["S_in"] >= min_interior]
        y = (va["iou_adj"] > 0).to_numpy()
        e = va[["E"]]
        base_clf = MetaClassifier(kind="logistic").fit(ds.training_table()[["E", "iou_adj"]])
        base_reg = MetaRegressor(kind="linear").fit(ds.training_table()[["E", "iou_adj"]])
        auroc_e = _auroc(y, base_clf.predict_proba(e)[:, 1])
        r2_e = _r2(va["iou_adj"], base_reg.predict(e))
        assert _auroc(y, clf2.predict_proba(va)[:, 1]) > auroc_e + 0.04
        assert _r2(va["iou_adj"], reg2.predict(va)) > r2_e
        # the same split through `evaluate` (baselines fitted on the same training cases)
        ds.add(held_out, halves[held_out])
        ev = evaluate(ds, validation_cases=[held_out], models=("linear",))
        assert _row(ev, "classification", "linear", "AUROC") > \
            _row(ev, "classification", "entropy", "AUROC") + 0.04
        assert _row(ev, "regression", "linear", "R2") > _row(ev, "regression", "entropy", "R2")


def _r2(y, pred):
    y = np.asarray(y, float)
    return 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)


def test_real_models_round_trip(tmp_path, brain_tables, slices_fixed):
    ds, ev = slices_fixed
    train = ds.training_table()
    train = train[train["case"] == "sub-01"]
    clf = MetaClassifier(kind="gbm", random_state=0).fit(train)
    reg = MetaRegressor(kind="gbm", random_state=0).fit(train)
    path = save_models(tmp_path / "brain.json.gz", clf, reg, evaluation=ev)
    sub02 = brain_tables["sub-02", "slices"]
    clf2, reg2, info = load_models(path, table=sub02)
    assert info["training_cases"] == ["sub-01"] and info["n_classes"] == 4
    a = predict_table(sub02, clf, reg)
    b = predict_table(sub02, clf2, reg2)
    np.testing.assert_array_equal(a[["p_iou0", "iou_adj_pred"]], b[["p_iou0", "iou_adj_pred"]])
    assert info["evaluation"].details["validation_cases"] == ["sub-02"]
