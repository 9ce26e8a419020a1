"""Meta-model panel: train, evaluate, save, load, apply and refit the MetaSeg meta models.

Thin: training data come from the analysis panel's result (the ``segments`` layer's features)
or from a folder of cases (:mod:`napari_metaseg.io.cases`); the work is
:func:`napari_metaseg.workflows.train` / :func:`~napari_metaseg.workflows.refit` in a
``thread_worker``, files go through :func:`~napari_metaseg.workflows.save_model` /
:func:`~napari_metaseg.workflows.load_model`. The panel's state (models, dataset, evaluation) is
replaced only in the worker's ``returned`` handler, so a cancelled or failed run changes
nothing. Trained or loaded models are applied to data only by **Apply to current case**, which
hands them to the viewer's session (the analysis panel then recolours and uses them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from ..names import CLASSIFIER_KINDS, MODES, PREDICTION_COLUMNS, REGRESSOR_KINDS, SPLITS
from ..workflows import clean_table, dataset_path
from ._form import make_form, path_text
from ._session import session_for
from ._settings import section, update_settings
from ._table import DataFrameModel
from ._worker import WorkerPanelMixin, progress_widgets

READ_MODES = MODES
#: "auto" kinds and min interior -1 ("auto") take the segmentation mode's defaults (names.DEFAULT_TRAINING)
DEFAULTS = {"source": "current", "folder": "", "classifier": "auto", "regressor": "auto",
            "min_interior": -1, "n_splits": 10, "split": "auto", "read_mode": "auto",
            "last_model_path": ""}
PLOTS = ("ROC", "IoU_adj", "LASSO path")
SOURCES = (("current case", "current"), ("folder of cases", "folder"))
FOLDER_HINT = "<case>_softmax.* + <case>_gt.*, or case/softmax.* + case/gt.*"


#: the min interior choices: "auto" (-1) takes the segmentation mode's default
MIN_INTERIOR_CHOICES = (("auto", -1), *((str(n), n) for n in (0, 1, 2, 3, 5, 10, 20)))


def _min_interior_choice(opts):
    """The persisted min interior when it is one of the choices, else "auto"."""
    try:
        value = int(opts["min_interior"])
    except (TypeError, ValueError):
        return -1
    return value if value in {v for _, v in MIN_INTERIOR_CHOICES} else -1


def _or_none(value):
    """None for the form's "auto" (a kind of "auto", a min interior of -1), else the value."""
    return None if value in ("auto", -1) else value


# ================================================================================================
# The panel
# ================================================================================================
class MetaWidget(WorkerPanelMixin, QWidget):
    """Dock widget: train, evaluate, save/load, apply and refit meta models."""

    show_first_progress = True

    #: emitted with the TrainResult after a training or refit has been shown
    trained = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker = None
        self.model_info = ""
        self._auto_case_id = ""  # the case id the panel filled in (the user's own is kept)
        self.ask = self._ask  # replaced in tests
        opts = {**DEFAULTS, **section("meta")}

        self.form = make_form([
            ("source", "radio", {"choices": SOURCES, "value": opts["source"], "orientation": "vertical"},
             "train on", "current case: the analysis panel's result (segments layer with IoU_adj); "
             "folder of cases: pairs of softmax and ground-truth files matched by name"),
            ("case_id", "line", {"placeholder": "case id of the current case"}, "case id", ""),
            ("folder", "file", {"mode": "d", "value": str(opts["folder"]), "button": "Folder…",
                                "placeholder": FOLDER_HINT}, "folder", ""),
            ("read_mode", "combo", {"choices": READ_MODES, "value": opts["read_mode"]}, "segment folder as",
             "how the folder's cases are segmented (slices: along the last axis)"),
            # one setting a line: the tab fits the dock's width on a laptop screen (no sideways scrolling)
            ("classifier", "combo", {"choices": ("auto", *CLASSIFIER_KINDS), "value": opts["classifier"]},
             "classifier", "auto: the segmentation mode's default (3D: logistic; 2D and slices: lasso)"),
            ("regressor", "combo", {"choices": ("auto", *REGRESSOR_KINDS), "value": opts["regressor"]},
             "regressor", "auto: the segmentation mode's default (3D: lasso; 2D and slices: linear)"),
            ("min_interior", "combo", {"choices": MIN_INTERIOR_CHOICES, "value": _min_interior_choice(opts)},
             "min interior",
             "segments with fewer interior pixels are left out of training; auto: 1 for 2D and "
             "slice-wise segments (as in the paper), 0 in 3D (whole-volume segments are mostly specks)"),
            ("evaluation", "row", {"fields": [
                ("n_splits", "spin", {"min": 1, "max": 100, "value": int(opts["n_splits"])}, "", ""),
                ("split", "combo", {"choices": SPLITS, "value": opts["split"]}, "by",
                 "what stays together in the 50/50 evaluation splits"),
            ]}, "splits", "evaluate on this many 50/50 splits before fitting"),
        ])
        self.form.folder.changed.connect(self._folder_changed)

        self.train_button = QPushButton("Train and evaluate")
        self.train_button.clicked.connect(self.train_or_cancel)
        self.refit_button = QPushButton("Refit after adding the current case")
        self.refit_button.clicked.connect(self.refit_current)
        self.progress, self.status = progress_widgets()
        self.split_label = QLabel("")
        self.split_label.setWordWrap(True)

        self.eval_model = DataFrameModel()
        self.eval_view = QTableView()
        self.eval_view.setModel(self.eval_model)
        self.eval_view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.eval_view.verticalHeader().setDefaultSectionSize(18)
        self.eval_view.setMinimumHeight(90)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.plot_tabs = QTabWidget()
        self.figures, self.canvases = {}, {}
        for name in PLOTS:
            fig = Figure(figsize=(4.5, 3.6), layout="constrained")
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumHeight(140)  # grows with the dock; the tab scrolls below this
            self.figures[name], self.canvases[name] = fig, canvas
            self.plot_tabs.addTab(canvas, name)
        self.plot_note = QLabel("")
        self.plot_note.setWordWrap(True)

        self.model_label = QLabel("no model")
        self.model_label.setWordWrap(True)
        self.save_button = QPushButton("Save model…")
        self.save_button.clicked.connect(lambda: self.save_model())
        self.load_button = QPushButton("Load model…")
        self.load_button.clicked.connect(lambda: self.load_model())
        self.apply_button = QPushButton("Apply to current case")
        self.apply_button.clicked.connect(self.apply_to_current)
        last = str(opts.get("last_model_path") or "")
        self.last_model_path = last if last and Path(last).is_file() else ""
        self.load_last_button = QPushButton(f"Load last model ({Path(last).name})")
        self.load_last_button.setToolTip(last)
        self.load_last_button.clicked.connect(lambda: self.load_model(self.last_model_path))
        self.load_last_button.setVisible(bool(self.last_model_path))
        file_row = QHBoxLayout()
        file_row.addWidget(self.save_button)
        file_row.addWidget(self.load_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.train_button)
        layout.addWidget(self.refit_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.split_label)
        layout.addWidget(self.eval_view, stretch=1)
        layout.addWidget(self.plot_tabs, stretch=2)
        layout.addWidget(self.plot_note)
        layout.addWidget(self.model_label)
        layout.addLayout(file_row)
        layout.addWidget(self.load_last_button)
        layout.addWidget(self.apply_button)

        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._default_case_id)
        self._default_case_id()
        self.session.models_changed.connect(self._session_changed)
        self.session.case_changed.connect(self._default_case_id)
        self._show_model_info()
        self._update_buttons()

    # -- the session's models are the panel's ---------------------------------------------------
    @property
    def classifier(self):
        return self.session.models.classifier

    @property
    def regressor(self):
        return self.session.models.regressor

    @property
    def dataset(self):
        return self.session.models.dataset

    @property
    def evaluation(self):
        return self.session.models.evaluation

    @property
    def segmentation(self):
        return self.session.models.segmentation

    @property
    def model_path(self):
        return self.session.models.path

    def models(self):
        """The viewer's models (shared by every panel), with what is saved beside them."""
        return self.session.models

    def _session_changed(self):
        self._show_model_info()
        self._update_buttons()

    def _ask(self, title, text):
        from qtpy.QtWidgets import QMessageBox

        return QMessageBox.question(self, title, text) == QMessageBox.Yes

    def _folder_changed(self, _value=None):
        if path_text(self.form.folder):  # a folder chosen: train on it
            self.form.source.value = "folder"

    def _default_case_id(self, event=None):
        """The current case's id from its file (BIDS subject, ``<case>_softmax``, folder), kept
        in step with the case shown unless the user typed one."""
        from .._layers import case_id_of

        if self.form.case_id.value and self.form.case_id.value != self._auto_case_id:
            return
        layer = self.segments_layer()
        case_id = layer.metadata.get("metaseg", {}).get("case_id") if layer is not None else None
        if not case_id:
            probs = [la for la in self.viewer.layers
                     if la.metadata.get("metaseg", {}).get("kind") == "probabilities"]
            case_id = case_id_of(probs[-1]) if probs else ""
        self._auto_case_id = case_id
        self.form.case_id.value = case_id

    def _update_buttons(self):
        has_model = self.classifier is not None or self.regressor is not None
        idle = self.worker is None
        self.save_button.setEnabled(has_model and idle)
        self.apply_button.setEnabled(has_model and idle)
        self.refit_button.setEnabled(has_model and idle)
        self.load_button.setEnabled(idle)
        self.load_last_button.setEnabled(idle)

    def options(self):
        """The panel's options as a dict (what is persisted between sessions)."""
        form = self.form
        return {
            "source": form.source.value,
            "folder": path_text(form.folder),
            "classifier": form.classifier.value,
            "regressor": form.regressor.value,
            "min_interior": form.min_interior.value,
            "n_splits": form.n_splits.value,
            "split": form.split.value,
            "read_mode": form.read_mode.value,
        }

    # -- the current case ---------------------------------------------------------------------
    def segments_layer(self):
        """The analysis result (the last ``segments`` layer with a metrics table), or None."""
        found = [la for la in self.viewer.layers
                 if la.metadata.get("metaseg", {}).get("kind") == "segments" and "index" in la.features]
        return found[-1] if found else None

    def current_case(self, *, need_gt=True):
        """``(case_id, table, segmentation)`` of the current case; raises ValueError naming what
        is missing."""
        layer = self.segments_layer()
        if layer is None:
            raise ValueError("no current case: run the MetaSeg analysis panel first")
        table = clean_table(layer.features)
        if need_gt and ("iou_adj" not in table.columns or not table["iou_adj"].notna().any()):
            raise ValueError("the current case has no ground truth (IoU_adj): choose a ground-truth "
                             "layer in the analysis panel and run it again, or train on a folder")
        segmentation = layer.metadata.get("metaseg", {}).get("segmentation")
        return self.form.case_id.value.strip() or "current", table, segmentation



    # -- training --------------------------------------------------------------------------------
    def train_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.train()

    def _error(self, message):
        self.fail(message)

    def train(self):
        """Train new models on the chosen data in a worker; returns it (None on bad input)."""
        opts = self.options()
        update_settings("meta", opts)
        kwargs = {"classifier_kind": _or_none(opts["classifier"]),
                  "regressor_kind": _or_none(opts["regressor"]),
                  "min_interior": _or_none(opts["min_interior"]), "n_splits": opts["n_splits"],
                  "split": opts["split"]}
        try:
            if opts["source"] == "folder":
                from ..io.cases import find_cases  # CaseError is a ValueError

                if not opts["folder"]:
                    raise ValueError("choose a folder of cases first")
                cases = find_cases([opts["folder"]])
                kwargs.update(cases=cases, settings=workflows.case_settings(mode=opts["read_mode"]))
            else:
                kwargs["current"] = self.current_case()
        except ValueError as exc:
            self._error(str(exc))
            return None
        return self._start(workflows.train, kwargs, "training")

    def refit_current(self):
        """Add the current case to the training data and refit the models (in a worker)."""
        from ..core.meta_model import check_columns

        if self.classifier is None and self.regressor is None:
            self._error("train or load a model first")
            return None
        try:
            current = self.current_case()
            for model in (self.classifier, self.regressor):
                if model is not None:
                    check_columns(model, current[1])
            workflows.check_segmentation(self.segmentation, mode=(current[2] or {}).get("mode"),
                                         slice_axis=(current[2] or {}).get("slice_axis"))
        except ValueError as exc:
            self._error(f"cannot refit on the current case: {exc}")
            return None
        if self.dataset is not None and current[0] in self.dataset.cases and not self.ask(
                "Replace a training case?",
                f"The training data already hold a case {current[0]!r}. Refitting replaces its table "
                "by the current case's. Replace it? (No: give the current case its own id first.)"):
            self.status.setText(f"refit not started: case {current[0]!r} is already in the training data; "
                                "give the current case its own id to add it")
            return None
        opts = self.options()
        min_interior = (self.dataset.min_interior if self.dataset is not None
                        else _or_none(opts["min_interior"]))
        common = {"n_splits": opts["n_splits"], "split": opts["split"], "min_interior": min_interior}
        edited = self._edited_case(current)
        if edited is not None:  # labels were fixed since the analysis: measure the case again first
            return self._start(workflows.refit_case, {**edited, **common}, "refitting", self.models())
        return self._start(workflows.refit, {"current": current, **common}, "refitting", self.models())

    def _edited_case(self, current):
        """The current case's arrays when its ground truth changed since it was analysed (the
        reviewer fixed labels in place), else None."""
        from .analysis import fingerprint

        layer = self.segments_layer()
        inputs = layer.metadata.get("metaseg", {}).get("inputs") if layer is not None else None
        if not inputs or not inputs.get("ground_truth"):
            return None
        names = (inputs["probabilities"], inputs["ground_truth"])
        if any(n not in self.viewer.layers for n in names):
            return None
        gt = np.asarray(self.viewer.layers[names[1]].data)
        if fingerprint(gt) == inputs.get("gt_fingerprint"):
            return None
        seg = current[2] or {}
        return {"probs": np.asarray(self.viewer.layers[names[0]].data), "gt": gt, "case_id": current[0],
                "class_axis": inputs["class_axis"], "mode": seg.get("mode") or "auto",
                "slice_axis": seg.get("slice_axis") if seg.get("slice_axis") is not None else -1,
                "ignore_index": seg.get("ignore_index", 255)}

    def _start(self, job, kwargs, what, *args):
        worker = self.start_worker(job, *args, button=self.train_button, status=f"{what} …", plots=True,
                                   **kwargs)
        self._update_buttons()
        return worker

    def _on_errored(self, exc):
        self._error(f"meta-model training failed: {exc}")

    def _on_aborted(self):
        self.status.setText("cancelled; the models and results were not changed")
        self.progress.setValue(0)

    def _on_returned(self, result):
        if result.measured is not None:  # the corrected case, measured again: its segments first
            self._show_measured(result.measured)
        # every panel uses the new models at once (the analysis panel recolours its segments)
        self.session.set(result)
        self.progress.setValue(100)
        ds = result.dataset
        what = "refitted" if result.refit else "trained"
        msg = f"{what} on {len(ds.cases)} case(s), {len(ds.training_table())} segments"
        if result.skipped:
            msg += f"; skipped without ground truth: {', '.join(result.skipped)}"
        if result.replaced:
            msg += f"; replaced the earlier tables of: {', '.join(result.replaced)}"
        self.status.setText(msg)
        self._show_evaluation(result.evaluation, result.evaluation_error, result.split_note)
        self._show_plots(result.plot_table, result.evaluation, result.plot_note)
        self._show_model_info()
        self.trained.emit(result)

    def _show_measured(self, measured):
        from .._layers import recolor_with
        from .analysis import fingerprint

        layer = self.segments_layer()
        if layer is None:
            return
        meta = layer.metadata.setdefault("metaseg", {})
        inputs = dict(meta.get("inputs") or {})
        gt_name = inputs.get("ground_truth")
        if gt_name in self.viewer.layers:
            inputs["gt_fingerprint"] = fingerprint(np.asarray(self.viewer.layers[gt_name].data))
        meta.update(inputs=inputs, segmentation=measured.segmentation)
        if layer.data.shape == measured.seg.shape:
            from .._layers import texture_ids

            layer.data = texture_ids(measured.seg)  # as the Analyse tab stores them
        recolor_with(layer, measured.table)

    # -- showing results -------------------------------------------------------------------------
    def _show_evaluation(self, ev, error="", note=""):
        import pandas as pd

        if ev is None:
            self.eval_model.set_frame(pd.DataFrame())
            hint = ("; the models were still fitted on all segments. With few IoU_adj = 0 segments, "
                    "lower min interior, split by segment, use fewer splits or add cases")
            self.split_label.setText(f"evaluation not possible: {error}{hint}" if error else "no evaluation")
            return
        s = ev.summary().reset_index()
        s["metric"] = [m + ("" if m == "sigma" else " %") for m in s["metric"]]
        self.eval_model.set_frame(s)
        self.eval_view.resizeColumnsToContents()
        text = f"{ev.n_splits} splits, {ev.n_segments} segments, {ev.n_cases} case(s); "
        self.split_label.setText(text + (note or f"grouping: {ev.grouping}"))

    def shown_evaluation(self):
        """The evaluation table as shown."""
        return self.eval_model.frame

    def _draw(self, name, func):
        fig = self.figures[name]
        fig.clear()
        ax = fig.add_subplot()
        try:
            func(ax)
        except (ValueError, TypeError, KeyError) as exc:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {name} plot:\n{exc}", ha="center", va="center", wrap=True,
                    fontsize="small", transform=ax.transAxes)
        self.canvases[name].draw_idle()

    def _show_plots(self, table, ev, note):
        from ..core.plots import plot_iou_scatter, plot_lasso_path, plot_roc

        def need_table(ax):
            if table is None:
                raise ValueError("no segments with ground truth to compare with")

        self._draw("ROC", lambda ax: (need_table(ax), plot_roc(table, ax=ax)))
        self._draw("IoU_adj", lambda ax: (need_table(ax), plot_iou_scatter(table, ax=ax)))

        def lasso(ax):
            if ev is None:
                raise ValueError("no evaluation")
            plot_lasso_path(ev, ax=ax)
            if ax.get_legend() is not None:
                ax.get_legend().set(loc="best", bbox_to_anchor=None)

        self._draw("LASSO path", lasso)
        self.plot_note.setText(f"ROC and IoU_adj plots: {note}" if note else "")

    def _show_model_info(self):
        parts = []
        for role, model in (("classifier", self.classifier), ("regressor", self.regressor)):
            if model is not None:
                cases = list(getattr(model, "training_cases_", []))
                shown = ", ".join(cases[:5]) + (" …" if len(cases) > 5 else "")
                parts.append(f"{role} {model.kind} ({len(model.provenance_)} fit(s); cases: {shown})")
        where = f" — {self.model_path}" if self.model_path else " — not saved"
        self.model_label.setText(("; ".join(parts) + where) if parts else "no model")

    # -- files -----------------------------------------------------------------------------------
    def save_model(self, path=None):
        """Save the models (with their evaluation, segmentation settings and, beside them, the
        training dataset) through :func:`napari_metaseg.workflows.save_model`."""
        if self.classifier is None and self.regressor is None:
            self._error("no model to save: train or load one first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save meta model", "metaseg_model.json.gz",
                                                  "MetaSeg model (*.json.gz *.json)")
            if not path:
                return None
        try:
            path = workflows.save_model(path, self.models())  # records the path in the models
        except (ValueError, TypeError, OSError) as exc:
            self._error(f"cannot save the model to {path}: {exc}")
            return None
        self._remember(path)
        self._show_model_info()
        self.status.setText(f"saved to {path} (training data: {dataset_path(path).name})")
        return path

    def _remember(self, path):
        self.last_model_path = str(path)
        update_settings("meta", {"last_model_path": str(path)})
        self.load_last_button.setText(f"Load last model ({Path(path).name})")
        self.load_last_button.setToolTip(str(path))
        self.load_last_button.setVisible(True)

    def load_model(self, path=None):
        """Load a model file (checked against the current case when there is one); not applied.
        Returns the :class:`~napari_metaseg.workflows.MetaModels` (None on a bad file)."""
        from ..core.meta_io import MetaModelFileError

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load meta model", "",
                                                  "MetaSeg model (*.json.gz *.json)")
            if not path:
                return None
        try:
            current = self.current_case(need_gt=False)
        except ValueError:
            current = None
        try:
            models = workflows.load_model(path, table=None if current is None else current[1])
        except FileNotFoundError:
            self._error(f"model file {path} does not exist")
            return None
        except ValueError as exc:  # MetaModelFileError or columns not matching the current case
            what = ("is not a usable meta-model file" if isinstance(exc, MetaModelFileError)
                    else "does not fit the current case")
            self._error(f"{Path(path).name} {what}: {exc}")
            return None
        self.session.set(models)  # every panel uses it (the analysis panel recolours its segments)
        self._remember(path)
        self._show_evaluation(self.evaluation, note=f"stored with the model (grouping: "
                              f"{getattr(self.evaluation, 'grouping', '?')})")
        table, pnote = None, ""
        if current is not None and "iou_adj" in current[1].columns:
            from ..core.meta_model import predict_table

            table = predict_table(current[1], models.classifier, models.regressor)
            pnote = "the loaded model on the current case"
        self._show_plots(table, self.evaluation, pnote)
        self._show_model_info()
        self._update_buttons()
        self.status.setText(f"loaded {Path(path).name} and applied it; {models.note}")
        return models

    # -- applying --------------------------------------------------------------------------------
    def apply_to_current(self):
        """Predict the current case with the models and recolour its segments; returns the column."""
        from .._layers import recolor_with
        from ..core.meta_model import predict_table

        if self.classifier is None and self.regressor is None:
            self._error("no model to apply: train or load one first")
            return None
        layer = self.segments_layer()
        if layer is None:
            self._error("no current case: run the MetaSeg analysis panel first")
            return None
        seg = layer.metadata.get("metaseg", {}).get("segmentation") or {}
        try:
            workflows.check_segmentation(self.segmentation, mode=seg.get("mode"),
                                         slice_axis=seg.get("slice_axis"))
            predicted = predict_table(layer.features, self.classifier, self.regressor)
        except ValueError as exc:
            self._error(f"the model does not fit the current case: {exc}")
            return None
        self.session.models_changed.emit()  # every panel re-applies the session's models
        cols = [c for c in PREDICTION_COLUMNS if c in predicted.columns]
        have = layer.features
        if not all(c in have.columns and np.array_equal(have[c].to_numpy(), predicted[c].to_numpy(),
                                                        equal_nan=True) for c in cols):
            recolor_with(layer, predicted)  # no analysis panel listening
        column = layer.metadata.get("metaseg", {}).get("color_by")
        self.status.setText(f"applied: segments coloured by {column}")
        return column

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        super().closeEvent(event)
