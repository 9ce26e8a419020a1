"""A sortable Qt table over a pandas DataFrame (fast for tens of thousands of rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt

_TEXT_ROLES = (Qt.DisplayRole, Qt.ToolTipRole)
#: What a column header means, shown when the pointer rests on it (the headers themselves keep
#: the column names of the CSV files and the Python API).
COLUMN_TIPS = {
    "iou_adj_pred": "predicted IoU_adj of the segment (meta regressor): 0 worst, 1 best",
    "p_iou0": "probability that the segment does not overlap the ground truth at all (IoU_adj = 0)",
    "iou_adj": "true IoU_adj against the ground truth (MetaSeg's adjusted IoU)",
    "iou": "true IoU against the ground truth",
    "class_name": "the predicted class of the segment",
    "S": "segment size in pixels / voxels",
    "E": "mean entropy over the segment (0 certain, 1 uniform)",
    "D": "mean probability margin dispersion (1 - p1 + p2) over the segment",
    "V": "mean variation ratio (1 - p1) over the segment",
    "p_hit": "P(OoD): probability from the region model that the region is out of distribution",
    "hit": "1 when the region touches an annotated OoD (unknown) voxel",
    "decision": "the reviewer's decision on the region (saved at once)",
    "quality_pred": "predicted quality of the slice or case (image-level regressor, mean IoU)",
    "mean_iou": "true mean IoU over the classes present (ground truth)",
    "mean_dice": "true mean Dice over the classes present (ground truth)",
}
#: Rows whose text sets a column's width when the view fits its columns to their contents
#: (Qt's default measures 1000 rows per column, a fifth of a second for a brain's segments).
RESIZE_ROWS = 50


class _Cells:
    """``model._values[row, col]``: one cell's value, read or replaced (the frame is the caller's
    to update, as :meth:`DataFrameModel.set_cell` does both)."""

    def __init__(self, model):
        self._model = model

    def __getitem__(self, key):
        row, col = key
        return self._model._column(col)[row]

    def __setitem__(self, key, value):
        row, col = key
        column = self._model._column(col)
        if not column.flags.writeable:  # a view into the frame: replace it by our own copy
            column = self._model._cols[col] = column.copy()
        column[row] = value


class DataFrameModel(QAbstractTableModel):
    """Read-only model; ``sort`` reorders the frame itself, so ``frame`` is what is shown.

    Cells are formatted when Qt asks for them (the rows on screen), from column arrays taken from
    the frame on first use (views, not copies, for numeric columns): setting a frame of tens of
    thousands of rows costs no per-cell work on the GUI thread.
    """

    def __init__(self, frame=None, parent=None):
        super().__init__(parent)
        self._df = pd.DataFrame()
        self._cols = []
        self._values = _Cells(self)
        self._set(frame)

    def _set(self, frame):
        self._df = pd.DataFrame() if frame is None else frame.reset_index(drop=True)
        self._shape = self._df.shape  # Qt asks for it per cell; pandas answers in microseconds
        self._cols = [None] * self._shape[1]

    def _column(self, col):
        column = self._cols[col]
        if column is None:
            series = self._df.iloc[:, col]
            # numpy columns as they are (a view); pandas' own dtypes (nullable integers, ...) as
            # objects, so a missing value stays <NA>
            plain = isinstance(series.dtype, np.dtype)
            column = self._cols[col] = series.to_numpy() if plain else series.to_numpy(dtype=object)
        return column

    @property
    def frame(self):
        """The table exactly as shown: its columns, in the row order on screen."""
        return self._df

    def set_frame(self, frame):
        self.beginResetModel()
        self._set(frame)
        self.endResetModel()

    def set_cell(self, row, col, value):
        """Replace one cell in the frame and on screen."""
        self._df.iat[row, col] = value
        self._values[row, col] = value
        idx = self.index(row, col)
        self.dataChanged.emit(idx, idx)

    def rowCount(self, parent=QModelIndex()):  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else self._shape[0]

    def columnCount(self, parent=QModelIndex()):  # noqa: B008
        return 0 if parent.isValid() else self._shape[1]

    def data(self, index, role=Qt.DisplayRole):
        if role not in _TEXT_ROLES or not index.isValid():
            return None
        v = self._column(index.column())[index.row()]
        if isinstance(v, float | np.floating):
            if np.isnan(v):
                return "nan"
            return f"{v:.3f}" if role == Qt.DisplayRole else repr(float(v))
        return str(v)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.ToolTipRole:
            return COLUMN_TIPS.get(str(self._df.columns[section]))
        if role != Qt.DisplayRole:
            return None
        if orientation == Qt.Horizontal:
            return str(self._df.columns[section])
        return str(section + 1)

    def sort(self, column, order=Qt.AscendingOrder):
        if not len(self._df.columns):
            return
        self.layoutAboutToBeChanged.emit()
        col = self._df.columns[column]
        self._set(self._df.sort_values(col, ascending=order == Qt.AscendingOrder, kind="stable",
                                       na_position="last"))
        self.layoutChanged.emit()

    def row_of(self, column, value):
        """Row number whose ``column`` equals ``value``, or -1."""
        hits = np.flatnonzero(self._df[column].to_numpy() == value)
        return int(hits[0]) if hits.size else -1


def table_view(model, on_row, *, sortable=False, row_numbers=True):
    """A read-only, single-row-selecting ``QTableView`` over ``model``; a click on a row calls
    ``on_row(row)``."""
    from qtpy.QtWidgets import QAbstractItemView, QTableView

    view = QTableView()
    view.setModel(model)
    view.setSortingEnabled(sortable)
    view.setSelectionBehavior(QAbstractItemView.SelectRows)
    view.setSelectionMode(QAbstractItemView.SingleSelection)
    view.setEditTriggers(QAbstractItemView.NoEditTriggers)
    view.verticalHeader().setVisible(row_numbers)
    view.verticalHeader().setDefaultSectionSize(18)
    view.horizontalHeader().setResizeContentsPrecision(RESIZE_ROWS)
    view.clicked.connect(lambda idx: on_row(idx.row()))
    return view


class LabelTableLink:
    """For a panel whose table (``table_view`` over ``model``, an ``index`` column of label ids)
    shows the labels of a Labels layer: a row click selects and centres its label, selecting a
    label (canvas click) selects its row. ``_syncing`` stops the two from echoing each other."""

    _syncing = False

    def _select_label_of_row(self, layer, row):
        """Select the label of table row ``row`` in ``layer``; returns its id (None: no such row)."""
        if layer is None or not 0 <= row < len(self.model.frame):
            return None
        label = int(self.model.frame["index"].iloc[row])
        self._syncing = True
        try:
            layer.selected_label = label
            self.table_view.selectRow(row)
        finally:
            self._syncing = False
        return label

    def _select_row_of_label(self, layer):
        """Select (and scroll to) the row of ``layer``'s selected label; returns whether found."""
        if self._syncing or layer is None:
            return False
        row = self.model.row_of("index", int(layer.selected_label))
        if row < 0:
            return False
        self._syncing = True
        try:
            self.table_view.selectRow(row)
            self.table_view.scrollTo(self.model.index(row, 0))
        finally:
            self._syncing = False
        return True
