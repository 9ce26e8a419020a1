"""Voxel error maps: how well a dispersion heatmap finds the misclassified voxels, and which
voxels to flag.

A voxel is *misclassified* when the predicted class (argmax of the probabilities) differs from
the ground truth; voxels with the ``ignore_index`` label are left out. :func:`error_detection_scores`
ranks voxels by a heatmap (entropy E, margin D, variation ratio V, 1 = most uncertain) and reports
AUROC, AUPRC and the recall / precision of thresholds on the heatmap, as "Trusting Semantic
Segmentation Networks" does for its per-pixel misclassification detectors.

:func:`flag_errors` turns a heatmap into a boolean map by one of three rules:

* ``"fixed"``: the voxels whose heatmap reaches a threshold;
* ``"quantile"``: the given share of the voxels with the highest heatmap, per image;
* ``"calibrated"``: P(error | heatmap) learnt on training cases (:class:`ErrorCalibration`, an
  isotonic fit over heatmap bins); per image, the expected number of errors of every voxel is
  summed and the most uncertain voxels are flagged until they hold ``target_recall`` of the
  image's expected errors.

The fixed threshold and the quantile share can also be chosen on training cases for a target
recall (:meth:`ErrorCalibration.threshold_for_recall`, :meth:`ErrorCalibration.share_for_recall`),
so the three rules can be compared at the same training recall on a new case.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FLAG_METHODS", "ErrorCalibration", "calibrate_errors", "error_detection_scores", "flag_errors",
           "flagged_scores"]

#: Rules of :func:`flag_errors`.
FLAG_METHODS = ("fixed", "quantile", "calibrated")
#: Heatmap thresholds of the recall / precision columns of :func:`error_detection_scores`.
DEFAULT_THRESHOLDS = (0.1, 0.25, 0.5)
#: Bins of the heatmap in [0, 1] over which :class:`ErrorCalibration` counts voxels and errors.
N_BINS = 1000


def _check_measure(measure):
    from .heatmaps import MEASURES

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    return measure


def _check_mask(mask, spatial, name="mask"):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial):
        raise ValueError(f"{name} has shape {mask.shape} but the probabilities have spatial shape "
                         f"{tuple(spatial)}; they must match")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "iuf":
            raise TypeError(f"{name} has dtype {mask.dtype}; expected a boolean map")
        mask = mask != 0
    return mask


def _prepare(probs, gt, mask, ignore_index, class_axis):
    """``(probs, pred, gt, valid)``: validated probabilities, argmax, GT, voxels scored."""
    from .inputs import as_probabilities, check_ground_truth

    p = as_probabilities(probs, class_axis=class_axis)
    spatial, q = p.shape[:-1], p.shape[-1]
    pred = p.argmax(axis=-1)
    valid = np.ones(spatial, bool)
    if gt is not None:
        gt = check_ground_truth(gt, spatial, q, ignore_index=ignore_index)
        if ignore_index is not None:
            valid &= gt != int(ignore_index)
    m = _check_mask(mask, spatial)
    if m is not None:
        valid &= m
    return p, pred, gt, valid


def _heatmaps(p, measures, maps):
    from .heatmaps import dispersion_maps

    if maps is not None:
        missing = [m for m in measures if m not in maps]
        if missing:
            raise ValueError(f"maps lacks the heatmap(s) {missing}")
        out = {}
        for m in measures:
            h = np.asarray(maps[m])
            if h.shape != p.shape[:-1]:
                raise ValueError(f"maps[{m!r}] has shape {h.shape}; expected {p.shape[:-1]}")
            out[m] = h
        return out
    return dispersion_maps(p, measures=tuple(measures))


def _threshold_label(t):
    return f"{float(t):g}"


def error_detection_scores(probs, gt, *, measures=("E", "D", "V"), mask=None, ignore_index=255,
                           thresholds=DEFAULT_THRESHOLDS, class_axis=-1, maps=None) -> pd.DataFrame:
    """How well each heatmap finds the misclassified voxels.

    Parameters
    ----------
    probs : array_like
        Probabilities (validated by :func:`~napari_metaseg.core.as_probabilities`).
    gt : array_like of int
        Ground-truth class ids, spatial shape of ``probs``.
    measures : sequence of str, default ("E", "D", "V")
        Heatmaps to score.
    mask : array_like of bool, optional
        Voxels scored (default: all that are not ``ignore_index``).
    ignore_index : int or None, default 255
        GT id left out.
    thresholds : sequence of float, default (0.1, 0.25, 0.5)
        Heatmap thresholds: a voxel is flagged when its heatmap is >= the threshold.
    class_axis : int, default -1
        Class axis of ``probs``.
    maps : dict, optional
        Heatmaps of ``probs`` computed already (spatial shape).

    Returns
    -------
    pandas.DataFrame
        One row per measure: ``measure``, ``auroc``, ``auprc`` (average precision, errors as
        the positive class), ``recall_<t>`` and ``precision_<t>`` for every threshold ``t``
        (precision NaN when nothing is flagged), ``n_errors``, ``n_voxels``. AUROC and AUPRC are
        NaN when no voxel, or every voxel, is misclassified.

    Raises
    ------
    ValueError
        Invalid probabilities or GT, shapes that differ, unknown measures, thresholds that are
        not finite.

    Example
    -------
    >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
    >>> gt = np.array([[0, 0], [1, 1]])
    >>> s = error_detection_scores(p, gt, measures=("V",), thresholds=(0.3,))
    >>> s[["auroc", "recall_0.3", "precision_0.3", "n_errors"]].iloc[0].tolist()
    [1.0, 1.0, 0.5, 1.0]
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    measures = tuple(measures) if not isinstance(measures, str) else (measures,)
    for m in measures:
        _check_measure(m)
    ts = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"thresholds must be finite numbers, got {list(ts)}")
    if gt is None:
        raise ValueError("gt is required: misclassified voxels are defined against the ground truth")
    p, pred, gt, valid = _prepare(probs, gt, mask, ignore_index, class_axis)
    maps = _heatmaps(p, measures, maps)
    err = (pred != gt)[valid]
    n_err = int(err.sum())
    rows = []
    for m in measures:
        h = maps[m][valid].astype(np.float64, copy=False)
        row = {"measure": m, "auroc": np.nan, "auprc": np.nan}
        if 0 < n_err < err.size:
            row["auroc"] = float(roc_auc_score(err, h))
            row["auprc"] = float(average_precision_score(err, h))
        for t in ts:
            flagged = h >= t
            hits = int((flagged & err).sum())
            nf = int(flagged.sum())
            row[f"recall_{_threshold_label(t)}"] = hits / n_err if n_err else np.nan
            row[f"precision_{_threshold_label(t)}"] = hits / nf if nf else np.nan
        row["n_errors"] = n_err
        row["n_voxels"] = int(err.size)
        rows.append(row)
    return pd.DataFrame(rows)


def _bins(h, n_bins):
    return np.minimum((np.clip(h, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)


class ErrorCalibration:
    """P(error | heatmap) of one measure, learnt on training cases, and the thresholds it implies.

    The heatmap range [0, 1] is cut into ``n_bins`` equal bins; :meth:`fit` counts the scored
    voxels and the misclassified ones per bin over the training cases and fits an increasing
    isotonic regression of the error rate on the bin (weighted by the voxel counts).

    Parameters
    ----------
    measure : {"E", "D", "V"}, default "E"
    n_bins : int, default 1000

    Attributes
    ----------
    voxels_ : numpy.ndarray of int64
        Scored voxels per bin (training).
    errors_ : numpy.ndarray of int64
        Misclassified voxels per bin (training).
    error_rate_ : numpy.ndarray of float
        P(error | bin), increasing.
    n_cases_ : int

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> p1 = rng.uniform(0.5, 1.0, (20, 20)).astype(np.float32)
    >>> probs = np.stack([p1, 1 - p1], axis=-1)
    >>> gt = (rng.uniform(0.5, 1.0, p1.shape) > p1).astype(int)  # errors where p1 is low
    >>> cal = ErrorCalibration(measure="V").fit([probs], [gt])
    >>> bool(np.all(np.diff(cal.error_rate_) >= 0))
    True
    """

    def __init__(self, measure: str = "E", n_bins: int = N_BINS):
        self.measure = measure
        self.n_bins = n_bins

    def _check(self):
        _check_measure(self.measure)
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, (int, np.integer)) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {self.n_bins!r}")

    def fit(self, probs, gts, *, masks=None, ignore_index=255, class_axis=-1, maps=None):
        """Count voxels and errors per heatmap bin over training cases and fit P(error | bin).

        Parameters
        ----------
        probs : array_like or sequence of array_like
            Probabilities of one case or a list of cases.
        gts : array_like or sequence of array_like
            Their ground truth.
        masks : array_like or sequence, optional
            Voxels used per case (default all that are not ``ignore_index``).
        ignore_index : int or None, default 255
        class_axis : int, default -1
        maps : dict or sequence of dict, optional
            Heatmaps computed already (with ``measure``), one dict per case.

        Returns
        -------
        ErrorCalibration
            ``self``.

        Raises
        ------
        ValueError
            Lists of different lengths, invalid inputs, no scored voxel, or no error at all.
        """
        self._check()
        probs_l, gts_l, masks_l, maps_l = _as_lists(probs, gts, masks, maps)
        voxels = np.zeros(self.n_bins, np.int64)
        errors = np.zeros(self.n_bins, np.int64)
        for p, g, m, mp in zip(probs_l, gts_l, masks_l, maps_l, strict=True):
            pv, pred, gv, valid = _prepare(p, g, m, ignore_index, class_axis)
            h = _heatmaps(pv, (self.measure,), mp)[self.measure][valid]
            b = _bins(h, self.n_bins)
            voxels += np.bincount(b, minlength=self.n_bins)
            errors += np.bincount(b[(pred != gv)[valid]], minlength=self.n_bins)
        return self._fit_counts(voxels, errors, len(probs_l))

    def _fit_counts(self, voxels, errors, n_cases):
        from sklearn.isotonic import IsotonicRegression

        if voxels.sum() == 0:
            raise ValueError("no voxel to learn from: every voxel is masked out or ignored")
        if errors.sum() == 0:
            raise ValueError("the training cases have no misclassified voxel: P(error | heatmap) cannot "
                             "be learnt")
        used = voxels > 0
        centres = (np.arange(self.n_bins) + 0.5) / self.n_bins
        iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(centres[used], errors[used] / voxels[used], sample_weight=voxels[used])
        self.voxels_ = voxels
        self.errors_ = errors
        self.error_rate_ = np.asarray(iso.predict(centres), dtype=np.float64)
        self.n_cases_ = int(n_cases)
        return self

    @classmethod
    def combine(cls, calibrations) -> ErrorCalibration:
        """One calibration from the counts of several (e.g. fitted one case at a time, so that
        only one case is in memory at once).

        Example
        -------
        >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
        >>> a = calibrate_errors(p, np.array([[0, 0], [1, 1]]), measure="V")
        >>> ErrorCalibration.combine([a, a]).errors_.sum()
        np.int64(2)
        """
        cals = list(calibrations)
        if not cals:
            raise ValueError("no calibration to combine")
        for c in cals:
            if not isinstance(c, cls):
                raise TypeError(f"expected ErrorCalibration objects, got {type(c).__name__}")
            c._fitted()
        first = cals[0]
        if any(c.measure != first.measure or c.n_bins != first.n_bins for c in cals):
            raise ValueError("calibrations of different measures or bin counts cannot be combined")
        out = cls(measure=first.measure, n_bins=first.n_bins)
        return out._fit_counts(np.sum([c.voxels_ for c in cals], axis=0),
                               np.sum([c.errors_ for c in cals], axis=0), sum(c.n_cases_ for c in cals))

    def _fitted(self):
        if not hasattr(self, "error_rate_"):
            raise ValueError("this ErrorCalibration is not fitted yet: call fit(probs, gts) first")

    def threshold_for_recall(self, recall: float) -> float:
        """The largest bin edge t such that flagging heatmap >= t found ``recall`` of the
        training errors."""
        self._fitted()
        r = _check_recall(recall)
        from_top = np.cumsum(self.errors_[::-1])[::-1] / self.errors_.sum()
        b = int(np.flatnonzero(from_top >= r - 1e-12).max())
        return b / self.n_bins

    def share_for_recall(self, recall: float) -> float:
        """The share of the training voxels flagged by :meth:`threshold_for_recall`."""
        self._fitted()
        b = round(self.threshold_for_recall(recall) * self.n_bins)
        return float(self.voxels_[b:].sum() / self.voxels_.sum())

    def error_probability(self, heat) -> np.ndarray:
        """P(error) of each value of a heatmap."""
        self._fitted()
        return self.error_rate_[_bins(np.asarray(heat, dtype=np.float64), self.n_bins)]

    def to_dict(self) -> dict:
        """Plain numbers (JSON-ready); :meth:`from_dict` restores the calibration."""
        self._fitted()
        return {"measure": self.measure, "n_bins": int(self.n_bins), "n_cases": int(self.n_cases_),
                "voxels": self.voxels_.tolist(), "errors": self.errors_.tolist(),
                "error_rate": self.error_rate_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ErrorCalibration:
        """Rebuild a calibration from :meth:`to_dict`; ValueError on malformed values."""
        try:
            cal = cls(measure=d["measure"], n_bins=int(d["n_bins"]))
            cal._check()
            arrays = [np.asarray(d[k], dtype=t) for k, t in
                      (("voxels", np.int64), ("errors", np.int64), ("error_rate", np.float64))]
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an ErrorCalibration record: {err}") from None
        if any(a.shape != (cal.n_bins,) for a in arrays) or np.any(arrays[1] > arrays[0]) \
                or not np.all((arrays[2] >= 0) & (arrays[2] <= 1)):
            raise ValueError("an ErrorCalibration record holds arrays of the wrong length or range")
        cal.voxels_, cal.errors_, cal.error_rate_ = arrays
        cal.n_cases_ = int(d.get("n_cases", 0))
        return cal

    def __repr__(self):
        fitted = f", fitted on {self.n_cases_} case(s)" if hasattr(self, "error_rate_") else ""
        return f"ErrorCalibration(measure={self.measure!r}, n_bins={self.n_bins}{fitted})"


def _as_lists(probs, gts, masks, maps):
    several = isinstance(probs, (list, tuple))
    probs_l = list(probs) if several else [probs]
    gts_l = list(gts) if isinstance(gts, (list, tuple)) else [gts]
    n = len(probs_l)
    masks_l = list(masks) if isinstance(masks, (list, tuple)) else [masks] * n
    maps_l = list(maps) if isinstance(maps, (list, tuple)) else [maps] * n
    if not (len(gts_l) == len(masks_l) == len(maps_l) == n):
        raise ValueError(f"got {n} probability maps, {len(gts_l)} GT maps, {len(masks_l)} masks and "
                         f"{len(maps_l)} heatmap sets; pass one of each per case")
    if n == 0:
        raise ValueError("no training case given")
    return probs_l, gts_l, masks_l, maps_l


def _check_recall(recall):
    if isinstance(recall, bool) or not isinstance(recall, (int, float, np.integer, np.floating)):
        raise TypeError(f"target recall must be a number, got {type(recall).__name__}")
    if not 0.0 < float(recall) <= 1.0:
        raise ValueError(f"target recall must lie in (0, 1], got {recall}")
    return float(recall)


def calibrate_errors(probs, gts, *, measure="E", masks=None, ignore_index=255, class_axis=-1, maps=None,
                     n_bins=N_BINS) -> ErrorCalibration:
    """Fit an :class:`ErrorCalibration` on training cases (see :meth:`ErrorCalibration.fit`).

    Example
    -------
    >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
    >>> cal = calibrate_errors([p], [np.array([[0, 0], [1, 1]])], measure="V")
    >>> cal.threshold_for_recall(1.0)
    0.45
    """
    return ErrorCalibration(measure=measure, n_bins=n_bins).fit(
        probs, gts, masks=masks, ignore_index=ignore_index, class_axis=class_axis, maps=maps)


def flag_errors(probs, *, measure="E", method="fixed", threshold=None, share=None, calibration=None,
                target_recall=None, mask=None, class_axis=-1, maps=None) -> np.ndarray:
    """Boolean map of the voxels likely misclassified, by one of three rules.

    Parameters
    ----------
    probs : array_like
        Probabilities of one image or volume.
    measure : {"E", "D", "V"}, default "E"
        Heatmap used (a calibration's own measure wins over this one).
    method : {"fixed", "quantile", "calibrated"}, default "fixed"
        ``"fixed"``: heatmap >= ``threshold`` (default 0.5, or the calibration's threshold for
        ``target_recall``). ``"quantile"``: the ``share`` of the voxels inside ``mask`` with the
        highest heatmap (ties at the cut are all flagged; default: the calibration's share for
        ``target_recall``). ``"calibrated"``: with ``calibration``'s P(error | heatmap), the most
        uncertain voxels holding ``target_recall`` of the image's expected errors.
    threshold : float, optional
    share : float, optional
        In (0, 1].
    calibration : ErrorCalibration, optional
        Needed by ``"calibrated"``, and by the other rules when ``target_recall`` chooses their
        parameter.
    target_recall : float, optional
        In (0, 1]; default 0.8 for ``"calibrated"``.
    mask : array_like of bool, optional
        Voxels that may be flagged (default all).
    class_axis : int, default -1
    maps : dict, optional
        Heatmaps of ``probs`` computed already.

    Returns
    -------
    numpy.ndarray of bool
        Spatial shape of ``probs``; False outside ``mask``.

    Raises
    ------
    ValueError
        Unknown method or measure, a missing parameter (each message names what to pass),
        values out of range, shapes that differ.

    Example
    -------
    >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
    >>> flag_errors(p, measure="V", threshold=0.3).tolist()
    [[False, True], [True, False]]
    >>> flag_errors(p, measure="V", method="quantile", share=0.25).tolist()
    [[False, False], [True, False]]
    """
    if method not in FLAG_METHODS:
        raise ValueError(f"method must be one of {FLAG_METHODS}, got {method!r}")
    if calibration is not None:
        if not isinstance(calibration, ErrorCalibration):
            raise TypeError(f"calibration must be an ErrorCalibration, got {type(calibration).__name__}")
        calibration._fitted()
        measure = calibration.measure
    _check_measure(measure)
    if target_recall is not None:
        target_recall = _check_recall(target_recall)
    p, _, _, valid = _prepare(probs, None, mask, None, class_axis)
    heat = np.asarray(_heatmaps(p, (measure,), maps)[measure])
    out = np.zeros(heat.shape, bool)
    h = heat[valid]
    if h.size == 0:
        return out
    if method == "fixed":
        if threshold is None:
            if calibration is not None and target_recall is not None:
                b = round(calibration.threshold_for_recall(target_recall) * calibration.n_bins)
                out[valid] = _bins(h, calibration.n_bins) >= b
                return out
            threshold = 0.5
        if not np.isfinite(float(threshold)):
            raise ValueError(f"threshold must be finite, got {threshold}")
        out[valid] = h >= float(threshold)
        return out
    if method == "quantile":
        if share is None:
            if calibration is None or target_recall is None:
                raise ValueError("method='quantile' needs share=, or calibration= and target_recall= to "
                                 "choose the share on the training cases")
            share = calibration.share_for_recall(target_recall)
        share = float(share)
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must lie in (0, 1], got {share}")
        k = min(h.size, max(1, int(np.ceil(share * h.size))))
        cut = np.partition(h, h.size - k)[h.size - k]
        out[valid] = h >= cut
        return out
    if calibration is None:
        raise ValueError("method='calibrated' needs calibration= (an ErrorCalibration fitted on training "
                         "cases: calibrate_errors(probs_list, gt_list))")
    target = 0.8 if target_recall is None else target_recall
    b = _bins(h, calibration.n_bins)
    expected = np.bincount(b, minlength=calibration.n_bins) * calibration.error_rate_
    total = expected.sum()
    if total <= 0:
        return out
    from_top = np.cumsum(expected[::-1])[::-1]
    first = int(np.flatnonzero(from_top >= target * total - 1e-12).max())
    out[valid] = b >= first
    return out


def flagged_scores(flags, probs, gt, *, ignore_index=255, mask=None, class_axis=-1) -> dict:
    """Recall, precision and share flagged of a boolean map against the misclassified voxels.

    Example
    -------
    >>> p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.55, 0.45], [0.2, 0.8]]], np.float32)
    >>> flagged_scores(np.array([[False, True], [True, False]]), p, np.array([[0, 0], [1, 1]]))
    {'recall': 1.0, 'precision': 0.5, 'share_flagged': 0.5, 'n_errors': 1}
    """
    _, pred, gt, valid = _prepare(probs, gt, mask, ignore_index, class_axis)
    flags = _check_mask(flags, pred.shape, name="flags")
    err = (pred != gt) & valid
    f = flags & valid
    n_err, n_f = int(err.sum()), int(f.sum())
    hits = int((f & err).sum())
    return {"recall": hits / n_err if n_err else float("nan"),
            "precision": hits / n_f if n_f else float("nan"),
            "share_flagged": n_f / int(valid.sum()) if valid.any() else float("nan"), "n_errors": n_err}
