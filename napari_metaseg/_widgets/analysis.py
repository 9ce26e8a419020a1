"""Analysis panel: softmax (+ optional GT) -> heatmaps, rated segments, a sortable segment table.

Thin: the work is :func:`napari_metaseg.core.iter_segment_metrics` (and the meta model's
``predict_table`` when a model is loaded) in a generator ``thread_worker``; layers are touched
only in the worker's ``returned`` handler on the main thread, so cancelling changes nothing.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import (
    FIRST_COLUMNS,
    add_results,
    axial_view,
    case_id_of,
    centre_on_mask,
    note_texture_mapping,
    prepare_texture_mapping,
    quality_column,
    recolor_with,
    segment_colormap,
)
from ..names import MODES
from ..workflows.warmup import WARM_UP_STAGE
from ._form import make_form, set_choices
from ._session import session_for
from ._settings import section, update_settings
from ._table import DataFrameModel, LabelTableLink, table_view
from ._worker import PROGRESS_INTERVAL, WorkerPanelMixin, progress_widgets  # noqa: F401 (PROGRESS_INTERVAL: the panel's figure)
from .legend import legend_for

NONE = "(none)"
HEATMAPS = ("E", "D", "V")
HEATMAP_TIPS = {"E": "entropy", "D": "probability margin", "V": "variation ratio"}
IGNORE_TIP = "ground-truth label left out of the metrics; -1: none"
#: Columns of the segment table: the reviewer's first, then a few metrics.
TABLE_COLUMNS = (*FIRST_COLUMNS, "class", "S_in", "E", "D", "V", "iou")
DEFAULTS = {"mode": "slices", "slice_axis": -1, "ignore_index": 255, "heatmaps": ["E"],
            "min_interior": 1, "hide_background": True, "class_names": ""}


def probability_class_axis(layer):
    """Class axis of a probability layer: from its metadata, else guessed from its values."""
    meta = layer.metadata.get("metaseg", {}) if hasattr(layer, "metadata") else {}
    if meta.get("kind") == "probabilities" and "class_axis" in meta:
        return int(meta["class_axis"])
    from ..io.layers import guess_kind

    kind, axis = guess_kind(np.asarray(layer.data))
    if kind != "probabilities":
        from ..io.layers import wrong_kind_message

        why = wrong_kind_message(np.asarray(layer.data), -1, name=f"layer {layer.name!r}",
                                 fix="its classes are on axis {axis}")
        raise ValueError(why or (
            f"layer {layer.name!r} (shape {tuple(layer.data.shape)}, dtype {layer.data.dtype}) does not "
            "look like a probability map: expected a class axis (first or last, 2..64 entries) "
            "whose values sum to 1"
        ))
    return axis


def _colormap_for(hide_classes, min_interior):
    """``post`` of the analysis job: build the segments' colormap in the worker thread too (a
    plain model object; the main thread only assigns it)."""

    def post(analysis):
        column, reverse, _ = quality_column(analysis.table)
        cmap = segment_colormap(analysis.table, column, reverse=reverse, hide_classes=hide_classes,
                                min_interior=min_interior)
        prepare_texture_mapping(cmap, analysis.seg.dtype)
        return analysis, cmap

    return post


def shown_segments(layer):
    """The segment table as the panel shows it: the reviewer's columns first, hidden classes
    (the background) and unrated segments (interior below min interior) left out, worst first by
    the column the segments are coloured by (missing values last)."""
    table = layer.features
    meta = layer.metadata.get("metaseg", {})
    keep = np.ones(len(table), bool)
    min_int = int(meta.get("min_interior", 0))
    if min_int > 0 and "S_in" in table.columns:
        keep &= table["S_in"].to_numpy() >= min_int
    hidden = meta.get("hide_classes") or []
    if hidden and "class" in table.columns:
        keep &= ~table["class"].isin(hidden).to_numpy()
    table = table[keep]
    column = meta.get("color_by")
    if column in table.columns:
        table = table.sort_values(column, ascending=not meta.get("color_reverse", False), kind="stable",
                                  na_position="last")
    return table[[c for c in TABLE_COLUMNS if c in table.columns]]


def fingerprint(array):
    """A short digest of an array's values (tells whether labels were edited since)."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16).hexdigest() + str(a.shape)


def _has_class_axis(layer):
    """Whether an image layer without our metadata looks like class probabilities."""
    try:
        probability_class_axis(layer)
    except (ValueError, TypeError):
        return False
    return True


def _gt_mismatch(probs_layer, class_axis, gt_layer):
    """Why the ground-truth layer cannot belong to the probability layer (None: it can)."""
    if gt_layer is None:
        return None
    ndim = probs_layer.ndim
    spatial = [i for i in range(ndim) if i != class_axis % ndim]
    shape = tuple(np.asarray(probs_layer.data.shape)[spatial].tolist())
    gt_shape = tuple(gt_layer.data.shape)
    p_scale = np.asarray(probs_layer.scale)[spatial]
    g_scale = np.asarray(gt_layer.scale)
    units = "mm" if probs_layer.ndim > 3 else "units"
    sizes = (f"voxel size {' x '.join(f'{v:g}' for v in p_scale)} {units} vs "
             f"{' x '.join(f'{v:g}' for v in g_scale)} {units}")
    if gt_shape != shape:
        same_extent = g_scale.size == p_scale.size and np.allclose(np.multiply(gt_shape, g_scale),
                                                                   np.multiply(shape, p_scale), rtol=0.05)
        hint = (f"they cover the same extent at another resolution ({sizes}): resample the ground "
                "truth to the softmax's grid" if same_extent else "choose the ground truth of this case")
        return (f"ground truth {gt_layer.name!r} has shape {gt_shape}, the probabilities "
                f"{probs_layer.name!r} {shape}: {hint}")
    if g_scale.size == p_scale.size and not np.allclose(g_scale, p_scale, rtol=1e-3):
        return (f"ground truth {gt_layer.name!r} and probabilities {probs_layer.name!r} have the same "
                f"shape but another {sizes}: they are not on one grid; resample one of them")
    return None


class AnalysisWidget(LabelTableLink, WorkerPanelMixin, QWidget):
    """Dock widget: run MetaSeg on a probability layer and review the rated segments."""

    #: emitted with the segments layer after a run has added its results
    finished = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker = None
        self.seg_layer = None
        self._run_requested = False
        self._syncing = False
        #: the volume mode ("3d"/"slices") shown before a 2D probability layer forced "2d"
        self._volume_mode = None
        opts = {**DEFAULTS, **section("analysis")}

        ignore = -1 if opts["ignore_index"] is None else int(opts["ignore_index"])
        self.form = make_form([
            ("image", "combo", {"choices": ()}, "image", ""),
            ("probabilities", "combo", {"choices": ()}, "probabilities", ""),
            ("ground_truth", "combo", {"choices": ()}, "ground truth", ""),
            ("mode", "combo", {"choices": MODES, "value": opts["mode"]}, "mode", ""),
            ("slice_axis", "spin", {"min": -3, "max": 2, "value": int(opts["slice_axis"])},
             "slice axis", "spatial axis to cut slices along (-1 = last)"),
            ("ignore_index", "spin", {"min": -1, "max": 65535, "value": ignore},
             "ignore label", IGNORE_TIP),
            ("heatmaps", "checks", {"choices": HEATMAPS, "value": list(opts["heatmaps"]),
                                    "tooltips": HEATMAP_TIPS}, "heatmaps", ""),
            ("min_interior", "spin", {"min": 0, "max": 10**6, "value": int(opts["min_interior"])},
             "min interior", "segments with fewer interior pixels are grey and left out of the table"),
            ("hide_background", "check", {"text": "hide class 0 (background)",
                                          "value": bool(opts["hide_background"])}, None, ""),
            ("class_names", "line", {"value": opts["class_names"],
                                     "placeholder": "from the data, else class 0, class 1, ..."},
             "class names", "comma-separated names of classes 0, 1, ... (used where the data names "
             "none: a NIfTI sidecar <file>.json / <file>.tsv or the sample's own names)"),
        ])

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run_or_cancel)
        self.progress, self.status = progress_widgets()

        self.legend = legend_for(napari_viewer)  # on the canvas, visible whatever dock is shown
        self.model = DataFrameModel()
        self.table_view = table_view(self.model, lambda row: self.select_row(row), sortable=True)
        self.save_button = QPushButton("Save CSV")
        self.save_button.clicked.connect(lambda: self.save_csv())
        self.save_button.setEnabled(False)
        # The segment table is refilled once per change, in an event-loop pass of its own: a run
        # changes the segments' data and features several times, and the main thread must not
        # stand still for all of it at once (issue 15: gaps <= 100 ms while results are shown).
        self._table_stale = False
        self._table_timer = self._zero_timer(self.flush_table)
        self._finish_timer = self._zero_timer(self._finish_display)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table_view, stretch=1)
        layout.addWidget(self.save_button)

        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.reordered):
            ev.connect(self._refresh_choices)
        self._refresh_choices()
        self.form.mode.changed.connect(self._mode_changed)
        self._mode_changed(self.form.mode.value)
        self.form.probabilities.changed.connect(self._probs_changed)
        self.session.models_changed.connect(self._models_changed)
        self.session.case_opened.connect(self._case_opened)
        napari_viewer.mouse_drag_callbacks.append(self._on_canvas_click)

    # -- layer choices ---------------------------------------------------------------------------
    def _refresh_choices(self, event=None):
        from napari.layers import Image, Labels

        layers = [la for la in self.viewer.layers if not la.metadata.get("metaseg", {}).get("result")]
        images = [la for la in layers if isinstance(la, Image)]
        probs = [la for la in images if la.metadata.get("metaseg", {}).get("kind") == "probabilities"]
        plain = [la for la in images if la not in probs]
        looks_like = [la for la in plain if _has_class_axis(la)]  # never a plain image
        labels = [la for la in layers if isinstance(la, Labels)]
        form = self.form
        set_choices(form.image, [NONE] + [la.name for la in images], prefer=[la.name for la in plain[:1]])
        set_choices(form.probabilities, [la.name for la in probs + looks_like],
                    prefer=[la.name for la in probs[:1]])
        set_choices(form.ground_truth, [NONE] + [la.name for la in labels],
                    prefer=[la.name for la in labels[:1]])
        new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if (isinstance(new, Labels) and form.ground_truth.value == NONE
                and new.name in form.ground_truth.choices):
            form.ground_truth.value = new.name  # labels opened after the dock: the case's GT
        self._probs_changed()  # set_choices() emits no change

    def _mode_changed(self, mode):
        self.form.slice_axis.enabled = mode == "slices"
        if mode != "2d":
            self._volume_mode = None  # the user chose: nothing to restore

    def _spatial_ndim(self):
        """Spatial dimensions of the chosen probability layer (None when not usable)."""
        layer = self._layer(self.form.probabilities)
        if layer is None:
            return None
        try:
            probability_class_axis(layer)
        except ValueError:
            return None
        return layer.ndim - 1

    def _probs_changed(self, _text=None):
        """Offer only the modes that apply: a 2D probability layer has no "3d" or "slices".

        A volume mode shown before is remembered (and kept in the saved options) and comes back
        when a volume is chosen again."""
        is_2d = self._spatial_ndim() == 2
        layer = self._layer(self.form.probabilities)
        if (not is_2d and layer is not None and "affine" in layer.metadata
                and not self.session.view_arranged):
            # a NIfTI volume: axial slices on the slider, radiological orientation (once per viewer)
            axial_view(self.viewer)
            self.session.view_arranged = True
        mode = self.form.mode
        items = mode.native.model()  # magicgui has no per-choice enabling: the QComboBox's items
        for i, name in enumerate(MODES):
            if name in ("3d", "slices"):
                items.item(i).setEnabled(not is_2d)
        current = mode.value
        if is_2d and current in ("3d", "slices"):
            mode.value = "2d"
            self._volume_mode = current
        elif not is_2d and self._volume_mode is not None and current == "2d":
            mode.value = self._volume_mode

    def _layer(self, combo):
        name = combo.value
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def options(self):
        """The panel's options as a dict (what is persisted between sessions)."""
        form = self.form
        ignore = form.ignore_index.value
        return {
            "mode": self._volume_mode or form.mode.value,
            "slice_axis": form.slice_axis.value,
            "ignore_index": None if ignore < 0 else ignore,
            "heatmaps": form.heatmaps.value,
            "min_interior": form.min_interior.value,
            "hide_background": form.hide_background.value,
            "class_names": form.class_names.value.strip(),
        }

    def class_names(self, probs_layer=None):
        """Class names: the probability layer's (from the data), else the panel's setting."""
        layer = probs_layer if probs_layer is not None else self._layer(self.form.probabilities)
        names = (layer.metadata.get("metaseg", {}).get("class_names") if layer is not None else None) or []
        if not names and self.form.class_names.value.strip():
            names = [n.strip() for n in self.form.class_names.value.split(",")]
        return list(names)

    # -- running -----------------------------------------------------------------------------------
    def run_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.run()

    def wait_for_engine(self, warm_up):
        """Runs asked for while the engine is being prepared start when it is ready."""
        self._warm_up = warm_up
        if not warm_up.is_ready:
            self.status.setText(f"{WARM_UP_STAGE} …")
            warm_up.ready.connect(self._engine_ready)

    def _engine_ready(self):
        seconds = getattr(self._warm_up, "seconds", None) or 0.0
        if self.status.text().startswith(WARM_UP_STAGE):
            self.status.setText(f"engine ready ({seconds:.1f} s)")
        if self._run_requested:
            self._run_requested = False
            self.run()

    def run(self):
        """Start the analysis in a worker; returns the worker (None when the inputs are wrong or
        the engine is still being prepared: the run then starts when it is ready)."""
        import numba

        from .. import workflows

        warm_up = getattr(self, "_warm_up", None)
        if warm_up is not None and not warm_up.is_ready:
            self._run_requested = True
            self.status.setText(f"{WARM_UP_STAGE}; the analysis starts when it is ready …")
            return None

        probs_layer = self._layer(self.form.probabilities)
        if probs_layer is None:
            self.fail("choose a probability layer first")
            return None
        try:
            class_axis = probability_class_axis(probs_layer)
        except ValueError as exc:
            self.fail(str(exc))
            return None
        gt_layer = self._layer(self.form.ground_truth)
        problem = _gt_mismatch(probs_layer, class_axis, gt_layer)
        if problem:
            self.fail(problem)
            return None
        opts = self.options()
        update_settings("analysis", opts)
        self._class_names = self.class_names(probs_layer)
        self._case_id = case_id_of(probs_layer)
        gt_data = None if gt_layer is None else np.asarray(gt_layer.data)
        self._inputs = {"probabilities": probs_layer.name, "class_axis": class_axis,
                        "ground_truth": None if gt_layer is None else gt_layer.name,
                        "gt_fingerprint": None if gt_data is None else fingerprint(gt_data)}
        ndim = probs_layer.ndim
        spatial = [i for i in range(ndim) if i != class_axis % ndim]
        self._out_scale = tuple(np.asarray(probs_layer.scale)[spatial].tolist())
        self._out_translate = tuple(np.asarray(probs_layer.translate)[spatial].tolist())
        self._out_opts = opts
        mode = opts["mode"]
        if len(spatial) == 2 and mode in ("3d", "slices"):
            mode = "2d"  # a 2D image: the remembered volume option does not apply
        # No napari activity-dock progress (``_progress``): measured, its bar costs the main
        # thread more than this short computation; the panel's own bar shows the stages.
        # Leave one core to the event loop and the canvas (software OpenGL renders on the CPU too).
        return self.start_worker(
            workflows.analyse, np.asarray(probs_layer.data),
            None if gt_layer is None else np.asarray(gt_layer.data),
            class_axis=class_axis, mode=mode, slice_axis=opts["slice_axis"],
            ignore_index=opts["ignore_index"], heatmaps=opts["heatmaps"],
            models=self.session.models if self.session.has_models else None,
            threads=max(1, numba.config.NUMBA_NUM_THREADS - 1),
            post=_colormap_for((0,) if opts["hide_background"] else (), opts["min_interior"]),
            button=self.run_button, status="running ...")

    def _on_errored(self, exc):
        self.fail(f"analysis failed: {exc}")

    def _on_aborted(self):
        self.status.setText("cancelled; nothing was changed")
        self.progress.setValue(0)

    def _on_returned(self, result):
        """Show a run's results: the layers now; the table, the bar, the status and the signals in
        a later event-loop pass (:meth:`_finish_display`), so the viewer repaints in between."""
        analysis, cmap = result
        table = analysis.table
        opts = self._out_opts
        hide = (0,) if opts["hide_background"] else ()
        layers = add_results(self.viewer, analysis.maps, analysis.seg, table, scale=self._out_scale,
                             translate=self._out_translate, hide_classes=hide,
                             min_interior=opts["min_interior"], colormap=cmap,
                             class_names=self._class_names)
        # how these segments were made: the meta panel trains with it, models are checked against it
        layers[-1].metadata["metaseg"].update(segmentation=analysis.segmentation, case_id=self._case_id,
                                              inputs=self._inputs)
        note_texture_mapping(cmap, layers[-1].data.dtype)
        self.set_segments_layer(layers[-1])
        self._shown_segments = len(table)
        self._finish_timer.start()

    def _finish_display(self):
        """The second half of showing a run: table, progress, status, ``case_changed``, ``finished``
        (a setValue on the bar repaints the window, GL canvas included, at once)."""
        self.flush_table()
        self.progress.setValue(100)
        self.status.setText(f"{self._shown_segments} segments")
        self.session.case_changed.emit()
        self.finished.emit(self.seg_layer)

    # -- results -----------------------------------------------------------------------------------
    def set_segments_layer(self, layer):
        if self.seg_layer is not None:
            for ev, cb in ((self.seg_layer.events.features, self._features_changed),
                           (self.seg_layer.events.selected_label, self._label_selected)):
                try:
                    ev.disconnect(cb)
                except (TypeError, ValueError, RuntimeError):
                    pass
        self.seg_layer = layer
        layer.events.features.connect(self._features_changed)
        layer.events.selected_label.connect(self._label_selected)
        self._features_changed()

    def shown_table(self):
        """The segment table exactly as shown (columns and row order)."""
        self.flush_table()
        return self.model.frame

    def _zero_timer(self, slot):
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(0)
        timer.timeout.connect(slot)
        return timer

    def _features_changed(self, event=None):
        """The segments' table changed: refill the table view once, in the next event-loop pass
        (however many changes a run makes), or at once when the table is read."""
        if self.seg_layer is None:
            return
        self._table_stale = True
        self._table_timer.start()

    def flush_table(self):
        """Refill the table view now if the segments changed since it was filled."""
        self._table_timer.stop()
        layer = self.seg_layer
        if not self._table_stale or layer is None:
            return
        self._table_stale = False
        self.model.set_frame(shown_segments(layer))
        self.table_view.horizontalHeader().setSortIndicatorShown(False)
        if len(self.model.frame) <= 2000:  # measuring every row's text costs ~0.1 s per 4000 rows
            self.table_view.resizeColumnsToContents()
        self.save_button.setEnabled(True)

    def _case_opened(self, info):
        """A case opened elsewhere (the triage list) arrives with its quality overlay."""
        if self.worker is not None:
            return
        self._refresh_choices()
        form = self.form
        if info["probabilities"] not in form.probabilities.choices:
            return
        form.probabilities.value = info["probabilities"]
        form.ground_truth.value = info.get("ground_truth") or NONE
        if info.get("mode") in MODES and not (self._spatial_ndim() == 2 and info["mode"] in ("3d", "slices")):
            form.mode.value = info["mode"]
        form.slice_axis.value = int(info.get("slice_axis", -1))
        self.run()

    def _models_changed(self):
        """A model was loaded or trained: predict and recolour the current segments."""
        layer = self.seg_layer
        if layer is None or layer not in self.viewer.layers or not self.session.has_models:
            return
        from ..core.meta_model import predict_table
        from ..workflows import check_segmentation

        seg = layer.metadata.get("metaseg", {}).get("segmentation") or {}
        try:
            check_segmentation(self.session.models.segmentation, mode=seg.get("mode"),
                               slice_axis=seg.get("slice_axis"))
            predicted = predict_table(layer.features, self.session.classifier, self.session.regressor)
        except ValueError as exc:
            self.fail(f"the model does not fit these segments: {exc}")
            return
        recolor_with(layer, predicted)
        self._features_changed()

    def select_row(self, row):
        """Select the segment of table row ``row`` and centre the camera on it."""
        self.flush_table()
        seg_id = self._select_label_of_row(self.seg_layer, row)
        if seg_id is not None:
            self.centre_on(seg_id)

    def centre_on(self, seg_id):
        """Move the camera (and the slider of a non-displayed axis) to segment ``seg_id``."""
        centre_on_mask(self.viewer, self.seg_layer, np.asarray(self.seg_layer.data) == seg_id)

    def _label_selected(self, event=None):
        if self._table_stale:  # a run is being shown (a new colormap re-emits the selected label):
            return  # the table is refilled in the next pass, which clears its selection anyway
        self._select_row_of_label(self.seg_layer)

    def _on_canvas_click(self, viewer, event):
        """A click (not a drag) on a segment selects it and its table row."""
        layer = self.seg_layer
        if layer is None or layer not in viewer.layers or not layer.visible:
            return
        yield
        dragged = False
        while event.type == "mouse_move":
            dragged = True  # a drag pans the view; not a selection
            yield
        if dragged:
            return
        value = layer.get_value(event.position, view_direction=event.view_direction,
                                dims_displayed=event.dims_displayed, world=True)
        if value is not None and int(value) > 0:
            layer.selected_label = int(value)

    def save_csv(self, path=None):
        """Write the table exactly as shown (columns, rows, order) to ``path`` (asks when None)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save segment table", "segments.csv",
                                                  "CSV (*.csv)")
            if not path:
                return None
        from ..core.csv_safe import write_csv

        self.flush_table()
        write_csv(self.model.frame, path)  # atomic (a full disk leaves the previous file); no formulas
        self.status.setText(f"saved {len(self.model.frame)} rows to {path}")
        return path

    def showEvent(self, event):
        self.flush_table()
        super().showEvent(event)

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        self._table_timer.stop()
        self._finish_timer.stop()
        super().closeEvent(event)

