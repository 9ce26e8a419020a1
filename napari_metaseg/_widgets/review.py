"""Review queue: walk through the ranked label-error proposals and decide on each one.

Thin: proposals come from :func:`napari_metaseg.workflows.find_in_case` (run in a
``thread_worker``; the same job as ``napari-metaseg label-errors``), every decision goes at
once to the sidecar file of :class:`napari_metaseg.io.review.ReviewStore` (atomic write, lock
file). Layers are touched only on the main thread. Keys (bound on the viewer while the panel is
open): ``J`` next, ``K`` previous, ``Alt-1`` label error, ``Alt-2`` not an error, ``Alt-3``
unsure (napari's own keys 1..7 switch the Labels tools, so the reviewer can fix the label in
place).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtCore import QEvent, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from .._layers import camera
from ._form import make_form, set_choices
from ._session import session_for
from ._table import DataFrameModel, table_view
from ._worker import WorkerPanelMixin, progress_widgets

NONE = "(none)"
#: The segmentation modes offered (those of ``names.MODES`` a volume can use), slice-wise first:
#: the review's default, as label errors are looked for slice by slice.
MODES = ("slices", "3d", "auto")
DECISION_TEXT = {"label_error": "Label error", "not_error": "Not an error", "unsure": "Unsure"}
KEYS = {"next": "J", "previous": "K", "label_error": "Alt-1", "not_error": "Alt-2", "unsure": "Alt-3"}
SHOWN = ["id", "kind", "label_class", "predicted_class", "score", "size", "slice", "decision"]
HIGHLIGHT = "review: proposal"
BOX = "review: box"


def sample_model_path():
    """The demo meta model for the brain sample (trained on subject sub-01), or None."""
    from .._sample_data import SAMPLE_DIR

    p = SAMPLE_DIR / "brain3d_meta_model.json.gz"
    return p if p.is_file() else None


def _case_name(layer_name):
    name = layer_name
    for word in (" softmax", " probabilities", "_softmax"):
        name = name.replace(word, "")
    return name.strip() or "current"


def _metrics_match_gt(seg, table, gt, ignore_index):
    """Whether ``table``'s IoU_adj = 0 flags are those of ``gt`` (the table was computed with it).

    IoU_adj = 0 exactly when no pixel of the segment has its class in the GT (ignored pixels
    aside), which a bincount checks in one pass.
    """
    if seg.shape != gt.shape or "iou_adj" not in table or "index" not in table:
        return False
    ids = table["index"].to_numpy(np.int64)
    if ids.size == 0 or ids.max() > seg.max():
        return False
    cls = np.zeros(int(seg.max()) + 1, np.int64)
    cls[ids] = table["class"].to_numpy(np.int64)
    hit = (gt == cls[seg])
    if ignore_index is not None:
        hit &= gt != ignore_index
    overlap = np.bincount(seg.ravel(), weights=hit.ravel(), minlength=cls.size)[ids]
    return bool(np.array_equal(overlap == 0, table["iou_adj"].to_numpy() == 0))


#: Default of the panel's "min size": proposals of fewer voxels are left out.
DEFAULT_MIN_SIZE = 10


class ReviewWidget(WorkerPanelMixin, QWidget):
    """Dock widget: the ranked label-error proposals of one case, with decisions saved at once."""

    #: emitted when a queue is shown (after finding or restoring)
    ready = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker = None
        self.store = None
        self.classifier = None  # the session's models are used (see current_classifier)
        self.current = -1
        self._seg = self._gt_objects = None
        self._gt_layer = None
        self._bound = {}
        self._read_only_reason = ""
        self._owns_highlight = False
        self.ask = self._ask  # replaced in tests

        self.form = make_form([
            ("probabilities", "combo", {"choices": ()}, "probabilities", ""),
            ("ground_truth", "combo", {"choices": ()}, "ground truth", ""),
            ("segments", "combo", {"choices": ()}, "segments",
             "reuse the analysis panel's segments and metrics when they were computed against this "
             "ground truth (checked); else computed here"),
            ("mode", "combo", {"choices": MODES}, "mode", ""),
            ("slice_axis", "spin", {"min": -3, "max": 2, "value": -1}, "slice axis", ""),
            ("ignore_index", "spin", {"min": -1, "max": 65535, "value": 255}, "ignore label",
             "ground-truth label left out of the metrics; -1: none"),
            ("min_size", "spin", {"min": 1, "max": 10_000_000, "value": DEFAULT_MIN_SIZE},
             "min size (voxels)",
             "leave out proposals smaller than this (one-voxel boundary disagreements are rarely what a "
             "review is for)"),
            ("allow_training_cases", "check", {"text": "allow cases the model was trained on"}, None, ""),
        ])

        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.sample_model_button = QPushButton("Load sample model")
        self.sample_model_button.setToolTip("the demo meta model for the brain sample, trained on "
                                            "another subject (sub-01)")
        self.sample_model_button.clicked.connect(lambda: self.load_sample_model())
        self.sample_model_button.setVisible(sample_model_path() is not None)
        self.allow_warning = QLabel("warning: on its own training cases the model is optimistic; "
                                    "proposals there are not a fair review")
        self.allow_warning.setStyleSheet("color: #e0a030")
        self.allow_warning.setWordWrap(True)
        self.allow_warning.setVisible(False)
        self.form.allow_training_cases.changed.connect(lambda on: self.allow_warning.setVisible(bool(on)))

        self.find_button = QPushButton("Find label errors")
        self.find_button.clicked.connect(self.find_or_cancel)
        self.progress, self.status = progress_widgets()

        self.model = DataFrameModel()
        self.table_view = table_view(self.model, lambda row: self.go_to(row), row_numbers=False)

        self.prev_button = QPushButton(f"Previous ({KEYS['previous']})")
        self.next_button = QPushButton(f"Next ({KEYS['next']})")
        self.prev_button.clicked.connect(lambda: self.previous())
        self.next_button.clicked.connect(lambda: self.next())
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        self.decision_buttons = {}
        dec = QHBoxLayout()
        for d, text in DECISION_TEXT.items():
            b = QPushButton(f"{text} ({KEYS[d]})")
            b.clicked.connect(lambda _=False, d=d: self.decide(d))
            self.decision_buttons[d] = b
            dec.addWidget(b)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("note (saved with the decision)")
        self.advance_box = QCheckBox("go to the next proposal after a decision")
        self.advance_box.setChecked(True)
        self.csv_button = QPushButton("Export CSV")
        self.json_button = QPushButton("Export JSON")
        self.write_button = QPushButton("Save corrected GT...")
        self.csv_button.clicked.connect(lambda: self.export("csv"))
        self.json_button.clicked.connect(lambda: self.export("json"))
        self.write_button.clicked.connect(lambda: self.save_corrected_gt())
        exp = QHBoxLayout()
        exp.addWidget(self.csv_button)
        exp.addWidget(self.json_button)
        exp.addWidget(self.write_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addWidget(self.sample_model_button)
        layout.addWidget(self.form.native)
        layout.addWidget(self.allow_warning)
        layout.addWidget(self.find_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table_view, stretch=1)
        layout.addLayout(nav)
        layout.addLayout(dec)
        layout.addWidget(self.note_edit)
        layout.addWidget(self.advance_box)
        layout.addLayout(exp)

        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.reordered):
            ev.connect(self._refresh_choices)
        self._refresh_choices()
        self.session.models_changed.connect(self._show_model)
        self._show_model()
        self._bind_keys()
        self._update_buttons()

    # -- choices and model ---------------------------------------------------------------------
    def _refresh_choices(self, event=None):
        from napari.layers import Labels

        from .._layers import input_layers

        probs, gts = input_layers(self.viewer)
        segs = [la for la in self.viewer.layers
                if isinstance(la, Labels) and la.metadata.get("metaseg", {}).get("kind") == "segments"]
        form = self.form
        set_choices(form.probabilities, [la.name for la in probs])
        set_choices(form.ground_truth, [la.name for la in gts])
        set_choices(form.segments, [NONE] + [la.name for la in segs])
        if form.segments.value == NONE and segs:
            form.segments.value = segs[-1].name

    def _layer(self, combo):
        name = combo.value
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def current_classifier(self):
        """The viewer's meta classifier (shared with the other panels)."""
        return self.classifier if self.classifier is not None else self.session.classifier

    def current_segmentation(self):
        """How the classifier's training segments were made (None: unknown)."""
        return self.session.models.segmentation

    @property
    def model_note(self):
        path = self.session.model_path
        return f"{Path(path).name}" if path else ("trained in this viewer" if self.session.has_models else "")

    def _show_model(self):
        clf = self.current_classifier()
        if clf is None:
            self.model_label.setText("model: none. Load or train a meta classifier in the MetaSeg "
                                     "meta model panel (or load the sample model)")
            return
        where = self.model_note
        cases = ", ".join(map(str, clf.training_cases_[:4])) or "?"
        self.model_label.setText(f"model: {clf.kind} classifier from {where}; trained on {cases}")

    def load_sample_model(self):
        """Load the brain sample's demo model into the viewer's session (only on the user's
        click): every panel then uses it (the meta panel can refit it, the analysis panel
        colours by it)."""
        path = sample_model_path()
        if path is None:
            return self._error("the sample model is not installed (sample_data/brain3d_meta_model.json.gz)")
        models = workflows.load_model(path)
        self.session.set(models)
        self._show_model()
        return models.classifier

    # -- keys --------------------------------------------------------------------------------------
    def _bind_keys(self):
        # napari's keymap wants named callables taking the viewer
        actions = {"next": self._key_next, "previous": self._key_previous,
                   "label_error": self._key_label_error, "not_error": self._key_not_error,
                   "unsure": self._key_unsure}
        for what, key in KEYS.items():
            self.viewer.bind_key(key, actions[what], overwrite=True)
            self._bound[key] = actions[what]

    def _unbind_keys(self):
        for key, func in self._bound.items():
            if self.viewer.keymap.get(_keymap_key(key)) is func:
                self.viewer.bind_key(key, None)
        self._bound = {}

    def _key_next(self, viewer=None):
        self.next()

    def _key_previous(self, viewer=None):
        self.previous()

    def _key_label_error(self, viewer=None):
        self.decide("label_error")

    def _key_not_error(self, viewer=None):
        self.decide("not_error")

    def _key_unsure(self, viewer=None):
        self.decide("unsure")

    # -- messages ----------------------------------------------------------------------------------
    def _error(self, message):
        self.fail(f"review: {message}")

    def _ask(self, title, text):
        return QMessageBox.question(self, title, text) == QMessageBox.Yes

    # -- finding / restoring -----------------------------------------------------------------
    def find_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.find()

    def _open_store(self, probs_layer, gt_layer, probs_shape):
        from ..io.review import (
            ReviewFileError,
            ReviewLockedError,
            ReviewStore,
            StaleLockError,
            case_identity,
            sidecar_path,
        )

        gt = np.asarray(gt_layer.data)
        meta = gt_layer.metadata.setdefault("metaseg", {})
        source = gt_layer.metadata.get("source")
        cached = meta.get("review_case")
        # An array without a file: hash it once, so in-place fixes do not change its identity.
        if cached and cached.get("gt_shape") == list(gt.shape) and not source:
            case = dict(cached)
        else:
            case = case_identity(gt, probs_shape=probs_shape, gt_path=source,
                                 probs_path=probs_layer.metadata.get("source"),
                                 case_id=_case_name(probs_layer.name))
            meta["review_case"] = case
        path = sidecar_path(case)
        try:
            try:
                return ReviewStore(path, case)
            except StaleLockError as exc:
                if not self.ask("Stale review lock", f"{exc}\n\nTake the lock over?"):
                    raise
                return ReviewStore(path, case, take_over_stale=True)
        except ReviewLockedError as exc:
            try:
                store = ReviewStore(path, case, read_only=True)
            except ReviewFileError as exc2:
                self._error(str(exc2))
                return None
            self._error(f"{exc}. Showing it read-only")
            self._read_only_reason = str(exc)
            return store
        except ReviewFileError as exc:
            self._error(str(exc))
            return None
        except OSError as exc:
            self._error(f"cannot use the review file {path}: {exc}")
            return None

    def find(self):
        """Open the case's review (restored from its sidecar, or found anew in a worker)."""

        from .analysis import probability_class_axis

        probs_layer, gt_layer = self._layer(self.form.probabilities), self._layer(self.form.ground_truth)
        if probs_layer is None or gt_layer is None:
            return self._error("choose a probability layer and a ground-truth layer")
        try:
            axis = probability_class_axis(probs_layer)
        except ValueError as exc:
            return self._error(str(exc))
        probs = np.moveaxis(np.asarray(probs_layer.data), axis, -1)
        gt = np.asarray(gt_layer.data)
        if probs.shape[:-1] != gt.shape:
            return self._error(f"the ground truth has shape {gt.shape}, the probabilities "
                               f"{probs.shape[:-1]} (+ {probs.shape[-1]} classes): not the same case")
        self.close_review()
        store = self._open_store(probs_layer, gt_layer, probs.shape)
        if store is None:
            return None
        restore = bool(store.proposals)
        clf = self.current_classifier()
        if not restore:
            if store.read_only:
                store.close()
                return self._error("the review is locked and has no saved proposals yet")
            if clf is None:
                store.close()
                return self._error("no meta classifier: load or train one in the MetaSeg meta model "
                                   "panel, or press 'Load sample model' for the brain sample")
        ignore = self.form.ignore_index.value
        settings = dict(store.settings) if restore else {
            "mode": self.form.mode.value if gt.ndim == 3 else "2d",
            "slice_axis": self.form.slice_axis.value,
            "ignore_index": None if ignore < 0 else ignore,
        }
        seg = table = None
        seg_layer = self._layer(self.form.segments)
        if seg_layer is not None and seg_layer.features is not None and "iou_adj" in seg_layer.features:
            s, t = np.asarray(seg_layer.data), seg_layer.features
            same_mode = ("slice" in t.columns) == (settings["mode"] == "slices")
            if same_mode and _metrics_match_gt(s, t, gt, settings["ignore_index"]):
                seg, table = s, t
        try:
            if not restore:  # the model must have been trained on segments made this way
                workflows.check_segmentation(self.current_segmentation(), mode=settings["mode"],
                                             slice_axis=settings["slice_axis"])
            workflows.warm_up(gt.dtype, probs.shape[-1], gt.ndim, settings["mode"], settings["slice_axis"])
        except ValueError as exc:
            store.close()
            return self._error(str(exc))
        self.store, self._gt_layer, self._settings = store, gt_layer, settings
        self._reused = table is not None
        self._t0 = time.monotonic()
        worker = self.start_worker(
            workflows.find_in_case, probs, gt, seg=seg, table=None if restore else table, classifier=clf,
            case_id=store.case.get("case_id") or "current", mode=settings["mode"],
            slice_axis=settings["slice_axis"], ignore_index=settings["ignore_index"],
            allow_training_cases=self.form.allow_training_cases.value, restore_only=restore,
            min_size=self.form.min_size.value, button=self.find_button,
            status="restoring the review ..." if restore else "finding label errors ...")
        self._update_buttons()
        return worker

    def _drop_store(self):
        if self.store is not None and not self.store.proposals:
            self.store.close()  # nothing was written: the case is as before
            self.store = None

    def _on_errored(self, exc):
        self._drop_store()
        self._error(f"finding label errors failed: {exc}")

    def _on_aborted(self):
        self._drop_store()
        self.status.setText("cancelled; nothing was changed")
        self.progress.setValue(0)

    def _on_returned(self, result):
        found, seg, gt_objects = result
        store = self.store
        self._seg, self._gt_objects = seg, gt_objects
        elapsed = time.monotonic() - self._t0
        if found is not None:
            clf = self.current_classifier()
            store.set_proposals(found, settings={
                **self._settings, "model": self.model_note or self.session.model_path,
                "model_training_cases": list(map(str, clf.training_cases_)),
                "allow_training_cases": self.form.allow_training_cases.value,
                "min_size": self.form.min_size.value,
                "reused_segments_layer": self._reused})
            note = f"{len(found)} proposals in {elapsed:.1f} s"
        else:
            n = sum(1 for p in store.proposals if p["decision"])
            note = f"restored {len(store.proposals)} proposals and {n} decisions"
        ro = f" READ-ONLY: {self._read_only_reason}" if store.read_only else ""
        self.status.setText(f"{note}; saved in {store.path}{ro}")
        self.progress.setValue(100)
        self._show_table()
        first = next((p["id"] for p in store.proposals if not p["decision"]), 0)
        if store.proposals:
            self.go_to(first)
        self._update_buttons()
        self.ready.emit()

    # -- the queue ---------------------------------------------------------------------------------
    def queue(self):
        """The proposals and decisions as shown (a DataFrame)."""
        return self.model.frame

    def _show_table(self):
        t = self.store.table()
        cols = [c for c in SHOWN if c in t.columns]
        shown = t[cols].copy()
        shown["decision"] = shown["decision"].map(lambda d: DECISION_TEXT.get(d, "")).astype(object)
        # missing values (a "region" proposal has no segment id; a 3D one no slice) show empty
        shown = shown.astype(object).where(shown.notna(), "")
        # what the label says there and what the prediction says
        self.model.set_frame(shown.rename(columns={"label_class": "label", "predicted_class": "predicted"}))
        self.table_view.resizeColumnsToContents()

    def _update_row(self, i):
        rec = self.store.proposals[i]
        frame = self.model.frame
        col = list(frame.columns).index("decision")
        frame.iat[i, col] = DECISION_TEXT.get(rec["decision"], "")
        self.model._values[i, col] = frame.iat[i, col]
        idx = self.model.index(i, col)
        self.model.dataChanged.emit(idx, idx)
        self.table_view.resizeColumnToContents(col)

    def _update_buttons(self):
        have = self.store is not None and bool(self.store.proposals) and self.worker is None
        writable = have and not self.store.read_only
        for b in (self.prev_button, self.next_button, self.csv_button, self.json_button):
            b.setEnabled(have)
        for b in (*self.decision_buttons.values(), self.write_button):
            b.setEnabled(writable)

    def next(self):
        if self.store is not None and self.store.proposals:
            self.go_to(min(self.current + 1, len(self.store.proposals) - 1))

    def previous(self):
        if self.store is not None and self.store.proposals:
            self.go_to(max(self.current - 1, 0))

    def go_to(self, i):
        """Show proposal ``i`` (rank): slider to its slice, camera to it, highlight its voxels."""
        if self.store is None or not 0 <= i < len(self.store.proposals):
            return
        self.current = i
        self.table_view.selectRow(i)
        self.table_view.scrollTo(self.model.index(i, 0))
        rec = self.store.proposals[i]
        self.note_edit.setText(rec.get("note") or "")
        mask = self._voxels(rec)
        self._show_plane()
        self._highlight(rec, mask)
        self._centre(rec, mask)
        self._ready_to_fix(rec)

    def _show_plane(self):
        """Slice-wise proposals are shown in their plane: the slice axis on the slider."""
        settings = getattr(self, "_settings", None) or {}
        layer = self._gt_layer
        if layer is None or settings.get("mode") != "slices" or layer.ndim != 3:
            return
        offset = self.viewer.dims.ndim - layer.ndim
        axis = offset + int(settings.get("slice_axis", -1)) % 3
        order = list(self.viewer.dims.order)
        if axis in order[-2:]:  # the slice axis is displayed: put it on a slider, keep the rest
            self.viewer.dims.order = tuple([axis] + [a for a in order if a != axis])

    def _ready_to_fix(self, rec):
        """The ground truth visible, in paint mode, with the label the prediction proposes."""
        layer = self._gt_layer
        if layer is None:
            return
        label = rec.get("predicted_class")
        if label is None:
            label = rec.get("class")
        layer.visible = True
        if label is not None:
            layer.selected_label = int(label)
        layer.mode = "paint"

    def _voxels(self, rec):
        """The proposal's voxels (bool mask of the GT's shape), or None when unknown.

        From the stored voxels (or runs, older files) when there are any (any kind); else from
        the segment / GT-object
        id of the kinds that have one. Ids may be missing (None): never assumed.
        """
        from ..io.review import box_bits_to_mask, runs_to_mask

        shape = None
        for lab in (self._seg, self._gt_objects):
            if lab is not None:
                shape = lab.shape
                break
        if shape is None and self._gt_layer is not None:
            shape = self._gt_layer.data.shape
        code, runs = rec.get("voxels"), rec.get("runs")
        if code is not None and shape is not None:
            return box_bits_to_mask(code, shape)
        if runs is not None and shape is not None:
            return runs_to_mask(runs, shape)
        bbox = rec.get("bbox")
        if bbox is None:
            return None
        n = len(bbox) // 2
        sl = tuple(slice(bbox[k], bbox[k + n]) for k in range(n))
        kind, seg_id, obj_id = rec.get("kind"), rec.get("index"), rec.get("gt_object")
        if kind == "segment" and seg_id is not None and self._seg is not None:
            ids, lab = seg_id, self._seg
        elif kind == "gt_object" and obj_id is not None and self._gt_objects is not None:
            ids, lab = obj_id, self._gt_objects
        else:
            return None
        mask = np.zeros(lab.shape, bool)
        mask[sl] = lab[sl] == ids
        return mask

    def _proposal_point(self, rec, mask):
        """A voxel of the proposal nearest its centroid (the right slice even for curved shapes).

        Without voxels: the centroid, else the centre of the bounding box, else None.
        """
        c = rec.get("centroid")
        if c is None and rec.get("bbox") is not None:
            bbox = np.asarray(rec["bbox"], float)
            n = len(bbox) // 2
            c = (bbox[:n] + bbox[n:] - 1) / 2
        if mask is None or not mask.any():
            return None if c is None else np.asarray(c, float), None if c is None else np.asarray(c, float)
        coords = np.argwhere(mask)
        centroid = coords.mean(axis=0) if c is None else np.asarray(c, float)
        point = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))].astype(float)
        return point, centroid

    def _centre(self, rec, mask):
        layer = self._gt_layer
        point, centroid = self._proposal_point(rec, mask)
        if point is None or layer is None:
            return
        world = np.asarray(layer.data_to_world(point))
        world_c = np.asarray(layer.data_to_world(centroid))
        offset = self.viewer.dims.ndim - layer.ndim
        displayed = self.viewer.dims.displayed
        for ax in range(layer.ndim):
            if ax + offset not in displayed:
                self.viewer.dims.set_point(ax + offset, world[ax])
        camera(self.viewer).center = tuple(world_c[ax - offset] if ax >= offset else 0.0
                                           for ax in displayed)

    def _highlight(self, rec, mask):
        from napari.utils.colormaps import DirectLabelColormap

        gt_layer = self._gt_layer
        if gt_layer is None:
            return
        common = {"scale": gt_layer.scale, "translate": gt_layer.translate,
                  "metadata": {"metaseg": {"kind": "review", "result": True}}}
        units = getattr(gt_layer, "units", None)
        if units is not None:
            common["units"] = units
        self._owns_highlight = True
        data = np.zeros(gt_layer.data.shape, np.uint8)
        if mask is not None:
            data[mask] = 1
        # Measured: replacing the data of the existing layer left the canvas showing the first
        # proposal (napari 0.9.2, Xvfb); a fresh layer per proposal is drawn right.
        for name in (HIGHLIGHT, BOX):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0),
                                               1: (1.0, 0.1, 0.9, 1.0)})
        self.viewer.add_labels(data, name=HIGHLIGHT, opacity=0.8, colormap=cmap, **common)
        bbox = rec.get("bbox")
        if bbox is None:
            return
        n = len(bbox) // 2
        lo = np.asarray(bbox[:n], float) - 0.5
        hi = np.asarray(bbox[n:], float) - 0.5
        point, _ = self._proposal_point(rec, mask)
        offset = self.viewer.dims.ndim - gt_layer.ndim
        shown = [ax - offset for ax in self.viewer.dims.displayed if ax >= offset][-2:]
        if len(shown) != 2:
            return
        a, b = shown
        pad = 2.0
        corners = []
        for ya, yb in ((lo[a] - pad, lo[b] - pad), (lo[a] - pad, hi[b] + pad),
                       (hi[a] + pad, hi[b] + pad), (hi[a] + pad, lo[b] - pad)):
            v = point.copy()
            v[a], v[b] = ya, yb
            corners.append(v)
        box = np.asarray(corners)
        self.viewer.add_shapes([box], shape_type="rectangle", name=BOX, edge_color="yellow",
                               face_color="transparent", edge_width=0.6, **common)
        self.viewer.layers.selection.active = gt_layer  # ready to fix the label in place

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, decision):
        """Record ``decision`` on the current proposal (saved at once), then go to the next."""
        from ..io.review import ReviewLockedError

        if self.store is None or not 0 <= self.current < len(self.store.proposals):
            return None
        i = self.current
        try:
            rec = self.store.set_decision(i, decision, note=self.note_edit.text())
        except (ReviewLockedError, OSError, ValueError) as exc:
            self._error(f"decision not saved: {exc}")
            return None
        self._update_row(i)
        self.status.setText(f"#{i}: {DECISION_TEXT[decision]} (saved)")
        if self.advance_box.isChecked() and i + 1 < len(self.store.proposals):
            self.go_to(i + 1)
        return rec

    # -- export and write-back ---------------------------------------------------------------------
    def export(self, fmt, path=None):
        if self.store is None:
            return None
        if path is None:
            stem = self.store.path.name.replace(".metaseg-review.json", "")
            path, _ = QFileDialog.getSaveFileName(self, f"Export review as {fmt.upper()}",
                                                  f"{stem}_review.{fmt}", f"{fmt.upper()} (*.{fmt})")
            if not path:
                return None
        try:
            out = self.store.export_csv(path) if fmt == "csv" else self.store.export_json(path)
        except OSError as exc:
            return self._error(f"export failed: {exc}")
        self.status.setText(f"exported {len(self.store.proposals)} proposals to {out}")
        return out

    def default_corrected_path(self):
        from ..io.review import _stem, _writable_folder, reviews_dir

        layer = self._gt_layer
        source = layer.metadata.get("source") if layer is not None else None
        if source:
            name = Path(source).name
            suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix
            if suffix not in (".nii.gz", ".nii", ".npy", ".tif", ".tiff"):
                suffix = ".npy"
            folder = Path(source).parent if _writable_folder(source) else reviews_dir()
            return folder / f"{_stem(source)}_corrected{suffix}"
        return reviews_dir() / f"{_case_name(layer.name if layer else 'gt')}_corrected.npy"

    def save_corrected_gt(self, path=None, *, overwrite=False):
        """Write the (edited) GT layer as a new file; the original only after an explicit yes."""
        if self.store is None or self._gt_layer is None:
            return None
        layer = self._gt_layer
        source = layer.metadata.get("source")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save corrected ground truth",
                                                  str(self.default_corrected_path()),
                                                  "Labels (*.nii.gz *.nii *.npy *.tif)")
            if not path:
                return None
            overwrite = Path(path).exists()  # the dialog asked already
            if source and Path(path).resolve() == Path(source).resolve():
                overwrite = self.ask("Overwrite the original ground truth?",
                                     f"{path} is the original ground truth. Replace it with the "
                                     "corrected labels? (The review will then no longer open "
                                     "against it.)")
                if not overwrite:
                    return None
        try:
            out = self.store.write_corrected_gt(
                np.asarray(layer.data), path, source=source, affine=layer.metadata.get("affine"),
                original_affine=layer.metadata.get("original_affine"), overwrite=overwrite)
        except (FileExistsError, ValueError, OSError) as exc:
            return self._error(f"corrected GT not saved: {exc}")
        self.status.setText(f"corrected ground truth saved to {out}")
        return out

    # -- lifetime ------------------------------------------------------------------------------
    def close_review(self):
        """Release the sidecar's lock and remove the highlight layers."""
        if self.worker is not None:
            self.worker.quit()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._owns_highlight:  # another panel may have drawn them since
            for name in (HIGHLIGHT, BOX):
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
            self._owns_highlight = False
        self.current = -1
        self.model.set_frame(pd.DataFrame())
        self._update_buttons()

    def closeEvent(self, event):
        self.close_review()
        self._unbind_keys()
        super().closeEvent(event)

    def event(self, ev):
        # napari's remove_dock_widget detaches the panel (setParent(None)) without closing it
        if ev.type() == QEvent.ParentChange and self.parent() is None and self._bound:
            self.close_review()
            self._unbind_keys()
        return super().event(ev)


def _keymap_key(key):
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)
