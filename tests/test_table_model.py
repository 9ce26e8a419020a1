"""The lazily filled table model shows exactly what a cell-by-cell conversion of the frame shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

qtcore = pytest.importorskip("qtpy.QtCore")
Qt = qtcore.Qt


def _frame(n=50, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({"index": np.arange(1, n + 1), "class": rng.integers(0, 4, n),
                      "E": rng.random(n), "S_rel": rng.random(n).astype(np.float32),
                      "kind": rng.choice(["segment", "region"], n), "flag": rng.random(n) > 0.5,
                      "slice": pd.array(rng.integers(0, 9, n), dtype="Int64")})
    f.loc[::7, "E"] = np.nan
    f.loc[::5, "slice"] = pd.NA
    return f.set_index(np.arange(100, 100 + n))  # a non-default index is dropped


def _eager(frame, row, col, role):
    """What a cell shows, from the frame converted to Python objects up front."""
    v = frame.to_numpy(dtype=object)[row, col]
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return "nan"
        return f"{v:.3f}" if role == Qt.DisplayRole else repr(float(v))
    return str(v)


def _shown(model, role):
    return [[model.data(model.index(r, c), role) for c in range(model.columnCount())]
            for r in range(model.rowCount())]


def test_cells_match_the_eager_conversion_before_and_after_sorting(qapp):
    from napari_metaseg._widgets._table import DataFrameModel

    frame = _frame()
    model = DataFrameModel(frame)
    assert (model.rowCount(), model.columnCount()) == frame.shape
    assert list(model.frame.index) == list(range(len(frame)))
    for role in (Qt.DisplayRole, Qt.ToolTipRole):
        want = [[_eager(frame, r, c, role) for c in range(frame.shape[1])] for r in range(len(frame))]
        assert _shown(model, role) == want
    model.sort(2, Qt.DescendingOrder)  # "E", NaN last
    ordered = frame.sort_values("E", ascending=False, kind="stable", na_position="last")
    assert model.frame["index"].tolist() == ordered["index"].tolist()
    want = [[_eager(ordered, r, c, Qt.DisplayRole) for c in range(frame.shape[1])] for r in range(len(frame))]
    assert _shown(model, Qt.DisplayRole) == want
    assert model.row_of("index", int(ordered["index"].iloc[3])) == 3
    assert model.row_of("index", -5) == -1
    assert model.data(model.index(0, 0), Qt.EditRole) is None


def test_replacing_a_cell_changes_frame_and_screen(qapp):
    from napari_metaseg._widgets._table import DataFrameModel

    frame = pd.DataFrame({"decision": pd.Series(["", "", ""], dtype=object), "score": [0.5, 0.25, 0.125]})
    model = DataFrameModel(frame)
    seen = []
    model.dataChanged.connect(lambda a, b: seen.append((a.row(), a.column())))
    model.set_cell(1, 0, "confirmed")
    assert model.frame.iat[1, 0] == "confirmed"
    assert model.data(model.index(1, 0)) == "confirmed"
    assert seen == [(1, 0)]
    # the review panel's way: frame first, then the shown value
    model.frame.iat[2, 0] = "rejected"
    model._values[2, 0] = model.frame.iat[2, 0]
    assert model.data(model.index(2, 0)) == "rejected"
    assert frame["decision"].tolist() == ["", "", ""]  # the caller's frame is not touched
    model.set_frame(pd.DataFrame())
    assert (model.rowCount(), model.columnCount()) == (0, 0)


def test_headers_explain_the_quality_columns_on_hover(qapp):
    from napari_metaseg._widgets._table import COLUMN_TIPS, DataFrameModel

    model = DataFrameModel(pd.DataFrame({"index": [1], "iou_adj_pred": [0.5], "p_hit": [0.9], "zzz": [1]}))
    tip = [model.headerData(c, Qt.Horizontal, Qt.ToolTipRole) for c in range(4)]
    assert tip[0] is None and tip[3] is None  # no made-up text for columns it does not know
    assert "predicted IoU_adj" in tip[1] and tip[2].startswith("P(OoD)")
    assert [model.headerData(c, Qt.Horizontal) for c in range(4)] == ["index", "iou_adj_pred", "p_hit", "zzz"]
    assert all(isinstance(v, str) and v for v in COLUMN_TIPS.values())
