"""Quality overlay panel: colour a segments layer by any numeric column of its features."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QPushButton, QVBoxLayout, QWidget

from .._layers import QUALITY_COLUMNS, segment_colormap


class OverlayWidget(QWidget):
    """Pick a Labels layer with a metrics table and colour it red-to-green by one column."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.column_combo = QComboBox()
        self.reverse_box = QCheckBox("high values are bad (reverse)")
        self.hide_bg_box = QCheckBox("hide class 0")
        self.hide_bg_box.setChecked(True)
        self.apply_button = QPushButton("Colour segments")
        self.apply_button.clicked.connect(self.apply)
        form = QFormLayout()
        form.addRow("segments", self.layer_combo)
        form.addRow("colour by", self.column_combo)
        form.addRow("", self.reverse_box)
        form.addRow("", self.hide_bg_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.apply_button)
        layout.addStretch()
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._refresh)
        self.layer_combo.currentTextChanged.connect(self._refresh_columns)
        self._refresh()

    def _labels_with_tables(self):
        from napari.layers import Labels

        return [la for la in self.viewer.layers if isinstance(la, Labels) and "index" in la.features]

    def _refresh(self, event=None):
        current = self.layer_combo.currentText()
        names = [la.name for la in self._labels_with_tables()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._refresh_columns()

    def _refresh_columns(self, *_):
        name = self.layer_combo.currentText()
        self.column_combo.clear()
        if not name or name not in self.viewer.layers:
            return
        table = self.viewer.layers[name].features
        cols = [c for c in table.columns if c != "index" and np.issubdtype(table[c].dtype, np.number)]
        self.column_combo.addItems(cols)
        for col, reverse in QUALITY_COLUMNS:
            if col in cols:
                self.column_combo.setCurrentText(col)
                self.reverse_box.setChecked(reverse)
                break

    def apply(self):
        name, column = self.layer_combo.currentText(), self.column_combo.currentText()
        if not name or not column:
            return
        layer = self.viewer.layers[name]
        table = layer.features
        values = table[column].to_numpy(dtype=np.float64)
        lo, hi = np.nanmin(values), np.nanmax(values)
        if column not in {c for c, _ in QUALITY_COLUMNS} and hi > lo and not (lo >= 0 and hi <= 1):
            table = table.assign(**{column: (values - lo) / (hi - lo)})  # min-max to [0, 1]
        layer.colormap = segment_colormap(table, column, reverse=self.reverse_box.isChecked(),
                                          hide_classes=(0,) if self.hide_bg_box.isChecked() else ())
        meta = layer.metadata.setdefault("metaseg", {})
        meta.update(color_by=column, color_title=column)
