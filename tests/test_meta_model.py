"""MetaClassifier / MetaRegressor: targets, solvers, exported trees, predictions, bad input."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.metrics import roc_auc_score

from napari_metaseg.core import meta_model as mm
from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
from napari_metaseg.core.meta_model import (
    MetaClassifier,
    MetaRegressor,
    check_columns,
    predict_table,
    refit,
)


@pytest.fixture(scope="module")
def table():
    return synthetic_metrics_table(1500, random_state=0)


@pytest.fixture(scope="module")
def separable():
    """IoU_adj = 0 exactly where the mean entropy exceeds 0.5."""
    t = synthetic_metrics_table(400, random_state=5)
    rng = np.random.default_rng(0)
    t["E"] = rng.uniform(0, 1, len(t))
    t["iou_adj"] = np.where(t["E"] > 0.5, 0.0, 0.2 + 0.7 * rng.uniform(size=len(t)))
    t["iou"] = t["iou_adj"]
    return t


# --------------------------------------------------------------------------------------------
# scores used throughout
# --------------------------------------------------------------------------------------------
def test_auroc_hand_values_and_sklearn_agreement():
    assert mm._auroc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5]) == pytest.approx(0.75)
    assert mm._auroc([1, 1, 0, 0], [0.8, 0.7, 0.2, 0.1]) == 1.0
    assert mm._auroc([1, 1, 0, 0], [0.1, 0.2, 0.7, 0.8]) == 0.0
    assert mm._auroc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert np.isnan(mm._auroc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # with ties
    assert mm._auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_regression_scores_hand_values():
    sigma, r2 = mm._regression_scores(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.7]))
    assert sigma == pytest.approx(np.sqrt(0.09 / 3))
    assert r2 == pytest.approx(1 - 0.09 / 0.5)


# --------------------------------------------------------------------------------------------
# fitting on tables
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lasso", "logistic", "gbm"])
def test_classifier_separates_a_separable_set(separable, kind):
    clf = MetaClassifier(kind=kind, random_state=0).fit(separable)
    y = (separable["iou_adj"] > 0).astype(int).to_numpy()
    proba = clf.predict_proba(separable)
    assert proba.shape == (len(separable), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.classes_.tolist() == [0, 1]
    if kind == "lasso":
        # the penalty chosen by cross-validated log-loss shrinks the entropy's weight a little:
        # one of 400 segments, at E = 0.5 +- 0.005, lands on the wrong side
        assert mm._auroc(y, proba[:, 1]) > 0.9999
        assert clf.score(separable, y) >= 0.995
        wrong = clf.predict(separable) != y
        assert np.all(np.abs(separable["E"].to_numpy()[wrong] - 0.5) < 0.01)
        return
    assert mm._auroc(y, proba[:, 1]) == 1.0
    assert clf.score(separable, y) == 1.0
    np.testing.assert_array_equal(clf.predict(separable), y)


def test_target_from_table_equals_explicit_y_and_skips_nan_rows(table):
    t = table.copy()
    t.loc[[3, 10, 50], "iou_adj"] = np.nan
    a = MetaClassifier(kind="logistic").fit(t)
    keep = t["iou_adj"].notna()
    b = MetaClassifier(kind="logistic").fit(t[keep], (t.loc[keep, "iou_adj"] > 0).astype(int))
    assert a.n_segments_ == len(t) - 3
    np.testing.assert_array_equal(a.predict_proba(t), b.predict_proba(t))
    r = MetaRegressor().fit(t)
    assert r.n_segments_ == len(t) - 3
    assert np.isfinite(r.predict(t)).all()  # NaN-target rows are still predicted


def test_feature_names_and_log_features(table):
    clf = MetaClassifier(kind="logistic").fit(table)
    assert list(clf.feature_names_in_) == [c for c in table.columns
                                            if c not in ("index", "class", "iou", "iou_adj")]
    assert clf.log_features_ == ["S", "S_in", "S_bd", "S_rel", "S_rel_in"]
    assert MetaClassifier(kind="logistic", log_sizes=False).fit(table).log_features_ == []
    # the size columns enter on a log scale: the transformed S is affine in log1p(S)
    Z = clf._transform(table[clf.feature_names_in_].to_numpy(float))
    j = list(clf.feature_names_in_).index("S")
    assert abs(np.corrcoef(Z[:, j], np.log1p(table["S"]))[0, 1] - 1) < 1e-12


def test_column_order_does_not_matter(table):
    clf = MetaClassifier(kind="logistic").fit(table)
    shuffled = table[table.columns[::-1]]
    np.testing.assert_array_equal(clf.predict_proba(shuffled), clf.predict_proba(table))


def test_regressor_clips_to_unit_interval(table):
    reg = MetaRegressor(kind="linear").fit(table)
    raw = reg._raw(table)
    pred = reg.predict(table)
    np.testing.assert_array_equal(pred, np.clip(raw, 0, 1))
    extreme = table.copy()
    extreme["E"] = 50.0  # far outside the training range
    p = reg.predict(extreme)
    assert p.min() >= 0 and p.max() <= 1


def test_fit_on_dataset_applies_min_interior_and_records_cases():
    ds = MetaDataset(min_interior=1)
    for i in range(3):
        ds.add(f"img{i}", synthetic_metrics_table(200, random_state=i))
    clf = MetaClassifier(kind="lasso", random_state=0).fit(ds)
    assert clf.n_segments_ == len(ds.training_table())
    assert clf.training_cases_ == ["img0", "img1", "img2"]
    rec = clf.provenance_[-1]
    assert rec["min_interior"] == 1 and rec["cases"] == ["img0", "img1", "img2"]
    assert rec["n_iou0"] + rec["n_iou_pos"] == clf.n_segments_
    assert clf.predict_proba(ds).shape == (len(ds), 2)  # prediction covers every row
    assert MetaClassifier(kind="logistic").fit(synthetic_metrics_table(50)).training_cases_ == []


# --------------------------------------------------------------------------------------------
# solvers against scikit-learn
# --------------------------------------------------------------------------------------------
def test_l1_logistic_matches_sklearn_saga():
    rng = np.random.default_rng(0)
    n, p = 3000, 8
    X = rng.normal(size=(n, p))
    X[:, 1] = X[:, 0] + 0.2 * rng.normal(size=n)
    y = (X @ np.array([1.5, 0, -1, 0, 0.5, 0, 0, 0]) + rng.logistic(size=n) > 0).astype(float)
    lams = mm._lambda_grid(mm._logit_lambda_max(X, y), 6, 1e-2)
    path, _ = mm._l1_logistic_path(X, y, lams)
    assert np.all(path[0][1:] == 0)  # lambda_max: every coefficient is zero
    for lam, beta in zip(lams[1:], path[1:], strict=True):
        ref = LogisticRegression(C=1 / (n * lam), l1_ratio=1.0, solver="saga", tol=1e-12,
                                 max_iter=100_000).fit(X, y)
        np.testing.assert_allclose(beta[1:], ref.coef_[0], atol=2e-5)
        assert beta[0] == pytest.approx(ref.intercept_[0], abs=2e-5)
        np.testing.assert_array_equal(beta[1:] == 0, np.abs(ref.coef_[0]) < 1e-9)


def test_lasso_regression_matches_sklearn():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 6))
    y = X @ np.array([0.3, 0, 0, -0.2, 0.05, 0]) + 0.1 * rng.normal(size=2000)
    for alpha in (0.05, 0.01, 1e-4):
        beta = mm._lasso_path(X, y, [alpha])[0]
        ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
        np.testing.assert_allclose(beta[1:], ref.coef_, atol=1e-7)
        assert beta[0] == pytest.approx(ref.intercept_, abs=1e-7)


def test_lasso_kinds_select_a_strength(table):
    clf = MetaClassifier(kind="lasso", random_state=0).fit(table)
    reg = MetaRegressor(kind="lasso", random_state=0).fit(table)
    assert clf.lambda_ > 0 and reg.lambda_ > 0
    assert clf.provenance_[-1]["lambda"] == clf.lambda_
    assert np.count_nonzero(clf.coef_) < len(clf.coef_)  # the penalty zeroes something
    # the same seed gives the same model
    again = MetaClassifier(kind="lasso", random_state=0).fit(table)
    np.testing.assert_array_equal(again.coef_, clf.coef_)


@pytest.mark.parametrize("seed", range(6))
def test_lasso_classifier_never_selects_the_empty_model(seed):
    """With 3 % minority segments and a target unrelated to the features, the inner validation
    part's log-loss favoured the intercept-only model (6 of 10 seeds before the guard), a model
    that ranks nothing; the first strength of the grid is never chosen."""
    t = synthetic_metrics_table(600, random_state=seed)
    rng = np.random.default_rng(seed)
    t["iou_adj"] = np.where(rng.random(len(t)) < 0.03, 0.0, 0.5)
    clf = MetaClassifier(kind="lasso", random_state=0).fit(t)
    assert np.count_nonzero(clf.coef_) >= 1
    assert np.unique(clf.predict_proba(t)[:, 1]).size > 1


def test_exported_trees_reproduce_sklearn_exactly(table):
    clf = MetaClassifier(kind="gbm", random_state=0).fit(table)
    Z = clf._transform(table[clf.feature_names_in_].to_numpy(float))
    y = (table["iou_adj"] > 0).astype(int)
    ref = HistGradientBoostingClassifier(random_state=0).fit(Z, y)
    np.testing.assert_allclose(clf.predict_proba(table), ref.predict_proba(Z), rtol=0, atol=1e-12)
    np.testing.assert_allclose(clf.decision_function(table), ref.decision_function(Z), rtol=0,
                               atol=1e-12)
    reg = MetaRegressor(kind="gbm", random_state=0).fit(table)
    refr = HistGradientBoostingRegressor(random_state=0).fit(Z, table["iou_adj"])
    np.testing.assert_allclose(reg._raw(table), refr.predict(Z), rtol=0, atol=1e-12)
    # NaN routing follows missing_go_to_left, as in scikit-learn
    Zn = Z[:50].copy()
    Zn[::3, 0] = np.nan
    np.testing.assert_allclose(reg.model_.raw(Zn), refr.predict(Zn), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# predict_table and refit
# --------------------------------------------------------------------------------------------
def test_predict_table_adds_overlay_columns(table):
    clf = MetaClassifier(kind="logistic").fit(table)
    reg = MetaRegressor().fit(table)
    before = table.copy()
    out = predict_table(table, clf, reg)
    pd.testing.assert_frame_equal(table, before)  # input untouched
    assert list(out.columns) == [*table.columns, "p_iou0", "iou_adj_pred"]
    np.testing.assert_array_equal(out["p_iou0"], 1.0 - clf.predict_proba(table)[:, 1])
    np.testing.assert_array_equal(out["iou_adj_pred"], reg.predict(table))
    # a table that already holds predictions can be predicted again (they are not features)
    again = predict_table(out, clf, reg)
    pd.testing.assert_frame_equal(again, out)
    only = predict_table(table, regressor=reg)
    assert "p_iou0" not in only.columns and "iou_adj_pred" in only.columns


def test_predict_table_errors(table):
    reg = MetaRegressor().fit(table)
    with pytest.raises(ValueError, match="pass a classifier, a regressor or both"):
        predict_table(table)
    with pytest.raises(TypeError, match="classifier must be a MetaClassifier"):
        predict_table(table, reg)
    custom = MetaClassifier(kind="logistic").fit(table, np.where(table["iou_adj"] > 0.5, "good",
                                                                 "bad"))
    with pytest.raises(ValueError, match="custom labels"):
        predict_table(table, custom)


def test_refit_keeps_provenance_of_both_fits():
    ds = MetaDataset().add("a", synthetic_metrics_table(300, random_state=0))
    clf = MetaClassifier(kind="lasso", random_state=3).fit(ds)
    coef_before = clf.coef_.copy()
    ds.add("b", synthetic_metrics_table(300, random_state=1))
    new = refit(clf, ds)
    assert new is not clf
    assert new.get_params() == clf.get_params()
    assert new.training_cases_ == ["a", "b"]
    assert [r["cases"] for r in new.provenance_] == [["a"], ["a", "b"]]
    last = new.provenance_[-1]
    assert last["refit"] and last["added_cases"] == ["b"] and last["dropped_cases"] == []
    assert last["previous_cases"] == ["a"]
    np.testing.assert_array_equal(clf.coef_, coef_before)  # the original is untouched
    assert len(clf.provenance_) == 1
    # refitting twice accumulates
    assert len(refit(new, ds).provenance_) == 3
    reg = refit(MetaRegressor().fit(ds), ds)
    assert len(reg.provenance_) == 2


def test_refit_rejects_other_classes_and_types():
    clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(200, random_state=0))
    other = MetaDataset().add("c", synthetic_metrics_table(200, n_classes=3, random_state=0))
    with pytest.raises(ValueError, match=r"4 class probability columns .* but 3 found"):
        refit(clf, other)
    with pytest.raises(TypeError, match="model must be a fitted MetaClassifier or MetaRegressor"):
        refit(LogisticRegression(), other)
    with pytest.raises(TypeError, match="dataset must be a MetaDataset or a pandas DataFrame"):
        refit(clf, np.zeros((20, 3)))


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, which", [(0.0, "IoU_adj = 0"), (0.6, "IoU_adj > 0")])
def test_single_target_class_is_rejected(table, value, which):
    t = table.copy()
    t["iou_adj"] = value
    with pytest.raises(ValueError, match=f"single target class: every segment has {which}"):
        MetaClassifier().fit(t)
    with pytest.raises(ValueError, match="single class"):
        MetaClassifier().fit(t, np.ones(len(t), int))


def test_single_class_after_the_interior_filter_says_so(table):
    """Every IoU_adj = 0 segment has an empty interior: the message names the filter and the fix."""
    from napari_metaseg.core.meta_dataset import MetaDataset

    t = table.copy()
    zero = (t["iou_adj"] == 0).to_numpy()
    assert 0 < zero.sum() < len(t) - 10
    t.loc[zero, "S_in"] = 0
    t.loc[~zero, "S_in"] = np.maximum(t.loc[~zero, "S_in"], 1)
    ds = MetaDataset().add("a", t)
    with pytest.raises(ValueError, match=rf"every segment has IoU_adj > 0.*\({zero.sum()} segments with "
                       r"IoU_adj = 0 were left out because their interior is smaller than "
                       r"min_interior = 1; min_interior = 0 keeps them"):
        MetaClassifier().fit(ds)
    MetaClassifier(kind="logistic").fit(MetaDataset(min_interior=0).add("a", t))  # the fix works
    # no hint where the filter is not the cause
    t["iou_adj"] = 0.6
    with pytest.raises(ValueError, match=r"IoU_adj > 0; a meta classifier needs [^(]*$"):
        MetaClassifier().fit(MetaDataset().add("a", t))


def test_too_few_segments(table):
    with pytest.raises(ValueError, match=r"9 usable segments \(n_samples=9\); at least 10"):
        MetaClassifier().fit(table.iloc[:9])
    t = table.iloc[:12].copy()
    t.loc[t.index[:3], "iou_adj"] = np.nan  # 9 usable once NaN targets are dropped
    with pytest.raises(ValueError, match="at least 10"):
        MetaRegressor().fit(t)


def test_nan_in_features_names_the_column(table):
    t = table.copy()
    t.loc[4, "E_bd"] = np.nan
    t.loc[7, "D"] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite feature values .*'E_bd': 1.*'D': 1|"
                                         r"NaN or infinite feature values .*'D': 1.*'E_bd': 1"):
        MetaClassifier().fit(t)
    clf = MetaRegressor().fit(table)
    with pytest.raises(ValueError, match="NaN or infinite feature values"):
        clf.predict(t)


def test_table_without_ground_truth(table):
    no_gt = table.drop(columns=["iou", "iou_adj"])
    for est in (MetaClassifier(), MetaRegressor()):
        with pytest.raises(ValueError, match="no 'iou_adj' column"):
            est.fit(no_gt)
    # but prediction on it works
    assert MetaRegressor().fit(table).predict(no_gt).shape == (len(table),)


def test_mismatched_columns_at_predict(table):
    clf = MetaClassifier(kind="logistic").fit(table)
    with pytest.raises(ValueError, match=r"missing \['D_bd'\]"):
        clf.predict_proba(table.drop(columns="D_bd"))
    extra = table.copy()
    extra["MI"] = 0.1
    with pytest.raises(ValueError, match=r"unexpected \['MI'\]"):
        clf.predict(extra)
    three = synthetic_metrics_table(20, n_classes=3)
    with pytest.raises(ValueError, match=r"4 class probability columns .* but 3 found"):
        clf.predict_proba(three)
    with pytest.raises(ValueError, match="different numbers of classes"):
        check_columns(clf, three)
    with pytest.raises(ValueError, match="features"), pytest.warns(UserWarning,
                                                                   match="feature names"):
        clf.predict(np.zeros((3, 4)))


def test_parameter_validation(table):
    with pytest.raises(ValueError, match=r"kind must be one of \['lasso', 'logistic', 'gbm'\]"):
        MetaClassifier(kind="linear").fit(table)
    with pytest.raises(ValueError, match=r"kind must be one of \['linear', 'lasso', 'gbm'\]"):
        MetaRegressor(kind="logistic").fit(table)
    with pytest.raises(TypeError, match="random_state must be None or an int"):
        MetaClassifier(random_state="x").fit(table)
    with pytest.raises(TypeError, match="log_sizes must be a bool"):
        MetaRegressor(log_sizes="yes").fit(table)
    with pytest.raises(ValueError, match="y must be None when X is a MetaDataset"):
        MetaClassifier().fit(MetaDataset().add("a", table), np.ones(len(table)))
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        MetaClassifier().fit(table, np.arange(len(table)) % 3)
    with pytest.raises(ValueError, match="y must be 1-D with one entry per row"):
        MetaClassifier().fit(table, np.ones(5))
    with pytest.raises(ValueError, match="requires y to be passed"):
        MetaRegressor().fit(np.zeros((20, 3)))
    t = table.copy()
    t["iou_adj"] = t["iou_adj"].astype(float)
    with pytest.raises(ValueError, match="y contains NaN"):
        MetaRegressor().fit(t, np.full(len(t), np.nan))


# --------------------------------------------------------------------------------------------
# folds that choose the LASSO strength
# --------------------------------------------------------------------------------------------
def _covers_once(folds, n):
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(n))  # every row validated exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == n


def test_strength_folds_keep_cases_whole():
    rng = np.random.default_rng(0)
    cases = np.repeat([f"c{i}" for i in range(7)], 30)
    y = (rng.random(cases.size) < 0.3).astype(float)
    folds = MetaClassifier(random_state=0)._inner_folds(cases.size, y, cases, 0)
    assert len(folds) == 5
    _covers_once(folds, cases.size)
    for tr, va in folds:
        assert not set(cases[tr]) & set(cases[va])  # a case is on one side only
    # three cases: three folds, one case each
    few = cases[:90]
    folds = MetaRegressor(random_state=0)._inner_folds(few.size, None, few, 0)
    assert sorted(len(set(few[va])) for _, va in folds) == [1, 1, 1]


def test_strength_folds_of_segments_are_stratified_and_shrink_with_the_minority():
    y = np.r_[np.ones(97), np.zeros(3)]
    folds = MetaClassifier()._inner_folds(100, y, np.array(["a"] * 50 + ["b"] * 50), 1)
    assert len(folds) == 3  # only 3 minority segments: 3 folds, one in each validation part
    _covers_once(folds, 100)
    assert all(y[va].min() == 0 and set(y[tr]) == {0.0, 1.0} for tr, va in folds)
    assert MetaClassifier()._inner_folds(100, np.r_[np.ones(99), 0.0], None, 1) is None
    reg = MetaRegressor()._inner_folds(12, None, None, 3)
    assert len(reg) == 5
    _covers_once(reg, 12)


def test_strength_selection_is_reproducible_and_seed_dependent_only_through_the_folds():
    t = synthetic_metrics_table(600, random_state=2)
    a = MetaClassifier(kind="lasso", random_state=4).fit(t)
    b = MetaClassifier(kind="lasso", random_state=4).fit(t)
    assert a.lambda_ == b.lambda_ and np.array_equal(a.coef_, b.coef_)
    r = MetaRegressor(kind="lasso", random_state=4).fit(t)
    assert r.lambda_ == MetaRegressor(kind="lasso", random_state=4).fit(t).lambda_
