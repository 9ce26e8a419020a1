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

from ..names import IMAGE_SCORE_COLUMNS, IMAGE_TARGETS
from .cases import over_cases

__all__ = [
    "QUALITY_TARGETS",
    "CaseScores",
    "ErrorDetectionResult",
    "ErrorMapsResult",
    "FlaggedVoxels",
    "ImageRows",
    "QualityEvaluation",
    "QualityModel",
    "ScoresResult",
    "calibrate_cases",
    "calibration_task",
    "case_scores",
    "check_flag_options",
    "error_detection",
    "error_map_task",
    "error_maps",
    "evaluate_quality_rows",
    "fit_image_model",
    "flag_case",
    "flag_map_path",
    "image_rows",
    "image_training_rows",
    "images_path",
    "load_quality_model",
    "predict_quality",
    "quality_settings",
    "quality_task",
    "save_quality_model",
    "scores",
    "scores_task",
    "train_quality",
    "with_image_scores",
]

#: Image scores an image-quality model can be trained to predict.
QUALITY_TARGETS = IMAGE_TARGETS
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
    ``size and segment count`` when the training rows are known) with a 95 % bootstrap interval of
    each AUROC, the paired comparison of the regressor's AUROC with each baseline's
    (:func:`~napari_metaseg.core.image_quality.compare_auroc`; empty when every row passes or
    every row fails), and the rows with predictions."""

    figures: pd.DataFrame
    rows: pd.DataFrame
    target: str
    fail_below: float
    note: str = ""
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_markdown(self) -> str:
        """The figures as a Markdown table, then the comparisons as a sentence per baseline."""
        def num(v):
            return f"{v:.3f}" if np.isfinite(v) else "n/a"

        cols = ["predictor", "RMSE", "detection error", "AUROC", "AUROC 95 % CI", "AUPR-pass", "AUPR-fail",
                "n", "failures"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for name, r in self.figures.iterrows():
            low, high = r.get("auroc_low", np.nan), r.get("auroc_high", np.nan)
            interval = f"{low:.3f}-{high:.3f}" if np.isfinite(low) else "n/a"
            vals = [num(r["rmse"]), num(r["detection_error"]), num(r["auroc"]), interval, num(r["aupr_pass"]),
                    num(r["aupr_fail"])]
            lines.append(f"| {name} | " + " | ".join(vals) + f" | {int(r['n'])} | {int(r['n_fail'])} |")
        for name, c in self.comparisons.iterrows():
            verdict = ("above" if c["low"] > 0 else "below" if c["high"] < 0
                       else "not told apart from")
            lines.append(f"\nregressor vs {name}: AUROC difference {c['difference']:+.3f} (95 % CI "
                         f"{c['low']:+.3f} to {c['high']:+.3f}): the regressor is {verdict} {name} on "
                         f"these {int(c['n'])} rows")
        return "\n".join(lines)


def evaluate_quality_rows(rows: pd.DataFrame, model: QualityModel, *, fail_below=None, n_boot=2000,
                          seed=0) -> QualityEvaluation:
    """D&T figures of a model on image rows with ground truth, beside the baselines.

    The mean max-probability baseline is the rows' ``mean_max_prob`` itself (a confidence, taken
    as the predicted score); the size-and-segment-count baseline is a linear regressor on
    ``log_n_segments`` and ``log_size`` fitted on the model's training rows (left out, and said
    in ``note``, when they are not available). Every AUROC has a 95 % interval from ``n_boot``
    stratified bootstrap resamples (``seed``), and the regressor's AUROC is compared with each
    baseline's on the same resamples. Raises ValueError when the rows have no ``model.target``
    (no ground truth).
    """
    from ..core.image_quality import BASELINE_FEATURES, compare_auroc, evaluate_quality, fit_image_regressor

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
    true = out[model.target].to_numpy(np.float64)
    figures = evaluate_quality(true, preds, fail_below=fb, ci=0.95, n_boot=n_boot, seed=seed)
    comparisons = pd.DataFrame()
    if np.isfinite(figures.loc["regressor", "auroc"]):
        comparisons = compare_auroc(true, preds, against="regressor", fail_below=fb, n_boot=n_boot, seed=seed)
    return QualityEvaluation(figures, out, model.target, fb, note, comparisons)


# ============================================================================================
# Image scores in segment tables, and the image regressor a segment model file carries
# ============================================================================================
def with_image_scores(table: pd.DataFrame, pred, gt, *, segmentation=None, background=0) -> pd.DataFrame:
    """``table`` with the image scores of the slice or image each segment lies in.

    Adds ``image_mean_iou`` and ``image_mean_dice``: ``mean_iou`` / ``mean_dice`` of
    :func:`~napari_metaseg.core.scores.segmentation_scores` of ``pred`` against ``gt``, per slice
    along the segmentation's slice axis when the table has a ``slice`` column (slice-wise
    segmentation), else of the whole image or volume, broadcast to every segment of that slice
    (image). NaN where no class other than ``background`` occurs in the slice's GT or prediction.
    These are targets of the image-level regressor, never segment features
    (:data:`napari_metaseg.core.meta_dataset.NON_FEATURE_COLUMNS`).

    Parameters
    ----------
    table : pandas.DataFrame
        A segment table of :func:`~napari_metaseg.core.segment_metrics` (existing columns of these
        names are replaced).
    pred, gt : numpy.ndarray
        Predicted class ids (the argmax of the probabilities the table was made from) and ground
        truth, same spatial shape.
    segmentation : dict, optional
        ``slice_axis`` and ``ignore_index`` of the table (default -1 and 255).
    background : int or None, default 0
        Class left out of the means.

    Returns
    -------
    pandas.DataFrame

    Example
    -------
    >>> gt = np.array([[0, 1], [1, 1]])
    >>> t = pd.DataFrame({"index": [1, 2], "class": [0, 1]})
    >>> with_image_scores(t, np.array([[0, 1], [0, 1]]), gt)["image_mean_iou"].round(3).tolist()
    [0.667, 0.667]
    """
    from ..core.scores import segmentation_scores

    seg = segmentation or {}
    axis = seg.get("slice_axis")
    ignore = seg.get("ignore_index", 255)
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape}, gt {gt.shape}: they must match")
    out = table.drop(columns=[c for c in IMAGE_SCORE_COLUMNS if c in table.columns])
    kw = {"ignore_index": ignore, "background": background}
    if "slice" in table.columns and pred.ndim == 3:
        sc = segmentation_scores(pred, gt, per="slice", slice_axis=-1 if axis is None else int(axis), **kw)
        by_slice = sc.set_index("slice")
        where = out["slice"].to_numpy()
        out["image_mean_iou"] = by_slice["mean_iou"].to_numpy()[where]
        out["image_mean_dice"] = by_slice["mean_dice"].to_numpy()[where]
    else:
        sc = segmentation_scores(pred, gt, per="image", **kw)
        out["image_mean_iou"] = float(sc["mean_iou"].iloc[0])
        out["image_mean_dice"] = float(sc["mean_dice"].iloc[0])
    return out


def predicted_classes(seg, table: pd.DataFrame) -> np.ndarray:
    """The predicted class map of a segment label map: every pixel gets its segment's ``class``
    (exactly the argmax the segments were made from, without recomputing it)."""
    seg = np.asarray(seg)
    classes = table["class"].to_numpy(np.int64)
    # uint8 when the ids fit (the scores' fast path with uint8 ground truth)
    dtype = np.uint8 if classes.size == 0 or (classes.min() >= 0 and classes.max() <= 255) else np.int64
    lut = np.zeros(int(seg.max()) + 1 if seg.size else 1, dtype)
    lut[table["index"].to_numpy(np.int64)] = classes
    return lut[seg]


def image_training_rows(table: pd.DataFrame, *, by: str, background=0) -> pd.DataFrame:
    """:func:`~napari_metaseg.core.image_quality.image_features` rows of a segment table with the
    image scores it carries as ``mean_iou`` / ``mean_dice`` (the image regressor's targets).

    Prediction columns of the table are left out of the features: the image regressor a segment
    model carries is fitted without the segment models' predictions (docs/active_learning.md).
    ``by="slice"`` needs a slice-wise table, ``by="case"`` one without a ``slice`` column (its image
    scores are per slice otherwise). Raises ValueError otherwise.
    """
    from ..core.image_quality import image_features
    from ..names import PREDICTION_COLUMNS

    if (by == "slice") != ("slice" in table.columns):
        raise ValueError(f"rows by {by} need a table {'with' if by == 'slice' else 'without'} a slice column")
    feats = image_features(table.drop(columns=[c for c in PREDICTION_COLUMNS if c in table.columns]),
                           by=by, background=background)
    have = [c for c in IMAGE_SCORE_COLUMNS if c in table.columns]
    if not have:
        return feats
    keys = [k for k in ("case", "slice") if k in feats.columns]
    if keys:
        scores = table.groupby(keys, sort=False)[have].first().reset_index()
        if "case" in scores:
            scores["case"] = scores["case"].astype(str)
        feats = feats.merge(scores, on=keys, how="left")
    else:
        for c in have:
            feats[c] = table[c].dropna().iloc[0] if table[c].notna().any() else np.nan
    return feats.rename(columns={c: c[len("image_"):] for c in have})


def fit_image_model(table: pd.DataFrame, segmentation=None, *, kind="lasso", background=0, random_state=0):
    """The image regressor a segment model carries, fitted on a training table if it allows one.

    Rows by slice for slice-wise tables, else by case; target ``mean_iou`` (the table's
    ``image_mean_iou``); fitted when at least
    :data:`~napari_metaseg.core.meta_estimators.MIN_SEGMENTS` rows have a finite target.

    Returns ``(QualityModel or None, note)``: the note says what was fitted, or why not.
    """
    from ..core.image_quality import fit_image_regressor
    from ..core.meta_estimators import MIN_SEGMENTS

    by = "slice" if "slice" in table.columns else "case"
    if "image_mean_iou" not in table.columns:
        return None, ("not fitted: the training tables carry no image_mean_iou (tables measured with "
                      "ground truth before image scores were recorded: measure the cases again)")
    rows = image_training_rows(table, by=by, background=background)
    usable = int(np.isfinite(rows["mean_iou"].to_numpy(np.float64)).sum())
    if usable < MIN_SEGMENTS:
        more = "add cases" + ("" if by == "slice" else ", or segment volumes slice by slice")
        return None, (f"not fitted: {usable} {by} row(s) with a mean IoU, the image regressor needs at "
                      f"least {MIN_SEGMENTS} ({more})")
    reg = fit_image_regressor(rows, "mean_iou", kind=kind, random_state=random_state)
    finite = np.isfinite(rows["mean_iou"].to_numpy(np.float64))
    n_cases = rows.loc[finite, "case"].nunique() if "case" in rows.columns else 1
    model = QualityModel(reg, by, "mean_iou", 0.7, segmentation, background, rows)
    return model, f"fitted ({kind}, by {by}, {usable} rows of {n_cases} case(s))"


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



# ============================================================================================
# One case in memory (the Quality tab): scores per case and slice, flagged voxels; and the
# voxel error maps of case files (``napari-metaseg errors``)
# ============================================================================================
def _slice_axis_of(slice_axis, ndim):
    if isinstance(slice_axis, bool) or not isinstance(slice_axis, (int, np.integer)) \
            or not -ndim <= slice_axis < ndim:
        raise ValueError(f"slice_axis {slice_axis!r} is not a spatial axis of a {ndim}D map "
                         f"(expected -{ndim} .. {ndim - 1})")
    return int(slice_axis) % ndim


@dataclass
class CaseScores:
    """Result of :func:`case_scores`: the scores of the whole case (one row) and of its slices
    (volumes with ``per_slice``; else None), the slice axis of those rows (a spatial axis,
    counted from 0) and the number of classes."""

    case: pd.DataFrame
    slices: pd.DataFrame | None
    slice_axis: int | None
    n_classes: int


def case_scores(probs, gt, *, class_axis=-1, ignore_index=255, background=0, slice_axis=-1, per_slice=True):
    """Job: evaluation scores of one case in memory, per case and per slice.

    The prediction is the argmax of ``probs``; the scores are those of
    :func:`~napari_metaseg.core.scores.segmentation_scores` (``n_classes`` = the number of
    classes of ``probs``, so every class has its columns).

    Parameters
    ----------
    probs : array_like
        Probabilities with a class axis (validated by :func:`~napari_metaseg.core.as_probabilities`).
    gt : array_like of int
        Ground truth, the spatial shape of ``probs``.
    class_axis : int, default -1
    ignore_index : int or None, default 255
    background : int or None, default 0
        Class left out of ``mean_iou`` / ``mean_dice``.
    slice_axis : int, default -1
        Spatial axis of the slice rows (volumes).
    per_slice : bool, default True

    Yields
    ------
    (float, str)

    Returns
    -------
    CaseScores

    Raises
    ------
    ValueError
        No ground truth, a ground truth of another shape or with ids beyond the classes, a slice
        axis that is not one of the volume's.

    Example
    -------
    >>> from napari_metaseg.core.progress import drain
    >>> p = np.zeros((2, 2, 2), np.float32); p[..., 0] = [[1, 1], [0, 0]]; p[..., 1] = 1 - p[..., 0]
    >>> drain(case_scores(p, np.array([[0, 1], [1, 1]]))).case["iou_1"].round(3).tolist()
    [0.667]
    """
    from ..core.inputs import as_probabilities
    from ..core.scores import segmentation_scores

    if gt is None:
        raise ValueError("no ground truth: the scores compare the prediction with the case's ground truth; "
                         "open it and choose it as the ground-truth layer")
    yield 0.0, "prediction (argmax)"
    p = as_probabilities(probs, class_axis=class_axis)
    q = p.shape[-1]
    gt = np.asarray(gt)
    if gt.shape != p.shape[:-1]:
        raise ValueError(f"the ground truth has shape {gt.shape}, the probabilities' spatial shape is "
                         f"{p.shape[:-1]}: they are not the same case")
    pred = p.argmax(axis=-1)
    del p
    axis = _slice_axis_of(slice_axis, pred.ndim) if per_slice and pred.ndim == 3 else None
    kw = {"ignore_index": ignore_index, "background": background, "n_classes": q}
    yield 0.4, "scoring the case"
    row = segmentation_scores(pred, gt, per="image", **kw)
    slices = None
    if axis is not None:
        yield 0.7, f"scoring {pred.shape[axis]} slices"
        slices = segmentation_scores(pred, gt, per="slice", slice_axis=axis, **kw)
    yield 1.0, "scored"
    return CaseScores(row, slices, axis, q)


def check_flag_options(*, measure="E", method="fixed", threshold=None, share=None, target_recall=None,
                       calibrated=False, mask="all") -> dict:
    """The options of :func:`~napari_metaseg.core.error_maps.flag_errors` for a run, checked once.

    ``calibrated``: whether a calibration (training cases) will be given. Returns the options
    (``target_recall`` 0.8 by default for ``"calibrated"``). Raises ValueError naming the option
    and the fix for a combination that cannot work: a threshold with the quantile rule, a share
    with the fixed rule, ``"calibrated"`` without training cases, a value out of range.

    Example
    -------
    >>> check_flag_options(method="quantile", share=0.05)["share"]
    0.05
    """
    from ..core.error_maps import FLAG_METHODS
    from ..core.heatmaps import MEASURES

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if method not in FLAG_METHODS:
        raise ValueError(f"method must be one of {FLAG_METHODS}, got {method!r}")
    if mask not in ("all", "foreground"):
        raise ValueError(f"mask must be 'all' or 'foreground', got {mask!r}")
    if threshold is not None:
        if method != "fixed":
            raise ValueError(f"a threshold is for the fixed rule; the {method} rule takes "
                             + ("a share" if method == "quantile" else "a target recall"))
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1] (the heatmaps do), got {threshold:g}")
    if share is not None:
        if method != "quantile":
            raise ValueError(f"a share is for the quantile rule; the {method} rule takes "
                             + ("a threshold" if method == "fixed" else "a target recall"))
        share = float(share)
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must lie in (0, 1], got {share:g}")
    if target_recall is not None:
        target_recall = float(target_recall)
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target recall must lie in (0, 1], got {target_recall:g}")
    if method == "calibrated" and not calibrated:
        raise ValueError("the calibrated rule learns P(error | heatmap) from training cases with ground "
                         "truth: give them (--train), or use the fixed or quantile rule")
    if target_recall is not None and not calibrated:
        raise ValueError("a target recall chooses the rule's parameter on training cases: give them "
                         "(--train), or give the threshold / share itself")
    if calibrated and method == "fixed" and threshold is not None:
        raise ValueError("give either a threshold or training cases with a target recall, not both")
    if calibrated and method == "quantile" and share is not None:
        raise ValueError("give either a share or training cases with a target recall, not both")
    if method == "quantile" and share is None and not calibrated:
        raise ValueError("the quantile rule needs the share of voxels to flag (e.g. 0.05), or training cases "
                         "and a target recall to choose it")
    if calibrated and target_recall is None:
        target_recall = 0.8
    if method == "fixed" and threshold is None and not calibrated:
        threshold = 0.5
    return {"measure": measure, "method": method, "threshold": threshold, "share": share,
            "target_recall": target_recall, "mask": mask}


def _error_mask(probs, mask, background):
    """Voxels that may be flagged: None (all) or those predicted as a class other than ``background``."""
    if mask == "all":
        return None
    if background is None:
        raise ValueError("mask 'foreground' needs a background class")
    return probs.argmax(axis=-1) != background


def calibration_task(case, settings: dict, measure: str, mask: str) -> dict:
    """Voxel and error counts per heatmap bin of one training case (an
    :class:`~napari_metaseg.core.error_maps.ErrorCalibration` record, see
    :func:`calibrate_cases`). Raises ValueError when the case has no ground truth."""
    from ..core.error_maps import N_BINS, ErrorCalibration, _bins
    from ..core.heatmaps import dispersion_maps
    from ..core.inputs import check_ground_truth

    probs, gt = _case_arrays(case, settings)
    if gt is None:
        raise ValueError(f"case {case.name} has no ground truth: a calibration learns from cases with "
                         "ground truth")
    ignore = settings.get("ignore_index", 255)
    gt = check_ground_truth(gt, probs.shape[:-1], probs.shape[-1], ignore_index=ignore)
    pred = probs.argmax(axis=-1)
    valid = np.ones(pred.shape, bool) if ignore is None else gt != int(ignore)
    m = _error_mask(probs, mask, _background(settings))
    if m is not None:
        valid &= m
    bins = _bins(dispersion_maps(probs, measures=(measure,))[measure][valid], N_BINS)  # the engine's binning
    voxels = np.bincount(bins, minlength=N_BINS)
    errors = np.bincount(bins[(pred != gt)[valid]], minlength=N_BINS)
    rate = np.divide(errors, voxels, out=np.zeros(N_BINS), where=voxels > 0)
    record = {"measure": measure, "n_bins": N_BINS, "n_cases": 1, "voxels": voxels.tolist(),
              "errors": errors.tolist(), "error_rate": rate.tolist()}
    ErrorCalibration.from_dict(record)  # checked here, where the case is named
    return {"counts": record, "n_errors": int(errors.sum())}


def calibrate_cases(cases, settings: dict, *, measure="E", mask="all", workers=None, scheduler=None,
                    threads=None):
    """Job: P(error | heatmap) of one measure learnt on case files with ground truth.

    Each case is read and counted on its own (:func:`calibration_task`; one case in memory at a
    time, on Dask workers when asked); the counts are summed and fitted once
    (:meth:`~napari_metaseg.core.error_maps.ErrorCalibration.combine`), so a training case without
    any error still counts. ``settings``: ``ignore_index``, ``class_axis``, ``background`` (for
    ``mask="foreground"``). Yields ``(fraction, stage)``; returns the
    :class:`~napari_metaseg.core.error_maps.ErrorCalibration`. Raises ValueError when a case
    fails (every training case is needed) or the cases hold no error at all.
    """
    from ..core.error_maps import ErrorCalibration

    cases = list(cases)
    if not cases:
        raise ValueError("no training case given: a calibration learns from cases with ground truth")
    check_flag_options(measure=measure, mask=mask)
    results = yield from over_cases(calibration_task, cases, (settings, measure, mask), workers=workers,
                                    scheduler=scheduler, threads=threads, what="calibration")
    failed = [f"{r['case']}: {r['error']}" for r in results if r["status"] != "done"]
    if failed:
        raise ValueError("the calibration needs every training case; " + "; ".join(failed))
    return ErrorCalibration.combine([ErrorCalibration.from_dict(r["counts"]) for r in results])


@dataclass
class FlaggedVoxels:
    """Result of :func:`flag_case`: the boolean map, how it was made (``options`` of
    :func:`check_flag_options`, and the training cases of a calibration), the voxels flagged
    and considered, and, with ground truth, ``scores`` (``recall``, ``precision``,
    ``share_flagged``, ``n_errors`` of :func:`~napari_metaseg.core.error_maps.flagged_scores`:
    against the misclassified voxels among those considered)."""

    flags: np.ndarray
    options: dict
    n_flagged: int
    n_considered: int
    scores: dict | None = None
    training_cases: list = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.n_flagged / self.n_considered if self.n_considered else float("nan")


def flag_case(probs, gt=None, *, class_axis=-1, measure="E", method="fixed", threshold=None, share=None,
              target_recall=None, training_cases=None, settings=None, mask="all", background=0,
              ignore_index=255):
    """Job: the voxels of one case in memory to check first (the Quality tab's *Flag*).

    :func:`~napari_metaseg.core.error_maps.flag_errors` with the options of
    :func:`check_flag_options`; ``training_cases`` (case files with ground truth, read with
    ``settings``) calibrate P(error | heatmap) for the calibrated rule (or choose the threshold /
    share of the others for ``target_recall``). ``mask="foreground"``: only voxels predicted as
    a class other than ``background`` are considered. With ``gt``, the flags are scored against
    the misclassified voxels. Yields ``(fraction, stage)``; returns :class:`FlaggedVoxels`.

    Example
    -------
    >>> from napari_metaseg.core.progress import drain
    >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
    >>> r = drain(flag_case(p, np.array([[0, 0], [1, 1]]), measure="V", threshold=0.3))
    >>> r.flags.tolist(), r.scores["precision"]
    ([[False, True], [True, False]], 0.5)
    """
    from ..core import dispersion_maps
    from ..core.error_maps import flag_errors, flagged_scores
    from ..core.inputs import as_probabilities
    from ..core.progress import rescaled

    training_cases = list(training_cases or [])
    opts = check_flag_options(measure=measure, method=method, threshold=threshold, share=share,
                              target_recall=target_recall, calibrated=bool(training_cases), mask=mask)
    calibration, start = None, 0.0
    if training_cases:
        s = {"background": background, "ignore_index": ignore_index, **(settings or {})}
        calibration = yield from rescaled(calibrate_cases(training_cases, s, measure=measure, mask=mask),
                                          0.0, 0.6, prefix="calibration: ")
        start = 0.6
    yield start, "checking the probabilities"
    p = as_probabilities(probs, class_axis=class_axis)
    m = _error_mask(p, mask, background)
    yield start + 0.1 * (1 - start), f"heatmap {measure}"
    maps = dispersion_maps(p, measures=(measure,))
    yield start + 0.5 * (1 - start), "flagging"
    flags = flag_errors(p, measure=measure, method=method, threshold=opts["threshold"], share=opts["share"],
                        calibration=calibration, target_recall=opts["target_recall"], mask=m, maps=maps)
    scores = None
    if gt is not None:
        yield start + 0.8 * (1 - start), "comparing with the ground truth"
        scores = flagged_scores(flags, p, gt, ignore_index=ignore_index, mask=m)
    n_flagged = int(flags.sum())
    yield 1.0, f"{n_flagged} voxels flagged"
    return FlaggedVoxels(flags, opts, n_flagged, int(m.sum()) if m is not None else flags.size, scores,
                         [c.name for c in training_cases])


def flag_map_path(out_dir, case) -> Path:
    """Where :func:`error_map_task` writes a case's map: ``<out_dir>/maps/<case>_flagged.nii.gz``
    for NIfTI input, else ``.npy``."""
    from ..io.cases import is_nifti

    ext = ".nii.gz" if is_nifti(case.softmax) else ".npy"
    return Path(out_dir) / "maps" / f"{case.name}_flagged{ext}"


def _write_flag_map(flags, affine, path, like):
    """uint8 map (1 = flagged), written atomically: NIfTI with the input's affine and its
    qform/sform codes and units, else ``.npy``."""
    from ..core.atomic import atomic_path

    values = flags.astype(np.uint8)
    if affine is None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, values)
        return path
    import nibabel as nib

    from ..io.results import save_nifti_atomic

    img = nib.Nifti1Image(values, np.asarray(affine, dtype=np.float64))
    src = nib.load(str(like)).header
    img.set_qform(affine, code=int(src["qform_code"]) or 1)
    img.set_sform(affine, code=int(src["sform_code"]) or 1)
    img.header.set_xyzt_units(xyz=src.get_xyzt_units()[0])
    return save_nifti_atomic(img, path)


def error_map_task(case, out_dir, settings: dict, options: dict, calibration=None) -> dict:
    """Flag the voxels of one case file and write the map (:func:`flag_map_path`; uint8, 1 =
    flagged, the input's affine for NIfTI). ``options``: :func:`check_flag_options`. Returns
    ``{"row": {...}}``: ``case``, ``n_flagged``, ``n_voxels`` (considered), ``share_flagged``,
    and with ground truth ``recall``, ``precision``, ``n_errors``; ``map`` (file name)."""
    from ..core.error_maps import flag_errors, flagged_scores
    from ..io.cases import is_nifti, read_case

    probs, gt, affine = read_case(case, class_axis=settings.get("class_axis", -1))
    m = _error_mask(probs, options["mask"], _background(settings))
    flags = flag_errors(probs, measure=options["measure"], method=options["method"],
                        threshold=options["threshold"], share=options["share"], calibration=calibration,
                        target_recall=options["target_recall"], mask=m)
    n = int(m.sum()) if m is not None else flags.size
    row = {"case": case.name, "n_flagged": int(flags.sum()), "n_voxels": n,
           "share_flagged": float(flags.sum()) / n if n else float("nan")}
    if gt is not None:
        s = flagged_scores(flags, probs, gt, ignore_index=settings.get("ignore_index", 255), mask=m)
        row.update(recall=s["recall"], precision=s["precision"], n_errors=s["n_errors"])
    path = flag_map_path(out_dir, case)
    _write_flag_map(flags, affine if is_nifti(case.softmax) else None, path, case.softmax)
    row["map"] = path.name
    return {"row": row}


@dataclass
class ErrorMapsResult:
    """Result of :func:`error_maps`: one row per done case (see :func:`error_map_task`), the
    failed cases, the options used and the calibration (None without training cases)."""

    table: pd.DataFrame
    failed: list
    options: dict
    calibration: object = None


def error_maps(cases, out_dir, settings: dict, *, measure="E", method="fixed", threshold=None, share=None,
               target_recall=None, train_cases=None, mask="all", workers=None, scheduler=None, threads=None):
    """Job: flagged-voxel maps of case files, and how much of their errors they hold.

    The options are checked first (:func:`check_flag_options`), then the training cases are
    calibrated (:func:`calibrate_cases`, when given), then every case is flagged and written
    (:func:`error_map_task`: ``out_dir/maps/<case>_flagged.nii.gz`` or ``.npy``, atomically), and
    the rows go to ``out_dir/flagged.csv``. Nothing is written when the options or the
    calibration fail; a failing case writes nothing of its own and is listed. Yields
    ``(fraction, stage)``; returns :class:`ErrorMapsResult`.
    """
    from ..core.csv_safe import write_csv
    from ..core.progress import rescaled

    cases, train_cases = list(cases), list(train_cases or [])
    opts = check_flag_options(measure=measure, method=method, threshold=threshold, share=share,
                              target_recall=target_recall, calibrated=bool(train_cases), mask=mask)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    calibration = None
    total = len(train_cases) + len(cases)
    split = len(train_cases) / total if total else 0.0
    if train_cases:
        job = calibrate_cases(train_cases, settings, measure=measure, mask=mask, workers=workers,
                              scheduler=scheduler, threads=threads)
        calibration = yield from rescaled(job, 0.0, split)
    (out_dir / "maps").mkdir(parents=True, exist_ok=True)
    results = yield from rescaled(over_cases(error_map_task, cases, (out_dir, settings, opts, calibration),
                                             workers=workers, scheduler=scheduler, threads=threads,
                                             what="flagged"), split, 1.0)
    rows = [r["row"] for r in results if r["status"] == "done"]
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    table = pd.DataFrame(rows)
    if rows:
        write_csv(table, out_dir / "flagged.csv")
    return ErrorMapsResult(table, failed, opts, calibration)
