"""The colour legend on the canvas: what the segment colours mean, always in view.

A small widget laid over the canvas's bottom-left corner (it stays visible whatever dock is
open or tabbed away). It follows the topmost visible segments layer that was coloured by a
column (``layer.metadata["metaseg"]``: ``color_by``, ``color_title``, ``color_range``,
``color_reverse``, ``hide_classes``, ``min_interior``) and names the column, the values at the
two ends of the ramp, and the "not rated" colour; it hides itself when no such layer is shown.
"""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from ..core.colors import NOT_RATED, quality_rgba

_LEGENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MARGIN = 10
STYLE = ("QWidget#metaseg_legend {background: rgba(20, 20, 24, 210); border-radius: 4px;}"
         "QLabel {color: #f0f0f0; background: transparent; font-size: 11px;}")


def ramp_pixmap(width=180, height=12, *, rgba_of=quality_rgba):
    """A colour ramp, 0 (left) to 1 (right): by default the quality ramp, worst to best."""
    ramp = rgba_of(np.linspace(0.0, 1.0, width), alpha=1.0)[:, :3]
    rgb = np.ascontiguousarray(np.repeat((ramp * 255).astype(np.uint8)[None], height, axis=0))
    img = QImage(rgb.data, width, height, 3 * width, QImage.Format_RGB888)
    return QPixmap.fromImage(img.copy())


def swatch_pixmap(rgb, size=12):
    pix = QPixmap(size, size)
    from qtpy.QtGui import QColor

    pix.fill(QColor.fromRgbF(*[float(c) for c in rgb]))
    return pix


def _fmt(v):
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


class QualityLegend(QWidget):
    """The legend over one viewer's canvas (see the module docstring)."""

    def __init__(self, viewer, canvas):
        super().__init__(canvas)
        self.setObjectName("metaseg_legend")
        self.setAttribute(Qt.WA_StyledBackground, True)
        self.setStyleSheet(STYLE)
        self.viewer = viewer
        self.title = QLabel("")
        self.bar = QLabel()
        self.bar.setPixmap(ramp_pixmap())
        self.worst = QLabel("")
        self.best = QLabel("")
        self.best.setAlignment(Qt.AlignRight)
        swatch = QLabel()
        swatch.setPixmap(swatch_pixmap(NOT_RATED))
        self.note = QLabel("")
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.setVerticalSpacing(2)
        grid.addWidget(self.title, 0, 0, 1, 3)
        grid.addWidget(self.bar, 1, 0, 1, 3)
        grid.addWidget(self.worst, 2, 0)
        grid.addWidget(self.best, 2, 2)
        grid.addWidget(swatch, 3, 0, Qt.AlignLeft)
        grid.addWidget(self.note, 3, 1, 1, 2)
        self._layers = weakref.WeakSet()
        self._watch = _Resize(self)
        canvas.installEventFilter(self._watch)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    @property
    def layer(self):
        """The segments layer the legend describes (None: hidden)."""
        from napari.layers import Labels

        for layer in reversed(list(self.viewer.layers)):  # topmost first
            if isinstance(layer, Labels) and layer not in self._layers:
                self._layers.add(layer)
                layer.events.colormap.connect(self.refresh)
                layer.events.visible.connect(self.refresh)
            coloured = layer.metadata.get("metaseg", {}).get("color_by")
            if isinstance(layer, Labels) and layer.visible and coloured:
                return layer
        return None

    def refresh(self, event=None):
        layer = self.layer
        if layer is None:
            self.hide()
            return
        meta = layer.metadata["metaseg"]
        lo, hi = meta.get("color_range", (0.0, 1.0))
        reverse = bool(meta.get("color_reverse", False))
        worst, best = (hi, lo) if reverse else (lo, hi)
        self.title.setText(f"colour: {meta.get('color_title') or meta['color_by']} ({layer.name})")
        self.worst.setText(f"{_fmt(worst)} worst")
        self.best.setText(f"best {_fmt(best)}")
        parts = ["not rated"]
        if meta.get("min_interior"):
            parts[0] += f" (interior < {meta['min_interior']} px)"
        hidden = meta.get("hide_classes") or []
        if hidden:
            names = meta.get("class_names") or []
            parts.append("hidden: " + ", ".join(names[c] if c < len(names) else f"class {c}" for c in hidden))
        self.note.setText("; ".join(parts))
        self.adjustSize()
        self.place()
        self.show()
        self.raise_()

    def text(self):
        """What the legend says (for tests and screen readers)."""
        return " | ".join(w.text() for w in (self.title, self.worst, self.best, self.note))

    def place(self):
        parent = self.parentWidget()
        if parent is not None:
            self.move(MARGIN, max(0, parent.height() - self.height() - MARGIN))


class _Resize(QObject):
    def __init__(self, legend):
        super().__init__(legend)
        self.legend = legend

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Resize:
            self.legend.place()
        return False


def legend_for(viewer):
    """The viewer's canvas legend (created on first use)."""
    legend = _LEGENDS.get(viewer)
    if legend is None:
        legend = QualityLegend(viewer, _canvas_widget(viewer))
        _LEGENDS[viewer] = legend
    return legend


def _canvas_widget(viewer):
    """The Qt widget of the viewer's canvas, found in the widget tree (plugins may not use the
    window's private attributes)."""
    from napari._qt.qt_viewer import QtViewer
    from qtpy.QtWidgets import QApplication

    target = getattr(viewer, "__wrapped__", viewer)  # plugin widgets get a proxy of the viewer
    for top in QApplication.topLevelWidgets():
        candidates = [top] if isinstance(top, QtViewer) else top.findChildren(QtViewer)
        for qt_viewer in candidates:
            if getattr(qt_viewer.viewer, "__wrapped__", qt_viewer.viewer) is target:
                return qt_viewer.canvas.native
    raise RuntimeError("the viewer's canvas was not found (is the viewer's window created?)")
