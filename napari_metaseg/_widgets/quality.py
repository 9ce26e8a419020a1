"""Quality panel: the evaluation scores of the current case (whole case and per slice) and the
voxels most likely misclassified, shown as contours.

Thin: the scores are :func:`napari_metaseg.workflows.case_scores` and the flags
:func:`napari_metaseg.workflows.flag_case`, each run in a ``thread_worker`` (progress, cancel);
layers and tables are touched only in the worker's handlers on the main thread, so a cancelled
or failed run changes nothing. The inputs follow the Analyse tab: after each analysis the panel
takes its probability and ground-truth layers and its slice axis.

At the top (``strip_slot``), the per-slice quality strip of the analysed case
(:class:`~napari_metaseg._widgets.quality_strip.SliceQualityView`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from .._layers import (
    FLAG_RGB,
    case_id_of,
    class_names_for,
    go_to_slice,
    input_layers,
    show_flags,
    spatial_kwargs,
)
from ..workflows.quality import check_flag_options
from ._form import make_form, path_text, set_choices
from ._session import session_for
from ._table import DataFrameModel, table_view
from ._worker import WorkerPanelMixin, progress_widgets
from .legend import swatch_pixmap
from .quality_strip import SliceQualityView

NONE = "(none)"
MEASURES = ("E", "D", "V")
MEASURE_TIPS = "E entropy, D probability margin, V variation ratio (all 1 = most uncertain)"
#: The flagging rules offered: shown text -> (method, what the value is, default, minimum).
METHODS = {
    "fixed threshold": ("fixed", "threshold", 0.5, 0.0),
    "quantile share": ("quantile", "share", 0.05, 0.001),
    "calibrated": ("calibrated", "target recall", 0.8, 0.01),
}
NO_GT = ("No ground truth: the scores compare the prediction with a ground-truth labels layer of "
         "this case. Open it (File > Open, e.g. <case>_gt.nii.gz) and choose it above. Flagging "
         "voxels works without it (then without precision and recall).")
CALIBRATED_TIP = ("learns P(error | heatmap) from training cases with ground truth (not this case) and "
                  "flags, in this case, the most uncertain voxels holding the target share of its "
                  "expected errors; the same as `napari-metaseg errors flag --method calibrated --train ...`")


def flagged_name(case_id):
    """Name of the flagged-voxel layer of a case."""
    return f"{case_id} flagged voxels"


def score_columns(n_classes, class_names=None, *, per_slice=False):
    """``{shown column: engine column}`` of the scores table: the means and accuracy, then IoU
    and Dice of every class under its name (as the legend and hover name it), then the voxels
    scored."""
    names = class_names_for(n_classes, class_names)
    seen = {}
    for k, n in enumerate(names):  # two classes of one name stay apart
        seen[n] = [*seen.get(n, []), k]
    label = [n if len(seen[n]) == 1 else f"{n} ({k})" for k, n in enumerate(names)]
    cols = {"slice": "slice"} if per_slice else {}
    cols.update({"mean_iou": "mean_iou", "mean_dice": "mean_dice", "pixel_accuracy": "pixel_accuracy"})
    cols.update({f"IoU {label[k]}": f"iou_{k}" for k in range(n_classes)})
    cols.update({f"Dice {label[k]}": f"dice_{k}" for k in range(n_classes)})
    cols["n_pixels"] = "n_pixels"
    return cols


class QualityWidget(WorkerPanelMixin, QWidget):
    """Dock widget: scores table of the current case, and flagged voxels as contours."""

    #: emitted after the scores table or the flagged-voxel layer was updated
    ready = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker = None
        self.scores = None  # the last workflows.CaseScores shown
        self.flagged = None  # the last workflows.FlaggedVoxels shown
        self.flag_layer = None
        self._job = None
        self._run = {}
        self._scored = {}

        #: the per-slice quality strip of the analysed case (predicted vs true, click to jump)
        self.strip_slot = QVBoxLayout()
        self.slice_quality = SliceQualityView(napari_viewer, self.session)
        self.strip_slot.addWidget(self.slice_quality)
        self.form = make_form([
            ("probabilities", "combo", {"choices": ()}, "probabilities", ""),
            ("ground_truth", "combo", {"choices": ()}, "ground truth", ""),
            ("slice_axis", "spin", {"min": -3, "max": 2, "value": -1}, "slice axis",
             "rows per slice along this spatial axis (-1 = the last: axial for NIfTI volumes); set from "
             "the Analyse tab after each analysis"),
            ("ignore_index", "spin", {"min": -1, "max": 65535, "value": 255}, "ignore label",
             "ground-truth label left out of the scores; -1: none"),
        ])
        self.gt_note = QLabel(NO_GT)
        self.gt_note.setWordWrap(True)
        self.score_button = QPushButton("Compute scores")
        self.score_button.clicked.connect(self.scores_or_cancel)
        self.progress, self.status = progress_widgets()

        self.case_model = DataFrameModel()
        self.case_view = table_view(self.case_model, lambda row: None, row_numbers=False)
        self.case_view.setMaximumHeight(3 * 18 + 8)
        self.slice_label = QLabel("per slice (click a row to go to that slice):")
        self.slice_model = DataFrameModel()
        self.slice_view = table_view(self.slice_model, lambda row: self.go_to_slice_row(row), sortable=True,
                                     row_numbers=False)

        self.flag_form = make_form([
            ("measure", "combo", {"choices": MEASURES}, "heatmap", MEASURE_TIPS),
            ("method", "combo", {"choices": tuple(METHODS)}, "rule",
             "fixed: heatmap >= threshold; quantile: that share of the voxels considered, the most "
             "uncertain first; calibrated: " + CALIBRATED_TIP),
            ("foreground_only", "check", {"text": "only voxels predicted as a class other than 0",
                                          "value": True}, None,
             "leave out the background around the object (the quantile share counts these voxels)"),
            ("training_cases", "file", {"mode": "d", "button": "Folder…",
                                        "placeholder": "training cases with ground truth"},
             "training cases", CALIBRATED_TIP),
        ])
        self.value_label = QLabel("threshold")
        self.value = QDoubleSpinBox()
        self.value.setDecimals(3)
        self.value.setSingleStep(0.01)
        self.value.setRange(0.0, 1.0)
        self.value.setValue(0.5)
        value_row = QHBoxLayout()
        value_row.addWidget(self.value_label)
        value_row.addWidget(self.value, stretch=1)
        self.flag_button = QPushButton("Flag")
        self.flag_button.setToolTip("add or update the layer '<case> flagged voxels' (contours)")
        self.flag_button.clicked.connect(self.flag_or_cancel)
        swatch = QLabel()
        swatch.setPixmap(swatch_pixmap(FLAG_RGB))
        legend = QHBoxLayout()
        legend.addWidget(swatch)
        legend.addWidget(QLabel("flagged voxels (contours)"), stretch=1)

        layout = QVBoxLayout(self)
        layout.addLayout(self.strip_slot)
        layout.addWidget(self.form.native)
        layout.addWidget(self.gt_note)
        layout.addWidget(self.score_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("whole case:"))
        layout.addWidget(self.case_view)
        layout.addWidget(self.slice_label)
        layout.addWidget(self.slice_view, stretch=1)
        heading = QLabel("<b>Flagged voxels</b>: where the prediction is most likely wrong")
        heading.setWordWrap(True)
        layout.addWidget(heading)
        layout.addWidget(self.flag_form.native)
        layout.addLayout(value_row)
        layout.addWidget(self.flag_button)
        layout.addLayout(legend)

        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.reordered):
            ev.connect(self._refresh_choices)
        self.form.ground_truth.changed.connect(self._gt_changed)
        self.flag_form.method.changed.connect(self._method_changed)
        self.session.case_changed.connect(self.follow_analysis)
        self._refresh_choices()
        self._method_changed(self.flag_form.method.value)
        self.follow_analysis()
        self._update_buttons()

    # -- inputs ------------------------------------------------------------------------------------
    def _refresh_choices(self, event=None):
        probs, gts = ([la.name for la in group] for group in input_layers(self.viewer))
        set_choices(self.form.probabilities, probs)
        set_choices(self.form.ground_truth, [NONE, *gts], prefer=gts[:1])
        self._gt_changed()

    def _gt_changed(self, *_):
        self.gt_note.setVisible(self._layer(self.form.ground_truth) is None)

    def _layer(self, combo):
        name = combo.value
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def segments_layer(self):
        """The Analyse tab's segments layer (None before an analysis)."""
        if "segments" not in self.viewer.layers:
            return None
        layer = self.viewer.layers["segments"]
        return layer if layer.metadata.get("metaseg", {}).get("kind") == "segments" else None

    def follow_analysis(self):
        """Take the analysed case's layers and slice axis (after each analysis); the scores shown
        belong to the previous case and are cleared."""
        seg = self.segments_layer()
        if seg is None:
            return
        meta = seg.metadata["metaseg"]
        inputs = meta.get("inputs") or {}
        self._refresh_choices()
        form = self.form
        if inputs.get("probabilities") in form.probabilities.choices:
            form.probabilities.value = inputs["probabilities"]
        gt = inputs.get("ground_truth")
        form.ground_truth.value = gt if gt in form.ground_truth.choices else NONE
        segmentation = meta.get("segmentation") or {}
        if segmentation.get("slice_axis") is not None:
            form.slice_axis.value = int(segmentation["slice_axis"])
        ignore = segmentation.get("ignore_index", 255)
        form.ignore_index.value = -1 if ignore is None else int(ignore)
        if self.scores is not None and self.worker is None:
            self._clear_scores("a new case was analysed: press Compute scores")

    def _clear_scores(self, text):
        self.scores = None
        self._scored = {}
        self.case_model.set_frame(pd.DataFrame())
        self.slice_model.set_frame(pd.DataFrame())
        self.status.setText(text)

    def _inputs(self):
        """``(probs layer, class axis, GT layer or None)``; ValueError says what is missing."""
        from .analysis import probability_class_axis

        layer = self._layer(self.form.probabilities)
        if layer is None:
            raise ValueError("choose a probability layer (analyse a case in the Analyse tab first)")
        axis = probability_class_axis(layer)
        gt = self._layer(self.form.ground_truth)
        if gt is not None:
            spatial = tuple(s for i, s in enumerate(layer.data.shape) if i != axis % layer.ndim)
            if tuple(gt.data.shape) != spatial:
                raise ValueError(f"the ground truth {gt.name!r} has shape {tuple(gt.data.shape)}, the "
                                 f"probabilities {layer.name!r} {spatial}: choose the ground truth of "
                                 "this case")
        return layer, axis, gt

    def _ignore(self):
        v = self.form.ignore_index.value
        return None if v < 0 else int(v)

    def class_names(self, probs_layer):
        """The names the legend and hover use: the analysed segments' (same probabilities), else
        the probability layer's own."""
        seg = self.segments_layer()
        if seg is not None and (seg.metadata["metaseg"].get("inputs") or {}).get("probabilities") == \
                probs_layer.name and seg.metadata["metaseg"].get("class_names"):
            return list(seg.metadata["metaseg"]["class_names"])
        return list(probs_layer.metadata.get("metaseg", {}).get("class_names") or [])

    def _update_buttons(self):
        busy = self.worker is not None
        self.score_button.setEnabled(not busy or self._job == "scores")
        self.flag_button.setEnabled(not busy or self._job == "flag")

    # -- scores ------------------------------------------------------------------------------------
    def scores_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.compute_scores()

    def compute_scores(self):
        """Score the current case against its ground truth in a worker; returns the worker
        (None when an input is missing: the status line says what to do)."""
        try:
            layer, axis, gt = self._inputs()
        except ValueError as exc:
            self.fail(str(exc))
            return None
        if gt is None:
            self.progress.setValue(0)
            self.status.setText(NO_GT)
            self.gt_note.setVisible(True)
            return None
        volume = layer.ndim - 1 == 3
        self._job = "scores"
        self._run = {"probs": layer, "gt": gt, "names": self.class_names(layer)}
        worker = self.start_worker(workflows.case_scores, np.asarray(layer.data), np.asarray(gt.data),
                                   class_axis=axis, ignore_index=self._ignore(), background=0,
                                   slice_axis=self.form.slice_axis.value, per_slice=volume,
                                   button=self.score_button, status="scoring ...")
        self._update_buttons()
        return worker

    def _show_scores(self, result):
        run = self._run
        names = run["names"]
        cols = score_columns(result.n_classes, names)
        self.case_model.set_frame(pd.DataFrame({c: result.case[e].to_numpy() for c, e in cols.items()}))
        self.case_view.resizeColumnsToContents()
        if result.slices is not None:
            cols = score_columns(result.n_classes, names, per_slice=True)
            frame = pd.DataFrame({c: result.slices[e].to_numpy() for c, e in cols.items()})
            self.slice_model.set_frame(frame)
            self.slice_view.horizontalHeader().setSortIndicatorShown(False)
            self.slice_view.resizeColumnsToContents()
        else:
            self.slice_model.set_frame(pd.DataFrame())
        self.slice_label.setVisible(result.slices is not None)
        self.slice_view.setVisible(result.slices is not None)
        self.scores = result
        self._scored = {"gt": run["gt"], "axis": result.slice_axis}
        row = result.case.iloc[0]
        per = "" if result.slices is None else f"; {len(result.slices)} slices along axis {result.slice_axis}"
        self.status.setText(f"{run['probs'].name} vs {run['gt'].name}: mean IoU {row['mean_iou']:.3f}, mean "
                            f"Dice {row['mean_dice']:.3f}, accuracy {row['pixel_accuracy']:.3f}{per}")

    def case_table(self):
        """The whole-case scores as shown (one row)."""
        return self.case_model.frame

    def slice_table(self):
        """The per-slice scores as shown (columns and row order)."""
        return self.slice_model.frame

    def go_to_slice_row(self, row):
        """Move the viewer to the slice of table row ``row``; returns the slice (None: none)."""
        frame = self.slice_model.frame
        if not 0 <= row < len(frame):
            return None
        return self.go_to_slice(int(frame["slice"].iloc[row]))

    def go_to_slice(self, index):
        """Move the slider of the scores' slice axis to slice ``index`` (the view, e.g. the
        radiological axial one, stays); returns ``index``."""
        layer, axis = self._scored.get("gt"), self._scored.get("axis")
        if layer is None or axis is None or layer not in self.viewer.layers:
            return None
        if not go_to_slice(self.viewer, layer, axis, index):
            self.status.setText(f"slice {index}: its axis is shown across the canvas, not on a slider; "
                                "view the slices of that axis (or score along the slider's axis)")
        return index

    # -- flagged voxels ----------------------------------------------------------------------------
    def _method_changed(self, text):
        method, what, default, low = METHODS[text]
        self.value_label.setText(what)
        self.value.setMinimum(low)
        self.value.setValue(default)
        self.flag_form.training_cases.visible = method == "calibrated"

    def _training_cases(self):
        from ..io.cases import find_cases

        text = path_text(self.flag_form.training_cases).strip()
        paths = [s.strip() for s in text.split(";") if s.strip()]
        if not paths:
            raise ValueError("the calibrated rule learns from training cases with ground truth: choose their "
                             "folder (other cases than this one)")
        cases = find_cases(paths)
        without = [c.name for c in cases if c.gt is None]
        if without:
            raise ValueError(f"training cases need ground truth; {', '.join(without[:5])} have none")
        return cases

    def flag_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.flag()

    def flag(self):
        """Flag the voxels of the current case in a worker; returns the worker (None when an
        input is wrong: the status line says why)."""
        try:
            layer, axis, gt = self._inputs()
            method, what, _, _ = METHODS[self.flag_form.method.value]
            value = float(self.value.value())
            options = {"threshold": value} if method == "fixed" else {"share": value} \
                if method == "quantile" else {"target_recall": value}
            training = []
            case_id = case_id_of(layer)
            if method == "calibrated":
                training = self._training_cases()
                if case_id in {c.name for c in training}:
                    raise ValueError(f"the current case {case_id} is among the training cases: its flags "
                                     "would be tuned on its own errors; leave it out of the training folder")
            mask = "foreground" if self.flag_form.foreground_only.value else "all"
            check_flag_options(measure=self.flag_form.measure.value, method=method, mask=mask,
                                         calibrated=bool(training), **options)
        except ValueError as exc:
            self.fail(str(exc))
            return None
        self._job = "flag"
        self._run = {"probs": layer, "gt": gt, "case": case_id, "kwargs": spatial_kwargs(layer, axis),
                     "what": f"{what} {value:g}"}
        worker = self.start_worker(
            workflows.flag_case, np.asarray(layer.data), None if gt is None else np.asarray(gt.data),
            class_axis=axis, measure=self.flag_form.measure.value, method=method, training_cases=training,
            settings={"ignore_index": self._ignore()}, mask=mask, background=0, ignore_index=self._ignore(),
            button=self.flag_button, status="flagging voxels ...", **options)
        self._update_buttons()
        return worker

    def _show_flags(self, result):
        run = self._run
        opts = result.options
        meta = {"measure": opts["measure"], "method": opts["method"], "threshold": opts["threshold"],
                "share": opts["share"], "target_recall": opts["target_recall"], "mask": opts["mask"],
                "training_cases": result.training_cases, "probabilities": run["probs"].name}
        self.flag_layer = show_flags(self.viewer, result.flags, flagged_name(run["case"]), metadata=meta,
                                     **run["kwargs"])
        self.flagged = result
        where = "predicted as a class other than 0" if opts["mask"] == "foreground" else "of the case"
        text = (f"{result.n_flagged} voxels flagged ({100 * result.share:.2f} % of the {result.n_considered} "
                f"voxels {where}; {opts['measure']}, {opts['method']}, {run['what']})")
        s = result.scores
        if s is not None:
            if s["n_errors"]:
                prec = "n/a" if s["precision"] != s["precision"] else f"{s['precision']:.3f}"
                text += (f"; against the ground truth: precision {prec}, recall {s['recall']:.3f} of the "
                         f"{s['n_errors']} misclassified voxels among those considered")
            else:
                text += "; the ground truth finds no misclassified voxel among them"
        self.status.setText(text)

    # -- worker handlers ---------------------------------------------------------------------------
    def _on_returned(self, result):
        if self._job == "scores":
            self._show_scores(result)
        else:
            self._show_flags(result)
        self.progress.setValue(100)
        self.ready.emit()

    def _on_errored(self, exc):
        what = "scores" if self._job == "scores" else "flagging voxels"
        self.fail(f"{what} failed: {exc}")

    def _on_aborted(self):
        self.status.setText("cancelled; nothing was changed")
        self.progress.setValue(0)

    def closeEvent(self, event):
        if self.worker is not None:
            self.worker.quit()
        try:
            self.session.case_changed.disconnect(self.follow_analysis)
        except (TypeError, ValueError, RuntimeError):
            pass
        super().closeEvent(event)
