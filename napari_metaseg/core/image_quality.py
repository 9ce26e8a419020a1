"""Image-level quality: features of a whole image, slice or volume from its segment table, and
DeVries & Taylor's evaluation of a predicted quality score.

:func:`image_features` aggregates a segment metrics table (of
:func:`~napari_metaseg.core.segment_metrics`) into one row per slice or per case: segment
counts and sizes, size-weighted means of the dispersion metrics, shares of small and of likely
wrong segments, the mean maximum probability, and summaries of the predicted IoU_adj when the
table holds predictions. :func:`fit_image_regressor` fits the project's
:class:`~napari_metaseg.core.meta_model.MetaRegressor` on such rows against an image score
(``mean_iou`` of :func:`~napari_metaseg.core.scores.segmentation_scores`), and
:func:`evaluate_quality` judges predicted scores the way DeVries & Taylor (2018) do: RMSE of the
predicted score, and how well it separates *failures* (true score below ``fail_below``, 0.7 by
default) from passes: detection error, AUROC, AUPR with pass and with fail as the positive class.
With ``ci`` it adds a bootstrap confidence interval of each AUROC, and :func:`compare_auroc`
says whether one predictor's AUROC is above another's by more than the rows' sampling noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "BASELINE_FEATURES",
    "IMAGE_INFO_COLUMNS",
    "QUALITY_COLUMNS",
    "compare_auroc",
    "evaluate_quality",
    "fit_image_regressor",
    "image_feature_columns",
    "image_features",
    "predict_image_quality",
]

#: Columns of :func:`image_features` that describe a row but are not features (raw counts and
#: sizes; the features hold their logarithms).
IMAGE_INFO_COLUMNS = ("case", "slice", "n_segments", "size", "n_pixels_all")
#: The size-and-segment-count baseline's features.
BASELINE_FEATURES = ("log_n_segments", "log_size")
#: Columns of :func:`evaluate_quality`'s table, in order.
QUALITY_COLUMNS = ("rmse", "detection_error", "auroc", "aupr_pass", "aupr_fail", "n", "n_fail")
#: Segments smaller than this (pixels / voxels) count as small.
SMALL_SEGMENT = 10


def _check_by(table, by):
    if by not in ("slice", "case"):
        raise ValueError(f"by must be 'slice' or 'case', got {by!r}")
    if by == "slice" and "slice" not in table.columns:
        raise ValueError("by='slice' needs a 'slice' column: compute the segment table with mode='slices'")


def image_features(table: pd.DataFrame, *, by: str = "slice", background: int | None = 0,
                   small: int = SMALL_SEGMENT, threshold: float = 0.5) -> pd.DataFrame:
    """Numeric aggregates of a segment table, one row per slice or per case.

    With ``F`` the segments of a row whose class is not ``background`` (all segments when
    ``background`` is None) and ``S`` their sizes:

    * ``n_segments``, ``size`` (sum of ``S``), ``n_pixels_all`` (all segments, background
      included): information columns; the features are ``log_n_segments`` = log(1 + n) and
      ``log_size`` = log(1 + size);
    * ``share_small`` / ``area_small``: share of the segments of ``F`` smaller than ``small``
      pixels, and share of their area;
    * ``boundary_share``: sum of ``S_bd`` / sum of ``S`` over ``F`` (how ragged the prediction is);
    * per dispersion measure ``H`` in the table (E, D, V, ...): ``H_mean`` (the mean of ``H`` over
      the pixels of ``F``, i.e. the ``S``-weighted mean of the segment means), ``H_in_mean`` and
      ``H_bd_mean`` (the same over interiors and boundaries, where the table has ``H_in`` /
      ``H_bd``), ``H_all`` (over every pixel of the row, background included);
    * ``area_share_<c>``: share of the area of ``F`` predicted as class ``c``, for every class of
      the ``cprob`` columns other than ``background``;
    * ``mean_max_prob``: the mean over every pixel of the row of the largest class probability
      (1 - ``V``), the usual confidence baseline;
    * with predictions in the table: ``iou_adj_pred_mean`` (``S``-weighted over ``F``),
      ``p_iou0_mean`` (``S``-weighted), ``share_likely_wrong`` / ``area_likely_wrong`` (segments
      of ``F`` with P(IoU_adj = 0) > ``threshold``: their share and their share of the area).

    A row whose segments are all background has ``n_segments`` = 0 and 0 in the means over ``F``.

    Parameters
    ----------
    table : pandas.DataFrame
        A segment metrics table (``S``, ``S_in``, ``S_bd``, ``class``, the measure columns,
        ``cprob*``), with a ``case`` column for several cases and ``slice`` for ``by="slice"``.
    by : {"slice", "case"}, default "slice"
        One row per (case, slice) or per case.
    background : int or None, default 0
        Class whose segments are left out of the aggregates over ``F``.
    small : int, default 10
        Size below which a segment is small.
    threshold : float, default 0.5
        P(IoU_adj = 0) above which a segment is likely wrong.

    Returns
    -------
    pandas.DataFrame
        ``case`` (when the table has one), ``slice`` (by slice), then the columns above, in
        order of first appearance of the row in ``table``.

    Raises
    ------
    TypeError
        ``table`` is not a DataFrame.
    ValueError
        Missing columns (``S``, ``S_in``, ``S_bd``, ``class``, ``V``), ``by="slice"`` without a
        ``slice`` column, an empty table, ``small`` < 1 or ``threshold`` outside [0, 1).

    Example
    -------
    >>> t = pd.DataFrame({"slice": [0, 0, 1], "class": [0, 1, 1], "S": [90, 10, 5],
    ...                   "S_in": [80, 4, 0], "S_bd": [10, 6, 5], "V": [0.0, 0.2, 0.4]})
    >>> f = image_features(t)
    >>> f[["slice", "n_segments", "V_mean", "mean_max_prob"]].round(3).to_numpy().tolist()
    [[0.0, 1.0, 0.2, 0.98], [1.0, 1.0, 0.4, 0.6]]
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    _check_by(table, by)
    if len(table) == 0:
        raise ValueError("table is empty: there are no segments to aggregate")
    need = [c for c in ("class", "S", "S_in", "S_bd", "V") if c not in table.columns]
    if need:
        raise ValueError(f"table has no column(s) {need}: pass a segment_metrics table")
    if isinstance(small, bool) or not isinstance(small, (int, np.integer)) or small < 1:
        raise ValueError(f"small must be an int >= 1, got {small!r}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    keys = (["case"] if "case" in table.columns else []) + (["slice"] if by == "slice" else [])
    size = table["S"].to_numpy(np.float64)
    if not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError("table['S'] must hold positive segment sizes")
    fg = (np.ones(len(table), bool) if background is None
          else table["class"].to_numpy() != int(background))
    w = fg.astype(np.float64)
    s_in = table["S_in"].to_numpy(np.float64)
    s_bd = table["S_bd"].to_numpy(np.float64)
    work = {"_one": np.ones(len(table)), "n_segments": w, "size": size * w, "n_pixels_all": size,
            "_small": w * (size < small), "_area_small": w * size * (size < small), "_bd": w * s_bd,
            "_in": w * s_in}
    from .heatmaps import MEASURES, SAMPLE_MEASURES

    measures = [m for m in MEASURES + SAMPLE_MEASURES if m in table.columns]
    parts = {m: [part for part in ("in", "bd") if f"{m}_{part}" in table.columns] for m in measures}
    for m in measures:
        v = table[m].to_numpy(np.float64)
        work[f"_{m}"] = w * size * v
        for part in parts[m]:
            work[f"_{m}_{part}"] = w * (s_in if part == "in" else s_bd) * table[f"{m}_{part}"].to_numpy(
                np.float64)
        work[f"_{m}_all"] = size * v
    classes = sorted(int(c[5:]) for c in table.columns if isinstance(c, str) and c.startswith("cprob")
                     and c[5:].isdigit())
    cls = table["class"].to_numpy()
    shown = [c for c in classes if background is None or c != int(background)]
    for c in shown:
        work[f"_cls{c}"] = size * (cls == c) * w
    work["_maxp"] = size * (1.0 - table["V"].to_numpy(np.float64))
    has_pred = "iou_adj_pred" in table.columns
    has_p = "p_iou0" in table.columns
    if has_pred:
        work["_pred"] = w * size * table["iou_adj_pred"].to_numpy(np.float64)
    if has_p:
        p0 = table["p_iou0"].to_numpy(np.float64)
        work["_p0"] = w * size * p0
        work["_wrong"] = w * (p0 > threshold)
        work["_area_wrong"] = w * size * (p0 > threshold)
    frame = pd.DataFrame(work)
    for k in keys:
        frame[k] = table[k].to_numpy() if k != "case" else table["case"].astype(str).to_numpy()
    sums = frame.groupby(keys, sort=False).sum() if keys else frame.sum().to_frame().T
    out = sums.reset_index()[keys].copy() if keys else pd.DataFrame(index=[0])

    def ratio(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)

    n = sums["n_segments"].to_numpy()
    tot = sums["size"].to_numpy()
    out["n_segments"] = n.astype(np.int64)
    out["size"] = tot.astype(np.int64)
    out["n_pixels_all"] = sums["n_pixels_all"].to_numpy().astype(np.int64)
    out["log_n_segments"] = np.log1p(n)
    out["log_size"] = np.log1p(tot)
    out["share_small"] = ratio(sums["_small"], n)
    out["area_small"] = ratio(sums["_area_small"], tot)
    out["boundary_share"] = ratio(sums["_bd"], tot)
    for m in measures:
        out[f"{m}_mean"] = ratio(sums[f"_{m}"], tot)
        for part in parts[m]:
            out[f"{m}_{part}_mean"] = ratio(sums[f"_{m}_{part}"], sums[f"_{part}"])
        out[f"{m}_all"] = ratio(sums[f"_{m}_all"], sums["n_pixels_all"])
    for c in shown:
        out[f"area_share_{c}"] = ratio(sums[f"_cls{c}"], tot)
    out["mean_max_prob"] = ratio(sums["_maxp"], sums["n_pixels_all"])
    if has_pred:
        out["iou_adj_pred_mean"] = ratio(sums["_pred"], tot)
    if has_p:
        out["p_iou0_mean"] = ratio(sums["_p0"], tot)
        out["share_likely_wrong"] = ratio(sums["_wrong"], n)
        out["area_likely_wrong"] = ratio(sums["_area_wrong"], tot)
    return out.reset_index(drop=True)


def image_feature_columns(table: pd.DataFrame) -> list:
    """The feature columns of an :func:`image_features` table (in table order).

    Every numeric column except the information columns (``case``, ``slice``, ``n_segments``,
    ``size``, ``n_pixels_all``) and any score column of
    :func:`~napari_metaseg.core.scores.segmentation_scores` merged in (``n_pixels``,
    ``pixel_accuracy``, ``mean_*``, ``iou_*``, ``dice_*``, and the segment tables' broadcast
    ``image_mean_iou`` / ``image_mean_dice``) and predictions (``quality_pred``).

    Example
    -------
    >>> image_feature_columns(pd.DataFrame({"slice": [0], "n_segments": [3], "log_size": [2.0],
    ...                                     "mean_iou": [0.5]}))
    ['log_size']
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    out = []
    for name, dtype in table.dtypes.items():
        if not isinstance(name, str) or name in IMAGE_INFO_COLUMNS or _is_score_column(name):
            continue
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            out.append(name)
    return out


def _is_score_column(name: str) -> bool:
    if name in ("n_pixels", "pixel_accuracy", "quality_pred", "mean_iou", "mean_dice", "image_mean_iou",
                "image_mean_dice"):
        return True
    return name.startswith(("iou_", "dice_")) and not name.startswith("iou_adj_pred")


def _check_target(y, n):
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"the target has {y.shape[0]} values for {n} rows")
    return y


def fit_image_regressor(features: pd.DataFrame, target, *, kind: str = "lasso", columns=None,
                        random_state: int | None = 0):
    """Fit a :class:`~napari_metaseg.core.meta_model.MetaRegressor` on image rows.

    Rows whose target is NaN (no class other than the background in GT or prediction) are left
    out. The regressor sees ``columns`` (default :func:`image_feature_columns`) and records the
    ``case`` column, when present, as its training cases.

    Parameters
    ----------
    features : pandas.DataFrame
        :func:`image_features` rows (optionally with score columns merged in).
    target : array_like or str
        One value per row, or the name of a column of ``features`` (e.g. ``"mean_iou"``).
    kind : {"linear", "lasso", "gbm"}, default "lasso"
        Model family (see :class:`~napari_metaseg.core.meta_model.MetaRegressor`).
    columns : sequence of str, optional
        Feature columns; e.g. :data:`BASELINE_FEATURES` for the size-and-count baseline.
    random_state : int, optional
        Seed of the LASSO's cross-validation folds and of the boosting.

    Returns
    -------
    MetaRegressor
        Fitted; ``feature_names_in_`` are ``columns``.

    Raises
    ------
    ValueError
        Unknown columns, NaN/inf features, fewer than 10 rows with a finite target.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> f = pd.DataFrame({"E_mean": rng.random(40), "log_size": rng.random(40)})
    >>> reg = fit_image_regressor(f, 1 - f["E_mean"], kind="linear")
    >>> [str(c) for c in reg.feature_names_in_]
    ['E_mean', 'log_size']
    """
    from .meta_model import MetaRegressor

    if not isinstance(features, pd.DataFrame):
        raise TypeError(f"features must be a pandas DataFrame, got {type(features).__name__}")
    if isinstance(target, str):
        if target not in features.columns:
            raise ValueError(f"features has no target column {target!r}: merge the scores in first")
        target = features[target]
    y = _check_target(target, len(features))
    cols = list(image_feature_columns(features) if columns is None else columns)
    missing = [c for c in cols if c not in features.columns]
    if missing:
        raise ValueError(f"features has no column(s) {missing}")
    if not cols:
        raise ValueError("features has no feature columns: pass an image_features table")
    keep = np.isfinite(y)
    X = features.loc[keep, cols].reset_index(drop=True)
    if "case" in features.columns:
        X.insert(0, "case", features.loc[keep, "case"].astype(str).to_numpy())
    return MetaRegressor(kind=kind, random_state=random_state).fit(X, y[keep])


def predict_image_quality(regressor, features: pd.DataFrame) -> np.ndarray:
    """The regressor's predicted score (clipped to [0, 1]) of every row of ``features``.

    Raises ValueError naming the missing columns when ``features`` lacks one of the regressor's.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> f = pd.DataFrame({"E_mean": rng.random(40)})
    >>> reg = fit_image_regressor(f, 1 - f["E_mean"], kind="linear")
    >>> predict_image_quality(reg, f).shape
    (40,)
    """
    names = [str(c) for c in regressor.feature_names_in_]
    missing = [c for c in names if c not in features.columns]
    if missing:
        raise ValueError(f"the rows lack the model's feature column(s) {missing}: compute them with "
                         "image_features from tables made like the training tables")
    if len(features) == 0:
        return np.zeros(0)
    return regressor.predict(features[names])


# ============================================================================================
# DeVries & Taylor's evaluation
# ============================================================================================
def _detection_error(is_pass, score):
    """min over thresholds of 0.5 (1 - TPR) + 0.5 FPR, with pass as the positive class."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(is_pass, score)
    return float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))


def _figures(true, pred, fail_below):
    from sklearn.metrics import average_precision_score, roc_auc_score

    is_pass = true >= fail_below
    n_fail = int((~is_pass).sum())
    out = {"rmse": float(np.sqrt(np.mean((pred - true) ** 2))) if true.size else float("nan"),
           "detection_error": float("nan"), "auroc": float("nan"), "aupr_pass": float("nan"),
           "aupr_fail": float("nan"), "n": int(true.size), "n_fail": n_fail}
    if 0 < n_fail < true.size:
        out["detection_error"] = _detection_error(is_pass, pred)
        out["auroc"] = float(roc_auc_score(is_pass, pred))
        out["aupr_pass"] = float(average_precision_score(is_pass, pred))
        out["aupr_fail"] = float(average_precision_score(~is_pass, -pred))
    return out


def evaluate_quality(true, predicted, *, fail_below: float = 0.7, baseline=None, ci=None,
                     n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """DeVries & Taylor's figures of predicted image-level quality scores.

    A row *fails* when its true score is below ``fail_below``. For each predictor:

    * ``rmse``: root mean squared difference between predicted and true score;
    * ``detection_error``: the smallest misclassification probability with equal weight on both
      kinds, min over thresholds of 0.5 (1 - TPR) + 0.5 FPR (pass vs fail by thresholding the
      predicted score);
    * ``auroc``: area under the ROC curve of the predicted score for pass vs fail;
    * ``aupr_pass``: average precision with pass as the positive class, ranked by the predicted
      score; ``aupr_fail``: with fail as the positive class, ranked by minus the predicted score.

    The ranking figures are NaN when all rows pass or all fail. Rows with a NaN true score are
    left out (e.g. slices without any object in GT and prediction).

    With ``ci`` (a level such as 0.95) the table also has ``auroc_low`` and ``auroc_high``: the
    percentile interval of the AUROC over ``n_boot`` stratified bootstrap resamples of the rows
    (passes and failures resampled separately, so every resample has both; see
    :func:`compare_auroc`). On 150 rows the 95 % interval is typically 0.15 wide: differences
    between predictors smaller than that need :func:`compare_auroc` (paired) to be judged.

    Parameters
    ----------
    true : array_like
        True scores (e.g. ``mean_iou`` of :func:`~napari_metaseg.core.scores.segmentation_scores`).
    predicted : array_like or dict of str to array_like
        Predicted scores, or several predictors by name (one table row each).
    fail_below : float, default 0.7
        Failure threshold on the true score (Jaccard < 0.7 in DeVries & Taylor).
    baseline : array_like, optional
        A baseline score evaluated beside (e.g. ``mean_max_prob`` of :func:`image_features`): a
        row ``"baseline"``.
    ci : float, optional
        Confidence level of the AUROC intervals (e.g. 0.95); none by default.
    n_boot : int, default 2000
        Bootstrap resamples for ``ci`` (at least 100).
    seed : int, default 0
        Seed of the resampling (the same seed gives the same intervals).

    Returns
    -------
    pandas.DataFrame
        Indexed by predictor name (``"predicted"`` for a single array), columns ``rmse``,
        ``detection_error``, ``auroc``, ``aupr_pass``, ``aupr_fail``, ``n``, ``n_fail``, and with
        ``ci`` ``auroc_low``, ``auroc_high`` (NaN where the AUROC is).

    Raises
    ------
    ValueError
        Lengths that differ, NaN/inf in a predicted score, no finite true score, a
        ``fail_below`` that is not finite, ``ci`` outside (0, 1), ``n_boot`` < 100.

    Example
    -------
    >>> true = np.array([0.9, 0.8, 0.5, 0.3])
    >>> r = evaluate_quality(true, np.array([0.85, 0.75, 0.6, 0.2]))
    >>> r.loc["predicted", ["auroc", "detection_error"]].tolist()
    [1.0, 0.0]
    """
    fail_below = float(fail_below)
    if not np.isfinite(fail_below):
        raise ValueError(f"fail_below must be a finite number, got {fail_below}")
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    preds = dict(predicted) if isinstance(predicted, Mapping) else {"predicted": predicted}
    if baseline is not None:
        preds["baseline"] = baseline
    if ci is not None:
        _check_boot(ci, n_boot)
    true, scores = _checked_scores(true, preds)
    rows = {name: _figures(true, p, fail_below) for name, p in scores.items()}
    out = pd.DataFrame.from_dict(rows, orient="index")[list(QUALITY_COLUMNS)]
    if ci is not None:
        is_pass = true >= fail_below
        bounds = {name: (np.nan, np.nan) for name in scores}
        if 0 < int(is_pass.sum()) < true.size:
            boot = _boot_aurocs(is_pass, np.stack(list(scores.values())), n_boot, seed)
            tail = 50.0 * (1.0 - float(ci))
            for name, b in zip(scores, boot, strict=True):
                bounds[name] = tuple(np.percentile(b, [tail, 100.0 - tail]))
        out["auroc_low"] = [bounds[name][0] for name in out.index]
        out["auroc_high"] = [bounds[name][1] for name in out.index]
    return out


def _checked_scores(true, preds):
    """The finite true scores and each predictor's scores on those rows (validated)."""
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    keep = np.isfinite(true)
    if not keep.any():
        raise ValueError("true holds no finite score: nothing to evaluate")
    scores = {}
    for name, p in preds.items():
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if p.shape != true.shape:
            raise ValueError(f"{name}: {p.shape[0]} predicted scores for {true.shape[0]} true scores")
        if not np.all(np.isfinite(p[keep])):
            raise ValueError(f"{name}: the predicted scores hold NaN or inf")
        scores[str(name)] = p[keep]
    return true[keep], scores


def _check_boot(level, n_boot):
    number = isinstance(level, (int, float, np.floating)) and not isinstance(level, bool)
    if not number or not 0.0 < float(level) < 1.0:
        raise ValueError(f"the confidence level must lie strictly between 0 and 1 (e.g. 0.95), "
                         f"got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100 (2000 is usual), got {n_boot!r}")


def _aurocs(is_pass, scores):
    """AUROC (pass as positive, ties counted half) of every row of ``scores`` (k, n) against the
    rows of ``is_pass`` (k, n) or one (n,) vector: the Mann-Whitney statistic from average ranks."""
    from scipy.stats import rankdata

    is_pass = np.broadcast_to(is_pass, scores.shape)
    ranks = rankdata(scores, axis=-1)
    n1 = is_pass.sum(axis=-1).astype(np.float64)
    n0 = scores.shape[-1] - n1
    return ((ranks * is_pass).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


_BOOT_BLOCK = 250  # resamples per block: bounds the memory to 250 x rows x predictors


def _boot_aurocs(is_pass, scores, n_boot, seed):
    """AUROC of every predictor (rows of ``scores``, shape (k, n)) on ``n_boot`` stratified
    bootstrap resamples, the same resamples for all: shape (k, n_boot)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(is_pass), np.flatnonzero(~is_pass)
    # one fixed layout: the resampled passes first, then the failures
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    out = np.empty((scores.shape[0], n_boot))
    for lo in range(0, n_boot, _BOOT_BLOCK):
        b = min(_BOOT_BLOCK, n_boot - lo)
        idx = np.concatenate([rng.choice(pos, (b, pos.size)), rng.choice(neg, (b, neg.size))], axis=1)
        out[:, lo : lo + b] = _aurocs(labels, scores[:, idx])
    return out


def compare_auroc(true, predicted, *, against: str, fail_below: float = 0.7, level: float = 0.95,
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Is predictor ``against`` better at telling failures from passes than each other predictor?

    Paired stratified bootstrap: ``n_boot`` times, the passes and the failures are resampled
    with replacement (separately, keeping their counts), and every predictor's AUROC is computed
    on the same resample. The difference ``against`` minus other has a percentile interval at
    ``level``; when the interval holds 0, the rows do not tell the two apart.

    Parameters
    ----------
    true : array_like
        True scores; rows with NaN are left out.
    predicted : dict of str to array_like
        Predicted scores by name, ``against`` among them.
    against : str
        The predictor compared with every other one.
    fail_below, level, n_boot, seed
        Failure threshold, confidence level, resamples, seed of the resampling.

    Returns
    -------
    pandas.DataFrame
        Indexed by the other predictors: ``auroc`` (``against``'s), ``auroc_other``,
        ``difference`` (``against`` minus other, on all rows), ``low`` / ``high`` (the interval of
        the difference), ``share_not_above`` (share of resamples where ``against`` is not above
        the other: a one-sided bootstrap p-value) and ``n``, ``n_fail``.

    Raises
    ------
    ValueError
        ``against`` not among the predictors, fewer than two predictors, rows that all pass or
        all fail (the AUROC is undefined), and the errors of :func:`evaluate_quality`.

    Example
    -------
    >>> true = np.linspace(0.3, 1.0, 60)
    >>> noise = np.random.default_rng(0).normal(0, 0.3, 60)
    >>> r = compare_auroc(true, {"good": true, "noisy": true + noise}, against="good")
    >>> bool(r.loc["noisy", "low"] > 0)
    True
    """
    fail_below = float(fail_below)
    if not np.isfinite(fail_below):
        raise ValueError(f"fail_below must be a finite number, got {fail_below}")
    _check_boot(level, n_boot)
    if not isinstance(predicted, Mapping) or len(predicted) < 2:
        raise ValueError("predicted must map at least two predictor names to scores")
    true, scores = _checked_scores(true, predicted)
    if str(against) not in scores:
        raise ValueError(f"against={against!r} is not one of the predictors {sorted(scores)}")
    is_pass = true >= fail_below
    n_fail = int((~is_pass).sum())
    if n_fail in (0, true.size):
        raise ValueError(f"all {true.size} rows {'fail' if n_fail else 'pass'} at fail_below={fail_below:g}: "
                         "the AUROC is undefined; choose a threshold with rows on both sides")
    names = list(scores)
    stacked = np.stack([scores[n] for n in names])
    full = _aurocs(is_pass, stacked)
    boot = _boot_aurocs(is_pass, stacked, n_boot, seed)
    a = names.index(str(against))
    tail = 50.0 * (1.0 - float(level))
    rows = {}
    for i, name in enumerate(names):
        if i == a:
            continue
        d = boot[a] - boot[i]
        low, high = np.percentile(d, [tail, 100.0 - tail])
        rows[name] = {"auroc": full[a], "auroc_other": full[i], "difference": full[a] - full[i], "low": low,
                      "high": high, "share_not_above": float(np.mean(d <= 0)), "n": int(true.size),
                      "n_fail": n_fail}
    return pd.DataFrame.from_dict(rows, orient="index")
