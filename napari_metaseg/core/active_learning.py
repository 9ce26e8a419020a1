"""Active learning: which unlabelled cases (images, volumes or slices) to annotate first.

The meta models predict, for every segment of a case, P(IoU_adj = 0) (classifier) and IoU_adj
(regressor). :func:`predicted_quality` summarises them per case, or per (case, slice) of a
volume segmented slice by slice:

* ``iou_adj_pred_mean``: the mean predicted IoU_adj weighted by segment size ``S`` (from the
  regressor): the predicted share of the case's segmented area that is right;
* ``share_likely_wrong``: the share of segments with P(IoU_adj = 0) > ``threshold`` (from the
  classifier): how many objects are probably false positives, whatever their size.

Segments of the ``background`` class (default 0) are left out of both: the one large background
segment of a slice would otherwise decide the size-weighted mean, and nearly empty edge slices
(almost all background, predicted right) would rank by it. A case or slice without any other
segment gets NaN and is ranked after all others.

:func:`order_ranking` turns such a summary into the review order (worst predicted quality first)
and :func:`rank_cases` does both. The command line (``napari-metaseg rank``) and the active
learning panel use the same :func:`order_ranking`, so they list cases in the same order.

Two orders (the ``order`` column says which one a ranking used):

* ``"image regressor"``: given an image-level regressor (``image_model``, fitted on
  :func:`~napari_metaseg.core.image_quality.image_features` rows against the mean IoU of each
  slice or case), ``quality_pred`` is its predicted mean IoU of the row;
* ``"segment mean"`` (the fallback): ``quality_pred`` is ``iou_adj_pred_mean``.

The review order is ``quality_pred`` ascending. Rows whose predicted foreground (``size``: pixels
of the segments counted) is below ``min_foreground`` times the largest one of the same case (by
slice) or of all rows (by case) come last, like rows without any counted segment: a slice holding
a few edge voxels of the object is rarely the one worth labelling first (docs/active_learning.md
measures the default, :data:`~napari_metaseg.names.RANK_MIN_FOREGROUND`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..names import RANK_MIN_FOREGROUND

__all__ = ["ORDER_IMAGE", "ORDER_SEGMENTS", "RANKING_COLUMNS", "RANK_MIN_FOREGROUND", "below_min_foreground",
           "order_ranking", "predicted_quality", "rank_cases"]

#: Columns of a ranking, in this order (``slice`` only when ranking slices, ``iou_adj_mean``
#: only when the tables carry ground truth, ``mean_iou`` only when they carry the image scores of
#: the rows ranked).
RANKING_COLUMNS = ("rank", "case", "slice", "n_segments", "size", "quality_pred", "order",
                   "iou_adj_pred_mean", "share_likely_wrong", "priority", "iou_adj_mean", "mean_iou")
#: ``order`` of a ranking by the image-level regressor's predicted quality.
ORDER_IMAGE = "image regressor"
#: ``order`` of a ranking by the size-weighted mean of the predicted segment IoU_adj.
ORDER_SEGMENTS = "segment mean"
_BY = ("case", "slice")


# ============================================================================================
# Validation
# ============================================================================================
def _split_model(model):
    """``(classifier, regressor)`` from a pair or a single meta model."""
    from .meta_model import MetaClassifier, MetaRegressor

    if isinstance(model, MetaClassifier):
        return model, None
    if isinstance(model, MetaRegressor):
        return None, model
    if isinstance(model, (tuple, list)) and len(model) == 2:
        from .meta_estimators import check_model_pair

        return check_model_pair(*model, what="model holds neither a classifier nor a regressor: pass "
                                              "at least one")
    raise TypeError(
        "model must be a (classifier, regressor) pair, a MetaClassifier or a MetaRegressor, "
        f"got {type(model).__name__}"
    )


def _stack(cases) -> pd.DataFrame:
    """One table with a ``case`` column from a stacked table or a dict of per-case tables."""
    if isinstance(cases, pd.DataFrame):
        if "case" not in cases.columns:
            raise ValueError(
                "cases has no 'case' column: pass a stacked table with a case column or a dict "
                "{case_id: table}"
            )
        if len(cases) == 0:
            raise ValueError("cases is an empty table: there is nothing to rank")
        if cases["case"].isna().any():
            raise ValueError("cases['case'] holds missing case ids")
        return cases
    if isinstance(cases, Mapping):
        if not cases:
            raise ValueError("cases is an empty dict: there is nothing to rank")
        parts = []
        for case_id, table in cases.items():
            if not isinstance(table, pd.DataFrame):
                raise TypeError(f"cases[{case_id!r}] must be a pandas DataFrame, got {type(table).__name__}")
            if len(table) == 0:
                raise ValueError(f"case {case_id!r} has no segment: its metrics table is empty")
            if "case" in table.columns and not (table["case"].astype(str) == str(case_id)).all():
                raise ValueError(f"cases[{case_id!r}] has a 'case' column naming other cases")
            part = table.drop(columns="case", errors="ignore")
            part.insert(0, "case", str(case_id))
            parts.append(part)
        return pd.concat(parts, ignore_index=True)
    raise TypeError(
        f"cases must be a pandas DataFrame with a case column or a dict {{case_id: table}}, "
        f"got {type(cases).__name__}"
    )


def _resolve_by(table, by):
    if by is None:
        return "slice" if "slice" in table.columns else "case"
    if by not in _BY:
        raise ValueError(f"by must be 'case', 'slice' or None, got {by!r}")
    if by == "slice" and "slice" not in table.columns:
        raise ValueError("by='slice' needs a 'slice' column (metrics computed with mode='slices')")
    return by


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    return float(threshold)


# ============================================================================================
# Summary and order
# ============================================================================================
def _check_background(background):
    if background is None:
        return None
    if isinstance(background, bool) or not isinstance(background, (int, np.integer)):
        raise TypeError(f"background must be an int class id or None, got {type(background).__name__}")
    return int(background)


def predicted_quality(cases, model=None, *, by=None, threshold=0.5, background=0, image_model=None,
                      image_background=0) -> pd.DataFrame:
    """Per-case (or per-slice) summary of the predicted segment quality, in input order.

    Parameters
    ----------
    cases : pandas.DataFrame or dict
        Metrics tables of :func:`napari_metaseg.core.segment_metrics`: one stacked table with a
        ``case`` column (and ``slice`` in slices mode), or ``{case_id: table}``.
    model : tuple or MetaClassifier or MetaRegressor, optional
        ``(classifier, regressor)`` (either may be None), or one model alone. The classifier
        gives ``share_likely_wrong``, the regressor ``iou_adj_pred_mean``; the column of a
        missing model is NaN. None uses the ``p_iou0`` / ``iou_adj_pred`` columns already in
        the tables (from :func:`~napari_metaseg.core.predict_table`).
    by : {"case", "slice"}, optional
        One row per case, or per (case, slice). Default: ``"slice"`` when the tables have a
        ``slice`` column, else ``"case"``.
    threshold : float, default 0.5
        A segment is likely wrong when P(IoU_adj = 0) > threshold.
    background : int or None, default 0
        Segments of this (predicted) ``class`` are left out of every column (as in
        :func:`~napari_metaseg.core.find_label_errors`, the class that is not an object).
        None keeps every class.
    image_model : MetaRegressor, optional
        An image-level regressor fitted on :func:`~napari_metaseg.core.image_quality.image_features`
        rows of the same kind (``by``) as the ranking: ``quality_pred`` is its prediction for
        each row (features from the tables with the segment predictions). None: ``quality_pred``
        is ``iou_adj_pred_mean``.
    image_background : int or None, default 0
        The class the image regressor's features leave out (the one it was trained with).

    Returns
    -------
    pandas.DataFrame
        ``case`` (str), ``slice`` (by slice), ``n_segments`` and ``size`` (sum of ``S``) of the
        segments counted (background left out), ``quality_pred`` and ``order``
        (:data:`ORDER_IMAGE` or :data:`ORDER_SEGMENTS`), ``iou_adj_pred_mean`` (mean of the
        predicted IoU_adj weighted by ``S``), ``share_likely_wrong``, ``iou_adj_mean`` (the same
        weighted mean of the true IoU_adj over segments where it is finite) when the tables have
        ``iou_adj``, and ``mean_iou`` (the true mean IoU of the row) when the tables carry
        ``image_mean_iou`` of the rows ranked (per slice by slice, per image by case of tables
        without a ``slice`` column). Every case (slice) of ``cases`` has a row, in the order it
        first appears; one with background segments only has ``n_segments`` = ``size`` = 0 and
        NaN in the means and the share (:func:`order_ranking` puts it last).

    Raises
    ------
    TypeError
        ``cases`` or ``model`` of the wrong type.
    ValueError
        An empty table, a case without any segment (empty table in the dict), a missing
        ``case``, ``S`` or ``slice`` column, a missing ``class`` column with ``background``
        set, predictions missing with ``model=None``, a model whose features do not match the
        tables' metric columns, a threshold outside [0, 1).

    Example
    -------
    >>> t = pd.DataFrame({"case": ["a", "a", "a", "b"], "class": [1, 2, 0, 0], "S": [3, 1, 90, 2],
    ...                   "iou_adj_pred": [1.0, 0.0, 1.0, 0.5], "p_iou0": [0.1, 0.9, 0.0, 0.2]})
    >>> predicted_quality(t)[["case", "n_segments", "iou_adj_pred_mean", "share_likely_wrong"]]
      case  n_segments  iou_adj_pred_mean  share_likely_wrong
    0    a           2               0.75                 0.5
    1    b           0                NaN                 NaN
    """
    table = _stack(cases)
    by = _resolve_by(table, by)
    threshold = _check_threshold(threshold)
    background = _check_background(background)
    if background is not None and "class" not in table.columns:
        raise ValueError("cases has no 'class' column to leave out the background segments: pass "
                         "metrics tables of segment_metrics, or background=None")
    if "S" not in table.columns:
        raise ValueError("cases has no 'S' (segment size) column: pass metrics tables of segment_metrics")
    if model is None:
        if "iou_adj_pred" not in table.columns and "p_iou0" not in table.columns:
            raise ValueError("no model given and the tables hold no predictions (p_iou0, iou_adj_pred)")
        clf = reg = None
        has_p = "p_iou0" in table.columns
        has_pred = "iou_adj_pred" in table.columns
    else:
        from .meta_model import check_columns, predict_table

        clf, reg = _split_model(model)
        for m in (clf, reg):
            if m is not None:
                try:
                    check_columns(m, table)
                except ValueError as exc:
                    raise ValueError(f"the model does not fit these tables: {exc}") from None
        table = predict_table(table, clf, reg)
        has_p, has_pred = clf is not None, reg is not None
    keys = ["case"] if by == "case" else ["case", "slice"]
    if by == "slice" and table["slice"].isna().any():
        raise ValueError("cases['slice'] holds missing slice numbers")
    size = table["S"].to_numpy(np.float64)
    if not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError("cases['S'] must hold positive segment sizes")
    # a background segment weighs 0 everywhere (kept as a row so its case/slice is listed)
    keep = (np.ones(len(table), np.float64) if background is None
            else (table["class"].to_numpy() != background).astype(np.float64))
    work = pd.DataFrame({"case": table["case"].astype(str).to_numpy()})
    if by == "slice":
        work["slice"] = table["slice"].to_numpy()
    work["n_segments"] = keep
    work["size"] = size * keep
    if has_pred:
        work["_wpred"] = np.where(keep > 0, size * table["iou_adj_pred"].to_numpy(np.float64), 0.0)
    if has_p:
        work["_wrong"] = keep * (table["p_iou0"].to_numpy(np.float64) > threshold)
    has_gt = "iou_adj" in table.columns
    if has_gt:
        v = table["iou_adj"].to_numpy(np.float64, na_value=np.nan)
        ok = np.isfinite(v) & (keep > 0)
        work["_wgt"] = np.where(ok, size * np.where(ok, v, 0.0), 0.0)
        work["_sgt"] = np.where(ok, size, 0.0)
    sums = work.groupby(keys, sort=False).sum()
    out = sums.reset_index()[keys].copy()
    out["n_segments"] = sums["n_segments"].to_numpy().astype(np.int64)
    out["size"] = sums["size"].to_numpy()
    if np.all(out["size"] == np.round(out["size"])):
        out["size"] = out["size"].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):  # no counted segment: NaN
        out["iou_adj_pred_mean"] = (sums["_wpred"].to_numpy() / sums["size"].to_numpy()
                                    if has_pred else np.nan)
        out["share_likely_wrong"] = (sums["_wrong"].to_numpy() / sums["n_segments"].to_numpy()
                                     if has_p else np.nan)
        if has_gt:
            out["iou_adj_mean"] = sums["_wgt"].to_numpy() / sums["_sgt"].to_numpy()
    if image_model is None:
        out.insert(out.columns.get_loc("iou_adj_pred_mean"), "quality_pred", out["iou_adj_pred_mean"])
        out.insert(out.columns.get_loc("iou_adj_pred_mean"), "order", ORDER_SEGMENTS)
    else:
        from .image_quality import image_features, predict_image_quality

        feats = image_features(table.assign(case=table["case"].astype(str)), by=by,
                               background=image_background)
        pred = pd.DataFrame({k: feats[k].to_numpy() for k in keys})
        pred["quality_pred"] = predict_image_quality(image_model, feats)
        merged = out[keys].merge(pred, on=keys, how="left")
        at = out.columns.get_loc("iou_adj_pred_mean")
        out.insert(at, "quality_pred", merged["quality_pred"].to_numpy())
        out.insert(out.columns.get_loc("iou_adj_pred_mean"), "order", ORDER_IMAGE)
    if "image_mean_iou" in table.columns and (by == "slice") == ("slice" in table.columns):
        named = table.assign(case=table["case"].astype(str))
        true = named.groupby(keys, sort=False)["image_mean_iou"].first().reset_index()
        out["mean_iou"] = out[keys].merge(true, on=keys, how="left")["image_mean_iou"].to_numpy()
    return out


def _check_min_foreground(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_foreground must be a number, got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"min_foreground must lie in [0, 1) (a share of the largest foreground), "
                         f"got {value!r}")
    return float(value)


def below_min_foreground(summary: pd.DataFrame, min_foreground: float = RANK_MIN_FOREGROUND) -> np.ndarray:
    """Rows of a ranking summary whose foreground is too small to rank them by their quality.

    A row is below the minimum when its ``size`` (pixels of the segments counted: the predicted
    foreground) is below ``min_foreground`` times the largest ``size`` of the same case (rows
    with a ``slice`` column) or of all rows (by case), or when it holds no counted segment
    (``n_segments`` = 0). Without a ``size`` column only the second rule applies.

    Example
    -------
    >>> s = pd.DataFrame({"case": ["a"] * 3, "slice": [0, 1, 2], "size": [5, 1000, 400]})
    >>> below_min_foreground(s, 0.01).tolist()
    [True, False, False]
    """
    min_foreground = _check_min_foreground(min_foreground)
    out = np.zeros(len(summary), bool)
    if "n_segments" in summary.columns:
        out |= summary["n_segments"].to_numpy() == 0
    if "size" in summary.columns and min_foreground > 0:
        size = summary["size"].to_numpy(np.float64, na_value=0.0)
        if "slice" in summary.columns and "case" in summary.columns:
            case = summary["case"].astype(str).to_numpy()
            largest = pd.Series(size).groupby(case).transform("max").to_numpy()
        else:
            largest = np.full(len(size), size.max() if len(size) else 0.0)
        out |= size < min_foreground * largest
    return out


def order_ranking(summary: pd.DataFrame, *, share_weight: float = 0.0,
                  min_foreground: float = RANK_MIN_FOREGROUND) -> pd.DataFrame:
    """Sort a :func:`predicted_quality` summary into review order and number it.

    With ``q`` = ``quality_pred`` (when the summary has it; else ``iou_adj_pred_mean``), the
    order, worst predicted quality first:

    1. ``priority`` descending, where ``priority`` =
       ``(1 - share_weight) * (1 - q) + share_weight * share_likely_wrong``
       when both columns are known, ``1 - q`` with ``q`` only and ``share_likely_wrong`` with
       predictions of the classifier only (a number in [0, 1]; higher = review sooner);
    2. ties by ``q`` ascending, then ``share_likely_wrong`` descending;
    3. remaining ties keep the order of ``summary`` (a stable sort);
    4. rows whose ``priority`` is NaN come after all others, among themselves by ``q`` ascending
       (then the order of ``summary``): rows without any counted segment (e.g. a slice holding
       background only, see :func:`predicted_quality`) and rows below the minimum foreground
       (:func:`below_min_foreground`), whose ``priority`` is set to NaN.

    With the default ``share_weight=0`` this is: lowest predicted quality first, and among equal
    ones the case with the larger share of likely wrong segments.

    Parameters
    ----------
    summary : pandas.DataFrame
        With ``quality_pred``, ``iou_adj_pred_mean`` and/or ``share_likely_wrong`` (NaN where
        unknown); ``size`` and ``n_segments`` for the minimum foreground.
    share_weight : float, default 0.0
        Weight of ``share_likely_wrong`` in the priority, in [0, 1].
    min_foreground : float, default :data:`~napari_metaseg.names.RANK_MIN_FOREGROUND` (0.01)
        Rows whose ``size`` is below this share of the largest one of their case (by slice) or
        of all rows (by case) rank last; 0 ranks every row with a counted segment by its quality.

    Returns
    -------
    pandas.DataFrame
        ``summary`` sorted, with ``priority`` and a first column ``rank`` = 1..n, index reset.

    Raises
    ------
    ValueError
        No quality column present, an empty summary, ``share_weight`` outside [0, 1],
        ``min_foreground`` outside [0, 1).

    Example
    -------
    >>> s = pd.DataFrame({"case": ["a", "b", "c"], "iou_adj_pred_mean": [0.9, 0.6, 0.9],
    ...                   "share_likely_wrong": [0.1, 0.0, 0.3]})
    >>> order_ranking(s)["case"].tolist()
    ['b', 'c', 'a']
    """
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    if len(summary) == 0:
        raise ValueError("summary is empty: there is nothing to rank")
    w = float(share_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"share_weight must lie in [0, 1], got {share_weight!r}")
    small = below_min_foreground(summary, min_foreground)

    def col(name):
        if name not in summary.columns:
            return None
        v = summary[name].to_numpy(np.float64, na_value=np.nan)
        return None if np.all(np.isnan(v)) else v

    qname = "quality_pred" if col("quality_pred") is not None else "iou_adj_pred_mean"
    quality, share = col(qname), col("share_likely_wrong")
    if quality is None and share is None:
        if not {"quality_pred", "iou_adj_pred_mean", "share_likely_wrong"} & set(summary.columns):
            raise ValueError("summary has neither a quality_pred, an iou_adj_pred_mean nor a "
                             "share_likely_wrong column")
        # every row is NaN (e.g. background only everywhere): nothing to order, input order kept
        quality = summary[qname].to_numpy(np.float64, na_value=np.nan) \
            if qname in summary.columns else None
        share = None if quality is not None else \
            summary["share_likely_wrong"].to_numpy(np.float64, na_value=np.nan)
    if quality is not None and share is not None:
        priority = (1.0 - w) * (1.0 - quality) + w * share if w > 0 else 1.0 - quality
    elif quality is not None:
        priority = 1.0 - quality
    else:
        priority = share.copy()
    priority = np.where(small, np.nan, priority)
    n = len(summary)
    nan_last = np.where(np.isnan(priority), 1, 0)
    # np.lexsort: the last key is the primary one; position last of all keeps ties stable
    keys = [np.arange(n)]
    if share is not None:
        keys.append(-np.nan_to_num(share, nan=-np.inf))
    if quality is not None:
        keys.append(np.nan_to_num(quality, nan=np.inf))
    keys += [-np.nan_to_num(priority, nan=-np.inf), nan_last]
    order = np.lexsort(keys)
    out = summary.copy()
    out["priority"] = priority
    out = out.iloc[order].reset_index(drop=True)
    out = out.drop(columns="rank", errors="ignore")
    out.insert(0, "rank", np.arange(1, n + 1, dtype=np.int64))
    return out


def rank_cases(cases, model=None, *, by=None, threshold=0.5, share_weight=0.0, background=0,
               image_model=None, image_background=0, min_foreground=RANK_MIN_FOREGROUND) -> pd.DataFrame:
    """Order unlabelled cases (or slices) for annotation, worst predicted quality first.

    :func:`predicted_quality` followed by :func:`order_ranking` (see there for the columns and
    the exact order).

    Parameters
    ----------
    cases : pandas.DataFrame or dict
        A stacked metrics table with a ``case`` column (and ``slice`` in slices mode), or
        ``{case_id: table}``.
    model : tuple or MetaClassifier or MetaRegressor, optional
        ``(classifier, regressor)`` or one of them; the classifier gives
        ``share_likely_wrong``, the regressor ``iou_adj_pred_mean``. None: use the
        predictions already in the tables.
    by : {"case", "slice"}, optional
        Default ``"slice"`` when the tables have a ``slice`` column, else ``"case"``.
    threshold : float, default 0.5
        P(IoU_adj = 0) above which a segment counts as likely wrong.
    share_weight : float, default 0.0
        Weight of ``share_likely_wrong`` in ``priority`` (0: only a tie-breaker).
    background : int or None, default 0
        Class whose segments are left out (None keeps every class); cases (slices) without any
        other segment rank last with NaN.
    image_model : MetaRegressor, optional
        An image-level regressor of rows ``by`` (see :func:`predicted_quality`): the order is
        then its predicted quality (``order`` = :data:`ORDER_IMAGE`); None: the size-weighted
        mean of the predicted segment IoU_adj (:data:`ORDER_SEGMENTS`).
    image_background : int or None, default 0
        The class the image regressor's features leave out.
    min_foreground : float, default 0.01
        See :func:`order_ranking`.

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``case``, [``slice``], ``n_segments``, ``size``, ``quality_pred``, ``order``,
        ``iou_adj_pred_mean``, ``share_likely_wrong``, [``iou_adj_mean``], [``mean_iou``],
        ``priority``; one row per case (slice).

    Raises
    ------
    TypeError, ValueError
        See :func:`predicted_quality` and :func:`order_ranking`.

    Example
    -------
    >>> ranking = rank_cases({"a": table_a, "b": table_b}, (clf, reg))  # doctest: +SKIP
    >>> ranking[["rank", "case", "quality_pred", "order"]]  # doctest: +SKIP
    """
    min_foreground = _check_min_foreground(min_foreground)
    summary = predicted_quality(cases, model, by=by, threshold=threshold, background=background,
                                image_model=image_model, image_background=image_background)
    return order_ranking(summary, share_weight=share_weight, min_foreground=min_foreground)
