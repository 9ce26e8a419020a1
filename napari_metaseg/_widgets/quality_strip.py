"""A per-slice quality strip: one bar per slice of a volume, click to jump to the slice.

Each bar's height and colour is the slice's predicted quality (the quality ramp of the segment
overlay: vermillion = worst, blue = best; dark grey = not rated); where the ground truth is known,
a white dot marks the slice's true mean IoU. A dashed line marks the failure threshold (a slice
below it fails), a vertical line the slice shown in the viewer. Hovering names the slice and both
values. The strip holds no data of its own beyond what :meth:`QualityStrip.set_rows` gave it.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QToolTip, QWidget

from ..core.colors import quality_rgba

#: left margin for the axis labels, other margins (pixels)
_LEFT, _MARGIN = 28, 4


class QualityStrip(QWidget):
    """Per-slice predicted (bars) and true (dots) quality along a volume's slice axis.

    Signals
    -------
    slice_clicked(int)
        The slice under a mouse click (the slice number, as in :meth:`set_rows`).
    """

    slice_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(72)
        self.setMaximumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)
        self.slices = np.zeros(0, np.int64)
        self.predicted = np.zeros(0)
        self.true = None
        self.fail_below = 0.7
        self.current = None
        self.what = "predicted quality"

    # -- data ----------------------------------------------------------------------------------
    def set_rows(self, slices, predicted, true=None, *, fail_below=0.7, what="predicted quality"):
        """Show one bar per slice: ``slices`` (ints), ``predicted`` in [0, 1] (NaN = not rated),
        ``true`` (NaN where unknown) or None."""
        slices = np.asarray(slices, np.int64).ravel()
        predicted = np.asarray(predicted, np.float64).ravel()
        if predicted.shape != slices.shape:
            raise ValueError(f"{predicted.size} predicted values for {slices.size} slices")
        if true is not None:
            true = np.asarray(true, np.float64).ravel()
            if true.shape != slices.shape:
                raise ValueError(f"{true.size} true values for {slices.size} slices")
        order = np.argsort(slices, kind="stable")
        self.slices, self.predicted = slices[order], predicted[order]
        self.true = None if true is None else true[order]
        self.fail_below, self.what = float(fail_below), what
        self.setToolTip("")
        self.update()

    def clear(self):
        self.set_rows([], [])

    def set_current(self, slice_index):
        """Mark the slice shown in the viewer (None: no mark)."""
        self.current = None if slice_index is None else int(slice_index)
        self.update()

    @property
    def span(self):
        """``(first, last)`` slice the strip's x axis covers, or None when empty."""
        if not self.slices.size:
            return None
        return int(self.slices[0]), int(self.slices[-1])

    # -- geometry ------------------------------------------------------------------------------
    def _plot_rect(self) -> QRectF:
        return QRectF(_LEFT, _MARGIN, max(self.width() - _LEFT - _MARGIN, 1),
                      max(self.height() - 2 * _MARGIN, 1))

    def x_of(self, slice_index) -> float:
        """Centre of a slice's bar, in widget pixels."""
        first, last = self.span
        r = self._plot_rect()
        return r.left() + (slice_index - first + 0.5) * r.width() / (last - first + 1)

    def slice_at(self, x) -> int | None:
        """The shown slice nearest to widget x (None when empty or outside the plot)."""
        if not self.slices.size:
            return None
        r = self._plot_rect()
        if not r.left() <= x <= r.right():
            return None
        first, last = self.span
        s = first + int((x - r.left()) * (last - first + 1) / r.width())
        return int(self.slices[np.argmin(np.abs(self.slices - s))])

    def _y(self, value, r):
        return r.bottom() - float(np.clip(value, 0.0, 1.0)) * r.height()

    # -- painting --------------------------------------------------------------------------------
    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.fillRect(self.rect(), QColor(24, 24, 28))
        r = self._plot_rect()
        p.setPen(QColor(200, 200, 200))
        font = p.font()
        font.setPointSizeF(max(font.pointSizeF() - 2, 6))
        p.setFont(font)
        for v in (0.0, 1.0):
            p.drawText(QRectF(0, self._y(v, r) - 7, _LEFT - 3, 14),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), f"{v:g}")
        if not self.slices.size:
            p.drawText(r, int(Qt.AlignmentFlag.AlignCenter), "no slice quality yet: analyse a volume")
            p.end()
            return
        first, last = self.span
        width = r.width() / (last - first + 1)
        colors = quality_rgba(self.predicted, alpha=1.0)
        for s, v, c in zip(self.slices, self.predicted, colors, strict=True):
            x0 = r.left() + (s - first) * width
            top = self._y(0.05 if not np.isfinite(v) else max(v, 0.02), r)
            p.fillRect(QRectF(x0, top, max(width - (1 if width > 3 else 0), 1), r.bottom() - top),
                       QColor.fromRgbF(*[float(a) for a in c[:3]]))
        dashed = QPen(QColor(235, 235, 235))
        dashed.setStyle(Qt.PenStyle.DashLine)
        p.setPen(dashed)
        y = self._y(self.fail_below, r)
        p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
        if self.true is not None:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            p.setPen(QPen(QColor(0, 0, 0), 1))
            p.setBrush(QColor(255, 255, 255))
            rad = 2.0 if width < 6 else 2.5
            for s, v in zip(self.slices, self.true, strict=True):
                if np.isfinite(v):
                    p.drawEllipse(QPointF(self.x_of(s), self._y(v, r)), rad, rad)
        if self.current is not None and first <= self.current <= last:
            pen = QPen(QColor(255, 255, 255), 2)
            p.setPen(pen)
            x = self.x_of(self.current)
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        p.end()

    # -- mouse -----------------------------------------------------------------------------------
    def mousePressEvent(self, event):
        s = self.slice_at(event.position().x())
        if s is not None and event.button() == Qt.MouseButton.LeftButton:
            self.slice_clicked.emit(s)

    def describe(self, slice_index) -> str:
        """What the tooltip says about a slice."""
        i = int(np.searchsorted(self.slices, slice_index))
        v = self.predicted[i]
        text = f"slice {slice_index}: {self.what} " + ("not rated" if not np.isfinite(v) else f"{v:.2f}")
        if self.true is not None and np.isfinite(self.true[i]):
            text += f", true mean IoU {self.true[i]:.2f}"
        if np.isfinite(v) and v < self.fail_below:
            text += f" (below {self.fail_below:g})"
        return text

    def mouseMoveEvent(self, event):
        s = self.slice_at(event.position().x())
        if s is None:
            QToolTip.hideText()
            return
        QToolTip.showText(event.globalPosition().toPoint(), self.describe(s), self)


class SliceQualityView(QWidget):
    """The strip for the analysed case: the slices of the Analyse tab's ``segments`` layer (slice-wise
    segmentation of a volume), their predicted quality (:func:`napari_metaseg.workflows.slice_quality`:
    the model's image-level regressor, else the size-weighted mean predicted IoU_adj) and, with
    ground truth, their true mean IoU; a click moves the viewer to the slice. It follows each new
    analysis, model change and slider move."""

    def __init__(self, viewer, session, parent=None):
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QLabel, QVBoxLayout

        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.rows = None  # the slice_quality rows shown (None: nothing)
        self.strip = QualityStrip(self)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Quality per slice</b>"))
        layout.addWidget(self.strip)
        layout.addWidget(self.caption)
        self._timer = QTimer(self)  # after the Analyse tab has handled the same signal
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.refresh)
        self.strip.slice_clicked.connect(self.go_to_slice)
        session.case_changed.connect(self._later)
        session.models_changed.connect(self._later)
        viewer.dims.events.current_step.connect(self._follow_slider)
        self.refresh()

    def _later(self):
        self._timer.start()

    def segments(self):
        """``(segments layer, slice axis)`` of a slice-wise analysis, else ``(layer or None, None)``."""
        if "segments" not in self.viewer.layers:
            return None, None
        layer = self.viewer.layers["segments"]
        meta = layer.metadata.get("metaseg", {})
        if meta.get("kind") != "segments":
            return None, None
        seg = meta.get("segmentation") or {}
        if seg.get("mode") != "slices" or seg.get("slice_axis") is None:
            return layer, None
        return layer, int(seg["slice_axis"]) % layer.ndim

    def refresh(self):
        """Show the analysed case's slices (or say why there are none)."""
        from .. import workflows

        layer, axis = self.segments()
        self.rows = None
        if layer is None:
            self.strip.clear()
            self.caption.setText("analyse a volume slice-wise to see the quality of each slice")
            return
        if axis is None:
            self.strip.clear()
            self.caption.setText("per-slice quality needs slice-wise segments of a volume (Analyse tab: "
                                 "segment as slices)")
            return
        table = layer.features
        true = table.groupby("slice")["image_mean_iou"].first() if "image_mean_iou" in table.columns else None
        models = self.session.models if self.session.has_models else None
        try:
            rows = workflows.slice_quality(table, models, by="slice")
        except ValueError:  # no predictions: the true quality alone
            slices = np.sort(table["slice"].unique())
            self.strip.set_rows(slices, np.full(slices.size, np.nan),
                                None if true is None else true.reindex(slices).to_numpy(float))
            self.caption.setText("no model: bars not rated (grey); dots = true mean IoU per slice. Train or "
                                 "load a model to see the predicted quality")
            self._follow_slider()
            return
        self.rows = rows
        qm = getattr(models, "image_quality", None)
        fail = float(getattr(qm, "fail_below", 0.7) or 0.7)
        image = rows["order"].iloc[0] == "image regressor" if len(rows) else False
        what = "predicted mean IoU" if image else "mean predicted IoU_adj"
        self.strip.set_rows(rows["slice"].to_numpy(), rows["quality_pred"].to_numpy(float),
                            None if true is None else true.reindex(rows["slice"]).to_numpy(float),
                            fail_below=fail, what=what)
        worst = rows.dropna(subset=["priority"]).head(1)
        lead = f"worst slice {int(worst['slice'].iloc[0])} ({worst['quality_pred'].iloc[0]:.2f}); " \
            if len(worst) else ""
        self.caption.setText(f"{lead}bars: {what} per slice, coloured like the segments"
                             + ("; dots: true mean IoU" if true is not None else "")
                             + f"; dashed: {fail:g} (below fails). Click a bar to go to its slice.")
        self._follow_slider()

    def go_to_slice(self, index):
        """Move the slider of the segments' slice axis to slice ``index``; returns it (None: no
        slice-wise segments, or their axis is shown across the canvas)."""
        from .._layers import go_to_slice

        layer, axis = self.segments()
        if axis is None or not go_to_slice(self.viewer, layer, axis, index):
            return None
        return int(index)

    def current_slice(self):
        """The slice of the segments layer the viewer shows (None: none)."""
        layer, axis = self.segments()
        if axis is None:
            return None
        dim = self.viewer.dims.ndim - layer.ndim + axis
        if dim in self.viewer.dims.displayed:
            return None
        world = np.asarray(self.viewer.dims.point)[-layer.ndim:]
        return int(np.round(np.asarray(layer.world_to_data(world))[axis]))

    def _follow_slider(self, event=None):
        self.strip.set_current(self.current_slice())

    def closeEvent(self, event):
        for signal, slot in ((self.session.case_changed, self._later),
                             (self.session.models_changed, self._later)):
            try:
                signal.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):
                pass
        try:
            self.viewer.dims.events.current_step.disconnect(self._follow_slider)
        except (TypeError, ValueError, RuntimeError):
            pass
        super().closeEvent(event)
