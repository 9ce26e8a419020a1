"""Meta-model panel: train, evaluate, save, load, apply and refit the MetaSeg meta models.

Thin: training data come from the analysis panel's result (the ``segments`` layer's features)
or from a folder of cases (:mod:`napari_metaseg.io.cases`); the work is
:mod:`napari_metaseg.core` (``MetaDataset``, ``evaluate``, ``MetaClassifier``/``MetaRegressor``,
``refit``) in a generator ``thread_worker``. The panel's state (models, dataset, evaluation) is
replaced only in the worker's ``returned`` handler, so a cancelled or failed run changes
nothing. Trained or loaded models are applied to data only by **Apply to current case**, which
hands them to the viewer's session (the analysis panel then recolours and uses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._session import session_for
from ._settings import section, update_settings
from ._table import DataFrameModel
from ._worker import WorkerPanelMixin

CLASSIFIER_KINDS = ("lasso", "logistic", "gbm")
REGRESSOR_KINDS = ("linear", "lasso", "gbm")
SPLITS = ("auto", "case", "slice", "segment")
READ_MODES = ("auto", "2d", "3d", "slices")
PREDICTION_COLUMNS = ("p_iou0", "iou_adj_pred")
DEFAULTS = {"source": "current", "folder": "", "classifier": "lasso", "regressor": "linear",
            "min_interior": 1, "n_splits": 10, "split": "auto", "read_mode": "auto",
            "last_model_path": ""}
PLOTS = ("ROC", "IoU_adj", "LASSO path")


# ================================================================================================
# Work done in the worker thread (no Qt, no layers)
# ================================================================================================
def resolve_split(table, choice):
    """``(group, explanation)`` for :func:`~napari_metaseg.core.evaluate` on ``table``.

    ``auto``: by case when there are at least 2 cases; one case segmented slice by slice keeps
    whole slices together; otherwise segments are drawn independently (the paper's protocol).
    """
    n_cases = table["case"].nunique() if "case" in table.columns else 1
    has_slice = "slice" in table.columns
    if choice == "auto":
        if n_cases >= 2:
            choice = "case"
        elif has_slice:
            choice = "slice"
        else:
            choice = "segment"
    if choice == "case":
        return "case", (f"splits by case ({n_cases} cases): half of the cases train, the other half "
                        "validates; this is what to expect on a new case")
    if choice == "slice":
        if not has_slice:
            raise ValueError("split by slice needs slice-wise tables (analysis mode 'slices')")
        return ("case", "slice"), ("splits by slice: segments of one slice stay together; with one "
                                   "case this is optimistic for a new case")
    return None, ("segments split at random (the paper's protocol): with one case this is "
                  "optimistic for a new case; train on several cases for a fair estimate")


def _clean(table):
    """A metrics table without earlier predictions (they are not metrics)."""
    return table.drop(columns=[c for c in PREDICTION_COLUMNS if c in table.columns])


@dataclass
class TrainResult:
    classifier: object
    regressor: object
    dataset: object
    evaluation: object = None
    evaluation_error: str = ""
    split_note: str = ""
    plot_table: object = None
    plot_note: str = ""
    skipped: list = field(default_factory=list)
    refit: bool = False


def train_job(*, current=None, folder_cases=(), read_mode="auto", base_dataset=None,
              refit_from=None, classifier_kind="lasso", regressor_kind="linear", min_interior=1,
              n_splits=10, split="auto"):
    """Generator: yields ``(fraction, stage)``; returns a :class:`TrainResult`.

    ``current`` is ``(case_id, table)``; ``folder_cases`` a list of
    :class:`~napari_metaseg.io.cases.Case`; ``base_dataset`` a ``MetaDataset`` to extend (the
    current case replaces a case of the same id); ``refit_from`` ``(classifier, regressor)`` to
    refit instead of training new models.
    """
    from sklearn.base import clone

    from ..core import segment_metrics
    from ..core.meta_dataset import MetaDataset
    from ..core.meta_model import (
        MetaClassifier,
        MetaRegressor,
        evaluate,
        evaluation_splits,
        predict_table,
        refit,
    )
    if base_dataset is not None:
        table = base_dataset.table
        if current is not None:
            table = table[table["case"] != str(current[0])]
        ds = MetaDataset.from_table(table, min_interior=min_interior)
    else:
        ds = MetaDataset(min_interior=min_interior)
    skipped = []
    n = max(len(folder_cases), 1)
    if folder_cases:
        from ..io.cases import read_case
    for i, case in enumerate(folder_cases):
        yield 0.5 * i / n, f"reading case {case.name} ({i + 1}/{n})"
        if case.gt is None:
            skipped.append(case.name)
            continue
        probs, gt, _ = read_case(case)
        yield 0.5 * (i + 0.5) / n, f"metrics of case {case.name} ({i + 1}/{n})"
        _, table = segment_metrics(probs, gt, mode=read_mode)
        ds.add(case.name, table)
    if current is not None:
        ds.add(current[0], _clean(current[1]))
    if not len(ds.cases):
        raise ValueError("no case with ground truth to train on"
                         + (f" (without ground truth: {', '.join(skipped)})" if skipped else ""))
    data = ds.training_table()
    group, note = resolve_split(data, split)
    yield 0.5, f"evaluating ({n_splits} splits, {len(data)} segments)"
    ev, ev_error = None, ""
    try:
        ev = evaluate(ds, n_splits=n_splits, group=group, models=[(classifier_kind, regressor_kind)],
                      random_state=0)
    except ValueError as exc:  # e.g. a split whose training half has one class: train anyway
        ev_error = str(exc)
    yield 0.75, "fitting the classifier on all segments"
    if refit_from is not None:
        clf = refit(refit_from[0], ds) if refit_from[0] is not None else None
        yield 0.85, "fitting the regressor on all segments"
        reg = refit(refit_from[1], ds) if refit_from[1] is not None else None
    else:
        clf = MetaClassifier(kind=classifier_kind, random_state=0).fit(ds)
        yield 0.85, "fitting the regressor on all segments"
        reg = MetaRegressor(kind=regressor_kind, random_state=0).fit(ds)
    yield 0.9, "predictions for the plots"
    plot_table, plot_note = None, ""
    try:  # out-of-sample: the validation half of the first split
        splits, _ = evaluation_splits(data, n_splits=1, group=group, random_state=0)
        tr, va = splits[0]
        train = data.iloc[tr]
        c0 = None if clf is None else clone(clf).fit(train)
        r0 = None if reg is None else clone(reg).fit(train)
        plot_table = predict_table(data.iloc[va], c0, r0)
        plot_note = (f"validation half of one split ({len(va)} segments; models fitted on the other "
                     f"{len(tr)})")
    except ValueError:
        plot_table = predict_table(data, clf, reg)
        plot_note = f"training segments (in-sample, optimistic; {len(data)} segments)"
    return TrainResult(clf, reg, ds, ev, ev_error, note, plot_table, plot_note, skipped,
                       refit_from is not None)


def dataset_path(model_path):
    """Where the training dataset is kept beside a model file: ``<name>.dataset.csv``."""
    p = Path(model_path)
    name = p.name
    for suffix in (".json.gz", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".dataset.csv")


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
        self.classifier = None
        self.regressor = None
        self.dataset = None
        self.evaluation = None
        self.model_path = None
        self.model_info = ""
        opts = {**DEFAULTS, **section("meta")}

        # -- training data
        self.current_radio = QRadioButton("current case")
        self.folder_radio = QRadioButton("folder of cases")
        (self.folder_radio if opts["source"] == "folder" else self.current_radio).setChecked(True)
        self.case_edit = QLineEdit()
        self.case_edit.setPlaceholderText("case id of the current case")
        self.folder_edit = QLineEdit(str(opts["folder"]))
        self.folder_edit.setPlaceholderText("<case>_softmax.* + <case>_gt.*, or case/softmax.* + case/gt.*")
        browse = QPushButton("…")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(browse)
        self.read_mode_combo = self._combo(READ_MODES, opts["read_mode"])
        self.read_mode_combo.setToolTip("how the folder's cases are segmented (slices: along the last axis)")

        # -- options
        self.classifier_combo = self._combo(CLASSIFIER_KINDS, opts["classifier"])
        self.regressor_combo = self._combo(REGRESSOR_KINDS, opts["regressor"])
        self.min_interior_spin = QSpinBox()
        self.min_interior_spin.setRange(0, 10**6)
        self.min_interior_spin.setValue(int(opts["min_interior"]))
        self.min_interior_spin.setToolTip("segments with fewer interior pixels are left out of "
                                          "training (1 as in the paper; use 0 in 3D mode)")
        self.splits_spin = QSpinBox()
        self.splits_spin.setRange(1, 100)
        self.splits_spin.setValue(int(opts["n_splits"]))
        self.split_combo = self._combo(SPLITS, opts["split"])
        self.split_combo.setToolTip("what stays together in the 50/50 evaluation splits")

        self.current_radio.setToolTip("the analysis panel's result (segments layer with IoU_adj)")
        self.folder_radio.setToolTip("pairs of softmax and ground-truth files matched by name")

        def row(*items):
            box = QHBoxLayout()
            for item in items:
                if isinstance(item, str):
                    box.addWidget(QLabel(item))
                elif isinstance(item, QHBoxLayout):
                    box.addLayout(item)
                else:
                    box.addWidget(item, stretch=1)
            return box

        form = QFormLayout()
        form.addRow(self.current_radio, row("id", self.case_edit))
        form.addRow(self.folder_radio, folder_row)
        form.addRow("segment folder as", self.read_mode_combo)
        form.addRow("classifier", row(self.classifier_combo, "regressor", self.regressor_combo))
        form.addRow("min interior", row(self.min_interior_spin, "splits", self.splits_spin,
                                        "by", self.split_combo))

        self.train_button = QPushButton("Train and evaluate")
        self.train_button.clicked.connect(self.train_or_cancel)
        self.refit_button = QPushButton("Refit after adding the current case")
        self.refit_button.clicked.connect(self.refit_current)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.split_label = QLabel("")
        self.split_label.setWordWrap(True)

        self.eval_model = DataFrameModel()
        self.eval_view = QTableView()
        self.eval_view.setModel(self.eval_model)
        self.eval_view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.eval_view.verticalHeader().setDefaultSectionSize(18)
        self.eval_view.setMinimumHeight(140)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.plot_tabs = QTabWidget()
        self.figures, self.canvases = {}, {}
        for name in PLOTS:
            fig = Figure(figsize=(4.5, 3.6), layout="constrained")
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumHeight(220)
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
        layout.addLayout(form)
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
        self._update_buttons()

    @staticmethod
    def _combo(items, current):
        combo = QComboBox()
        combo.addItems(items)
        combo.setCurrentText(current if current in items else items[0])
        return combo

    def _browse_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Folder of training cases", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)
            self.folder_radio.setChecked(True)

    def _default_case_id(self, event=None):
        if self.case_edit.text():
            return
        for layer in self.viewer.layers:
            if layer.metadata.get("metaseg", {}).get("kind") == "probabilities":
                name = layer.name
                for word in (" softmax", " probabilities", "_softmax"):
                    name = name.replace(word, "")
                self.case_edit.setText(name.strip() or "current")
                return

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
        return {
            "source": "folder" if self.folder_radio.isChecked() else "current",
            "folder": self.folder_edit.text(),
            "classifier": self.classifier_combo.currentText(),
            "regressor": self.regressor_combo.currentText(),
            "min_interior": self.min_interior_spin.value(),
            "n_splits": self.splits_spin.value(),
            "split": self.split_combo.currentText(),
            "read_mode": self.read_mode_combo.currentText(),
        }

    # -- the current case ---------------------------------------------------------------------
    def segments_layer(self):
        """The analysis result (the last ``segments`` layer with a metrics table), or None."""
        found = [la for la in self.viewer.layers
                 if la.metadata.get("metaseg", {}).get("kind") == "segments" and "index" in la.features]
        return found[-1] if found else None

    def current_case(self, *, need_gt=True):
        """``(case_id, table)`` of the current case; raises ValueError naming what is missing."""
        layer = self.segments_layer()
        if layer is None:
            raise ValueError("no current case: run the MetaSeg analysis panel first")
        table = _clean(layer.features)
        if need_gt and ("iou_adj" not in table.columns or not table["iou_adj"].notna().any()):
            raise ValueError("the current case has no ground truth (IoU_adj): choose a ground-truth "
                             "layer in the analysis panel and run it again, or train on a folder")
        return self.case_edit.text().strip() or "current", table

    # -- training --------------------------------------------------------------------------------
    def train_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.train()

    def _error(self, message):
        from napari.utils.notifications import show_error

        self.status.setText(f"error: {message}")
        show_error(f"napari-metaseg: {message}")

    def train(self):
        """Train new models on the chosen data in a worker; returns it (None on bad input)."""
        opts = self.options()
        update_settings("meta", opts)
        kwargs = {"classifier_kind": opts["classifier"], "regressor_kind": opts["regressor"],
                  "min_interior": opts["min_interior"], "n_splits": opts["n_splits"],
                  "split": opts["split"]}
        try:
            if opts["source"] == "folder":
                from ..io.cases import find_cases  # CaseError is a ValueError

                if not opts["folder"]:
                    raise ValueError("choose a folder of cases first")
                cases = find_cases([opts["folder"]])
                kwargs.update(folder_cases=cases, read_mode=opts["read_mode"])
            else:
                kwargs["current"] = self.current_case()
        except ValueError as exc:
            self._error(str(exc))
            return None
        return self._start(kwargs, "training")

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
                    check_columns(model, _clean(current[1]))
        except ValueError as exc:
            self._error(f"cannot refit on the current case: {exc}")
            return None
        opts = self.options()
        min_interior = self.dataset.min_interior if self.dataset is not None else opts["min_interior"]
        kwargs = {"current": current, "base_dataset": self.dataset,
                  "refit_from": (self.classifier, self.regressor), "min_interior": min_interior,
                  "n_splits": opts["n_splits"], "split": opts["split"],
                  "classifier_kind": getattr(self.classifier, "kind", opts["classifier"]),
                  "regressor_kind": getattr(self.regressor, "kind", opts["regressor"])}
        return self._start(kwargs, "refitting")

    def _start(self, kwargs, what):
        worker = self.start_worker(train_job, button=self.train_button, status=f"{what} …", **kwargs)
        self._update_buttons()
        return worker

    def _on_errored(self, exc):
        self._error(f"meta-model training failed: {exc}")

    def _on_aborted(self):
        self.status.setText("cancelled; the models and results were not changed")
        self.progress.setValue(0)

    def _on_returned(self, result):
        self.classifier, self.regressor = result.classifier, result.regressor
        self.dataset, self.evaluation = result.dataset, result.evaluation
        self.model_path = None
        self.progress.setValue(100)
        ds = result.dataset
        what = "refitted" if result.refit else "trained"
        msg = f"{what} on {len(ds.cases)} case(s), {len(ds.training_table())} segments"
        if result.skipped:
            msg += f"; skipped without ground truth: {', '.join(result.skipped)}"
        self.status.setText(msg)
        self._show_evaluation(result.evaluation, result.evaluation_error, result.split_note)
        self._show_plots(result.plot_table, result.evaluation, result.plot_note)
        self._show_model_info()
        self.trained.emit(result)

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
        """Save the models (with their evaluation) and, beside them, the training dataset."""
        from ..core.meta_io import save_models

        if self.classifier is None and self.regressor is None:
            self._error("no model to save: train or load one first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save meta model", "metaseg_model.json.gz",
                                                  "MetaSeg model (*.json.gz *.json)")
            if not path:
                return None
        try:
            path = save_models(path, self.classifier, self.regressor, evaluation=self.evaluation)
            if self.dataset is not None:
                self.dataset.save(dataset_path(path))
        except (ValueError, TypeError, OSError) as exc:
            self._error(f"cannot save the model to {path}: {exc}")
            return None
        self.model_path = str(path)
        self._remember(path)
        self._show_model_info()
        self.status.setText(f"saved to {path}")
        return path

    def _remember(self, path):
        self.last_model_path = str(path)
        update_settings("meta", {"last_model_path": str(path)})
        self.load_last_button.setText(f"Load last model ({Path(path).name})")
        self.load_last_button.setToolTip(str(path))
        self.load_last_button.setVisible(True)

    def load_model(self, path=None):
        """Load a model file (checked against the current case when there is one); not applied."""
        from ..core.meta_dataset import MetaDataset
        from ..core.meta_io import MetaModelFileError, load_models

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
            clf, reg, info = load_models(path, table=None if current is None else current[1])
        except FileNotFoundError:
            self._error(f"model file {path} does not exist")
            return None
        except ValueError as exc:  # MetaModelFileError or columns not matching the current case
            what = ("is not a usable meta-model file" if isinstance(exc, MetaModelFileError)
                    else "does not fit the current case")
            self._error(f"{Path(path).name} {what}: {exc}")
            return None
        dataset, note = None, ""
        ds_path = dataset_path(path)
        if ds_path.is_file():
            try:
                ev = info.get("evaluation")
                min_int = int(ev.details.get("min_interior", 1)) if ev is not None else 1
                dataset = MetaDataset.load(ds_path, min_interior=min_int)
                note = f"; training data {ds_path.name} ({len(dataset.cases)} cases)"
            except (ValueError, OSError) as exc:
                note = f"; training data {ds_path.name} unreadable ({exc}), refit will use new cases only"
        self.classifier, self.regressor = clf, reg
        self.dataset, self.evaluation = dataset, info.get("evaluation")
        self.model_path = str(path)
        self._remember(path)
        self._show_evaluation(self.evaluation, note=f"stored with the model (grouping: "
                              f"{getattr(self.evaluation, 'grouping', '?')})")
        table, pnote = None, ""
        if current is not None and "iou_adj" in current[1].columns:
            from ..core.meta_model import predict_table

            table = predict_table(current[1], clf, reg)
            pnote = "the loaded model on the current case"
        self._show_plots(table, self.evaluation, pnote)
        self._show_model_info()
        self._update_buttons()
        self.status.setText(f"loaded {Path(path).name}{note}; press Apply to use it")
        return clf, reg, info

    # -- applying --------------------------------------------------------------------------------
    def apply_to_current(self):
        """Predict the current case with the models and recolour its segments; returns the column."""
        from .._layers import recolor
        from ..core.meta_model import predict_table

        if self.classifier is None and self.regressor is None:
            self._error("no model to apply: train or load one first")
            return None
        layer = self.segments_layer()
        if layer is None:
            self._error("no current case: run the MetaSeg analysis panel first")
            return None
        try:
            predicted = predict_table(layer.features, self.classifier, self.regressor)
        except ValueError as exc:
            self._error(f"the model does not fit the current case: {exc}")
            return None
        # the session hands the models to the analysis panel (recolours its result, used on re-runs)
        self.session.set_models(self.classifier, self.regressor, self.model_path)
        cols = [c for c in PREDICTION_COLUMNS if c in predicted.columns]
        have = layer.features
        if not all(c in have.columns and np.array_equal(have[c].to_numpy(), predicted[c].to_numpy(),
                                                        equal_nan=True) for c in cols):
            layer.features = predicted  # no analysis panel listening
            recolor(layer)
        column = layer.metadata.get("metaseg", {}).get("color_by")
        self.status.setText(f"applied: segments coloured by {column}")
        return column

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        super().closeEvent(event)
