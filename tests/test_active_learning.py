"""Active-learning ranking (core.active_learning): hand-computed orders, slices, CLI agreement, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core.active_learning import order_ranking, predicted_quality, rank_cases


def hand_table():
    """Three cases with hand-made predictions (no model needed: model=None reads them).

    case a: sizes 6, 2, 2 with predicted IoU_adj 1.0, 0.5, 0.0 -> (6 + 1 + 0) / 10 = 0.7;
            P(IoU_adj = 0) 0.1, 0.6, 0.9 -> 2 of 3 likely wrong
    case b: sizes 1, 3 with predicted 0.2, 0.8 -> (0.2 + 2.4) / 4 = 0.65; p 0.7, 0.2 -> 1 of 2
    case c: size 4 with predicted 0.7 -> 0.7; p 0.4 -> 0 of 1 (ties with a on quality)
    """
    return pd.DataFrame({
        "case": ["a", "a", "a", "b", "b", "c"],
        "index": [1, 2, 3, 1, 2, 1],
        "class": [1, 2, 1, 1, 1, 2],  # no background segment: background=0 changes nothing
        "S": [6, 2, 2, 1, 3, 4],
        "iou_adj_pred": [1.0, 0.5, 0.0, 0.2, 0.8, 0.7],
        "p_iou0": [0.1, 0.6, 0.9, 0.7, 0.2, 0.4],
    })


def test_summary_weights_by_size_and_counts_likely_wrong_segments():
    s = predicted_quality(hand_table())
    assert s["case"].tolist() == ["a", "b", "c"]  # input order, not sorted
    np.testing.assert_allclose(s["iou_adj_pred_mean"], [0.7, 0.65, 0.7], rtol=1e-12)
    np.testing.assert_allclose(s["share_likely_wrong"], [2 / 3, 1 / 2, 0.0], rtol=1e-12)
    assert s["n_segments"].tolist() == [3, 2, 1]
    assert s["size"].tolist() == [10, 4, 4]
    # the threshold is strict and a parameter: at 0.6 the segment with p = 0.6 no longer counts
    s6 = predicted_quality(hand_table(), threshold=0.6)
    np.testing.assert_allclose(s6["share_likely_wrong"], [1 / 3, 1 / 2, 0.0], rtol=1e-12)


def test_order_worst_quality_first_ties_by_share_then_input_order():
    r = rank_cases(hand_table())
    # b (0.65) first; a and c tie at 0.7: a has the larger share likely wrong (2/3 > 0)
    assert r["case"].tolist() == ["b", "a", "c"]
    assert r["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(r["priority"], [0.35, 0.3, 0.3], rtol=1e-12)
    assert list(r.columns[:2]) == ["rank", "case"]
    # a complete tie (same quality, same share) keeps the input order, whichever comes first
    t = hand_table()
    twin = t[t["case"] == "a"].assign(case="a2")
    for order in (["a", "a2"], ["a2", "a"]):
        parts = {"a": t[t["case"] == "a"], "a2": twin}
        r = rank_cases({k: parts[k].drop(columns="case") for k in order})
        assert r["case"].tolist() == order


def test_share_weight_combines_both_orders_as_documented():
    # priority = (1 - w) (1 - quality) + w share:
    #   a: 0.5 * 0.3 + 0.5 * 2/3 = 0.4833, b: 0.5 * 0.35 + 0.5 * 0.5 = 0.425, c: 0.15
    r = rank_cases(hand_table(), share_weight=0.5)
    assert r["case"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(r["priority"], [0.3 / 2 + 1 / 3, 0.35 / 2 + 0.25, 0.15], rtol=1e-12)
    # w = 1: share only; b (0.5) before c (0)
    assert rank_cases(hand_table(), share_weight=1.0)["case"].tolist() == ["a", "b", "c"]


def test_one_model_alone_ranks_by_its_own_column():
    t = hand_table()
    only_p = rank_cases(t.drop(columns="iou_adj_pred"))
    assert only_p["case"].tolist() == ["a", "b", "c"]  # shares 2/3, 1/2, 0
    assert only_p["iou_adj_pred_mean"].isna().all()
    only_q = rank_cases(t.drop(columns="p_iou0"))
    assert only_q["case"].tolist() == ["b", "a", "c"]  # a, c tie at 0.7: input order
    assert only_q["share_likely_wrong"].isna().all()


def test_ranking_by_slice():
    # case v: slice 0 holds sizes 3, 1 with predictions 1.0, 0.0 (0.75); slice 1 one segment 0.4
    # case w: slice 0 one segment 0.9; slice 2 two segments 2 x 0.5 (0.5)
    t = pd.DataFrame({
        "case": ["v", "v", "v", "w", "w", "w"],
        "slice": [0, 0, 1, 0, 2, 2],
        "class": [1, 1, 1, 1, 1, 1],
        "S": [3, 1, 5, 2, 1, 1],
        "iou_adj_pred": [1.0, 0.0, 0.4, 0.9, 0.5, 0.5],
        "p_iou0": [0.0, 0.8, 0.3, 0.1, 0.2, 0.2],
    })
    r = rank_cases(t)  # by slice: the default with a slice column
    assert list(zip(r["case"], r["slice"], strict=True)) == [("v", 1), ("w", 2), ("v", 0), ("w", 0)]
    np.testing.assert_allclose(r["iou_adj_pred_mean"], [0.4, 0.5, 0.75, 0.9], rtol=1e-12)
    assert r["n_segments"].tolist() == [1, 2, 2, 1]
    np.testing.assert_allclose(r["share_likely_wrong"], [0, 0, 0.5, 0])
    # by case pools the slices: v = (3 + 0 + 2) / 9, w = (1.8 + 1) / 4
    rc = rank_cases(t, by="case")
    assert "slice" not in rc.columns
    assert rc["case"].tolist() == ["v", "w"]
    np.testing.assert_allclose(rc["iou_adj_pred_mean"], [5 / 9, 2.8 / 4], rtol=1e-12)


def test_with_models_equals_predict_table_and_reports_true_quality():
    from napari_metaseg.core import MetaClassifier, MetaRegressor, predict_table
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table

    train = synthetic_metrics_table(400, random_state=0)
    clf = MetaClassifier(kind="logistic", random_state=0).fit(train)
    reg = MetaRegressor(random_state=0).fit(train)
    cases = {f"c{i}": synthetic_metrics_table(30 + 10 * i, random_state=10 + i) for i in range(4)}
    r = rank_cases(cases, (clf, reg), background=None)  # every segment (see the background test)
    for _, row in r.iterrows():
        p = predict_table(cases[row["case"]], clf, reg)
        w = p["S"].to_numpy(float)
        assert row["iou_adj_pred_mean"] == pytest.approx(np.average(p["iou_adj_pred"], weights=w), rel=1e-12)
        assert row["share_likely_wrong"] == pytest.approx(np.mean(p["p_iou0"] > 0.5), rel=1e-12)
        assert row["iou_adj_mean"] == pytest.approx(np.average(p["iou_adj"], weights=w), rel=1e-12)
    assert r["iou_adj_pred_mean"].is_monotonic_increasing
    # a classifier alone / a regressor alone
    assert rank_cases(cases, clf)["iou_adj_pred_mean"].isna().all()
    assert rank_cases(cases, reg)["case"].tolist() == r["case"].tolist()
    # predictions already in the table are replaced by the model's
    stale = {k: v.assign(iou_adj_pred=1.0, p_iou0=0.0) for k, v in cases.items()}
    pd.testing.assert_frame_equal(rank_cases(stale, (clf, reg), background=None), r)


def test_errors_are_clear():
    from napari_metaseg.core import MetaClassifier
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table

    t = hand_table()
    with pytest.raises(ValueError, match="empty table"):
        rank_cases(t.iloc[:0])
    with pytest.raises(ValueError, match="empty dict"):
        rank_cases({})
    with pytest.raises(ValueError, match="no 'case' column"):
        rank_cases(t.drop(columns="case"))
    with pytest.raises(ValueError, match="no 'S'"):
        rank_cases(t.drop(columns="S"))
    with pytest.raises(ValueError, match="needs a 'slice' column"):
        rank_cases(t, by="slice")
    with pytest.raises(ValueError, match="by must be"):
        rank_cases(t, by="volume")
    with pytest.raises(ValueError, match="no model given and the tables hold no predictions"):
        rank_cases(t.drop(columns=["p_iou0", "iou_adj_pred"]))
    with pytest.raises(ValueError, match="case 'empty' has no segment"):
        rank_cases({"a": t[t["case"] == "a"].drop(columns="case"), "empty": t.iloc[:0].drop(columns="case")})
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\)"):
        rank_cases(t, threshold=1.5)
    with pytest.raises(ValueError, match="share_weight"):
        rank_cases(t, share_weight=2)
    clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(200, random_state=0))
    with pytest.raises(ValueError, match=r"does not fit these tables.*cprob"):
        rank_cases({"x": synthetic_metrics_table(20, n_classes=3, random_state=1)}, clf)
    with pytest.raises(ValueError, match="neither a classifier nor a regressor"):
        rank_cases({"x": synthetic_metrics_table(20, random_state=1)}, (None, None))
    with pytest.raises(TypeError, match="model must be"):
        rank_cases({"x": synthetic_metrics_table(20, random_state=1)}, "model.json")
    with pytest.raises(TypeError, match="cases must be"):
        rank_cases([t])


def test_core_exports_the_ranking_lazily():
    import napari_metaseg.core as core

    assert core.rank_cases is rank_cases and core.order_ranking is order_ranking
    assert {"rank_cases", "order_ranking", "predicted_quality"} <= set(core.__all__)


def test_cli_rank_lists_cases_in_the_rank_cases_order(tmp_path):
    from test_cli import write_npy_cases

    from napari_metaseg.cli import main
    from napari_metaseg.core import load_models, segment_metrics

    write_npy_cases(tmp_path / "train", 4, shape=(64, 64))
    assert main(["metrics", str(tmp_path / "train"), "--out", str(tmp_path / "m"), "-q"]) == 0
    model = tmp_path / "model.json.gz"
    assert main(["train", str(tmp_path / "m"), "--min-interior", "0", "--out", str(model)]) == 0
    new = tmp_path / "new"
    arrays = write_npy_cases(new, 5, shape=(64, 64), first_seed=20)
    # an exact copy under a later name: a complete tie, which both keep in the given order
    for kind in ("softmax", "gt"):
        shutil.copy(new / f"case02_{kind}.npy", new / f"case09_{kind}.npy")
    arrays["case09"] = arrays["case02"]
    out = tmp_path / "rank.csv"
    assert main(["rank", str(model), str(new), "--out", str(out), "-q"]) == 0
    cli = pd.read_csv(out)
    tables = {name: segment_metrics(p, gt)[1] for name, (p, gt) in arrays.items()}
    clf, reg, _ = load_models(model)
    core = rank_cases(tables, (clf, reg))
    assert cli["case"].tolist() == core["case"].tolist()
    assert cli["case"].tolist().index("case02") + 1 == cli["case"].tolist().index("case09")
    np.testing.assert_allclose(cli["iou_adj_pred_mean"], core["iou_adj_pred_mean"], rtol=1e-9)
    np.testing.assert_allclose(cli["share_p_iou0_gt_05"], core["share_likely_wrong"], rtol=1e-12)
    np.testing.assert_allclose(cli["priority"], core["priority"], rtol=1e-9)
    assert cli["rank"].tolist() == list(range(1, 7))


def background_table():
    """Two slices of case v and one of w, with a large background (class 0) segment each.

    v slice 0: background S=100 pred 1.0 p 0.0; class 1 S=2 pred 0.5 p 0.7; class 2 S=2 pred 0.0 p 0.9
               -> without background (1 + 0) / 4 = 0.25, share 2/2 = 1.0, true (2 * 0 + 2 * 0.5) / 4
               -> with it (100 + 1 + 0) / 104 = 0.9712, share 2/3
    v slice 1: background only (S=50, pred 0.2, p 0.8) -> NaN without background; 0.2 and 1 with
    w slice 0: background S=10 pred 0.9 p 0.1; class 1 S=6 pred 0.8 p 0.2
               -> without background 0.8, share 0; with it (9 + 4.8) / 16 = 0.8625, share 0
    """
    return pd.DataFrame({
        "case": ["v", "v", "v", "v", "w", "w"],
        "slice": [0, 0, 0, 1, 0, 0],
        "class": [0, 1, 2, 0, 0, 1],
        "S": [100, 2, 2, 50, 10, 6],
        "iou_adj_pred": [1.0, 0.5, 0.0, 0.2, 0.9, 0.8],
        "p_iou0": [0.0, 0.7, 0.9, 0.8, 0.1, 0.2],
        "iou_adj": [1.0, 0.0, 0.5, 0.0, 1.0, np.nan],
    })


def test_background_segments_are_left_out_and_empty_slices_rank_last():
    t = background_table()
    s = predicted_quality(t)  # background=0 is the default
    assert list(zip(s["case"], s["slice"], strict=True)) == [("v", 0), ("v", 1), ("w", 0)]
    np.testing.assert_allclose(s["iou_adj_pred_mean"], [0.25, np.nan, 0.8], rtol=1e-12)
    np.testing.assert_allclose(s["share_likely_wrong"], [1.0, np.nan, 0.0], rtol=1e-12)
    # true IoU_adj: v0 (2 * 0 + 2 * 0.5) / 4; w0's only non-background value is NaN
    np.testing.assert_allclose(s["iou_adj_mean"], [0.25, np.nan, np.nan], rtol=1e-12)
    assert s["n_segments"].tolist() == [2, 0, 1] and s["size"].tolist() == [4, 0, 6]
    r = rank_cases(t)
    # v0 (0.25) before w0 (0.8); the background-only slice v1 last, whatever its prediction
    assert list(zip(r["case"], r["slice"], strict=True)) == [("v", 0), ("w", 0), ("v", 1)]
    assert np.isnan(r["priority"].iloc[-1]) and r["rank"].tolist() == [1, 2, 3]
    # and last also when the share decides (share_weight = 1)
    r1 = rank_cases(t, share_weight=1.0)
    assert list(zip(r1["case"], r1["slice"], strict=True)) == [("v", 0), ("w", 0), ("v", 1)]

    # None keeps every class: the background decides, v0 falls behind w0
    k = predicted_quality(t, background=None)
    np.testing.assert_allclose(k["iou_adj_pred_mean"], [101 / 104, 0.2, 13.8 / 16], rtol=1e-12)
    np.testing.assert_allclose(k["share_likely_wrong"], [2 / 3, 1.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(k["iou_adj_mean"], [101 / 104, 0.0, 1.0], rtol=1e-12)
    rk = rank_cases(t, background=None)
    assert list(zip(rk["case"], rk["slice"], strict=True)) == [("v", 1), ("w", 0), ("v", 0)]

    # another class id as background; by case pools the slices (v: classes 0 and 2 counted)
    b1 = predicted_quality(t, by="case", background=1)
    np.testing.assert_allclose(b1["iou_adj_pred_mean"], [(100 + 0 + 10) / 152, 0.9], rtol=1e-12)
    # every slice background only: all NaN, input order, no error
    only_bg = rank_cases(t[t["class"] == 0])
    assert only_bg["iou_adj_pred_mean"].isna().all()
    assert list(zip(only_bg["case"], only_bg["slice"], strict=True)) == [("v", 0), ("v", 1), ("w", 0)]


def test_background_errors():
    t = background_table()
    with pytest.raises(ValueError, match=r"no 'class' column.*background=None"):
        predicted_quality(t.drop(columns="class"))
    assert len(predicted_quality(t.drop(columns="class"), background=None)) == 3
    with pytest.raises(TypeError, match="background must be an int"):
        predicted_quality(t, background="0")
    with pytest.raises(TypeError, match="background must be an int"):
        predicted_quality(t, background=True)


def test_cli_rank_keep_background(tmp_path):
    from test_cli import write_npy_cases

    from napari_metaseg.cli import main
    from napari_metaseg.core import load_models, segment_metrics

    write_npy_cases(tmp_path / "train", 3, shape=(48, 48))
    assert main(["metrics", str(tmp_path / "train"), "--out", str(tmp_path / "m"), "-q"]) == 0
    model = tmp_path / "model.json.gz"
    assert main(["train", str(tmp_path / "m"), "--min-interior", "0", "--out", str(model)]) == 0
    arrays = write_npy_cases(tmp_path / "new", 4, shape=(48, 48), first_seed=30)
    clf, reg, _ = load_models(model)
    tables = {name: segment_metrics(p, gt)[1] for name, (p, gt) in arrays.items()}
    for extra, background in (([], 0), (["--keep-background"], None)):
        out = tmp_path / f"rank{len(extra)}.csv"
        assert main(["rank", str(model), str(tmp_path / "new"), "--out", str(out), "-q", *extra]) == 0
        cli = pd.read_csv(out)
        core = rank_cases(tables, (clf, reg), background=background)
        assert cli["case"].tolist() == core["case"].tolist()
        np.testing.assert_allclose(cli["iou_adj_pred_mean"], core["iou_adj_pred_mean"], rtol=1e-9)
        assert cli["n_segments"].tolist() == core["n_segments"].tolist()
    assert (pd.read_csv(tmp_path / "rank1.csv")["n_segments"].sum()
            > pd.read_csv(tmp_path / "rank0.csv")["n_segments"].sum())
