"""Evaluation of out-of-distribution regions: hits, annotated objects, pixel and object scores.

Split from :mod:`napari_metaseg.core.ood` (which re-exports every public name here): a region is
a true positive (``hit`` = 1) when it touches an annotated OoD voxel (meta-ood eq. 6); pixel
level AUROC, AUPRC and FPR at 95 % TPR per heatmap; object level TP / FP / FN, F1 and the
in-distribution miss rate per threshold, keeping every candidate or those the meta classifier
rates as true positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .inputs import readonly
from .segments import _resolve_mode


def _ood():
    """The candidate-region module (imported when used: it re-exports this module's names)."""
    from . import ood

    return ood


# ============================================================================================
# Ground truth: hits and objects
# ============================================================================================
def _check_ids(region_ids, name="region_ids"):
    region_ids = np.asarray(region_ids)
    if region_ids.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {region_ids.dtype}; expected integer ids")
    if region_ids.ndim not in (2, 3):
        raise ValueError(f"{name} has {region_ids.ndim} dimensions; expected a 2D or 3D map")
    if region_ids.size and region_ids.min() < 0:
        raise ValueError(f"{name} holds negative ids")
    return region_ids


def region_hits(region_ids, ood_mask, *, n_regions=None):
    """Whether each region touches an annotated OoD voxel (1, a true positive) or not (0).

    Parameters
    ----------
    region_ids : array_like of int
        Region map of :func:`ood_regions` (0 outside regions).
    ood_mask : array_like of bool
        Annotated OoD voxels (nonzero = OoD), same shape.
    n_regions : int, optional
        Number of regions (default: the largest id).

    Returns
    -------
    numpy.ndarray of int64
        ``hit`` of regions ``1..n`` (entry ``k - 1`` for region ``k``).

    Raises
    ------
    ValueError
        Maps of different shapes, negative ids.
    TypeError
        A region map that is not integer.

    Example
    -------
    >>> region_hits(np.array([[1, 0, 2], [1, 0, 2]]), np.array([[0, 0, 1], [0, 1, 0]])).tolist()
    [0, 1]
    """
    region_ids = _check_ids(region_ids)
    ood_mask = _ood()._check_mask(ood_mask, region_ids.shape, "ood_mask")
    n = int(region_ids.max()) if n_regions is None and region_ids.size else int(n_regions or 0)
    counts = np.bincount(region_ids[ood_mask].ravel(), minlength=n + 1)
    return (counts[1 : n + 1] > 0).astype(np.int64)


def ood_objects(ood, *, mode="auto", slice_axis=-1):
    """Annotated OoD objects: instance ids, or connected components of a mask.

    Parameters
    ----------
    ood : array_like of bool or int
        A boolean (or 0/1) mask: its connected components in ``mode`` are the objects (in
        slices mode each slice's components separately). An integer map with ids above 1: the
        ids are the objects as given.
    mode, slice_axis
        As for :func:`ood_regions`.

    Returns
    -------
    objects : numpy.ndarray of int32
        Object ids ``1..n`` (0 elsewhere), consecutive.
    n : int

    Example
    -------
    >>> ood_objects(np.array([[1, 0, 1], [1, 0, 0]], bool))[1]
    2
    """
    ood = np.asarray(ood)
    if ood.ndim not in (2, 3):
        raise ValueError(f"ood has {ood.ndim} dimensions; expected a 2D or 3D map")
    if ood.dtype != np.bool_ and ood.dtype.kind not in "iu":
        raise TypeError(f"ood has dtype {ood.dtype}; expected bool or integer ids")
    mode, sax = _resolve_mode(mode, ood.ndim, slice_axis)
    if ood.dtype != np.bool_ and ood.size and ood.max() > 1:
        if ood.min() < 0:
            raise ValueError("ood holds negative ids")
        ids, inverse = np.unique(ood, return_inverse=True)
        if ids[0] != 0:
            inverse = inverse + 1
        objects = inverse.reshape(ood.shape).astype(np.int32)
        return objects, int(objects.max())
    objects, n, _, _ = _ood()._label_candidates(np.ascontiguousarray(ood != 0), mode, sax)
    return objects, n


def object_counts(region_ids, objects, *, keep=None, mask=None):
    """Object-level counts of one case for one selection of regions.

    Parameters
    ----------
    region_ids : array_like of int
        Region map (0 outside regions).
    objects : array_like of int
        Annotated OoD objects (:func:`ood_objects`), same shape; 0 = in distribution.
    keep : array_like of bool, optional
        Which regions ``1..n`` are kept (default all).
    mask : array_like of bool, optional
        Where in-distribution voxels count for the miss rate (default everywhere).

    Returns
    -------
    dict
        ``n_regions``, ``kept``, ``tp`` (objects touched by a kept region), ``fn`` (objects
        touched by none), ``fp`` (kept regions touching no object), ``n_objects``,
        ``id_voxels`` (in-distribution voxels in the mask), ``id_flagged`` (of those, inside
        kept regions). Counts add up over cases (:func:`summarise_counts` turns sums into F1
        and the miss rate).

    Example
    -------
    >>> reg = np.array([[1, 0, 2], [1, 0, 0]]); obj = np.array([[0, 0, 1], [0, 0, 0]])
    >>> c = object_counts(reg, obj)
    >>> c["tp"], c["fp"], c["fn"], c["id_flagged"]
    (1, 1, 0, 2)
    """
    region_ids = _check_ids(region_ids)
    objects = _check_ids(objects, "objects")
    if objects.shape != region_ids.shape:
        raise ValueError(f"objects have shape {objects.shape}, region_ids {region_ids.shape}")
    mask = _ood()._check_mask(mask, region_ids.shape)
    n = int(region_ids.max()) if region_ids.size else 0
    n_obj = int(objects.max()) if objects.size else 0
    kept = np.ones(n + 1, bool) if keep is None else np.concatenate([[False], np.asarray(keep, bool)])
    if kept.shape[0] != n + 1:
        raise ValueError(f"keep has {kept.shape[0] - 1} entries for {n} regions")
    kept[0] = False
    regs, objs = _ood()._pair_hits(readonly(np.ascontiguousarray(region_ids).reshape(-1)),
                            readonly(np.ascontiguousarray(objects).reshape(-1)), n, n_obj)
    sel = kept[regs]
    touched = np.zeros(n_obj + 1, bool)
    touched[objs[sel]] = True
    tp = int(touched[1:].sum())
    hit_region = np.zeros(n + 1, bool)
    hit_region[regs] = True
    fp = int((kept & ~hit_region).sum())
    in_dist = objects == 0
    if mask is not None:
        in_dist &= mask
    flagged = in_dist & kept[region_ids]
    return {"n_regions": n, "kept": int(kept.sum()), "tp": tp, "fn": n_obj - tp, "fp": fp,
            "n_objects": n_obj, "id_voxels": int(in_dist.sum()), "id_flagged": int(flagged.sum())}


def summarise_counts(counts):
    """F1 and in-distribution miss rate from (summed) :func:`object_counts`.

    Returns the counts with ``f1`` = 2 TP / (2 TP + FP + FN) (NaN when there is nothing to count)
    and ``id_miss_rate`` = ``id_flagged / id_voxels``.

    Example
    -------
    >>> summarise_counts({"tp": 1, "fp": 1, "fn": 0, "id_voxels": 4, "id_flagged": 1})["f1"]
    0.6666666666666666
    """
    out = dict(counts)
    den = 2 * out["tp"] + out["fp"] + out["fn"]
    out["f1"] = 2 * out["tp"] / den if den else float("nan")
    out["id_miss_rate"] = out["id_flagged"] / out["id_voxels"] if out["id_voxels"] else float("nan")
    return out


# ============================================================================================
# Pixel level
# ============================================================================================
def _curve(score, label):
    """Points of the ROC / precision-recall curves at every distinct score, highest first:
    ``(tps, fps)`` cumulative counts."""
    # ascending, reversed (not argsort(-score): negating unsigned scores wraps around); the
    # order within a run of equal scores does not matter, the run is one point
    order = np.argsort(score, kind="stable")[::-1]
    s = score[order]
    y = label[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = last + 1 - tps
    return tps, fps


def _weighted_curve(n_ood, n_in):
    """:func:`_curve` of distinct scores given in ascending order with their counts of OoD and
    in-distribution voxels: the same cumulative counts, without the voxels."""
    return np.cumsum(n_ood[::-1], dtype=np.int64), np.cumsum(n_in[::-1], dtype=np.int64)


def _scores_of(score, label):
    if score.size == 0:
        return float("nan"), float("nan"), float("nan")
    return _scores_of_curve(*_curve(score, label))


def _scores_of_curve(tps, fps):
    if tps.size == 0:
        return float("nan"), float("nan"), float("nan")
    p, n = int(tps[-1]), int(fps[-1])
    if p == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    tpr = np.r_[0.0, tps / p]
    fpr = np.r_[0.0, fps / n]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    precision = tps / (tps + fps)
    auprc = float(np.sum(np.diff(tpr) * precision))
    fpr95 = float(fpr[np.argmax(tpr >= 0.95)])
    return auroc, auprc, fpr95


def _check_values(name, s):
    if s.dtype.kind not in "fiu":
        raise TypeError(f"heatmap {name!r} has dtype {s.dtype}; expected numbers")
    if s.dtype.kind == "f" and not np.isfinite(s).all():
        raise ValueError(f"heatmap {name!r} holds NaN or inf")


@dataclass(frozen=True)
class PixelCounts:
    """The pixel-level evaluation data of one case or many, without the voxels.

    Per heatmap, the distinct values of the evaluated voxels (ascending) and how many OoD and
    how many in-distribution voxels hold each value. AUROC, AUPRC and FPR95 depend on nothing
    else: voxels of equal score form one point of the curves, whatever their order. Cases merge
    by value with their counts added (:meth:`merge`), so a dataset's figures come from per-case
    parts of a few thousand values instead of millions of voxels, and equal those of the pooled
    voxels exactly (the same cumulative integer counts enter the same formulas).

    Parameters
    ----------
    measures : dict of str to (values, n_ood, n_in)
        ``values``: 1-D, strictly increasing, finite numbers; ``n_ood`` / ``n_in``: 1-D integer
        counts of the same length, non-negative, at least one voxel per value. Every heatmap
        covers the same voxels (equal totals).

    Raises
    ------
    ValueError, TypeError
        Arrays of other shapes or dtypes, unsorted or repeated values, negative counts, a value
        without voxels, heatmaps with different totals (what a damaged file would give).

    Example
    -------
    >>> c = PixelCounts.from_voxels({"E": np.array([0.9, 0.2, 0.9])}, np.array([1, 0, 0]))
    >>> c.measures["E"][0].tolist(), c.measures["E"][1].tolist(), c.measures["E"][2].tolist()
    ([0.2, 0.9], [0, 1], [1, 1])
    """

    measures: dict

    def __post_init__(self):
        if not isinstance(self.measures, dict):
            raise TypeError(f"measures must be a dict, got {type(self.measures).__name__}")
        checked = {}
        totals = None
        for name, part in self.measures.items():
            if not isinstance(part, (tuple, list)) or len(part) != 3:
                raise ValueError(f"heatmap {name!r}: expected (values, n_ood, n_in)")
            values, n_ood, n_in = (np.array(a) for a in part)  # copies: frozen below, the caller's not
            if values.ndim != 1 or n_ood.shape != values.shape or n_in.shape != values.shape:
                raise ValueError(f"heatmap {name!r}: values {values.shape}, n_ood {n_ood.shape} and n_in "
                                 f"{n_in.shape} must be 1-D of one length")
            _check_values(name, values)
            if values.size > 1 and not (values[1:] > values[:-1]).all():
                raise ValueError(f"heatmap {name!r}: values must be strictly increasing")
            for what, n in (("n_ood", n_ood), ("n_in", n_in)):
                if n.dtype.kind not in "iu":
                    raise TypeError(f"heatmap {name!r}: {what} has dtype {n.dtype}; expected integers")
                if n.size and (n.min() < 0 or n.max() > np.iinfo(np.int64).max):
                    raise ValueError(f"heatmap {name!r}: {what} holds negative or too large counts")
            n_ood, n_in = n_ood.astype(np.int64), n_in.astype(np.int64)
            if ((n_ood + n_in) == 0).any():
                raise ValueError(f"heatmap {name!r}: a value without voxels")
            total = (int(n_ood.sum()), int(n_in.sum()))
            if totals is not None and total != totals:
                raise ValueError(f"heatmap {name!r} counts {total} (OoD, in-distribution) voxels, another "
                                 f"heatmap {totals}: the heatmaps must cover the same voxels")
            totals = total
            for a in (values, n_ood, n_in):
                a.flags.writeable = False
            checked[str(name)] = (values, n_ood, n_in)
        object.__setattr__(self, "measures", checked)

    @property
    def n_ood(self) -> int:
        """OoD voxels counted (0 without heatmaps)."""
        return int(next(iter(self.measures.values()))[1].sum()) if self.measures else 0

    @property
    def n_in(self) -> int:
        """In-distribution voxels counted (0 without heatmaps)."""
        return int(next(iter(self.measures.values()))[2].sum()) if self.measures else 0

    @classmethod
    def from_voxels(cls, scores, ood, *, mask=None) -> PixelCounts:
        """The counts of heatmaps ``scores`` (same shape as ``ood``) inside ``mask`` (default
        everywhere); ``ood`` nonzero = OoD. Raises as :func:`pixel_scores`."""
        label, keep = _labels(ood, mask)
        out = {}
        for name, s in scores.items():
            s = _restricted(name, s, label, keep, ood)
            # each side's distinct values by sorting (8x faster than one unique with the inverse
            # on 2 million voxels), then merged
            sides = [np.unique(s[label], return_counts=True), np.unique(s[~label], return_counts=True)]
            out[name] = _merged([(v, c, None) for v, c in sides[:1]] + [(v, None, c) for v, c in sides[1:]],
                                s.dtype)
        return cls(out)

    @classmethod
    def merge(cls, parts) -> PixelCounts:
        """Counts of several cases as one: values merged (numpy's type promotion, as for the
        concatenated voxels), counts of equal values added. All parts need the same heatmaps."""
        parts = list(parts)
        if not parts:
            return cls({})
        for p in parts:
            if not isinstance(p, PixelCounts):
                raise TypeError(f"expected PixelCounts, got {type(p).__name__}")
        names = list(parts[0].measures)
        for p in parts[1:]:
            if sorted(p.measures) != sorted(names):
                raise ValueError(f"parts have different heatmaps ({names} vs {list(p.measures)})")
        if len(parts) == 1:
            return parts[0]
        return cls({name: _merged([p.measures[name] for p in parts]) for name in names})


def _merged(parts, dtype=None):
    """``(values, n_ood, n_in)`` of parts ``(values, n_ood or None, n_in or None)``: the union of
    the values (numpy's type promotion) and the counts of equal values added (None adds none)."""
    values = np.unique(np.concatenate([v for v, _, _ in parts]) if parts else np.zeros(0, dtype))
    sums = [np.zeros(values.size, np.int64), np.zeros(values.size, np.int64)]
    for v, *counts in parts:
        at = np.searchsorted(values, v)  # every value of a part is in the union: its exact place
        for acc, c in zip(sums, counts, strict=True):
            if c is not None:
                acc[at] += c  # distinct within a part: no index repeats
    return values, sums[0], sums[1]


def _labels(ood, mask):
    ood = np.asarray(ood)
    label = (ood != 0).reshape(-1)
    keep = None
    if mask is not None:
        keep = _ood()._check_mask(mask, ood.shape).reshape(-1)
        label = label[keep]
    return label, keep


def _restricted(name, s, label, keep, ood):
    s = np.asarray(s)
    if s.shape != np.shape(ood):
        raise ValueError(f"heatmap {name!r} has shape {s.shape}, ood {np.shape(ood)}")
    s = s.reshape(-1)
    if keep is not None:
        s = s[keep]
    _check_values(name, s)
    return s


_PIXEL_COLUMNS = ["measure", "auroc", "auprc", "fpr95", "n_ood", "n_in"]


def _weighted_pixel_scores(counts):
    rows = []
    for name, (_, n_ood, n_in) in counts.measures.items():
        auroc, auprc, fpr95 = _scores_of_curve(*_weighted_curve(n_ood, n_in))
        rows.append({"measure": name, "auroc": auroc, "auprc": auprc, "fpr95": fpr95,
                     "n_ood": int(n_ood.sum()), "n_in": int(n_in.sum())})
    return pd.DataFrame(rows, columns=_PIXEL_COLUMNS)


def _is_counts(pixels) -> bool:
    return isinstance(pixels, PixelCounts) or (
        isinstance(pixels, (list, tuple)) and all(isinstance(p, PixelCounts) for p in pixels))


def pixel_scores(scores, ood=None, *, mask=None):
    """Pixel-level AUROC, AUPRC and FPR at 95 % TPR of each heatmap for OoD vs in-distribution.

    Higher heatmap values rank a voxel as more likely OoD. AUROC is the trapezoidal area under
    the ROC curve over every distinct score, AUPRC the average precision (sum over distinct
    scores of the recall increase times the precision), FPR95 the false positive rate at the
    highest threshold whose TPR reaches 95 %: the definitions of scikit-learn's
    ``roc_auc_score``, ``average_precision_score`` and ``roc_curve``.

    Parameters
    ----------
    scores : dict of str to array_like, or PixelCounts, or sequence of PixelCounts
        Heatmaps (same shape as ``ood``), or 1-D arrays of values already restricted; or the
        counts of :class:`PixelCounts` (of several cases: merged), which give the same figures
        as the voxels they were counted from.
    ood : array_like of bool
        Annotated OoD voxels (nonzero = OoD); not with counts.
    mask : array_like of bool, optional
        Voxels evaluated (default all); not with counts.

    Returns
    -------
    pandas.DataFrame
        One row per heatmap: ``measure``, ``auroc``, ``auprc``, ``fpr95``, ``n_ood``, ``n_in``
        (NaN scores when one side is empty).

    Example
    -------
    >>> pixel_scores({"E": np.array([0.9, 0.2, 0.4, 0.1])}, np.array([1, 0, 1, 0]))["auroc"].item()
    1.0
    """
    if _is_counts(scores):
        if ood is not None or mask is not None:
            raise ValueError("pixel_scores: ood and mask go with heatmaps, not with PixelCounts")
        merged = scores if isinstance(scores, PixelCounts) else PixelCounts.merge(scores)
        return _weighted_pixel_scores(merged)
    if ood is None:
        raise ValueError("pixel_scores: ood (the annotated OoD voxels) is needed with heatmaps")
    ood = np.asarray(ood)
    label, keep = _labels(ood, mask)
    rows = []
    for name, s in scores.items():
        s = np.asarray(s)
        if s.shape != ood.shape:
            raise ValueError(f"heatmap {name!r} has shape {s.shape}, ood {ood.shape}")
        s = s.reshape(-1)
        if keep is not None:
            s = s[keep]
        if s.dtype.kind not in "fiu":
            raise TypeError(f"heatmap {name!r} has dtype {s.dtype}; expected numbers")
        if not np.isfinite(s).all():
            raise ValueError(f"heatmap {name!r} holds NaN or inf")
        auroc, auprc, fpr95 = _scores_of(s, label)
        rows.append({"measure": name, "auroc": auroc, "auprc": auprc, "fpr95": fpr95,
                     "n_ood": int(label.sum()), "n_in": int(label.size - label.sum())})
    return pd.DataFrame(rows, columns=["measure", "auroc", "auprc", "fpr95", "n_ood", "n_in"])


# ============================================================================================
# Evaluation over cases and thresholds
# ============================================================================================
@dataclass
class OodCase:
    """What :func:`evaluate_ood` needs of one case.

    ``heatmaps``: name -> heatmap (pixel level; may be empty); ``ood``: annotated OoD voxels
    (bool) or instance ids; ``regions``: threshold -> ``(region_ids, p_hit)`` with ``p_hit``
    the meta classifier's probability per region (None: no classifier); ``mask``: where
    candidates were looked for and voxels are evaluated (None: everywhere).
    """

    heatmaps: dict
    ood: np.ndarray
    regions: dict = field(default_factory=dict)
    mask: np.ndarray | None = None


@dataclass
class OodEvaluation:
    """Result of :func:`evaluate_ood`.

    ``pixel``: one row per heatmap (``measure``, ``auroc``, ``auprc``, ``fpr95``, ``n_ood``,
    ``n_in``); ``objects``: one row per threshold and selection (``keep`` = ``all``: every
    candidate, ``meta``: those with ``p_hit >= p_threshold``) with ``n_regions``, ``kept``,
    ``tp``, ``fp``, ``fn``, ``n_objects``, ``f1``, ``id_miss_rate`` (counts summed over cases).
    """

    pixel: pd.DataFrame
    objects: pd.DataFrame
    n_cases: int = 0
    p_threshold: float = 0.5

    def to_markdown(self) -> str:
        """Both tables as Markdown (pixel level, then object level per threshold)."""
        lines = ["| heatmap | AUROC | AUPRC | FPR95 | OoD voxels | in-distribution voxels |",
                 "|---|---|---|---|---|---|"]
        for r in self.pixel.itertuples():
            lines.append(f"| {r.measure} | {r.auroc:.3f} | {r.auprc:.3f} | {r.fpr95:.3f} | {r.n_ood} "
                         f"| {r.n_in} |")
        lines += ["", "| threshold | keep | candidates | kept | TP | FP | FN | F1 | ID miss rate |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in self.objects.itertuples():
            lines.append(f"| {r.threshold:g} | {r.keep} | {r.n_regions} | {r.kept} | {r.tp} | {r.fp} "
                         f"| {r.fn} | {r.f1:.3f} | {r.id_miss_rate:.4f} |")
        return "\n".join(lines)


_OBJECT_COLUMNS = ["threshold", "keep", "n_regions", "kept", "tp", "fp", "fn", "n_objects", "f1",
                   "id_miss_rate", "id_voxels", "id_flagged"]


def evaluation_from_parts(pixels, counts, *, n_cases=0, p_threshold=0.5):
    """An :class:`OodEvaluation` from pooled pixel values and summed object counts.

    For runs where each case is evaluated on its own (a worker per case) and the parts are
    gathered afterwards; :func:`evaluate_ood` is built on it.

    Parameters
    ----------
    pixels : (bool array, dict of str to array), PixelCounts, sequence of PixelCounts or None
        The OoD flags of the evaluated voxels of all cases and, per heatmap, their values (1-D,
        same order); or the :class:`PixelCounts` of the cases (merged by value), which give the
        same figures without the voxels.
    counts : dict
        ``{(threshold, keep): counts}`` with ``keep`` in ``"all"``, ``"meta"`` and the
        :func:`object_counts` of all cases added up.
    n_cases : int
    p_threshold : float

    Returns
    -------
    OodEvaluation

    Example
    -------
    >>> c = {"n_regions": 2, "kept": 2, "tp": 1, "fn": 0, "fp": 1, "n_objects": 1, "id_voxels": 4,
    ...      "id_flagged": 1}
    >>> evaluation_from_parts(None, {(0.5, "all"): c}).objects["f1"].round(3).tolist()
    [0.667]
    """
    pixel = pd.DataFrame(columns=_PIXEL_COLUMNS)
    if pixels is not None and _is_counts(pixels):
        merged = pixels if isinstance(pixels, PixelCounts) else PixelCounts.merge(pixels)
        if merged.measures:
            pixel = pixel_scores(merged)
    elif pixels is not None and pixels[1]:
        pixel = pixel_scores(pixels[1], pixels[0])
    order = {"all": 0, "meta": 1}
    rows = [{"threshold": float(t), "keep": keep, **summarise_counts(c)}
            for (t, keep), c in sorted(counts.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))]
    table = pd.DataFrame(rows, columns=_OBJECT_COLUMNS) if rows else pd.DataFrame(columns=_OBJECT_COLUMNS)
    return OodEvaluation(pixel=pixel, objects=table, n_cases=int(n_cases), p_threshold=float(p_threshold))


def evaluate_ood(cases: Sequence[OodCase], *, p_threshold=0.5, mode="auto", slice_axis=-1):
    """Pixel- and object-level OoD evaluation over cases (meta-ood's Table 2/3 figures).

    Parameters
    ----------
    cases : sequence of OodCase
        Heatmaps, annotations and candidate regions of each case. Pixel scores pool the voxels
        of every case (inside each case's mask); object counts add up over cases.
    p_threshold : float, default 0.5
        A region is kept by the meta classifier when ``p_hit >= p_threshold``.
    mode, slice_axis
        How annotated objects are made from a boolean OoD mask (:func:`ood_objects`): the
        regions' mode, so that in slices mode an object is a lesion's cross-section in a slice.

    Returns
    -------
    OodEvaluation

    Raises
    ------
    ValueError
        Cases with different heatmaps or thresholds, maps of different shapes.

    Example
    -------
    >>> reg = np.array([[1, 0, 2]]); ood = np.array([[0, 0, 1]], bool)
    >>> case = OodCase({"E": np.array([[0.6, 0.1, 0.9]])}, ood, {0.5: (reg, np.array([0.2, 0.8]))})
    >>> ev = evaluate_ood([case])
    >>> ev.objects[["keep", "tp", "fp", "f1"]].to_numpy().tolist()
    [['all', 1, 1, 0.6666666666666666], ['meta', 1, 0, 1.0]]
    """
    cases = list(cases)
    if not cases:
        raise ValueError("evaluate_ood needs at least one case")
    names = list(cases[0].heatmaps)
    thresholds = sorted(cases[0].regions)
    for c in cases[1:]:
        if list(c.heatmaps) != names:
            raise ValueError(f"cases have different heatmaps ({names} vs {list(c.heatmaps)})")
        if sorted(c.regions) != thresholds:
            raise ValueError(f"cases have different thresholds ({thresholds} vs {sorted(c.regions)})")
    pixels = None
    if names:
        labels, values = [], {n: [] for n in names}
        for c in cases:
            ood = np.asarray(c.ood)
            keep = np.ones(ood.shape, bool) if c.mask is None else _ood()._check_mask(c.mask, ood.shape)
            labels.append((ood != 0)[keep])
            for n in names:
                h = np.asarray(c.heatmaps[n])
                if h.shape != ood.shape:
                    raise ValueError(f"heatmap {n!r} has shape {h.shape}, ood {ood.shape}")
                values[n].append(h[keep])
        pixels = (np.concatenate(labels), {n: np.concatenate(v) for n, v in values.items()})
    counts = {}
    objects = [ood_objects(c.ood, mode=mode, slice_axis=slice_axis)[0] for c in cases]
    for t in thresholds:
        meta_known = all(c.regions[t][1] is not None for c in cases)
        for keep_kind in ("all", "meta") if meta_known else ("all",):
            total = None
            for c, obj in zip(cases, objects, strict=True):
                reg, p_hit = c.regions[t]
                keep = None if keep_kind == "all" else np.asarray(p_hit, float) >= p_threshold
                part = object_counts(reg, obj, keep=keep, mask=c.mask)
                total = part if total is None else {k: total[k] + part[k] for k in total}
            counts[float(t), keep_kind] = total
    return evaluation_from_parts(pixels, counts, n_cases=len(cases), p_threshold=p_threshold)
