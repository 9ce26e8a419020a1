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
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["RANKING_COLUMNS", "order_ranking", "predicted_quality", "rank_cases"]

#: Columns of a ranking, in this order (``slice`` only when ranking slices, ``iou_adj_mean``
#: only when the tables carry ground truth).
RANKING_COLUMNS = ("rank", "case", "slice", "n_segments", "size", "iou_adj_pred_mean",
                   "share_likely_wrong", "priority", "iou_adj_mean")
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


def predicted_quality(cases, model=None, *, by=None, threshold=0.5, background=0) -> pd.DataFrame:
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

    Returns
    -------
    pandas.DataFrame
        ``case`` (str), ``slice`` (by slice), ``n_segments`` and ``size`` (sum of ``S``) of the
        segments counted (background left out), ``iou_adj_pred_mean`` (mean of the predicted
        IoU_adj weighted by ``S``), ``share_likely_wrong``, and ``iou_adj_mean`` (the same
        weighted mean of the true IoU_adj over segments where it is finite) when the tables have
        ``iou_adj``. Every case (slice) of ``cases`` has a row, in the order it first appears; one
        with background segments only has ``n_segments`` = ``size`` = 0 and NaN in the means and
        the share (:func:`order_ranking` puts it last).

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
    return out


def order_ranking(summary: pd.DataFrame, *, share_weight: float = 0.0) -> pd.DataFrame:
    """Sort a :func:`predicted_quality` summary into review order and number it.

    The order, worst predicted quality first:

    1. ``priority`` descending, where ``priority`` =
       ``(1 - share_weight) * (1 - iou_adj_pred_mean) + share_weight * share_likely_wrong``
       when both columns are known, ``1 - iou_adj_pred_mean`` with predictions of the regressor
       only and ``share_likely_wrong`` with those of the classifier only (a number in [0, 1];
       higher = review sooner);
    2. ties by ``iou_adj_pred_mean`` ascending, then ``share_likely_wrong`` descending;
    3. remaining ties keep the order of ``summary`` (a stable sort);
    4. rows whose ``priority`` is NaN (no segment counted, e.g. a slice holding background only,
       see :func:`predicted_quality`) come after all others, in the order of ``summary``.

    With the default ``share_weight=0`` this is: lowest size-weighted predicted IoU_adj first,
    and among equal ones the case with the larger share of likely wrong segments.

    Parameters
    ----------
    summary : pandas.DataFrame
        With ``iou_adj_pred_mean`` and/or ``share_likely_wrong`` (NaN where unknown).
    share_weight : float, default 0.0
        Weight of ``share_likely_wrong`` in the priority, in [0, 1].

    Returns
    -------
    pandas.DataFrame
        ``summary`` sorted, with ``priority`` and a first column ``rank`` = 1..n, index reset.

    Raises
    ------
    ValueError
        Neither column present, an empty summary, ``share_weight`` outside [0, 1].

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

    def col(name):
        if name not in summary.columns:
            return None
        v = summary[name].to_numpy(np.float64, na_value=np.nan)
        return None if np.all(np.isnan(v)) else v

    quality, share = col("iou_adj_pred_mean"), col("share_likely_wrong")
    if quality is None and share is None:
        if not {"iou_adj_pred_mean", "share_likely_wrong"} & set(summary.columns):
            raise ValueError("summary has neither an iou_adj_pred_mean nor a share_likely_wrong column")
        # every row is NaN (e.g. background only everywhere): nothing to order, input order kept
        quality = summary["iou_adj_pred_mean"].to_numpy(np.float64, na_value=np.nan) \
            if "iou_adj_pred_mean" in summary.columns else None
        share = None if quality is not None else \
            summary["share_likely_wrong"].to_numpy(np.float64, na_value=np.nan)
    if quality is not None and share is not None:
        priority = (1.0 - w) * (1.0 - quality) + w * share if w > 0 else 1.0 - quality
    elif quality is not None:
        priority = 1.0 - quality
    else:
        priority = share.copy()
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


def rank_cases(cases, model=None, *, by=None, threshold=0.5, share_weight=0.0,
               background=0) -> pd.DataFrame:
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

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``case``, [``slice``], ``n_segments``, ``size``, ``iou_adj_pred_mean``,
        ``share_likely_wrong``, [``iou_adj_mean``], ``priority``; one row per case (slice).

    Raises
    ------
    TypeError, ValueError
        See :func:`predicted_quality` and :func:`order_ranking`.

    Example
    -------
    >>> ranking = rank_cases({"a": table_a, "b": table_b}, (clf, reg))  # doctest: +SKIP
    >>> ranking[["rank", "case", "iou_adj_pred_mean"]]  # doctest: +SKIP
    """
    summary = predicted_quality(cases, model, by=by, threshold=threshold, background=background)
    return order_ranking(summary, share_weight=share_weight)
