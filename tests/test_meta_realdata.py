"""Meta models on the real brain data (../shared/data/brain): train sub-01, evaluate sub-02.

sub-01 is the subject the RandomForest segmenter was trained on; sub-02 is unseen and has a
stronger bias field. Besides the numbers quoted in docs/meta_models.md, these tests pin down the
finding of the investigation there: the regression beats the entropy baseline on sub-02, the
classification beats it within every class and on mixed splits, but not pooled across the
subject change, because the share of IoU_adj = 0 per class flips between the subjects.
"""

import numpy as np
import pytest

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.meta_dataset import MetaDataset
from napari_metaseg.core.meta_io import load_models, save_models
from napari_metaseg.core.meta_model import (
    MetaClassifier,
    MetaRegressor,
    _auroc,
    evaluate,
    predict_table,
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
        out[sub, "3d"] = segment_metrics(probs, gt, mode="3d")[1]
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


@pytest.mark.xfail(strict=True, reason=(
    "with the segmenter's own training slices in the meta model's training data, pooled AUROC "
    "on sub-02 does not beat entropy (83.6 % vs 83.8 %); see test_slicewise_unseen_sub01_to_sub02 "
    "and docs/meta_models.md, 'Real data'"))
def test_slicewise_sub01_to_sub02_classification_beats_entropy(slices_fixed):
    _, ev = slices_fixed
    assert _row(ev, "classification", "linear", "AUROC") > \
        _row(ev, "classification", "entropy", "AUROC")


def test_slicewise_unseen_sub01_to_sub02_beats_entropy(slices_unseen):
    """Trained on the sub-01 slices the segmenter never saw: full-metric AUROC and R^2 beat the
    entropy baseline on sub-02 (measured with inner-split seed 0: 84.58 vs 83.81 % and 41.35 vs
    35.04 %; over seeds 0-9 the AUROC is 83.77-85.68 %, mean 84.93, above entropy for 9 of 10)."""
    ds, ev = slices_unseen
    assert ev.grouping == "fixed" and ev.details["training_cases"] == ["sub-01"]
    train = ds.training_table()
    assert not set(train.loc[train["case"] == "sub-01", "slice"]) & RF_TRAINING_SLICES
    auroc_e = _row(ev, "classification", "entropy", "AUROC")
    assert _row(ev, "classification", "linear", "AUROC") > auroc_e
    assert _row(ev, "regression", "linear", "R2") > _row(ev, "regression", "entropy", "R2") + 0.03
    # not one lucky inner split (the LASSO strength is chosen on it): the mean over 5 seeds too
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
