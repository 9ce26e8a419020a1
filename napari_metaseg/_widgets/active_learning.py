"""Active-learning panel: rank unlabelled cases by predicted quality, open them, export, refit.

Thin: cases come from :func:`napari_metaseg.io.cases.find_cases`; the ranking is
:func:`napari_metaseg.workflows.rank` in a ``thread_worker`` (the same job as
``napari-metaseg rank``): a case that cannot be read or measured is listed as failed; the others
go on. **Refit with labelled cases** runs :func:`napari_metaseg.workflows.refit` on the models'
saved training data plus the cases that now have ground truth; the refitted models
replace the session's but are saved only by **Save refitted model…**, to a path the user picks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from ..io.cases import image_beside
from ..names import MODES, RANK_MIN_FOREGROUND
from ..workflows import TrainResult
from ._form import make_form, path_text
from ._session import session_for
from ._settings import section, update_settings
from ._table import DataFrameModel, table_view
from ._worker import WorkerPanelMixin, progress_widgets

BY = ("auto", "case", "slice")
SHOWN = ("rank", "case", "slice", "quality_pred", "mean_iou", "iou_adj_pred_mean", "share_likely_wrong",
         "n_segments", "size", "iou_adj_mean", "status", "error")
DEFAULTS = {"inputs": "", "model_file": "", "mode": "auto", "slice_axis": -1, "by": "auto",
            "keep_background": False, "min_foreground": round(100 * RANK_MIN_FOREGROUND)}
_OPENED = "active_learning_case"
MODEL_FILTER = "MetaSeg model (*.json.gz *.json)"


def _percent(value):
    """A persisted minimum foreground (percent) as an int in the spin box's range."""
    try:
        return min(max(round(float(value)), 0), 50)
    except (TypeError, ValueError):
        return DEFAULTS["min_foreground"]


# ================================================================================================
# The panel
# ================================================================================================
class ActiveLearningWidget(WorkerPanelMixin, QWidget):
    """Dock widget: rank unlabelled cases for annotation; open, export, refit."""

    show_first_progress = True

    #: emitted with the RankResult after a ranking has been shown
    ranked = Signal(object)
    #: emitted with the RefitResult after the session's models were replaced
    refitted = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker = None
        self.cases = {}
        self.result = None
        self.refit_result = None
        self._opened = []
        self._last_progress = 0.0
        opts = {**DEFAULTS, **section("active_learning")}

        self.form = make_form([
            ("inputs", "file", {"mode": "d", "value": str(opts["inputs"]), "button": "Folder…",
                                "placeholder": "folder of cases, or files separated by ;"}, "cases",
             "<case>_softmax.* (+ <case>_gt.*), or case folders with softmax.*; several folders or files "
             "separated by ;"),
            ("model_file", "file", {"mode": "r", "value": str(opts["model_file"]), "button": "File…",
                                    "filter": MODEL_FILTER, "placeholder": "(the session's model)"}, "model",
             "a model file; empty: the model trained, loaded or refitted in this viewer (meta-model panel)"),
            ("segmenting", "row", {"fields": [
                ("mode", "combo", {"choices": MODES, "value": opts["mode"]}, "",
                 "how each case is segmented (slices: along the last axis)"),
                ("by", "combo", {"choices": BY, "value": opts["by"]}, "rank by",
                 "one row per case, or per slice (auto: per slice in slices mode)"),
            ]}, "segment as", ""),
            ("min_foreground", "spin", {"min": 0, "max": 50, "value": _percent(opts["min_foreground"])},
             "min foreground %",
             "slices (or cases) whose predicted foreground is below this share of the largest one in "
             "the case (of all cases, by case) are ranked last: a few poorly rated pixels at the edge "
             "of a volume are not worth labelling first (default 1 %)"),
            ("keep_background", "check", {"text": "count background (class 0) segments",
                                          "value": bool(opts["keep_background"])}, None,
             "off (default): the background segments are left out, so the one large background segment "
             "of a slice does not decide its rank"),
        ])
        # several softmax files go into the cases field too (joined by ;); a FileEdit has one mode
        files_button = QPushButton("Files…")
        files_button.setToolTip("choose softmax files")
        files_button.clicked.connect(self._browse_files)
        self.form.inputs.native.layout().addWidget(files_button)
        self._slice_axis = int(opts["slice_axis"])

        self.rank_button = QPushButton("Rank cases")
        self.rank_button.clicked.connect(self.rank_or_cancel)
        self.progress, self.status = progress_widgets()

        self.model = DataFrameModel()
        self.table_view = table_view(self.model, lambda row: self.open_row(row), row_numbers=False)
        legend = QLabel("worst predicted quality first. quality_pred = predicted mean IoU of the slice "
                        "or case (the model's image-level regressor; without one, the size-weighted "
                        "mean predicted IoU_adj of its segments: the status says which); mean_iou and "
                        "iou_adj_mean = true values where ground truth exists; share_likely_wrong = "
                        "share of segments with P(IoU_adj = 0) > 0.5. Rows below the minimum "
                        "foreground come last. Click a row to open the case at its slice with its "
                        "quality overlay.")
        legend.setWordWrap(True)

        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.refit_button = QPushButton("Refit with labelled cases")
        self.refit_button.setToolTip("measure the cases that now have ground truth and refit the "
                                     "model on its training data plus these")
        self.refit_button.clicked.connect(lambda: self.refit())
        self.save_button = QPushButton("Save refitted model…")
        self.save_button.clicked.connect(lambda: self.save_model())
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.refit_button)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.rank_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table_view, stretch=1)
        layout.addWidget(legend)
        layout.addLayout(buttons)
        layout.addWidget(self.model_label)
        layout.addWidget(self.save_button)

        self.session.models_changed.connect(self._show_model_info)
        self._show_model_info()
        self._update_buttons()

    # -- inputs ----------------------------------------------------------------------------------
    def _browse_files(self, _=None):
        paths, _ = QFileDialog.getOpenFileNames(self, "Softmax files", "",
                                                "Probabilities (*.nii *.nii.gz *.npy *.npz *.tif *.tiff)")
        if paths:
            self.form.inputs.line_edit.value = "; ".join(paths)

    def inputs(self):
        return [s.strip() for s in path_text(self.form.inputs).split(";") if s.strip()]

    def options(self):
        form = self.form
        mode = form.mode.value
        by = form.by.value
        if by == "auto":
            by = "slice" if mode == "slices" else "case"
        return {"inputs": path_text(form.inputs).strip(), "model_file": path_text(form.model_file).strip(),
                "mode": mode, "slice_axis": self._slice_axis, "by": by,
                "keep_background": form.keep_background.value, "min_foreground": form.min_foreground.value}

    def _error(self, message):
        self.fail(message)

    def _models(self):
        """The model file's :class:`~napari_metaseg.workflows.MetaModels` (with the training data
        beside it), else the session's."""
        path = path_text(self.form.model_file).strip()
        if path:
            if not Path(path).is_file():
                raise ValueError(f"model file {path} does not exist")
            return workflows.load_model(path)
        if not self.session.has_models:
            raise ValueError("no model: train or load one in the meta-model panel, or choose a model file")
        return self.session.models

    def _settings(self, models, opts):
        """Case settings for ``opts``, checked against the model's segmentation."""
        mode, axis = workflows.check_segmentation(models.segmentation, mode=opts["mode"],
                                                  slice_axis=opts["slice_axis"])
        return workflows.case_settings(mode=mode, slice_axis=axis)

    def _find_cases(self):
        from ..io.cases import find_cases  # CaseError is a ValueError

        inputs = self.inputs()
        if not inputs:
            raise ValueError("choose a folder (or files) of cases first")
        return find_cases(inputs)

    # -- ranking ---------------------------------------------------------------------------------
    def rank_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.rank()

    def rank(self):
        """Rank the chosen cases in a worker; returns it (None on bad input)."""
        opts = self.options()
        update_settings("active_learning", {**opts, "by": self.form.by.value})
        if opts["by"] == "slice" and opts["mode"] != "slices":
            self._error("rank by slice needs 'segment as' slices")
            return None
        try:
            models = self._models()
            settings = self._settings(models, opts)
            cases = self._find_cases()
        except ValueError as exc:
            self._error(str(exc))
            return None
        self._pending_cases = {c.name: c for c in cases}
        self._pending_opts = opts
        return self._start(workflows.rank, "ranking", cases, models, settings, by=opts["by"],
                           background=None if opts["keep_background"] else 0,
                           min_foreground=opts["min_foreground"] / 100)

    def _start(self, job, what, *args, **kwargs):
        self._job = what
        worker = self.start_worker(job, *args, button=self.rank_button, status=f"{what} …", **kwargs)
        self._update_buttons()
        return worker

    def _on_errored(self, exc):
        self._error(f"{self._job} failed: {exc}")

    def _on_aborted(self):
        self.status.setText(f"cancelled; the {'ranking' if self._job == 'ranking' else 'model'} "
                            "was not changed")
        self.progress.setValue(0)

    def _on_returned(self, result):
        self.progress.setValue(100)
        if isinstance(result, TrainResult):
            self._refit_done(result)
            return
        self.result = result
        self.cases = self._pending_cases
        self._opts = self._pending_opts
        self.model.set_frame(self._shown(result))
        self.table_view.resizeColumnsToContents()
        n_ok = len(result.ranking)
        what = "slices" if result.by == "slice" else "cases"
        n_cases = len(self.cases) - len(result.failed)
        msg = (f"ranked {n_ok} {what} of {n_cases} case(s) in {result.seconds:.1f} s; order: "
               f"{result.note or result.order}")
        if result.failed:
            msg += f"; {len(result.failed)} case(s) failed (listed at the end)"
        self.status.setText(msg)
        self._update_buttons()
        self.ranked.emit(result)

    @staticmethod
    def _shown(result):
        ranking = result.ranking.copy()
        ranking["status"] = "ranked"
        ranking["error"] = ""
        failed = pd.DataFrame({"case": [c for c, _ in result.failed], "status": "failed",
                               "error": [e for _, e in result.failed]})
        table = pd.concat([ranking, failed], ignore_index=True) if len(failed) else ranking
        table["rank"] = [("" if pd.isna(r) else int(r)) for r in table["rank"]]
        if "slice" in table.columns:
            table["slice"] = [("" if pd.isna(s) else int(s)) for s in table["slice"]]
        cols = [c for c in SHOWN if c in table.columns]
        return table[cols]

    def shown_table(self):
        """The ranking exactly as shown (columns and row order)."""
        return self.model.frame

    # -- opening a case --------------------------------------------------------------------------
    def open_row(self, row):
        """Open the case of table row ``row`` (and go to its slice); returns the added layers."""
        frame = self.model.frame
        if not 0 <= row < len(frame):
            return []
        self.table_view.selectRow(row)
        slice_ = frame["slice"].iloc[row] if "slice" in frame.columns else ""
        return self.open_case(str(frame["case"].iloc[row]), None if slice_ == "" else int(slice_))

    def open_case(self, name, slice_index=None):
        """Show case ``name``; earlier ones close. Returns the added layers.

        Layers, bottom to top: the image beside the softmax when there is one (see
        :func:`image_beside`), the softmax (probabilities, hidden: its class axis is a slider;
        the other panels work on it), the predicted labels (argmax of the softmax) and the
        ground truth when there is one.
        """
        from napari.layers import Labels, Layer

        from ..io.layers import read_layers

        case = self.cases.get(name)
        if case is None:
            self._error(f"unknown case {name!r}")
            return []
        for layer in self._opened:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._opened = []
        image = image_beside(case)
        try:
            tuples = [(t, "image") for t in (read_layers(image, kind="image") if image else [])]
            tuples += [(t, "softmax") for t in read_layers(case.softmax, kind="probabilities")]
            if case.gt is not None:
                tuples += [(t, "gt") for t in read_layers(case.gt, kind="labels")]
        except ValueError as exc:
            self._error(f"cannot open case {name}: {exc}")
            return []
        added = []
        softmax = None
        for (data, meta, kind), role in tuples:
            meta = {**meta, "name": f"{name} {role}"}
            meta["metadata"] = {**meta.get("metadata", {}), _OPENED: name}
            if role == "softmax":
                # a volume of 3 or 4 slices along its last axis is not an RGB(A) image
                meta.update(visible=False, rgb=False)
            layer = Layer.create(data, meta, kind)
            self.viewer.add_layer(layer)
            added.append(layer)
            if role == "softmax":
                softmax = layer
                # what the ranking rates: the predicted segmentation (class axis first)
                spatial = {k: tuple(getattr(layer, k))[1:] for k in ("scale", "translate")}
                pred = Labels(np.asarray(layer.data).argmax(0).astype(np.uint8), name=f"{name} prediction",
                              opacity=0.5, metadata={_OPENED: name, "metaseg": {"kind": "prediction"}},
                              **spatial)
                self.viewer.add_layer(pred)
                added.append(pred)
        self._opened = added
        self.viewer.reset_view()
        if slice_index is not None and softmax is not None:
            self._go_to_slice(softmax, slice_index)
        if softmax is not None:  # the analysis panel rates it with the session's models
            gt = next((la.name for la in added if la.name == f"{name} gt"), None)
            opts = getattr(self, "_opts", None) or self.options()
            self.session.case_opened.emit({"probabilities": softmax.name, "ground_truth": gt,
                                           "mode": opts["mode"], "slice_axis": opts["slice_axis"]})
        self.status.setText(f"opened {name}" + ("" if slice_index is None else f", slice {slice_index}"))
        return added

    def _go_to_slice(self, layer, k):
        """Show slice ``k`` along the ranking's slice axis of the case file (as stored)."""
        nsp = layer.ndim - 1  # probabilities: class axis first
        axis = self._opts["slice_axis"] % nsp
        meta = layer.metadata
        if "original_affine" in meta:  # NIfTI, reoriented on reading: map through the affines
            from nibabel.orientations import io_orientation

            shape = meta["nifti_shape"][:nsp]
            stored = np.array([(s - 1) / 2 for s in shape] + [1.0])
            stored[axis] = k
            world = np.asarray(meta["original_affine"]) @ stored
            idx = np.linalg.solve(np.asarray(meta["affine"]), world)[:nsp]
            dim = int(io_orientation(np.asarray(meta["original_affine"]))[axis, 0])
            value = idx[dim]
        else:
            dim, value = axis, float(k)
        world_point = np.asarray(layer.data_to_world(np.r_[0.0, np.eye(nsp)[dim] * value]))
        offset = self.viewer.dims.ndim - layer.ndim
        vdim = offset + 1 + dim
        others = [d for d in range(self.viewer.dims.ndim) if d != vdim]
        self.viewer.dims.order = (*others[:-2], vdim, *others[-2:])
        self.viewer.dims.set_point(vdim, world_point[1 + dim])

    # -- export ----------------------------------------------------------------------------------
    def export_csv(self, path=None):
        """Write the ranking as shown to ``path`` (asks when None), atomically."""
        from ..core.csv_safe import write_csv

        if self.result is None:
            self._error("nothing to export: rank cases first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export ranking", "ranking.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            write_csv(self.model.frame, path)  # atomic; no cell starts a spreadsheet formula
        except OSError as exc:
            self._error(f"cannot write {path}: {exc}")
            return None
        self.status.setText(f"exported {len(self.model.frame)} rows to {path}")
        return Path(path)

    # -- refit -----------------------------------------------------------------------------------
    def refit(self):
        """Refit the model on its training data plus the cases that now have ground truth."""
        opts = self.options()
        try:
            models = self._models()
            settings = self._settings(models, opts)
            labelled = [c for c in self._find_cases() if c.gt is not None]
        except ValueError as exc:
            self._error(f"cannot refit: {exc}")
            return None
        if not labelled:
            self._error("cannot refit: no case has ground truth yet (add <case>_gt files beside the "
                        "softmax files, or gt.* in the case folders)")
            return None
        return self._start(workflows.refit, "refitting", models, cases=labelled, settings=settings)

    def _refit_done(self, result):
        self.refit_result = result
        self.form.model_file.value = None  # rank again with the session's (refitted) model
        self.session.set(result)
        replaced = f"; replaced: {', '.join(result.replaced)}" if result.replaced else ""
        n = len(result.previous_cases)
        note = (f"training data ({n} cases) plus the new cases" if n
                else "the new cases only (no training data beside the model)")
        self.status.setText(f"refitted on {note}; added {', '.join(result.added_cases)}"
                            f"{replaced}. The session now uses it (not saved); press Rank cases to rank "
                            "again")
        self._update_buttons()
        self.refitted.emit(result)

    def save_model(self, path=None):
        """Save the refitted models and their training data (asks for a path when None)."""
        if self.refit_result is None:
            self._error("no refitted model to save")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save refitted meta model", "metaseg_model.json.gz",
                                                  "MetaSeg model (*.json.gz *.json)")
            if not path:
                return None
        r = self.refit_result
        try:
            path = workflows.save_model(path, r)
        except (ValueError, TypeError, OSError) as exc:
            self._error(f"cannot save the model to {path}: {exc}")
            return None
        if self.session.classifier is r.classifier and self.session.regressor is r.regressor:
            self.session.model_path = str(path)
        self.status.setText(f"saved to {path}")
        self._show_model_info()
        return path

    # -- state -----------------------------------------------------------------------------------
    def _show_model_info(self):
        s = self.session
        if not s.has_models:
            self.model_label.setText("session: no model (train or load one in the meta-model panel)")
            return
        parts = []
        for role, m in (("classifier", s.classifier), ("regressor", s.regressor)):
            if m is not None:
                cases = list(getattr(m, "training_cases_", []))
                shown = ", ".join(cases[:4]) + (" …" if len(cases) > 4 else "")
                parts.append(f"{role} {m.kind} ({len(m.provenance_)} fit(s); {len(cases)} cases: {shown})")
        qm = getattr(s.models, "image_quality", None)
        if qm is not None:
            parts.append(f"image-level regressor by {qm.by} ({qm.target})")
        where = s.model_path or "not saved"
        self.model_label.setText("session: " + "; ".join(parts) + f" — {where}")

    def _update_buttons(self):
        idle = self.worker is None
        self.export_button.setEnabled(idle and self.result is not None)
        self.refit_button.setEnabled(idle)
        self.save_button.setEnabled(idle and self.refit_result is not None)

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        try:
            self.session.models_changed.disconnect(self._show_model_info)
        except (TypeError, ValueError, RuntimeError):
            pass
        super().closeEvent(event)
