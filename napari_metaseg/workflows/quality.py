"""Quality at the scale of images, slices and voxels: evaluation scores over cases, image-level
quality models (train / predict / evaluate), and voxel error detection.

The engine is :mod:`napari_metaseg.core.scores`, :mod:`~napari_metaseg.core.image_quality` and
:mod:`~napari_metaseg.core.error_maps`; here: per-case tasks (:func:`scores_task`,
:func:`quality_task`) that read a case file and return small tables, the dataset jobs
(:func:`scores`, :func:`image_rows`, :func:`error_detection`) that run them with
:func:`~napari_metaseg.workflows.cases.over_cases`, and the image-quality model's training,
prediction, evaluation and files (:func:`train_quality`, :func:`save_quality_model`,
:func:`load_quality_model`).

An image-quality model file is a meta-model file (:mod:`napari_metaseg.core.meta_io`) holding
one regressor fitted on :func:`~napari_metaseg.core.image_quality.image_features` rows; its
provenance record carries an ``image_quality`` entry (``by``, ``target``, ``fail_below``,
``background``) that tells it from a segment model, and its ``training_data`` reference points
to the training rows ``<name>.images.csv`` written beside it (the size-and-segment-count
baseline of an evaluation is refitted from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cases import over_cases

__all__ = [
    "QUALITY_TARGETS",
    "ErrorDetectionResult",
    "ImageRows",
    "QualityEvaluation",
    "QualityModel",
    "ScoresResult",
    "error_detection",
    "evaluate_quality_rows",
    "image_rows",
    "images_path",
    "load_quality_model",
    "predict_quality",
    "quality_settings",
    "quality_task",
    "save_quality_model",
    "scores",
    "scores_task",
    "train_quality",
]

#: Image scores an image-quality model can be trained to predict.
QUALITY_TARGETS = ("mean_iou", "mean_dice", "pixel_accuracy")
#: The provenance key that marks an image-quality model.
_MARK = "image_quality"


def _case_arrays(case, settings):
    """``(probs, gt)`` of a case file (GT None when the case has none)."""
    from ..io.cases import read_case

    probs, gt, _ = read_case(case, class_axis=settings.get("class_axis", -1))
    return probs, gt


def _background(settings):
    b = settings.get("background", 0)
    return None if b is None else int(b)


# ============================================================================================
# Evaluation scores over cases
# ============================================================================================
def scores_task(case, settings: dict, groups=None, per_slice=False) -> dict:
    """Scores of one case against its ground truth (no files written).

    Returns ``{"case_row": DataFrame (one row), "slice_rows": DataFrame or None}``: the columns
    of :func:`~napari_metaseg.core.scores.segmentation_scores` with a ``case`` column; slice rows
    only for volumes with ``per_slice``. Raises ValueError when the case has no ground truth.
    """
    from ..core.scores import segmentation_scores

    probs, gt = _case_arrays(case, settings)
    if gt is None:
        raise ValueError(f"case {case.name} has no ground truth: scores need a gt file")
    gt = np.asarray(gt)
    if gt.shape != probs.shape[:-1]:
        raise ValueError(f"case {case.name}: gt has shape {gt.shape}, the softmax spatial shape "
                         f"{probs.shape[:-1]}")
    pred = probs.argmax(axis=-1).astype(np.int32)
    kw = {"ignore_index": settings.get("ignore_index", 255), "background": _background(settings),
          "groups": groups, "n_classes": probs.shape[-1]}
    row = segmentation_scores(pred, gt, per="image", **kw)
    row.insert(0, "case", case.name)
    slices = None
    if per_slice and pred.ndim == 3:
        slices = segmentation_scores(pred, gt, per="slice", slice_axis=settings.get("slice_axis", -1), **kw)
        slices.insert(0, "case", case.name)
    return {"case_row": row, "slice_rows": slices}


@dataclass
class ScoresResult:
    """Result of :func:`scores`: one row per case, one per slice (volumes, with ``per_slice``;
    else None), the mean over the cases of every score column, and the failed cases."""

    cases: pd.DataFrame
    slices: pd.DataFrame | None
    summary: pd.Series
    failed: list = field(default_factory=list)


def scores(cases, settings: dict, *, groups=None, per_slice=False, workers=None, scheduler=None,
           threads=None):
    """Job: evaluation scores of every case (IoU, Dice per class, accuracy, means, groups).

    ``settings``: ``ignore_index``, ``background`` (left out of the means), ``slice_axis``,
    ``class_axis``. Yields ``(fraction, stage)``; returns a :class:`ScoresResult`.
    """
    from ..core.scores import _check_groups

    groups = _check_groups(groups)
    results = yield from over_cases(scores_task, list(cases), (settings, groups, per_slice), workers=workers,
                                    scheduler=scheduler, threads=threads, what="scores")
    done = [r for r in results if r["status"] == "done"]
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    rows = pd.concat([r["case_row"] for r in done], ignore_index=True) if done else pd.DataFrame()
    parts = [r["slice_rows"] for r in done if r.get("slice_rows") is not None]
    slices = pd.concat(parts, ignore_index=True) if parts else None
    numeric = [c for c in rows.columns if c not in ("case", "n_pixels")]
    summary = rows[numeric].mean(numeric_only=True) if len(rows) else pd.Series(dtype=float)
    return ScoresResult(rows, slices, summary, failed)


# ============================================================================================
# Image rows: features (and scores) per slice or case
# ============================================================================================
def quality_settings(*, by="slice", mode=None, slice_axis=-1, ignore_index=255, class_axis=-1, background=0,
                     **extra) -> dict:
    """How image rows are made: ``by`` slice or case; the segmentation ``mode`` (``slices`` for
    rows by slice; by case ``auto`` = 2d/3d by dimension, or ``slices``); ``background`` (class
    left out of the aggregates and the mean scores). Raises ValueError for a mode that cannot give
    rows by slice."""
    from ..names import MODES

    if by not in ("slice", "case"):
        raise ValueError(f"by must be 'slice' or 'case', got {by!r}")
    if mode is None:
        mode = "slices" if by == "slice" else "auto"
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; expected one of {MODES}")
    if by == "slice" and mode != "slices":
        raise ValueError(f"rows by slice need slice-wise segments (mode 'slices'), not {mode!r}")
    return {"by": by, "mode": mode, "slice_axis": -1 if slice_axis is None else int(slice_axis),
            "ignore_index": ignore_index, "class_axis": -1 if class_axis is None else int(class_axis),
            "background": background, **extra}


def quality_task(case, settings: dict) -> dict:
    """Image rows of one case: :func:`~napari_metaseg.core.image_quality.image_features` by slice
    or case, with the scores of :func:`~napari_metaseg.core.scores.segmentation_scores` merged in
    when the case has ground truth. Returns ``{"rows": DataFrame, "n_rows": n}``."""
    from ..core.image_quality import image_features
    from ..core.metrics import segment_metrics
    from ..core.scores import segmentation_scores

    probs, gt = _case_arrays(case, settings)
    by = settings.get("by", "slice")
    if by == "slice" and probs.ndim != 4:
        raise ValueError(f"case {case.name} is a 2D image: rows by slice need volumes (use by case)")
    ignore = settings.get("ignore_index", 255)
    _, table = segment_metrics(probs, gt, mode=settings.get("mode", "slices"),
                               slice_axis=settings.get("slice_axis", -1), ignore_index=ignore)
    table.insert(0, "case", case.name)
    rows = image_features(table, by=by, background=_background(settings))
    if gt is not None:
        pred = probs.argmax(axis=-1).astype(np.int32)
        kw = {"ignore_index": ignore, "background": _background(settings), "n_classes": probs.shape[-1]}
        if by == "slice":
            sc = segmentation_scores(pred, np.asarray(gt), per="slice",
                                     slice_axis=settings.get("slice_axis", -1), **kw)
            rows = rows.merge(sc, on="slice", how="left")
        else:
            sc = segmentation_scores(pred, np.asarray(gt), per="image", **kw)
            rows = pd.concat([rows, sc], axis=1)
    return {"rows": rows, "n_rows": len(rows)}


@dataclass
class ImageRows:
    """Result of :func:`image_rows`: the rows of all done cases and the failed cases."""

    table: pd.DataFrame
    failed: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def image_rows(cases, settings: dict, *, workers=None, scheduler=None, threads=None):
    """Job: image rows (features, and scores where there is GT) of every case.

    ``settings``: :func:`quality_settings`. Yields ``(fraction, stage)``; returns
    :class:`ImageRows`.
    """
    settings = quality_settings(**settings)
    results = yield from over_cases(quality_task, list(cases), (settings,), workers=workers,
                                    scheduler=scheduler, threads=threads, what="rows")
    done = [r["rows"] for r in results if r["status"] == "done"]
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    table = pd.concat(done, ignore_index=True) if done else pd.DataFrame()
    return ImageRows(table, failed, settings)


# ============================================================================================
# Image-quality model
# ============================================================================================
@dataclass
class QualityModel:
    """A fitted image-quality regressor and how its rows were made: ``by``, ``target``,
    ``fail_below``, the segmentation record, ``background`` and, when known, the training rows
    and the model file it was read from."""

    regressor: object
    by: str
    target: str
    fail_below: float
    segmentation: dict | None = None
    background: int | None = 0
    training_rows: pd.DataFrame | None = None
    path: str | None = None
    note: str = ""


def _check_target(target):
    if target not in QUALITY_TARGETS:
        raise ValueError(f"target must be one of {QUALITY_TARGETS}, got {target!r}")
    return target


def train_quality(rows: pd.DataFrame, settings: dict, *, target="mean_iou", kind="lasso", fail_below=0.7,
                  random_state=0):
    """Job: fit an image-quality regressor on image rows with ground truth.

    Rows whose target is NaN (no object in GT nor prediction) are left out. Yields
    ``(fraction, stage)``; returns a :class:`QualityModel`. Raises ValueError when the rows have
    no ``target`` column (no ground truth) or fewer than 10 usable rows.
    """
    from ..core.image_quality import fit_image_regressor
    from .models import segmentation_of

    _check_target(target)
    settings = quality_settings(**settings)
    if target not in rows.columns:
        raise ValueError(f"the rows have no {target!r} column: training needs cases with ground truth")
    usable = int(np.isfinite(rows[target].to_numpy(np.float64)).sum())
    from ..core.meta_estimators import MIN_SEGMENTS

    if usable < MIN_SEGMENTS:
        raise ValueError(f"only {usable} {settings['by']} row(s) have a {target}; an image-quality model "
                         f"needs at least {MIN_SEGMENTS} (give more cases, or rows by slice for volumes)")
    yield 0.1, f"fitting a {kind} regressor on {usable} {settings['by']} rows"
    reg = fit_image_regressor(rows, target, kind=kind, random_state=random_state)
    reg.provenance_[-1][_MARK] = {"by": settings["by"], "target": target, "fail_below": float(fail_below),
                                  "background": settings["background"]}
    yield 1.0, "fitted"
    seg = segmentation_of(settings, ndim=3 if settings["by"] == "slice" else None)
    return QualityModel(reg, settings["by"], target, float(fail_below), seg, settings["background"], rows)


def images_path(model_path) -> Path:
    """Where the training rows of an image-quality model are kept: ``<name>.images.csv``."""
    from .models import dataset_path

    p = dataset_path(model_path)
    return p.with_name(p.name[: -len(".dataset.csv")] + ".images.csv")


def save_quality_model(path, model: QualityModel) -> Path:
    """Write an image-quality model file and its training rows beside it (``<name>.images.csv``)."""
    from ..core.csv_safe import write_csv
    from ..core.meta_io import save_models
    from .models import _sha256

    path = Path(path)
    training = None
    if model.training_rows is not None:
        rows_file = images_path(path)
        write_csv(model.training_rows, rows_file)
        cases = sorted(model.training_rows["case"].astype(str).unique().tolist()) \
            if "case" in model.training_rows else []
        training = {"file": rows_file.name, "sha256": _sha256(rows_file), "cases": cases,
                    "n_segments": len(model.training_rows), "min_interior": 0}
    return save_models(path, regressor=model.regressor, segmentation=model.segmentation,
                       training_data=training)


def load_quality_model(path) -> QualityModel:
    """Read an image-quality model file (and its training rows when present and unchanged).

    Raises :class:`~napari_metaseg.core.meta_io.MetaModelFileError` for a file that is not an
    image-quality model (a segment or region model) or is damaged.
    """
    from ..core.csv_safe import unescape_frame
    from ..core.meta_io import MetaModelFileError, load_models
    from .models import _sha256

    clf, reg, info = load_models(path, table_kind=None)
    mark = None
    if reg is not None and reg.provenance_ and isinstance(reg.provenance_[-1], dict):
        mark = reg.provenance_[-1].get(_MARK)
    if clf is not None or not isinstance(mark, dict):
        raise MetaModelFileError(f"{Path(path).name} is not an image-quality model (it rates segments or "
                                 "regions); train one with `napari-metaseg quality train`")
    try:
        by, target = mark["by"], _check_target(mark["target"])
        fail_below = float(mark["fail_below"])
        background = mark.get("background", 0)
        if by not in ("slice", "case") or not np.isfinite(fail_below):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise MetaModelFileError(f"{Path(path).name}: malformed image_quality record {mark!r}") from None
    model = QualityModel(reg, by, target, fail_below, info.get("segmentation"), background, None, str(path))
    ref = info.get("training_data")
    rows_file = Path(path).with_name(ref["file"]) if ref else images_path(path)
    if ref and rows_file.is_file() and _sha256(rows_file) == ref["sha256"]:
        model.training_rows = unescape_frame(pd.read_csv(rows_file, dtype={"case": str}))
        model.note = f"training rows: {rows_file.name} ({len(model.training_rows)} rows)"
    else:
        model.note = f"training rows {rows_file.name} missing or changed: no size-and-count baseline"
    return model


def model_settings(model: QualityModel, **given) -> dict:
    """:func:`quality_settings` of a model's rows; ``given`` values (None = the model's) must
    agree with the model's segmentation. Raises ValueError otherwise."""
    seg = model.segmentation or {}
    out = {"by": model.by, "mode": seg.get("mode"), "slice_axis": seg.get("slice_axis"),
           "ignore_index": seg.get("ignore_index", 255), "background": model.background}
    for key in ("mode", "slice_axis"):
        v = given.pop(key, None)
        if v is not None and out[key] is not None and v != out[key]:
            raise ValueError(f"the model was trained on rows made with {key} = {out[key]}; {key} = {v} "
                             "would give it rows of another kind (leave it out to use the model's)")
        if out[key] is None:
            out[key] = v
    if out["mode"] == "auto" or out["mode"] is None:
        out["mode"] = None
    return quality_settings(**{**out, **{k: v for k, v in given.items() if v is not None}})


def predict_quality(rows: pd.DataFrame, model: QualityModel) -> pd.DataFrame:
    """``rows`` with ``quality_pred`` (the predicted ``model.target``) and ``pass_pred``
    (``quality_pred >= fail_below``)."""
    from ..core.image_quality import predict_image_quality

    pred = predict_image_quality(model.regressor, rows)
    return rows.assign(quality_pred=pred, pass_pred=pred >= model.fail_below)


@dataclass
class QualityEvaluation:
    """DeVries & Taylor's figures (rows: ``regressor``, ``mean max-probability``, and
    ``size and segment count`` when the training rows are known) and the rows with predictions."""

    figures: pd.DataFrame
    rows: pd.DataFrame
    target: str
    fail_below: float
    note: str = ""

    def to_markdown(self) -> str:
        """The figures as a Markdown table."""
        cols = ["predictor", "RMSE", "detection error", "AUROC", "AUPR-pass", "AUPR-fail", "n", "failures"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for name, r in self.figures.iterrows():
            vals = [f"{r[c]:.3f}" if np.isfinite(r[c]) else "n/a"
                    for c in ("rmse", "detection_error", "auroc", "aupr_pass", "aupr_fail")]
            lines.append(f"| {name} | " + " | ".join(vals) + f" | {int(r['n'])} | {int(r['n_fail'])} |")
        return "\n".join(lines)


def evaluate_quality_rows(rows: pd.DataFrame, model: QualityModel, *, fail_below=None) -> QualityEvaluation:
    """D&T figures of a model on image rows with ground truth, beside the baselines.

    The mean max-probability baseline is the rows' ``mean_max_prob`` itself (a confidence, taken
    as the predicted score); the size-and-segment-count baseline is a linear regressor on
    ``log_n_segments`` and ``log_size`` fitted on the model's training rows (left out, and said
    in ``note``, when they are not available). Raises ValueError when the rows have no
    ``model.target`` (no ground truth).
    """
    from ..core.image_quality import BASELINE_FEATURES, evaluate_quality, fit_image_regressor

    fb = model.fail_below if fail_below is None else float(fail_below)
    if model.target not in rows.columns:
        raise ValueError(f"the rows have no {model.target!r} column: evaluation needs cases with "
                         "ground truth")
    out = predict_quality(rows, model)
    preds = {"regressor": out["quality_pred"].to_numpy(),
             "mean max-probability": out["mean_max_prob"].to_numpy()}
    note = ""
    train = model.training_rows
    if train is not None and model.target in train.columns:
        base = fit_image_regressor(train, model.target, kind="linear", columns=BASELINE_FEATURES)
        preds["size and segment count"] = base.predict(out[list(BASELINE_FEATURES)])
        out["quality_size_count"] = preds["size and segment count"]
    else:
        note = "no training rows: the size-and-segment-count baseline is left out"
    figures = evaluate_quality(out[model.target].to_numpy(np.float64), preds, fail_below=fb)
    return QualityEvaluation(figures, out, model.target, fb, note)


# ============================================================================================
# Voxel error detection
# ============================================================================================
@dataclass
class ErrorDetectionResult:
    """Result of :func:`error_detection`: per test case and measure the AUROC / AUPRC table
    (``scores``) and, per method, measure and target recall, what the flags reach on each case
    (``flags``: ``recall``, ``precision``, ``share_flagged``)."""

    scores: pd.DataFrame
    flags: pd.DataFrame
    failed: list = field(default_factory=list)


def error_detection(train_cases, test_cases, settings: dict, *, measures=("E", "D", "V"),
                    target_recalls=(0.8,), mask="all"):
    """Job: voxel error detection learnt on ``train_cases``, checked on ``test_cases``.

    For every measure, an :class:`~napari_metaseg.core.error_maps.ErrorCalibration` is fitted on
    the training cases; then on every case (training cases too, to see the recall reached where
    the parameters were chosen) the three rules of
    :func:`~napari_metaseg.core.error_maps.flag_errors` are applied at each target recall, and
    :func:`~napari_metaseg.core.error_maps.error_detection_scores` is computed. ``mask``:
    ``"all"`` voxels, or ``"foreground"`` (voxels predicted as a class other than
    ``settings["background"]``, 0 by default). Cases are held in memory one at a time (twice for
    the training cases). Yields ``(fraction, stage)``; returns an :class:`ErrorDetectionResult`.
    """
    from ..core import dispersion_maps
    from ..core.error_maps import (
        FLAG_METHODS,
        ErrorCalibration,
        error_detection_scores,
        flag_errors,
        flagged_scores,
    )

    if mask not in ("all", "foreground"):
        raise ValueError(f"mask must be 'all' or 'foreground', got {mask!r}")
    train_cases, test_cases = list(train_cases), list(test_cases)
    if not train_cases or not test_cases:
        raise ValueError("error detection needs at least one training and one test case")
    background = _background(settings)
    if mask == "foreground" and background is None:
        raise ValueError("mask='foreground' needs a background class (settings['background'])")
    ignore = settings.get("ignore_index", 255)
    n_steps = len(train_cases) + len(train_cases) + len(test_cases)
    step = 0

    def load(case):
        probs, gt = _case_arrays(case, settings)
        if gt is None:
            raise ValueError(f"case {case.name} has no ground truth")
        m = None if mask == "all" else probs.argmax(axis=-1) != background
        return probs, gt, m, dispersion_maps(probs, measures=tuple(measures))

    parts = {meas: [] for meas in measures}
    for case in train_cases:  # one case in memory at a time: counts per case, combined after
        probs, gt, m, maps = load(case)
        for meas in measures:
            parts[meas].append(ErrorCalibration(measure=meas).fit(probs, gt, masks=m, maps=maps,
                                                                  ignore_index=ignore))
        step += 1
        yield step / n_steps, f"calibration: case {case.name} counted"
    cals = {meas: ErrorCalibration.combine(parts[meas]) for meas in measures}
    score_rows, flag_rows = [], []
    for role, group in (("train", train_cases), ("test", test_cases)):
        for case in group:
            probs, gt, m, maps = load(case)
            s = error_detection_scores(probs, gt, measures=measures, mask=m, ignore_index=ignore, maps=maps)
            s.insert(0, "role", role)
            s.insert(0, "case", case.name)
            score_rows.append(s)
            for meas in measures:
                for r in target_recalls:
                    for method in FLAG_METHODS:
                        flags = flag_errors(probs, method=method, calibration=cals[meas], target_recall=r,
                                            mask=m, maps=maps)
                        res = flagged_scores(flags, probs, gt, ignore_index=ignore, mask=m)
                        flag_rows.append({"case": case.name, "role": role, "measure": meas, "method": method,
                                          "target_recall": float(r), **res})
            step += 1
            yield step / n_steps, f"case {case.name} scored"
    return ErrorDetectionResult(pd.concat(score_rows, ignore_index=True), pd.DataFrame(flag_rows))

