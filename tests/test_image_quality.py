"""Image-level quality (core.image_quality): features against a slow per-row computation,
DeVries & Taylor's figures against brute-force definitions, fitting the MetaRegressor on rows."""

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.image_quality import (
    BASELINE_FEATURES,
    _aurocs,
    compare_auroc,
    evaluate_quality,
    fit_image_regressor,
    image_feature_columns,
    image_features,
    predict_image_quality,
)
from napari_metaseg.core.meta_dataset import synthetic_metrics_table
from napari_metaseg.core.meta_model import MetaRegressor


def _probs(rng, shape, q=3):
    logits = rng.normal(size=(*shape, q)) * 2
    smooth = np.cumsum(np.cumsum(logits, axis=0), axis=1) / 6  # blobs, not salt and pepper
    e = np.exp(smooth - smooth.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def volume_table():
    rng = np.random.default_rng(0)
    probs = _probs(rng, (12, 14, 5))
    gt = probs.argmax(-1)
    gt[rng.random(gt.shape) < 0.1] = 1
    _, table = segment_metrics(probs, gt, mode="slices", slice_axis=-1)
    return probs, gt, table.assign(iou_adj_pred=rng.random(len(table)), p_iou0=rng.random(len(table)))


def test_features_match_a_slow_computation(volume_table):
    probs, _, table = volume_table
    feats = image_features(table, by="slice", background=0, small=4)
    assert feats["slice"].tolist() == list(range(probs.shape[-2]))
    for _, row in feats.iterrows():
        k = int(row["slice"])
        t = table[table["slice"] == k]
        f = t[t["class"] != 0]
        plane = probs[:, :, k, :]
        # every pixel of the slice: mean of the largest probability, of the heatmaps over all pixels
        assert row["mean_max_prob"] == pytest.approx(plane.max(-1).mean(), abs=1e-5)
        assert row["n_pixels_all"] == plane.shape[0] * plane.shape[1]
        assert row["n_segments"] == len(f)
        assert row["size"] == f["S"].sum()
        assert row["log_size"] == pytest.approx(np.log1p(f["S"].sum()))
        if len(f) == 0:
            continue
        assert row["share_small"] == pytest.approx((f["S"] < 4).mean())
        assert row["area_small"] == pytest.approx(f.loc[f["S"] < 4, "S"].sum() / f["S"].sum())
        for m in ("E", "D", "V"):
            assert row[f"{m}_mean"] == pytest.approx(np.average(f[m], weights=f["S"]))
            if f["S_bd"].sum():
                assert row[f"{m}_bd_mean"] == pytest.approx(np.average(f[f"{m}_bd"], weights=f["S_bd"]))
            assert row[f"{m}_all"] == pytest.approx(np.average(t[m], weights=t["S"]))
        for c in (1, 2):
            assert row[f"area_share_{c}"] == pytest.approx(f.loc[f["class"] == c, "S"].sum() / f["S"].sum())
        assert row["iou_adj_pred_mean"] == pytest.approx(np.average(f["iou_adj_pred"], weights=f["S"]))
        assert row["share_likely_wrong"] == pytest.approx((f["p_iou0"] > 0.5).mean())
    assert "area_share_0" not in feats.columns


def test_features_by_case_and_background_only_rows(volume_table):
    _, _, table = volume_table
    two = pd.concat([table.assign(case="a"), table.assign(case="b", S=table["S"] * 2)], ignore_index=True)
    by_case = image_features(two, by="case")
    assert by_case["case"].tolist() == ["a", "b"]
    assert by_case.loc[0, "E_mean"] == pytest.approx(by_case.loc[1, "E_mean"])  # doubling sizes: same means
    bg = pd.DataFrame({"slice": [0], "class": [0], "S": [10], "S_in": [2], "S_bd": [8], "V": [0.1],
                       "E": [0.2], "E_in": [0.1], "E_bd": [0.3]})
    row = image_features(bg).iloc[0]
    assert row["n_segments"] == 0 and row["E_mean"] == 0.0 and row["E_all"] == pytest.approx(0.2)
    assert np.isfinite(row[image_feature_columns(image_features(bg))].to_numpy(float)).all()


def test_feature_errors():
    t = pd.DataFrame({"class": [1], "S": [3], "S_in": [0], "S_bd": [3], "V": [0.2]})
    with pytest.raises(ValueError, match="slice"):
        image_features(t, by="slice")
    with pytest.raises(ValueError, match="no column"):
        image_features(t.drop(columns="V"), by="case")
    with pytest.raises(ValueError, match="by must be"):
        image_features(t, by="image")
    with pytest.raises(ValueError, match="empty"):
        image_features(t.iloc[:0], by="case")


def test_feature_columns_leave_out_identifiers_and_scores():
    t = pd.DataFrame({"case": ["a"], "slice": [0], "n_segments": [1], "size": [3], "n_pixels_all": [9],
                      "log_size": [1.0], "iou_adj_pred_mean": [0.5], "mean_iou": [0.4], "iou_1": [0.1],
                      "dice_1": [0.2], "pixel_accuracy": [0.9], "n_pixels": [9], "quality_pred": [0.3]})
    assert image_feature_columns(t) == ["log_size", "iou_adj_pred_mean"]


# ============================================================================================
# DeVries & Taylor's figures
# ============================================================================================
def _brute_force(true, pred, fail_below):
    is_pass = true >= fail_below
    pos, neg = pred[is_pass], pred[~is_pass]
    # AUROC: probability that a pass outranks a failure (ties count half)
    auroc = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    # detection error: min over every threshold (and both extremes) of 0.5 (1 - TPR) + 0.5 FPR
    cuts = np.r_[np.unique(pred), np.inf]
    det = min(0.5 * (1 - (pos >= c).mean()) + 0.5 * (neg >= c).mean() for c in cuts)

    def ap(labels, score):
        order = np.argsort(-score, kind="stable")
        total = 0.0
        for s in np.unique(score)[::-1]:  # each distinct score once, highest first
            top = score[order] >= s
            hits = labels[order][top]
            precision = hits.mean()
            recall_gain = labels[order][score[order] == s].sum() / labels.sum()
            total += precision * recall_gain
        return total

    return {"rmse": np.sqrt(np.mean((pred - true) ** 2)), "detection_error": det, "auroc": auroc,
            "aupr_pass": ap(is_pass, pred), "aupr_fail": ap(~is_pass, -pred)}


@pytest.mark.parametrize("seed", range(5))
def test_figures_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.3, 1.0, 40)
    pred = np.round(true + rng.normal(0, 0.15, 40), 1)  # rounded: ties
    got = evaluate_quality(true, pred, fail_below=0.7).loc["predicted"]
    want = _brute_force(true, pred, 0.7)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["n"] == 40 and got["n_fail"] == int((true < 0.7).sum())


def test_figures_hand_cases_and_nan_rows():
    true = np.array([0.9, 0.8, 0.5, 0.3, np.nan])
    perfect = np.array([0.9, 0.8, 0.5, 0.3, 0.1])
    r = evaluate_quality(true, {"perfect": perfect, "reversed": -perfect}, baseline=np.ones(5))
    assert r.loc["perfect", "rmse"] == 0.0 and r.loc["perfect", "auroc"] == 1.0
    assert r.loc["perfect", "detection_error"] == 0.0 and r.loc["perfect", "aupr_fail"] == 1.0
    assert r.loc["reversed", "auroc"] == 0.0
    assert r.loc["baseline", "auroc"] == 0.5 and r.loc["baseline", "detection_error"] == 0.5
    assert (r["n"] == 4).all()  # the NaN row is left out
    one_side = evaluate_quality(np.array([0.9, 0.8]), np.array([0.5, 0.6]))
    assert np.isnan(one_side.loc["predicted", "auroc"]) and one_side.loc["predicted", "n_fail"] == 0


def test_figure_errors():
    with pytest.raises(ValueError, match="predicted scores for"):
        evaluate_quality([0.5, 0.9], [0.5])
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_quality([0.5, 0.9], [0.5, np.nan])
    with pytest.raises(ValueError, match="no finite"):
        evaluate_quality([np.nan], [0.5])


# ============================================================================================
# Bootstrap intervals of the AUROC and paired comparisons
# ============================================================================================
@pytest.mark.parametrize("seed", range(4))
def test_rank_auroc_matches_scikit_learn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(30, 25)), 1)  # ties within rows
    labels = rng.random((30, 25)) < 0.4
    labels[:, 0], labels[:, 1] = True, False  # both classes in every row
    got = _aurocs(labels, scores)
    want = [roc_auc_score(lab, sc) for lab, sc in zip(labels, scores, strict=True)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def _binormal(rng, n, d):
    """n passes with scores ~ N(d, 1), n failures ~ N(0, 1): the true AUROC is Phi(d / sqrt 2)."""
    true = np.r_[np.full(n, 0.9), np.full(n, 0.5)]
    return true, np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]


def test_auroc_interval_covers_the_true_auroc_about_95_percent_of_the_time():
    from scipy.stats import norm

    d = 1.0
    truth = norm.cdf(d / np.sqrt(2))  # 0.760
    rng = np.random.default_rng(1)
    hits, widths = 0, []
    for rep in range(120):
        true, score = _binormal(rng, 60, d)
        r = evaluate_quality(true, score, ci=0.95, n_boot=400, seed=rep).loc["predicted"]
        assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"]
        hits += r["auroc_low"] <= truth <= r["auroc_high"]
        widths.append(r["auroc_high"] - r["auroc_low"])
    assert 0.88 <= hits / 120 <= 1.0
    # the textbook standard error (Hanley & McNeil) of an AUROC near 0.76 on 60 + 60 rows is
    # about 0.043: a 95 % interval some 0.17 wide
    assert 0.12 < np.median(widths) < 0.22


def test_paired_comparison_sees_a_real_difference_and_not_a_spurious_one():
    rng = np.random.default_rng(2)
    true, score = _binormal(rng, 80, 1.5)
    signal = score - np.r_[np.full(80, 1.5), np.zeros(80)]  # pure noise: AUROC about 0.5
    worse = score + rng.normal(0, 2.0, 160)
    r = compare_auroc(true, {"good": score, "noise": signal, "worse": worse, "same": score.copy()},
                      against="good", n_boot=1000)
    assert r.loc["noise", "low"] > 0.2 and r.loc["noise", "share_not_above"] == 0.0
    assert r.loc["worse", "low"] > 0
    assert r.loc["same", ["difference", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    assert r.loc["same", "share_not_above"] == 1.0  # never strictly above itself
    for name in ("noise", "worse"):
        assert r.loc[name, "low"] <= r.loc[name, "difference"] <= r.loc[name, "high"]
        assert r.loc[name, "auroc"] - r.loc[name, "auroc_other"] == pytest.approx(r.loc[name, "difference"])
    # two predictors of the same true AUROC (independent noise): the interval holds 0 most times
    holds = 0
    for rep in range(60):
        t, s1 = _binormal(rng, 60, 1.0)
        _, s2 = _binormal(rng, 60, 1.0)
        c = compare_auroc(t, {"a": s1, "b": s2}, against="a", n_boot=300, seed=rep).loc["b"]
        holds += c["low"] <= 0 <= c["high"]
    assert holds / 60 >= 0.88


def test_intervals_are_reproducible_and_follow_the_level():
    rng = np.random.default_rng(3)
    true, score = _binormal(rng, 40, 1.0)
    a = evaluate_quality(true, score, ci=0.95, seed=7)
    b = evaluate_quality(true, score, ci=0.95, seed=7)
    pd.testing.assert_frame_equal(a, b)
    narrow = evaluate_quality(true, score, ci=0.5, seed=7).loc["predicted"]
    wide = a.loc["predicted"]
    assert wide["auroc_low"] < narrow["auroc_low"] < narrow["auroc_high"] < wide["auroc_high"]
    # without ci the table keeps its columns; with one side only the interval is NaN
    assert "auroc_low" not in evaluate_quality(true, score).columns
    one_side = evaluate_quality(np.array([0.9, 0.8, 0.95]), np.array([0.5, 0.6, 0.7]), ci=0.95)
    assert np.isnan(one_side.loc["predicted", "auroc_low"])


def test_interval_and_comparison_errors():
    true, score = _binormal(np.random.default_rng(4), 10, 1.0)
    for bad in (0, 1, 1.5, True, "0.95"):
        with pytest.raises(ValueError, match="confidence level"):
            evaluate_quality(true, score, ci=bad)
    with pytest.raises(ValueError, match="n_boot"):
        evaluate_quality(true, score, ci=0.95, n_boot=10)
    with pytest.raises(ValueError, match="not one of the predictors"):
        compare_auroc(true, {"a": score, "b": score}, against="c")
    with pytest.raises(ValueError, match="at least two"):
        compare_auroc(true, {"a": score}, against="a")
    with pytest.raises(ValueError, match="all 20 rows pass"):
        compare_auroc(true, {"a": score, "b": score}, against="a", fail_below=0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        compare_auroc(true, {"a": score, "b": np.full(20, np.nan)}, against="a")


# ============================================================================================
# Fitting the MetaRegressor on image rows
# ============================================================================================
def test_regressor_on_rows_uses_the_feature_columns_and_drops_nan_targets():
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"case": ["a"] * 30 + ["b"] * 30, "slice": list(range(30)) * 2,
                         "n_segments": rng.integers(1, 9, 60), "log_size": rng.random(60),
                         "E_mean": rng.random(60)})
    rows["mean_iou"] = 0.9 - 0.5 * rows["E_mean"] + 0.1 * rows["log_size"]
    rows.loc[[3, 40], "mean_iou"] = np.nan
    reg = fit_image_regressor(rows, "mean_iou", kind="linear")
    assert [str(c) for c in reg.feature_names_in_] == ["log_size", "E_mean"]
    assert reg.n_segments_ == 58 and reg.training_cases_ == ["a", "b"]
    # an exact linear target is recovered: OLS on the standardised features
    assert predict_image_quality(reg, rows) == pytest.approx(
        np.clip(0.9 - 0.5 * rows["E_mean"] + 0.1 * rows["log_size"], 0, 1), abs=1e-9)
    base = fit_image_regressor(rows.assign(log_n_segments=np.log1p(rows["n_segments"])), "mean_iou",
                               kind="linear", columns=BASELINE_FEATURES)
    assert [str(c) for c in base.feature_names_in_] == list(BASELINE_FEATURES)
    with pytest.raises(ValueError, match="lack the model's feature"):
        predict_image_quality(reg, rows.drop(columns="E_mean"))
    with pytest.raises(ValueError, match="target column"):
        fit_image_regressor(rows, "mean_dice")


def test_segment_table_fits_are_unchanged():
    """The image rows go through MetaRegressor.fit(X, y) as it is: a segment table still fits
    on its iou_adj target exactly as before (same coefficients as an explicit y)."""
    t = synthetic_metrics_table(300, random_state=0)
    a = MetaRegressor(kind="linear").fit(t)
    b = MetaRegressor(kind="linear").fit(t.drop(columns=["iou_adj"]), t["iou_adj"].to_numpy())
    assert np.array_equal(a.coef_, b.coef_[[list(b.feature_names_in_).index(c) for c in a.feature_names_in_]])
