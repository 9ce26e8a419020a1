"""Quality overlay panel: colour a segments layer by any numeric column of its features."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from .._layers import QUALITY_COLUMNS, color_segments
from ._form import make_form, set_choices


class OverlayWidget(QWidget):
    """Pick a Labels layer with a metrics table and colour it by one column (worst to best)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.form = make_form([
            ("segments", "combo", {"choices": ()}, "segments", ""),
            ("column", "combo", {"choices": ()}, "colour by", ""),
            ("high_is_bad", "check", {"text": "high values are bad (reverse)"}, None, ""),
            ("hide_background", "check", {"text": "hide class 0", "value": True}, None, ""),
        ])
        self.apply_button = QPushButton("Colour segments")
        self.apply_button.clicked.connect(self.apply)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.apply_button)
        layout.addStretch()
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._refresh)
        self.form.segments.changed.connect(self._refresh_columns)
        self._refresh()

    def _labels_with_tables(self):
        from napari.layers import Labels

        return [la for la in self.viewer.layers if isinstance(la, Labels) and "index" in la.features]

    def _refresh(self, event=None):
        set_choices(self.form.segments, [la.name for la in self._labels_with_tables()])
        self._refresh_columns()

    def _refresh_columns(self, *_):
        form = self.form
        name = form.segments.value
        set_choices(form.column, [])  # a new table: its first quality column, not the previous choice
        if not name or name not in self.viewer.layers:
            return
        table = self.viewer.layers[name].features
        cols = [c for c in table.columns if c != "index" and np.issubdtype(table[c].dtype, np.number)]
        set_choices(form.column, cols)
        for col, reverse in QUALITY_COLUMNS:
            if col in cols:
                form.column.value = col
                form.high_is_bad.value = reverse
                break

    def apply(self):
        """Colour the chosen segments layer by the chosen column (robust range: see
        :func:`napari_metaseg._layers.color_scale`); the canvas legend follows."""
        name, column = self.form.segments.value, self.form.column.value
        if not name or not column:
            return None
        layer = self.viewer.layers[name]
        color_segments(layer, column, reverse=self.form.high_is_bad.value,
                       hide_classes=(0,) if self.form.hide_background.value else ())
        return column
