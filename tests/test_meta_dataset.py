"""MetaDataset, feature selection and the training-row filter."""

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core.meta_dataset import (
    NON_FEATURE_COLUMNS,
    MetaDataset,
    feature_columns,
    synthetic_metrics_table,
    training_rows,
)


def test_feature_columns_excludes_identifiers_targets_predictions_and_text():
    t = synthetic_metrics_table(5, n_classes=3, random_state=0)
    t.insert(0, "case", "a")
    t.insert(2, "slice", 7)
    t["p_iou0"] = 0.5
    t["iou_adj_pred"] = 0.5
    t["note"] = "text"
    cols = feature_columns(t)
    assert not set(cols) & set(NON_FEATURE_COLUMNS)
    assert "note" not in cols and "class" not in cols
    assert cols[:5] == ["S", "S_in", "S_bd", "S_rel", "S_rel_in"]
    assert cols[-3:] == ["cprob0", "cprob1", "cprob2"]
    # 5 sizes + 3 measures x 5 aggregates + 3 class probabilities
    assert len(cols) == 5 + 15 + 3


def test_feature_columns_rejects_non_dataframe():
    with pytest.raises(TypeError, match="table must be a pandas DataFrame"):
        feature_columns(np.zeros((3, 3)))


def test_training_rows_filters_nan_and_empty_interior_without_dropping():
    t = pd.DataFrame({"S_in": [0, 1, 5, 9], "iou_adj": [0.3, np.nan, 0.0, 0.7]})
    assert training_rows(t).tolist() == [False, False, True, True]
    assert training_rows(t, min_interior=0).tolist() == [True, False, True, True]
    assert training_rows(t, min_interior=6).tolist() == [False, False, False, True]
    assert len(t) == 4  # untouched
    with pytest.raises(ValueError, match="no 'iou_adj' column"):
        training_rows(t.drop(columns="iou_adj"))
    with pytest.raises(ValueError, match="no 'S_in' column"):
        training_rows(t.drop(columns="S_in"))
    with pytest.raises(ValueError, match="min_interior must be >= 0"):
        training_rows(t, min_interior=-1)
    with pytest.raises(TypeError, match="min_interior must be an int"):
        training_rows(t, min_interior=1.5)


def test_add_builds_case_column_and_keeps_all_rows():
    a = synthetic_metrics_table(30, random_state=1)
    b = synthetic_metrics_table(20, random_state=2)
    ds = MetaDataset().add("sub-01", a).add(2, b)
    assert ds.cases == ["sub-01", "2"]
    assert len(ds) == 50
    table = ds.table
    assert list(table.columns) == ["case", *a.columns]
    assert table["case"].tolist() == ["sub-01"] * 30 + ["2"] * 20
    pd.testing.assert_frame_equal(table.iloc[30:].drop(columns="case").reset_index(drop=True), b)
    # min_interior is applied at training time only
    expected = int((a["S_in"] >= 1).sum() + (b["S_in"] >= 1).sum())
    assert len(ds.training_table()) == expected
    assert len(ds.training_table(min_interior=0)) == 50
    assert len(ds.table) == 50
    assert "2 cases, 50 segments" in repr(ds)
    # the table property hands out copies
    copy = ds.table
    copy.loc[0, "S"] = -1
    assert ds.table.loc[0, "S"] != -1


def test_add_rejects_duplicates_mismatches_and_bad_types():
    ds = MetaDataset().add("a", synthetic_metrics_table(10, random_state=0))
    with pytest.raises(ValueError, match="case_id 'a' was already added"):
        ds.add("a", synthetic_metrics_table(10, random_state=1))
    with pytest.raises(ValueError, match=r"4 class probability columns .* but 3 found"):
        ds.add("b", synthetic_metrics_table(10, n_classes=3, random_state=1))
    with pytest.raises(ValueError, match=r"missing \['iou', 'iou_adj'\]"):
        ds.add("c", synthetic_metrics_table(10, random_state=1).drop(columns=["iou", "iou_adj"]))
    t = synthetic_metrics_table(10, random_state=1)
    t.insert(0, "case", "x")
    with pytest.raises(ValueError, match="already has a 'case' column"):
        ds.add("d", t)
    with pytest.raises(TypeError, match="table must be a pandas DataFrame"):
        ds.add("e", np.zeros((2, 2)))
    with pytest.raises(TypeError, match="case_id must be a str or int"):
        ds.add(1.5, synthetic_metrics_table(10, random_state=1))
    assert ds.cases == ["a"]


def test_min_interior_validated():
    with pytest.raises(ValueError, match="min_interior must be >= 0"):
        MetaDataset(min_interior=-2)


def test_empty_dataset_errors():
    ds = MetaDataset()
    assert len(ds) == 0 and ds.cases == [] and not ds.has_targets
    with pytest.raises(ValueError, match="the dataset is empty"):
        ds.training_table()
    with pytest.raises(ValueError, match="nothing to save"):
        ds.save("/tmp/never.csv")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_save_load_round_trip(tmp_path, suffix):
    a = synthetic_metrics_table(40, random_state=3)
    a.loc[5, "iou_adj"] = np.nan  # a segment on ignored pixels
    a.loc[5, "iou"] = np.nan
    ds = MetaDataset(min_interior=2).add("7", a).add("sub-02", synthetic_metrics_table(25))
    path = ds.save(tmp_path / f"train{suffix}")
    back = MetaDataset.load(path, min_interior=2)
    assert back.cases == ["7", "sub-02"]
    assert back.min_interior == 2
    pd.testing.assert_frame_equal(back.table, ds.table, check_dtype=False, check_exact=True)
    assert np.isnan(back.table.loc[5, "iou_adj"])
    assert len(back.training_table()) == len(ds.training_table())


def test_save_rejects_unknown_suffix(tmp_path):
    ds = MetaDataset().add("a", synthetic_metrics_table(10))
    with pytest.raises(ValueError, match=r"must end in \.parquet, \.pq or \.csv"):
        ds.save(tmp_path / "x.xlsx")
    with pytest.raises(FileNotFoundError):
        MetaDataset.load(tmp_path / "missing.csv")


def test_from_table_requires_case_column():
    t = synthetic_metrics_table(10)
    with pytest.raises(ValueError, match="no 'case' column"):
        MetaDataset.from_table(t)
    t.insert(0, "case", ["x"] * 4 + ["y"] * 6)
    ds = MetaDataset.from_table(t, min_interior=0)
    assert ds.cases == ["x", "y"] and len(ds) == 10


def test_synthetic_table_shape_and_targets():
    t = synthetic_metrics_table(300, n_classes=5, samples=True, random_state=0)
    assert len(t) == 300
    assert {"MI", "MI_rel_in", "VAR_bd", "cprob4"} <= set(t.columns)
    probs = t[[f"cprob{i}" for i in range(5)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (t["S"] == t["S_in"] + t["S_bd"]).all()
    assert ((t["iou_adj"] >= 0) & (t["iou_adj"] <= 1)).all()
    assert (t["iou"] <= t["iou_adj"]).all()
    assert 0 < (t["iou_adj"] == 0).mean() < 1
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        synthetic_metrics_table(3, n_classes=1)
