"""OoD panel: out-of-distribution candidate regions, rated by a region model, flagged by the reviewer.

Thin: the regions come from :func:`napari_metaseg.workflows.find_ood` (run in a
``thread_worker``; the same job as ``napari-metaseg ood``); the threshold slider previews the
candidates of the current slice only, on the main thread (one slice of the heatmap, thresholded
and labelled in a few milliseconds, debounced); decisions ("flag as unknown", "not OoD") go at
once to the case's sidecar (:class:`napari_metaseg.io.ood_review.OodReviewStore`, atomic writes,
one writer at a time: a review locked by another viewer is shown read-only, a stale lock taken
over when the reviewer says so, as in the Review tab). "Refit with my decisions" closes the loop:
:func:`napari_metaseg.workflows.refit_regions` (in the worker) refits the region model on its
training regions plus the decided regions of this case, which then replaces the panel's model
and re-rates the regions; "Save region model..." writes it (``workflows.save_model``). Layers are
touched only on the main thread.

Colours: the regions by the region model's P(OoD) on the cividis ramp (readable with every
common colour-vision deficiency), regions without a rating in a light grey that is not on the
ramp; the legend under the slider says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from .._layers import case_id_of, centre_on_mask, input_layers, spatial_kwargs
from ._form import make_form, set_choices
from ._table import DataFrameModel, LabelTableLink, table_view
from ._worker import WorkerPanelMixin, progress_widgets
from .legend import ramp_pixmap as legend_ramp
from .legend import swatch_pixmap

NONE = "(none)"
MODES = ("auto", "3d", "slices", "2d")
MEASURES = ("E", "D", "V")
MEASURE_TIPS = "E entropy, D probability margin, V variation ratio (all 1 = most uncertain)"
REGIONS = "ood regions"
PREVIEW = "ood preview"
#: The ramp for P(OoD) (colour-vision safe) and the colour of regions without a rating.
COLORMAP = "cividis"
NOT_RATED = (0.85, 0.85, 0.85)
SHOWN = ["index", "p_hit", "decision", "hit", "S", "E", "slice"]
DECISION_TEXT = {"unknown": "unknown", "known": "not OoD"}
#: Milliseconds the preview waits for the slider to rest.
PREVIEW_DELAY = 120
#: A change of P(OoD) the refit's status counts as a region whose rating moved.
MOVED = 0.05


def p_rgba(values, alpha=0.8):
    """RGBA of P(OoD) values on the cividis ramp; NaN (not rated) light grey."""
    from napari.utils.colormaps import ensure_colormap

    v = np.asarray(values, float).reshape(-1)
    nan = np.isnan(v)
    rgba = np.asarray(ensure_colormap(COLORMAP).map(np.clip(np.where(nan, 0.0, v), 0.0, 1.0)), np.float32)
    rgba = rgba.reshape(-1, 4).copy()
    rgba[nan, :3] = NOT_RATED
    rgba[:, 3] = alpha
    return rgba


def region_colormap(table):
    """``DirectLabelColormap``: each region by its ``p_hit`` (not rated without one)."""
    from napari.utils.colormaps import DirectLabelColormap

    p = table["p_hit"].to_numpy(float) if "p_hit" in table else np.full(len(table), np.nan)
    colors = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    colors.update(zip(table["index"].to_numpy().tolist(), p_rgba(p), strict=True))
    return DirectLabelColormap(color_dict=colors)


def ramp_pixmap(width=160, height=12):
    """The P(OoD) ramp (see :func:`p_rgba`)."""
    return legend_ramp(width, height, rgba_of=p_rgba)


class OodWidget(LabelTableLink, WorkerPanelMixin, QWidget):
    """Dock widget: OoD candidate regions of one case, their P(OoD), and "unknown" flags."""

    #: emitted when regions are shown (after a run)
    ready = Signal()
    #: emitted with the :class:`~napari_metaseg.workflows.RegionRefit` when a refit has replaced the model
    refitted = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.models = None  # a region model (workflows.MetaModels with ood)
        self.result = None
        self.store = None
        self._job = "finding regions"
        self.regions_layer = None
        self.preview_layer = None
        self._preview_plane = None
        self._show_preview = False
        self._probs_cache = None  # (layer id, class axis, probabilities classes last)
        self._syncing = False
        self.ask = self._ask  # replaced in tests

        self.form = make_form([
            ("probabilities", "combo", {"choices": ()}, "probabilities", ""),
            ("ood_layer", "combo", {"choices": ()}, "OoD annotation",
             "labels layer whose nonzero voxels (or the OoD label below) are out of distribution; "
             "adds the hit column and the evaluation"),
            ("ood_label", "spin", {"min": -1, "max": 65535, "value": 255}, "OoD label",
             "voxels of the annotation layer equal to this are OoD; -1: every nonzero voxel"),
            ("mode", "combo", {"choices": MODES}, "mode", "regions in 3D (26 neighbours) or slice by slice"),
            ("slice_axis", "spin", {"min": -3, "max": 2, "value": -1}, "slice axis", ""),
            ("measure", "combo", {"choices": MEASURES}, "heatmap", MEASURE_TIPS),
            ("exclude_background", "check", {"text": "no candidates where class 0 is predicted",
                                             "value": True}, None,
             "class 0 is the background around the object (e.g. outside the brain)"),
        ])
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(50)
        self.slider.setToolTip("candidates: heatmap >= threshold; moving it previews the current slice")
        self.threshold_label = QLabel("0.50")
        row = QHBoxLayout()
        row.addWidget(QLabel("threshold"))
        row.addWidget(self.slider, stretch=1)
        row.addWidget(self.threshold_label)
        self.preview_status = QLabel("")
        self.preview_status.setWordWrap(True)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY)
        self._preview_timer.timeout.connect(self.update_preview)
        self.slider.valueChanged.connect(self._threshold_changed)

        self.model_label = QLabel("region model: none (candidates are not rated)")
        self.model_label.setWordWrap(True)
        self.load_button = QPushButton("Load region model...")
        self.load_button.setToolTip("a model trained by `napari-metaseg train` on region tables of `ood`")
        self.load_button.clicked.connect(lambda: self.load_model())
        self.find_button = QPushButton("Find regions")
        self.find_button.clicked.connect(self.find_or_cancel)
        self.progress, self.status = progress_widgets()

        legend = QHBoxLayout()
        legend.addWidget(QLabel("P(OoD) 0"))
        bar = QLabel()
        bar.setPixmap(ramp_pixmap())
        legend.addWidget(bar)
        legend.addWidget(QLabel("1"))
        swatch = QLabel()
        swatch.setPixmap(swatch_pixmap(NOT_RATED))
        legend.addWidget(swatch)
        legend.addWidget(QLabel("not rated"))
        legend.addStretch()
        self.legend = QWidget()
        self.legend.setLayout(legend)
        self.legend.layout().setContentsMargins(0, 0, 0, 0)

        self.model = DataFrameModel()
        self.table_view = table_view(self.model, lambda row: self.select_row(row), sortable=True)
        self.flag_button = QPushButton("Flag as unknown")
        self.known_button = QPushButton("Not OoD")
        self.clear_button = QPushButton("Clear")
        self.flag_button.clicked.connect(lambda: self.decide("unknown"))
        self.known_button.clicked.connect(lambda: self.decide("known"))
        self.clear_button.clicked.connect(lambda: self.decide(None))
        dec = QHBoxLayout()
        for b in (self.flag_button, self.known_button, self.clear_button):
            dec.addWidget(b)
        self.refit_button = QPushButton("Refit with my decisions")
        self.refit_button.setToolTip("refit the region model on its training regions plus this case's "
                                     "decided regions (unknown = OoD, not OoD = in distribution); the panel "
                                     "then uses it (not saved until Save region model...)")
        self.refit_button.clicked.connect(self.refit_or_cancel)
        self.save_model_button = QPushButton("Save region model...")
        self.save_model_button.setToolTip("write the region model and its training regions "
                                          "(<name>.dataset.csv beside it)")
        self.save_model_button.clicked.connect(lambda: self.save_region_model())
        loop = QHBoxLayout()
        loop.addWidget(self.refit_button)
        loop.addWidget(self.save_model_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(row)
        layout.addWidget(self.preview_status)
        layout.addWidget(self.legend)
        layout.addWidget(self.model_label)
        model_row = QHBoxLayout()  # one row: the tab fits a 768-pixel-high laptop screen
        model_row.addWidget(self.load_button)
        model_row.addWidget(self.find_button)
        layout.addLayout(model_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table_view, stretch=1)
        layout.addLayout(dec)
        layout.addLayout(loop)

        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.reordered):
            ev.connect(self._refresh_choices)
        napari_viewer.dims.events.current_step.connect(self._schedule_preview)
        self._refresh_choices()
        self._update_buttons()

    # -- inputs ------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.slider.value() / 100.0

    def _refresh_choices(self, event=None):
        probs, labels = ([la.name for la in group] for group in input_layers(self.viewer))
        set_choices(self.form.probabilities, probs)
        set_choices(self.form.ood_layer, [NONE, *labels])

    def _layer(self, combo):
        name = combo.value
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _probabilities(self):
        """``(layer, probabilities classes last, class axis)`` of the chosen layer (cached)."""
        from .analysis import probability_class_axis

        layer = self._layer(self.form.probabilities)
        if layer is None:
            raise ValueError("choose a probability layer")
        axis = probability_class_axis(layer)
        cached = self._probs_cache
        if cached is not None and cached[0] is layer.data and cached[1] == axis:
            return layer, cached[2], axis
        probs = np.moveaxis(np.asarray(layer.data), axis, -1)
        self._probs_cache = (layer.data, axis, probs)
        return layer, probs, axis

    def settings(self) -> dict:
        """The :func:`~napari_metaseg.workflows.ood.ood_settings` of the form and slider."""
        from ..workflows.ood import ood_settings

        label = self.form.ood_label.value
        return ood_settings(threshold=self.threshold, measure=self.form.measure.value,
                            mode=self.form.mode.value, slice_axis=self.form.slice_axis.value,
                            exclude_classes=(0,) if self.form.exclude_background.value else (),
                            ood_label=None if label < 0 else label)

    # -- preview -----------------------------------------------------------------------------------
    def _threshold_changed(self, value):
        self.threshold_label.setText(f"{value / 100:.2f}")
        if self._layer(self.form.probabilities) is not None:
            self._show_preview = True  # a new threshold: show its preview (again)
            self._preview_timer.start()

    def _schedule_preview(self, event=None):
        """Another slice: follow it while the preview is shown (not after regions were found)."""
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers and layer.visible:
            self._preview_timer.start()

    def _current_plane(self, shape, kwargs):
        """``(axis, index)`` of the slice shown (None for a 2D image or a 3D view)."""
        if len(shape) == 2 or self.viewer.dims.ndisplay == 3:
            return None
        offset = self.viewer.dims.ndim - len(shape)
        shown = [ax - offset for ax in self.viewer.dims.displayed if ax >= offset]
        hidden = [ax for ax in range(len(shape)) if ax not in shown]
        if len(hidden) != 1:
            return None
        ax = hidden[0]
        world = np.asarray(self.viewer.dims.point[-len(shape):], float)
        index = (world[ax] - kwargs["translate"][ax]) / kwargs["scale"][ax]
        return ax, int(np.clip(np.round(index), 0, shape[ax] - 1))

    def update_preview(self):
        """Threshold the heatmap of the slice shown and show its candidate regions (main thread).

        Returns ``(number of regions, candidate voxels)`` on that slice, or None.
        """
        from ..core.ood import ood_regions

        try:
            layer, probs, axis = self._probabilities()
        except ValueError:
            return None
        shape = probs.shape[:-1]
        kwargs = spatial_kwargs(layer, axis)
        s = self.settings()
        plane = self._current_plane(shape, kwargs)
        if plane is None and len(shape) == 3:
            self.preview_status.setText("preview: shown on 2D slices (a 3D view shows the found regions)")
            return None
        sl = [slice(None)] * len(shape)
        if plane is not None:
            sl[plane[0]] = plane[1]
        p2 = probs[tuple(sl)]
        mask = p2.argmax(-1) != 0 if s["exclude_classes"] else None
        ids, table = ood_regions(p2, threshold=s["threshold"], measure=s["measure"], mode="2d", mask=mask)
        data = self._preview_data(shape, kwargs)
        if self._preview_plane is not None:
            data[self._preview_plane] = 0
        data[tuple(sl)] = (ids > 0).astype(np.uint8)
        self._preview_plane = tuple(sl)
        if self._show_preview:
            self.preview_layer.visible = True
            self._show_preview = False
        self.preview_layer.refresh()
        where = f" on slice {plane[1]} (axis {plane[0]})" if plane is not None else ""
        self.preview_status.setText(f"preview: {len(table)} candidate regions, {int((ids > 0).sum())} "
                                    f"voxels{where} at {s['measure']} >= {s['threshold']:.2f}")
        return len(table), int((ids > 0).sum())

    def _preview_data(self, shape, kwargs):
        from napari.utils.colormaps import DirectLabelColormap

        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers and layer.data.shape == tuple(shape):
            return layer.data
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1.0, 0.55, 0.0, 1.0)})
        self.preview_layer = self.viewer.add_labels(
            np.zeros(shape, np.uint8), name=PREVIEW, opacity=0.6, colormap=cmap,
            metadata={"metaseg": {"kind": "ood_preview", "result": True}}, **kwargs)
        self._preview_plane = None
        return self.preview_layer.data

    # -- model -------------------------------------------------------------------------------------
    def load_model(self, path=None):
        """Load a region model file (asks for it when ``path`` is None); returns its models."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load OoD region model", "",
                                                  "Model (*.json *.json.gz)")
            if not path:
                return None
        try:
            models = workflows.load_model(path, table_kind="ood_regions")
        except (ValueError, OSError) as exc:
            self.fail(f"OoD: {exc}")
            return None
        self.models = models
        rec = models.ood or {}
        clf = models.classifier
        cases = ", ".join(map(str, clf.training_cases_[:4])) or "?"
        self.model_label.setText(f"region model: {clf.kind} from {Path(path).name}, trained on {cases} at "
                                 f"{rec.get('measure', 'E')} >= {rec.get('threshold', 0.5):g}")
        if "threshold" in rec:
            self.slider.setValue(round(100 * float(rec["threshold"])))
            self.form.measure.value = rec.get("measure", "E")
            self.form.exclude_background.value = 0 in rec.get("exclude_classes", [])
        return models

    # -- finding -----------------------------------------------------------------------------------
    def find_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.find()

    def _annotation(self, shape):
        layer = self._layer(self.form.ood_layer)
        if layer is None:
            return None
        data = np.asarray(layer.data)
        if data.shape != tuple(shape):
            raise ValueError(f"the annotation has shape {data.shape}, the probabilities {tuple(shape)}")
        label = self.form.ood_label.value
        return data != 0 if label < 0 else data == label

    def find(self):
        """Find, rate and evaluate the regions of the whole case in a worker."""
        from ..core.progress import drain

        try:
            layer, probs, axis = self._probabilities()
            ood = self._annotation(probs.shape[:-1])
            settings = self.settings()
            classifier = None
            if self.models is not None:
                settings = workflows.ood.region_classifier_ood(
                    self.models, settings, explicit=("threshold", "measure", "exclude_classes"))
                workflows.check_segmentation(self.models.segmentation, mode=settings["mode"],
                                             slice_axis=settings["slice_axis"])
                classifier = self.models.classifier
        except ValueError as exc:
            return self.fail(f"OoD: {exc}")
        # compile (or load from numba's cache) on the main thread: numba compiling in a worker
        # while Mesa draws the canvas crashed the process under Xvfb (see workflows.warm_up)
        q = probs.shape[-1]
        tiny = np.full((3,) * (probs.ndim - 1) + (q,), 0.5 / (q - 1), np.float32)
        tiny[..., -1] = 0.5  # a class other than 0: candidates survive the background exclusion
        try:
            drain(workflows.find_ood(tiny, settings=settings, ood=np.ones(tiny.shape[:-1], bool)))
        except ValueError as exc:  # e.g. a mode that does not fit the data
            return self.fail(f"OoD: {exc}")
        self._job = "finding regions"
        self._preview_timer.stop()  # the found regions replace the preview
        self._show_preview = False
        self._run = {"layer": layer, "axis": axis, "settings": settings,
                     "kwargs": spatial_kwargs(layer, axis)}
        source = layer.metadata.get("source")
        case_id = layer.name.replace(" softmax", "").replace(" probabilities", "").strip() or "current"

        def post(result):  # worker thread: the case's identity for the review sidecar
            from ..io.ood_review import ood_case_identity

            return result, ood_case_identity(probs, probs_path=source, case_id=case_id)

        worker = self.start_worker(workflows.find_ood, probs, settings=settings, classifier=classifier,
                                   ood=ood, button=self.find_button, status="finding OoD regions ...",
                                   post=post)
        self._update_buttons()
        return worker

    def _on_errored(self, exc):
        self.fail(f"OoD: {self._job} failed: {exc}")

    def _on_aborted(self):
        self.status.setText("cancelled; nothing was changed")
        self.progress.setValue(0)

    def _on_returned(self, value):
        from napari.utils.notifications import show_warning

        from ..workflows.ood import RegionRefit

        if isinstance(value[0], RegionRefit):
            return self._refit_done(*value)
        result, case = value
        self.result = result
        run = self._run
        table = result.table.copy()
        if self.regions_layer is not None and self.regions_layer in self.viewer.layers:
            self.viewer.layers.remove(self.regions_layer)
        self.regions_layer = self.viewer.add_labels(
            result.region_ids, name=REGIONS, features=table, opacity=0.8, colormap=region_colormap(table),
            metadata={"metaseg": {"kind": "ood_regions", "result": True, "settings": run["settings"]}},
            **run["kwargs"])
        self.regions_layer.events.selected_label.connect(self._label_selected)
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.visible = False
        note = self._open_store(result, case, run["settings"])
        s = run["settings"]
        kept = f", {int(result.kept.sum())} rated OoD (P >= {s['p_keep']:g})" if "p_hit" in table else ""
        text = f"{len(table)} candidate regions ({s['measure']} >= {s['threshold']:.2f}){kept}"
        if result.evaluation is not None:
            ev = result.evaluation.objects.set_index("keep")
            for keep in ev.index:
                r = ev.loc[keep]
                text += (f"; {'model' if keep == 'meta' else 'all'}: TP {int(r['tp'])}, "
                         f"FP {int(r['fp'])}, FN {int(r['fn'])}, F1 {r['f1']:.2f}")
        self.status.setText(text + (f"; {note}" if note else ""))
        self.progress.setValue(100)
        self._show_table()
        self._update_buttons()
        if len(table) > 50_000:
            show_warning(f"napari-metaseg: {len(table)} OoD candidate regions; raise the threshold")
        self.ready.emit()

    def _open_store(self, result, case, settings):
        """Open the case's sidecar and store the regions; returns a note (decisions restored)."""
        from ..io.ood_review import OodReviewError, OodReviewStore, ood_sidecar_path
        from ..io.review import ReviewLockedError, StaleLockError

        self.close_review()  # this panel's earlier review: its lock would refuse the new one
        path = ood_sidecar_path(case)
        model = None if self.models is None else self.models.path
        store = None
        try:
            try:
                store = OodReviewStore(path, case)
            except StaleLockError as exc:
                if not self.ask("Stale OoD review lock", f"{exc}\n\nTake the lock over?"):
                    raise
                store = OodReviewStore(path, case, take_over_stale=True)
            try:
                kept = store.set_regions(result.table, result.region_ids, settings, model=model)
            except ValueError as exc:
                if not self.ask("Replace the OoD review?", f"{exc}\n\nStart a new review of these regions?"):
                    store.close()
                    return "decisions not saved (the earlier review was kept)"
                kept = store.set_regions(result.table, result.region_ids, settings, model=model, replace=True)
        except ReviewLockedError as exc:
            if store is not None:  # the lock was lost right after it was taken
                store.close()
            return self._open_read_only(path, case, settings, exc)
        except (OodReviewError, OSError) as exc:
            if store is not None:
                store.close()
            self.fail(f"OoD: the review file cannot be used: {exc}")
            return "decisions not saved"
        self.store = store
        return f"{kept} decisions restored from {path.name}" if kept else f"decisions saved in {path}"

    def _open_read_only(self, path, case, settings, reason):
        """Show a review another viewer holds: its decisions on the same regions, no changes."""
        from ..io.ood_review import OodReviewError, OodReviewStore

        self.fail(f"OoD: {reason}. Showing it read-only")
        try:
            store = OodReviewStore(path, case, read_only=True)
        except (OodReviewError, OSError) as exc:
            self.fail(f"OoD: the review file cannot be used: {exc}")
            return "decisions not saved"
        if not store.same_regions(settings):
            return (f"READ-ONLY: {reason}; its regions were made with other settings, so no decisions "
                    "are shown")
        self.store = store
        return f"READ-ONLY: {reason}; showing its {len(store.decisions())} decisions"

    def _ask(self, title, text):
        return QMessageBox.question(self, title, text) == QMessageBox.Yes

    # -- the table ---------------------------------------------------------------------------------
    def shown_table(self):
        """The region table as shown (columns and row order)."""
        return self.model.frame

    def _show_table(self):
        table = self.result.table
        decided = self.store.decisions() if self.store is not None else {}
        shown = table.assign(decision=[DECISION_TEXT.get(decided.get(int(i)), "") for i in table["index"]])
        shown = shown[[c for c in SHOWN if c in shown.columns]]
        if "p_hit" in shown:
            shown = shown.sort_values("p_hit", ascending=False, kind="stable")
        self.model.set_frame(shown)
        self.table_view.horizontalHeader().setSortIndicatorShown(False)
        if len(shown) <= 2000:
            self.table_view.resizeColumnsToContents()

    def _update_buttons(self):
        selected = self._selected_region() is not None
        writable = self.store is not None and not self.store.read_only
        idle = self.worker is None
        for b in (self.flag_button, self.known_button, self.clear_button):
            b.setEnabled(writable and selected and idle)
        running = None if idle else self._worker_button  # its button is Cancel meanwhile
        decided = self.store is not None and self.result is not None and bool(self.store.decisions())
        self.refit_button.setEnabled(running is self.refit_button
                                     or (idle and self.models is not None and decided))
        self.find_button.setEnabled(idle or running is self.find_button)
        self.load_button.setEnabled(idle)
        self.save_model_button.setEnabled(idle and self.models is not None)

    def _selected_region(self):
        rows = self.table_view.selectionModel().selectedRows() if self.table_view.selectionModel() else []
        if not rows or not len(self.model.frame):
            return None
        return int(self.model.frame["index"].iloc[rows[0].row()])

    def select_row(self, row):
        """Select the region of table row ``row`` and centre the camera on it."""
        rid = self._select_label_of_row(self.regions_layer, row)
        if rid is not None:
            self.centre_on(rid)
            self._update_buttons()

    def centre_on(self, rid):
        """Move the camera (and the slider of a non-displayed axis) to region ``rid``."""
        layer = self.regions_layer
        centre_on_mask(self.viewer, layer, np.asarray(layer.data) == rid)

    def _label_selected(self, event=None):
        if self._select_row_of_label(self.regions_layer):
            self._update_buttons()

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, decision, region=None):
        """Record ``decision`` (``"unknown"``, ``"known"`` or None) on the selected region (or
        ``region``), saved at once; returns the stored record."""
        from ..io.review import ReviewLockedError

        rid = self._selected_region() if region is None else int(region)
        if self.store is None or rid is None:
            return None
        try:
            rec = self.store.set_decision(rid, decision)
        except (ReviewLockedError, ValueError, OSError) as exc:
            self.fail(f"OoD: decision not saved: {exc}")
            return None
        frame = self.model.frame
        row = self.model.row_of("index", rid)
        col = list(frame.columns).index("decision")
        frame.iat[row, col] = DECISION_TEXT.get(decision, "")
        self.model._values[row, col] = frame.iat[row, col]
        idx = self.model.index(row, col)
        self.model.dataChanged.emit(idx, idx)
        self.status.setText(f"region {rid}: {DECISION_TEXT.get(decision, 'cleared')} (saved)")
        self._update_buttons()  # the first decision allows a refit
        return rec

    # -- refitting the region model with the decisions -------------------------------------------
    def refit_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.refit()

    def refit(self):
        """Refit the region model on its training regions plus this case's decided regions (in
        the worker); on success the panel uses the new model and re-rates the regions."""
        if self.models is None:
            return self.fail("OoD: no region model to refit: load one first (Load region model...)")
        if self.store is None or self.result is None:
            return self.fail("OoD: find regions and decide some (Flag as unknown / Not OoD) before refitting")
        decisions = self.store.decisions()
        if not decisions:
            return self.fail("OoD: no decided region: flag regions as unknown or not OoD before refitting")
        # named as `napari-metaseg ood` names the case file (sub-02L/softmax_rf.nii.gz: sub-02L), so
        # its regions replace those of an `ood` table of the same case, not add to them
        case_id = case_id_of(self._run["layer"])
        table = self.result.table
        settings = self._run["settings"]

        def post(res):  # worker thread: this case's regions rated by the new model (no layer touched)
            clf = res.models.classifier
            rated = table.drop(columns=[c for c in ("p_hit",) if c in table.columns])
            return res, rated.assign(p_hit=clf.predict_proba(rated)[:, 1] if len(rated) else [])

        self._job = "refitting the region model"
        worker = self.start_worker(workflows.refit_regions, self.models,
                                   current=(case_id, table, decisions, settings), button=self.refit_button,
                                   status=f"refitting the region model with {len(decisions)} decisions ...",
                                   post=post)
        self._update_buttons()
        return worker

    def _refit_done(self, res, table):
        old = self.result.table
        before = old["p_hit"].to_numpy(float) if "p_hit" in old else np.full(len(old), np.nan)
        after = table["p_hit"].to_numpy(float)
        self.models = res.models
        self.result.table = table
        layer = self.regions_layer
        if layer is not None and layer in self.viewer.layers:
            layer.features = table
            layer.colormap = region_colormap(table)
        self._show_table()
        self.progress.setValue(100)
        rec = res.models.ood
        cases = res.models.classifier.training_cases_
        self.model_label.setText(f"region model: {res.models.classifier.kind} refitted in this session on "
                                 f"{res.n_after} regions of {len(cases)} case(s) at {rec['measure']} >= "
                                 f"{rec['threshold']:g} (not saved)")
        replaced = f", {res.n_replaced} replacing earlier labels" if res.n_replaced else ""
        dropped = ("" if res.had_training_regions
                   else " (no training regions beside the old model: fitted on the decisions only)")
        change = np.abs(after - before)
        moved = ""
        if np.isfinite(change).any():
            moved = (f"; {int((change >= MOVED).sum())} of {len(table)} regions moved >= {MOVED:g} "
                     f"(at most {np.nanmax(change):.2f})")
        kept = int((after >= self.result.settings["p_keep"]).sum())
        self.status.setText(f"refitted: {res.n_decided} decisions ({res.n_unknown} unknown, "
                            f"{res.n_known} not OoD{replaced}); {res.n_before} -> {res.n_after} training "
                            f"regions{dropped}{moved}; {kept} rated OoD. Not saved yet"
                            + self._against_decisions(table, before, after))
        self._update_buttons()
        self.refitted.emit(res)

    def _against_decisions(self, table, before, after):
        """A sentence when the refit moved decided regions against their decisions (a region
        flagged unknown now rated lower, one marked not OoD rated higher), else ''."""
        if self.store is None:
            return ""
        decided = self.store.decisions()
        ids = table["index"].to_numpy()
        d = np.array([decided.get(int(i), "") for i in ids])
        with np.errstate(invalid="ignore"):
            down = int(((d == "unknown") & (after < before - 1e-9)).sum())
            up = int(((d == "known") & (after > before + 1e-9)).sum())
        if not down and not up:
            return ""
        parts = []
        if down:
            parts.append(f"{down} of the {int((d == 'unknown').sum())} flagged unknown rated lower")
        if up:
            parts.append(f"{up} of the {int((d == 'known').sum())} marked not OoD rated higher")
        return (f". Against your decisions: {' and '.join(parts)} (regions that look alike were decided "
                "both ways; the model weighs all of them)")

    def save_region_model(self, path=None):
        """Write the panel's region model (and its training regions beside it); asks for the path
        when None. Returns the path written, or None."""
        if self.models is None:
            self.fail("OoD: no region model to save")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save OoD region model", "ood_region_model.json",
                                                  "Model (*.json *.json.gz)")
            if not path:
                return None
        try:
            path = workflows.save_model(path, self.models)
        except (ValueError, TypeError, OSError) as exc:
            self.fail(f"OoD: cannot save the region model to {path}: {exc}")
            return None
        saved = f", saved to {Path(path).name}"
        self.model_label.setText(self.model_label.text().replace(" (not saved)", saved))
        self.status.setText(f"region model saved to {path} (training regions: "
                            f"{workflows.dataset_path(path).name})")
        return path

    def close_review(self):
        """Release the sidecar's lock (the decisions are saved already)."""
        if self.store is not None:
            self.store.close()
            self.store = None
        self._update_buttons()

    def event(self, ev):
        # napari's remove_dock_widget detaches the panel (setParent(None)) without closing it
        if (ev.type() == QEvent.ParentChange and self.parent() is None
                and getattr(self, "store", None) is not None):
            self.close_review()
        return super().event(ev)

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        self.close_review()
        self._preview_timer.stop()
        try:
            self.viewer.dims.events.current_step.disconnect(self._schedule_preview)
        except (TypeError, ValueError, RuntimeError):
            pass
        self.model.set_frame(pd.DataFrame())
        super().closeEvent(event)
