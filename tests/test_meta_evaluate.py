"""evaluate(): grouped splits, the Table-2 layout, baselines, LASSO path, correlations."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
from napari_metaseg.core.meta_model import (
    Evaluation,
    evaluate,
    evaluation_splits,
    logistic_lasso_path,
)


@pytest.fixture(scope="module")
def dataset():
    ds = MetaDataset()
    for i in range(6):
        ds.add(f"img{i}", synthetic_metrics_table(200 + 20 * i, random_state=i))
    return ds


@pytest.fixture(scope="module")
def evaluation(dataset):
    return evaluate(dataset, n_splits=4, models=("linear", "gbm"), random_state=0)


def test_grouped_splits_never_share_a_case(dataset):
    table = dataset.training_table()
    splits, how = evaluation_splits(table, n_splits=10, random_state=3)
    assert how == "case" and len(splits) == 10
    cases = table["case"].to_numpy()
    for tr, va in splits:
        assert set(cases[tr]).isdisjoint(cases[va])
        assert len(set(cases[tr])) == 3 and len(set(cases[va])) == 3  # 50/50 by case
        assert len(tr) + len(va) == len(table)
    # per-segment splits mix cases and halve the segments
    splits, how = evaluation_splits(table, n_splits=3, group=None, random_state=3)
    assert how == "segment"
    tr, va = splits[0]
    assert set(cases[tr]) & set(cases[va])
    assert abs(len(tr) - len(va)) <= 1
    # slices of one case are kept together with group=("case", "slice")
    t = table.assign(slice=np.arange(len(table)) % 7)
    splits, how = evaluation_splits(t, n_splits=3, group=("case", "slice"), random_state=0)
    assert how == "case+slice"
    key = t["case"] + "/" + t["slice"].astype(str)
    for tr, va in splits:
        assert set(key.iloc[tr]).isdisjoint(key.iloc[va])


@pytest.mark.parametrize("n_cases, n_distinct", [(2, 2), (3, 3), (4, 6), (5, 10)])
def test_few_cases_use_every_distinct_split_once(dataset, n_cases, n_distinct):
    """With at most n_splits distinct grouped splits, each is used exactly once (random draws
    would repeat some more often than others and weight them in the mean)."""
    from itertools import combinations
    from math import ceil

    table = dataset.training_table()
    table = table[table["case"].isin([f"img{i}" for i in range(n_cases)])].reset_index(drop=True)
    cases = table["case"].to_numpy()
    splits, how = evaluation_splits(table, n_splits=10, random_state=3)
    assert how == "case" and len(splits) == n_distinct
    seen = [frozenset(cases[va]) for _, va in splits]
    n_val = ceil(n_cases / 2)
    assert set(seen) == {frozenset(c) for c in combinations(sorted(set(cases)), n_val)}
    for tr, va in splits:
        assert set(cases[tr]).isdisjoint(cases[va]) and len(tr) + len(va) == len(table)
    # more distinct splits than asked for: random draws as before
    assert len(evaluation_splits(table, n_splits=n_distinct - 1, random_state=3)[0]) == n_distinct - 1


def test_two_cases_average_both_directions_equally(dataset):
    t = dataset.training_table()
    part = {c: t[t["case"] == c].drop(columns="case") for c in ("img0", "img1")}
    ds = MetaDataset().add("a", part["img0"]).add("b", part["img1"])
    ev = evaluate(ds, models=("logistic",))
    assert ev.n_splits == 2 and ev.grouping == "case"
    one = [evaluate(ds, validation_cases=[c], models=("logistic",)).table for c in ("a", "b")]
    for col in ("train_mean", "val_mean"):
        np.testing.assert_allclose(ev.table[col], (one[0][col] + one[1][col]) / 2)


def test_fixed_validation_cases(dataset):
    ev = evaluate(dataset, validation_cases=["img4", "img5"], models=("logistic",))
    assert ev.grouping == "fixed" and ev.n_splits == 1
    assert ev.details["validation_cases"] == ["img4", "img5"]
    assert ev.details["training_cases"] == ["img0", "img1", "img2", "img3"]
    assert ev.table["train_std"].isna().all()  # a single split has no spread
    t = dataset.training_table()
    is_val = t["case"].isin(["img4", "img5"])
    y_tr, y_va = t.loc[~is_val, "iou_adj"] > 0, t.loc[is_val, "iou_adj"] > 0
    majority = y_tr.mean() >= 0.5
    naive = ev.table.loc[("classification", "naive", "ACC")]
    assert naive["train_mean"] == pytest.approx((y_tr == majority).mean())
    assert naive["val_mean"] == pytest.approx((y_va == majority).mean())
    assert ev.details["split_sizes"] == [[int((~is_val).sum()), int(is_val.sum())]]


def test_table_layout_like_table_2(evaluation):
    idx = list(evaluation.table.index)
    assert idx == [
        ("classification", "naive", "ACC"),
        ("classification", "entropy", "ACC"),
        ("classification", "entropy", "AUROC"),
        ("classification", "linear", "ACC"),
        ("classification", "linear", "AUROC"),
        ("classification", "gbm", "ACC"),
        ("classification", "gbm", "AUROC"),
        ("regression", "entropy", "sigma"),
        ("regression", "entropy", "R2"),
        ("regression", "linear", "sigma"),
        ("regression", "linear", "R2"),
        ("regression", "gbm", "sigma"),
        ("regression", "gbm", "R2"),
    ]
    assert list(evaluation.table.columns) == ["train_mean", "train_std", "val_mean", "val_std"]
    assert evaluation.grouping == "case" and evaluation.n_splits == 4 and evaluation.n_cases == 6
    assert evaluation.models == {"linear": ("lasso", "linear"), "gbm": ("gbm", "gbm")}
    assert (evaluation.table[["train_std", "val_std"]] >= 0).all().all()
    # every split validated on cases it did not train on
    for val_cases in evaluation.details["validation_cases_per_split"]:
        assert len(val_cases) == 3
    summary = evaluation.summary()
    assert summary.loc[("classification", "linear", "AUROC"), "validation"].count("±") == 1
    md = evaluation.to_markdown()
    assert md.splitlines()[2].startswith("| classification | naive | ACC % |")


def test_meta_models_beat_entropy_on_synthetic_data(evaluation):
    """The synthetic tables carry information beyond E (size, D, V): the models must use it."""
    t = evaluation.table
    assert t.loc[("regression", "linear", "R2"), "val_mean"] > \
        t.loc[("regression", "entropy", "R2"), "val_mean"]
    assert t.loc[("classification", "linear", "AUROC"), "val_mean"] > \
        t.loc[("classification", "entropy", "AUROC"), "val_mean"]
    # training scores of gradient boosting are optimistic, as in the paper's Table 2
    assert t.loc[("regression", "gbm", "R2"), "train_mean"] > \
        t.loc[("regression", "gbm", "R2"), "val_mean"]


def test_perfect_ranking_gives_auroc_one():
    rng = np.random.default_rng(0)
    ds = MetaDataset(min_interior=0)
    for i in range(4):
        t = synthetic_metrics_table(150, random_state=i)
        t["E"] = rng.uniform(size=len(t))
        t["iou_adj"] = np.where(t["E"] > 0.6, 0.0, 1.0 - t["E"])  # IoU_adj a function of E
        ds.add(f"c{i}", t)
    ev = evaluate(ds, n_splits=3, models=("logistic",))
    row = ev.table.loc[("classification", "entropy", "AUROC")]
    assert row["train_mean"] == 1.0 and row["val_mean"] == 1.0
    assert ev.table.loc[("classification", "entropy", "ACC"), "val_mean"] == 1.0
    # IoU_adj = 1 - E on the positives only: linear regression on E explains most of it
    assert ev.table.loc[("regression", "entropy", "R2"), "val_mean"] > 0.5


def test_lasso_path_and_correlations(evaluation, dataset):
    path = evaluation.lasso_path
    assert path.index.name == "1/lambda"
    assert path.index.is_monotonic_increasing
    assert (path.iloc[0] == 0).all()  # strongest penalty: empty model
    assert (path.iloc[-1] != 0).sum() > 5
    assert list(path.columns) == list(evaluation.correlations.index)
    t = dataset.training_table()
    r = np.corrcoef(t["E"], t["iou_adj"])[0, 1]
    assert evaluation.correlations["E"] == pytest.approx(r, abs=1e-12)
    assert evaluation.correlations["E"] < 0  # more entropy, worse segments
    direct = logistic_lasso_path(dataset, n_lambdas=30)
    pd.testing.assert_frame_equal(direct, path)


def test_json_round_trip(evaluation):
    d = json.loads(json.dumps(evaluation.to_dict(), allow_nan=False))
    back = Evaluation.from_dict(d)
    pd.testing.assert_frame_equal(back.table, evaluation.table)
    pd.testing.assert_frame_equal(back.lasso_path, evaluation.lasso_path)
    pd.testing.assert_series_equal(back.correlations, evaluation.correlations)
    assert back.grouping == evaluation.grouping and back.models == evaluation.models
    with pytest.raises(ValueError, match="malformed evaluation record"):
        Evaluation.from_dict({"table": {}})


def test_paper_protocol_reports_segment_grouping(dataset):
    ev = evaluate(dataset, n_splits=2, group=None, models=("logistic",))
    assert ev.grouping == "segment"
    assert "validation_cases_per_split" not in ev.details


def test_nan_targets_are_left_out():
    ds = MetaDataset(min_interior=0)
    for i in range(4):
        t = synthetic_metrics_table(100, random_state=i)
        t.loc[:9, "iou_adj"] = np.nan  # segments on ignored pixels
        ds.add(f"c{i}", t)
    ev = evaluate(ds, n_splits=2, models=("logistic",))
    assert ev.n_segments == 4 * 90


def test_evaluate_errors(dataset):
    one = MetaDataset().add("only", synthetic_metrics_table(300, random_state=0))
    with pytest.raises(ValueError, match=r"grouped splits need at least 2 groups.*group=None"):
        evaluate(one, models=("logistic",))
    t = dataset.table.copy()
    t["iou_adj"] = 0.0
    with pytest.raises(ValueError, match="every usable segment has IoU_adj = 0"):
        evaluate(MetaDataset.from_table(t))
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        evaluate(dataset, models=("svm",))
    with pytest.raises(ValueError, match="classifier kind must be one of"):
        evaluate(dataset, models=[("linear", "linear")])
    with pytest.raises(ValueError, match="no 'E'"):
        evaluate(MetaDataset.from_table(dataset.table.drop(columns="E")))
    with pytest.raises(ValueError, match="no column \\['patient'\\]"):
        evaluate(dataset, group="patient")
    with pytest.raises(ValueError, match="are not cases of the dataset"):
        evaluate(dataset, validation_cases=["nope"])
    with pytest.raises(ValueError, match="n_splits must be a positive int"):
        evaluate(dataset, n_splits=0)
    with pytest.raises(ValueError, match="at least 20"):
        evaluate(MetaDataset(min_interior=0).add("a", synthetic_metrics_table(12))
                 .add("b", synthetic_metrics_table(5)))
    no_gt = MetaDataset().add("a", synthetic_metrics_table(50).drop(columns=["iou", "iou_adj"]))
    with pytest.raises(ValueError, match="no 'iou_adj' column"):
        evaluate(no_gt)
    with pytest.raises(TypeError, match="dataset must be a MetaDataset or a pandas DataFrame"):
        evaluate(np.zeros((50, 3)))
