"""Active-learning ranking: order cases (or slices) by predicted quality, worst first.

The order is the image-level regressor's predicted mean IoU of each slice or case when the model
carries one of the ranking's kind (:attr:`~napari_metaseg.workflows.MetaModels.image_quality`),
else the size-weighted mean of the predicted segment IoU_adj (the fallback); every ranking says
which (``order`` column, :attr:`RankResult.note`). :func:`slice_quality` ranks the slices of one
case held in memory (the active-learning panel), :func:`rank` whole datasets (CLI ``rank``, the
panel's *Rank cases*); both order with
:func:`~napari_metaseg.core.active_learning.order_ranking`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..names import RANK_MIN_FOREGROUND
from .cases import measure_file, over_cases

__all__ = ["RankResult", "image_order", "rank", "rank_task", "slice_quality"]


@dataclass
class RankResult:
    """The ranking (:func:`~napari_metaseg.core.active_learning.order_ranking`'s columns), the
    failed cases ``[(case, error)]``, what a row is (``case`` or ``slice``), the time taken, the
    order used (``"image regressor"`` or ``"segment mean"``) and a note saying why."""

    ranking: pd.DataFrame
    failed: list = field(default_factory=list)
    by: str = "case"
    seconds: float = 0.0
    order: str = "segment mean"
    note: str = ""


def _quality_model(models):
    """The image-quality model of a model file path, a ``MetaModels`` or a pair (None)."""
    if isinstance(models, (str, Path)):
        from ..core.meta_io import load_models
        from .models import _quality_model_of

        _, _, info = load_models(models)
        return _quality_model_of(info.get("image_quality"), info.get("segmentation"), str(models))
    return getattr(models, "image_quality", None)


def image_order(models, by: str):
    """``(QualityModel or None, order, note)``: whether ranking rows ``by`` slice or case uses the
    models' image-level regressor (it must rate rows of that kind) or falls back to the segment mean.

    Example
    -------
    >>> image_order((None, None), "slice")[1]
    'segment mean'
    """
    from ..core.active_learning import ORDER_IMAGE, ORDER_SEGMENTS

    qm = _quality_model(models)
    if qm is None:
        return None, ORDER_SEGMENTS, ("segment mean: the model has no image-level regressor (train it on "
                                      "tables measured with ground truth to get one)")
    if qm.by != by:
        return None, ORDER_SEGMENTS, (f"segment mean: the model's image-level regressor rates {qm.by}s, "
                                      f"this ranking is by {by}")
    what = {"mean_iou": "mean IoU", "mean_dice": "mean Dice"}.get(qm.target, qm.target.replace("_", " "))
    return qm, ORDER_IMAGE, f"image regressor: predicted {what} of each {by}"


def rank_task(case, settings: dict, models, by="case", background=0) -> dict:
    """Summarise the predicted quality of one case (no files written).

    Returns ``{"n_segments": n, "rows": DataFrame}`` with the rows of
    :func:`napari_metaseg.core.active_learning.predicted_quality` (one per case, or per slice
    with ``by="slice"``; a 2D image is slice 0), ``quality_pred`` from the model's image-level
    regressor when it rates rows ``by`` (:func:`image_order`). Segments of class ``background``
    are left out (None keeps every class). ``models``: a model file path, a ``MetaModels`` or a pair.
    """
    from ..core.active_learning import predicted_quality
    from .cases import resolve_models

    _, table, _ = measure_file(case, settings)
    pair = resolve_models(models, table)
    qm, _, _ = image_order(models, by)
    if by == "slice" and "slice" not in table.columns:
        table = table.assign(slice=0)
    rows = predicted_quality({case.name: table}, pair, by=by, background=background,
                             image_model=None if qm is None else qm.regressor,
                             image_background=0 if qm is None else qm.background)
    return {"n_segments": len(table), "rows": rows}


def default_by(settings: dict) -> str:
    """``slice`` for slice-wise segmentation (``settings["mode"] == "slices"``), else ``case``."""
    return "slice" if settings.get("mode") == "slices" else "case"


def rank(cases, models, settings, *, by=None, background=0, min_foreground=RANK_MIN_FOREGROUND, workers=None,
         scheduler=None, threads=None):
    """Job: rank cases (or their slices) for annotation, worst predicted quality first.

    Each case is read, measured and summarised by :func:`rank_task`; the rows are ordered by
    :func:`~napari_metaseg.core.active_learning.order_ranking` (ties keep the order of
    ``cases``; rows with less foreground than ``min_foreground`` times the largest of their case
    (by slice) or of all cases (by case) last). ``by``: ``"slice"`` or ``"case"``; None takes
    :func:`default_by` of ``settings``. Ground truth, where a case has it, adds ``iou_adj_mean``
    and ``mean_iou``. A case that fails is listed in ``failed``; the others go on.

    Yields ``(fraction, stage)``; returns a :class:`RankResult` (its ``order`` and ``note`` say
    which order was used).
    """
    from ..core.active_learning import RANKING_COLUMNS, _check_min_foreground, order_ranking

    by = default_by(settings) if by is None else by
    if by not in ("case", "slice"):
        raise ValueError(f"by={by!r}; expected 'case' or 'slice'")
    if by == "slice" and settings.get("mode") == "3d":
        raise ValueError("ranking by slice needs slice-wise segments (mode 'slices'), not 3d")
    min_foreground = _check_min_foreground(min_foreground)
    t0 = time.perf_counter()
    _, order, note = image_order(models, by)
    results = yield from over_cases(rank_task, cases, (settings, models, by, background), workers=workers,
                                    scheduler=scheduler, threads=threads, what="case")
    rows = [r["rows"] for r in results if r["status"] == "done"]
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    if rows:
        ranking = order_ranking(pd.concat(rows, ignore_index=True), min_foreground=min_foreground)
    else:
        ranking = pd.DataFrame(columns=[c for c in RANKING_COLUMNS if c != "slice" or by == "slice"])
    return RankResult(ranking, failed, by, time.perf_counter() - t0, order, note)


#: Columns of :func:`slice_quality`, in this order (``case`` when the table has one, ``slice`` by
#: slice, ``mean_iou`` when the table carries the image scores of its rows).
SLICE_QUALITY_COLUMNS = ("rank", "case", "slice", "quality_pred", "order", "foreground", "n_segments",
                         "iou_adj_pred_mean", "mean_iou", "priority")


def slice_quality(table: pd.DataFrame, models=None, *, by=None, min_foreground=RANK_MIN_FOREGROUND,
                  background=0) -> pd.DataFrame:
    """The predicted quality of every slice (or of the case) of ONE case's segment table, in
    review order.

    Parameters
    ----------
    table : pandas.DataFrame
        The segment table of one case (e.g. ``Analysis.table``), with the segment predictions
        ``iou_adj_pred`` / ``p_iou0`` when a model was applied; without them the models'
        segment models predict them.
    models : MetaModels, optional
        Its ``image_quality`` (when it rates rows ``by``) gives ``quality_pred``; otherwise the
        size-weighted mean of ``iou_adj_pred`` over the non-background segments.
    by : {"slice", "case"}, optional
        Default: ``"slice"`` when the table has a ``slice`` column, else ``"case"``.
    min_foreground : float, default 0.01
        Rows whose foreground is below this share of the largest one rank last (priority NaN).
    background : int or None, default 0
        Class not counted as foreground nor in the segment mean.

    Returns
    -------
    pandas.DataFrame
        :data:`SLICE_QUALITY_COLUMNS`: ``rank`` (review order), ``case`` (if in the table),
        ``slice`` (by slice), ``quality_pred``, ``order`` (``"image regressor"`` or ``"segment
        mean"``), ``foreground`` (pixels of the non-background predicted segments of the row),
        ``n_segments``, ``iou_adj_pred_mean``, ``mean_iou`` (true, when the table has
        ``image_mean_iou``) and ``priority`` (1 - ``quality_pred``; NaN for rows below the minimum
        foreground, which come last). ``attrs["note"]`` says which order was used and why.

    Raises
    ------
    ValueError
        No predictions in the table and no segment model, a table of several cases, ``by``
        unknown or ``"slice"`` without a ``slice`` column.

    Example
    -------
    >>> t = pd.DataFrame({"slice": [0, 0, 1], "class": [0, 1, 1], "S": [90, 10, 30],
    ...                   "iou_adj_pred": [1.0, 0.2, 0.9]})
    >>> slice_quality(t)[["slice", "quality_pred", "foreground"]].to_numpy().tolist()
    [[0.0, 0.2, 10.0], [1.0, 0.9, 30.0]]
    """
    from ..core.active_learning import _resolve_by, order_ranking, predicted_quality

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    has_case = "case" in table.columns
    if has_case and table["case"].astype(str).nunique() > 1:
        raise ValueError("slice_quality rates the slices of one case; the table holds several (use rank)")
    by = _resolve_by(table, by)
    pair = None
    if not {"iou_adj_pred", "p_iou0"} & set(table.columns):
        pair = getattr(models, "pair", None)
        if pair is None or (pair[0] is None and pair[1] is None):
            raise ValueError("the table holds no segment predictions (iou_adj_pred) and no segment model "
                             "was given: apply a model first")
    qm, _, note = image_order(models, by)
    one = table if has_case else table.assign(case="")
    summary = predicted_quality(one, pair, by=by, background=background,
                                image_model=None if qm is None else qm.regressor,
                                image_background=0 if qm is None else qm.background)
    out = order_ranking(summary, min_foreground=min_foreground).rename(columns={"size": "foreground"})
    keep = [c for c in SLICE_QUALITY_COLUMNS if c in out.columns and (c != "case" or has_case)]
    out = out[keep]
    out.attrs["note"] = note
    return out
