"""A sortable Qt table over a pandas DataFrame (fast for tens of thousands of rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt


class DataFrameModel(QAbstractTableModel):
    """Read-only model; ``sort`` reorders the frame itself, so ``frame`` is what is shown."""

    def __init__(self, frame=None, parent=None):
        super().__init__(parent)
        self._df = pd.DataFrame() if frame is None else frame.reset_index(drop=True)
        self._values = self._df.to_numpy(dtype=object)

    @property
    def frame(self):
        """The table exactly as shown: its columns, in the row order on screen."""
        return self._df

    def set_frame(self, frame):
        self.beginResetModel()
        self._df = frame.reset_index(drop=True)
        self._values = self._df.to_numpy(dtype=object)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self._df)

    def columnCount(self, parent=QModelIndex()):  # noqa: B008
        return 0 if parent.isValid() else self._df.shape[1]

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or role not in (Qt.DisplayRole, Qt.ToolTipRole):
            return None
        v = self._values[index.row(), index.column()]
        if isinstance(v, float | np.floating):
            if np.isnan(v):
                return "nan"
            return f"{v:.3f}" if role == Qt.DisplayRole else repr(float(v))
        return str(v)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
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
        self._df = self._df.sort_values(col, ascending=order == Qt.AscendingOrder, kind="stable",
                                        na_position="last").reset_index(drop=True)
        self._values = self._df.to_numpy(dtype=object)
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
    view.clicked.connect(lambda idx: on_row(idx.row()))
    return view
