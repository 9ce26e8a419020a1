"""Evaluation scores of a segmentation against ground truth: per-class IoU and Dice, pixel
accuracy, their means, region scores (BraTS-style groups of classes) and instance AP.

Definitions (``P`` the predicted pixels of a class or group, ``G`` its ground-truth pixels,
ignored pixels left out of both):

* IoU (Jaccard) ``|P ∩ G| / |P ∪ G|``; Dice ``2 |P ∩ G| / (|P| + |G|)``;
* pixel accuracy: the share of the (non-ignored) pixels whose predicted class is the GT class;
* ``mean_iou`` / ``mean_dice``: the mean over the classes other than ``background`` that occur
  in the GT or in the prediction of that image or slice. A class absent from both has no score
  (NaN) and is not counted: counting it as 0 would punish an image for a class it rightly lacks,
  counting it as 1 would reward any image for it;
* instance AP: COCO's average precision (detections matched greedily by score, precision
  interpolated at 101 recall points, averaged over IoU thresholds 0.50:0.95:0.05), with no cap on
  the number of detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numba import njit

__all__ = ["COCO_IOU_THRESHOLDS", "instance_ap", "segmentation_scores"]

#: COCO's IoU thresholds 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
#: COCO's recall points 0, 0.01, ..., 1 at which precision is interpolated.
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
#: Largest class id counted directly (larger ids are renumbered first).
_DIRECT_IDS = 4096


# ============================================================================================
# Semantic scores
# ============================================================================================
def _int_map(a, name):
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise ValueError(f"{name} holds non-integer values; expected integer class ids")
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {a.dtype}; expected integer class ids")
    return a


def _check_groups(groups):
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must be a dict {{name: [class ids]}}, got {type(groups).__name__}")
    out = {}
    for name, ids in groups.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"group names must be non-empty strings, got {name!r}")
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray, set, frozenset)):
            raise TypeError(f"groups[{name!r}] must be a list of class ids, got {type(ids).__name__}")
        vals = []
        for c in ids:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise TypeError(f"groups[{name!r}] holds {c!r}; class ids are integers")
            vals.append(int(c))
        if not vals:
            raise ValueError(f"groups[{name!r}] is empty; a group needs at least one class id")
        out[name] = sorted(set(vals))
    return out


@njit(cache=True, nogil=True)
def _id_range(gt, pred, ignore):
    """``(smallest id, largest id, kept pixels)`` of GT and prediction over the pixels whose GT is
    not ``ignore`` (flat arrays). (0, -1, 0) when every pixel is ignored."""
    lo, hi, kept = np.int64(1) << 62, np.int64(-1), 0
    for i in range(gt.size):
        g = np.int64(gt[i])
        if g == ignore:
            continue
        p = np.int64(pred[i])
        lo = min(lo, g, p)
        hi = max(hi, g, p)
        kept += 1
    if kept == 0:
        lo = 0
    return lo, hi, kept


@njit(cache=True, nogil=True)
def _confusion_rows(gt, pred, ignore, stride, n_rows, k):
    """Confusion counts ``(n_rows, k, k)`` (GT along axis 1) of flat C-order maps whose ids are
    0..k-1, the row of flat pixel i being ``(i // stride) % n_rows``; GT ``ignore`` is skipped."""
    counts = np.zeros((n_rows, k, k), np.int64)
    for i in range(gt.size):
        g = np.int64(gt[i])
        if g == ignore:
            continue
        counts[(i // stride) % n_rows, g, np.int64(pred[i])] += 1
    return counts


def _flat_pair(gt, pred):
    """Flat C-order copies (or views) of both maps in one of the kernels' two dtypes: uint8 when
    both are uint8 (what the readers give), else int64."""
    dtype = np.uint8 if gt.dtype == np.uint8 and pred.dtype == np.uint8 else np.int64
    return (np.ascontiguousarray(gt, dtype=dtype).reshape(-1),
            np.ascontiguousarray(pred, dtype=dtype).reshape(-1))


def _confusions(gt, pred, keep, rows, n_rows, ids):
    """Confusion matrices ``(n_rows, k, k)`` (GT along axis 1) of the kept pixels."""
    k = len(ids)
    g = gt[keep]
    p = pred[keep]
    r = rows[keep] if rows is not None else None
    if ids[-1] < _DIRECT_IDS and ids[0] >= 0 and k == ids[-1] + 1:
        gi, pi = g.astype(np.int64), p.astype(np.int64)
    else:
        gi = np.searchsorted(ids, g)
        pi = np.searchsorted(ids, p)
    code = gi * k + pi
    if r is not None:
        code = code + r.astype(np.int64) * (k * k)
    counts = np.bincount(code, minlength=n_rows * k * k)
    return counts.reshape(n_rows, k, k)


def _class_ids(gt, pred, keep, n_classes):
    lo_hi = []
    for a in (gt[keep], pred[keep]):
        if a.size:
            lo_hi += [int(a.min()), int(a.max())]
    if lo_hi and min(lo_hi) < 0:
        raise ValueError(f"class ids must be >= 0, found {min(lo_hi)}")
    hi = max(lo_hi) if lo_hi else -1
    if n_classes is not None:
        if hi >= n_classes:
            raise ValueError(f"class id {hi} found but n_classes={n_classes} (ids 0..{n_classes - 1})")
        return np.arange(n_classes)
    if hi < _DIRECT_IDS:
        return np.arange(hi + 1)
    return np.union1d(np.unique(gt[keep]), np.unique(pred[keep]))


def segmentation_scores(pred, gt, *, ignore_index=255, background=0, per="image", slice_axis=-1,
                        groups=None, n_classes=None) -> pd.DataFrame:
    """IoU and Dice of every class, pixel accuracy and their means, per image or per slice.

    Parameters
    ----------
    pred : array_like of int
        Predicted class ids, 2D or 3D (e.g. the argmax of the probabilities).
    gt : array_like of int
        Ground-truth class ids, same shape.
    ignore_index : int or None, default 255
        GT id of pixels left out of every score (None: no such id).
    background : int or None, default 0
        Class left out of ``mean_iou`` and ``mean_dice`` (its own columns are still there);
        None averages over every class.
    per : {"image", "slice"}, default "image"
        One row for the whole map, or one row per slice along ``slice_axis`` (3D maps only),
        with a ``slice`` column.
    slice_axis : int, default -1
        Slice axis for ``per="slice"``.
    groups : dict of str to list of int, optional
        Regions made of several classes, scored as one class each: ``{"WT": [1, 2, 4],
        "TC": [1, 4], "ET": [4]}`` adds ``iou_WT``, ``dice_WT``, ... (NaN where the region is
        absent from both prediction and GT).
    n_classes : int, optional
        Number of classes: columns for ``0 .. n_classes-1`` even where a class never occurs.
        Default: ``0 .. the largest id found``.

    Returns
    -------
    pandas.DataFrame
        ``slice`` (per slice), ``n_pixels`` (pixels scored: not ignored), ``iou_<c>``,
        ``dice_<c>`` for every class ``c`` (NaN where ``c`` is absent from both maps of the
        row), ``pixel_accuracy``, ``mean_iou``, ``mean_dice`` (NaN when no class other than
        ``background`` occurs) and the group columns.

    Raises
    ------
    ValueError
        Shapes differ, a map that is not 2D/3D, ``per="slice"`` on a 2D map, unknown ``per``,
        negative ids, ids beyond ``n_classes``, malformed ``groups``.
    TypeError
        Non-integer maps.

    Example
    -------
    >>> gt = np.array([[0, 1, 1], [0, 2, 255]])
    >>> pred = np.array([[0, 1, 2], [0, 2, 2]])
    >>> s = segmentation_scores(pred, gt)
    >>> float(s["iou_1"].iloc[0]), float(s["iou_2"].iloc[0]), float(s["mean_iou"].iloc[0])
    (0.5, 0.5, 0.5)
    """
    pred = _int_map(pred, "pred")
    gt = _int_map(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt has {gt.shape}; they must match")
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and gt must be 2D or 3D maps, got {pred.ndim} dimensions")
    if per not in ("image", "slice"):
        raise ValueError(f"per must be 'image' or 'slice', got {per!r}")
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                  or n_classes < 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    groups = _check_groups(groups)
    if background is not None and (isinstance(background, bool)
                                   or not isinstance(background, (int, np.integer))):
        raise TypeError(f"background must be an int class id or None, got {type(background).__name__}")
    n_rows, stride = 1, 1
    if per == "slice":
        if pred.ndim != 3:
            raise ValueError("per='slice' needs 3D maps; a 2D map is one image (per='image')")
        if not -3 <= int(slice_axis) < 3:
            raise ValueError(f"slice_axis {slice_axis} is out of range for 3D maps")
        ax = int(slice_axis) % 3
        n_rows = pred.shape[ax]
        stride = int(np.prod(pred.shape[ax + 1:], dtype=np.int64))
    ignore = np.iinfo(np.int64).min if ignore_index is None else int(ignore_index)  # none: no id matches
    g_flat, p_flat = _flat_pair(gt, pred)
    lo, hi, kept = _id_range(g_flat, p_flat, ignore)
    if lo < 0:
        raise ValueError(f"class ids must be >= 0, found {lo}")
    if n_classes is not None and hi >= n_classes:
        raise ValueError(f"class id {hi} found but n_classes={n_classes} (ids 0..{n_classes - 1})")
    if n_classes is not None or hi < _DIRECT_IDS:  # ids 0..k-1: one pass over the pixels
        k = int(n_classes) if n_classes is not None else (int(hi) + 1 if kept else 1)
        conf = _confusion_rows(g_flat, p_flat, ignore, max(stride, 1), n_rows, k).astype(np.float64)
        return _scores_table(conf, np.arange(k), background, groups, per == "slice")
    # sparse large ids: renumber the ids that occur (numpy)
    rows = None
    if per == "slice":
        shape = [1, 1, 1]
        shape[ax] = n_rows
        rows = np.broadcast_to(np.arange(n_rows, dtype=np.int64).reshape(shape), pred.shape)
    keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore
    ids = _class_ids(gt, pred, keep, n_classes)
    conf = _confusions(gt, pred, keep, rows, n_rows, ids).astype(np.float64)
    return _scores_table(conf, ids, background, groups, per == "slice")


def _scores_table(conf, ids, background, groups, slices):
    """The table of :func:`segmentation_scores` from confusion matrices ``(rows, k, k)``."""
    n_rows = conf.shape[0]
    inter = np.diagonal(conf, axis1=1, axis2=2)          # (rows, k)
    n_gt = conf.sum(axis=2)
    n_pred = conf.sum(axis=1)
    total = conf.sum(axis=(1, 2))
    present = (n_gt + n_pred) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        union = n_gt + n_pred - inter
        iou = np.where(present, inter / union, np.nan)
        dice = np.where(present, 2 * inter / (n_gt + n_pred), np.nan)
        acc = np.where(total > 0, inter.sum(axis=1) / total, np.nan)
    out = {}
    if slices:
        out["slice"] = np.arange(n_rows, dtype=np.int64)
    out["n_pixels"] = total.astype(np.int64)
    for j, c in enumerate(ids):
        out[f"iou_{int(c)}"] = iou[:, j]
    for j, c in enumerate(ids):
        out[f"dice_{int(c)}"] = dice[:, j]
    out["pixel_accuracy"] = acc
    counted = np.ones(len(ids), bool) if background is None else ids != int(background)
    use = present & counted[None, :]
    n_use = use.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_iou"] = np.where(n_use > 0, np.where(use, iou, 0.0).sum(axis=1) / n_use, np.nan)
        out["mean_dice"] = np.where(n_use > 0, np.where(use, dice, 0.0).sum(axis=1) / n_use, np.nan)
    for name, members in groups.items():
        inside = np.isin(ids, members)
        tp = conf[:, inside][:, :, inside].sum(axis=(1, 2))
        g_all = conf[:, inside, :].sum(axis=(1, 2))
        p_all = conf[:, :, inside].sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            some = (g_all + p_all) > 0
            out[f"iou_{name}"] = np.where(some, tp / (g_all + p_all - tp), np.nan)
            out[f"dice_{name}"] = np.where(some, 2 * tp / (g_all + p_all), np.nan)
    return pd.DataFrame(out)


# ============================================================================================
# Instance AP
# ============================================================================================
def _instance_ids(a, name):
    a = _int_map(a, name)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D instance map, got {a.ndim} dimensions")
    if a.size and int(a.min()) < 0:
        raise ValueError(f"{name} holds negative ids; 0 is background, objects are 1, 2, ...")
    return a


def _scores_of(scores, ids, where):
    """Scores of the predicted instances ``ids`` (sorted) from a dict, Series or array."""
    if isinstance(scores, pd.Series):
        scores = scores.to_dict()
    if isinstance(scores, Mapping):
        missing = [int(i) for i in ids if int(i) not in {int(k) for k in scores}]
        if missing:
            raise ValueError(f"{where}: no score for predicted instance(s) {missing[:10]}")
        lookup = {int(k): v for k, v in scores.items()}
        out = np.array([float(lookup[int(i)]) for i in ids], np.float64)
    else:
        out = np.asarray(scores, dtype=np.float64).reshape(-1)
        if out.shape[0] != len(ids):
            raise ValueError(
                f"{where}: scores has {out.shape[0]} entries but there are {len(ids)} predicted "
                "instances; pass one score per instance id in increasing id order, or a dict {id: score}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{where}: scores hold NaN or inf")
    return out


def _pair_ious(pred, gt):
    """``(pred_ids, gt_ids, iou matrix)`` of two instance maps (ids > 0)."""
    from scipy import sparse

    p = pred.reshape(-1)
    g = gt.reshape(-1)
    pred_ids = np.unique(p[p > 0])
    gt_ids = np.unique(g[g > 0])
    if pred_ids.size == 0 or gt_ids.size == 0:
        return pred_ids, gt_ids, np.zeros((pred_ids.size, gt_ids.size))
    pi = np.searchsorted(pred_ids, p)
    gi = np.searchsorted(gt_ids, g)
    pa = np.bincount(pi[p > 0], minlength=pred_ids.size).astype(np.float64)
    ga = np.bincount(gi[g > 0], minlength=gt_ids.size).astype(np.float64)
    both = (p > 0) & (g > 0)
    inter = sparse.coo_matrix((np.ones(int(both.sum())), (pi[both], gi[both])),
                              shape=(pred_ids.size, gt_ids.size)).toarray()
    iou = inter / (pa[:, None] + ga[None, :] - inter)
    return pred_ids, gt_ids, iou


def _greedy_matches(iou, order, threshold):
    """Whether each detection (in ``order``, best score first) matches a GT instance at
    ``threshold``: each takes the still unmatched GT instance of highest IoU >= threshold."""
    n_gt = iou.shape[1]
    taken = np.zeros(n_gt, bool)
    hit = np.zeros(len(order), bool)
    limit = min(threshold, 1.0 - 1e-10)
    for rank, d in enumerate(order):
        if n_gt == 0:
            break
        row = np.where(taken, -1.0, iou[d])
        j = int(np.argmax(row[::-1]))  # the last of equal best IoUs, as COCO's loop keeps it
        j = n_gt - 1 - j
        if row[j] >= limit:
            taken[j] = True
            hit[rank] = True
    return hit


def _interpolated_ap(hits, scores, n_gt):
    """COCO's 101-point interpolated average precision of detections sorted by score."""
    if n_gt == 0:
        return float("nan")
    if hits.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    h = hits[order]
    tp = np.cumsum(h, dtype=np.float64)
    fp = np.cumsum(~h, dtype=np.float64)
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    q = np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0)
    return float(q.mean())


def instance_ap(pred_instances, gt_instances, scores, *, iou_thresholds=COCO_IOU_THRESHOLDS) -> dict:
    """COCO average precision of predicted instances, with no cap on the number of detections.

    Detections are taken in decreasing score order; each is matched to the unmatched GT instance
    it overlaps most, if that IoU reaches the threshold (COCO's greedy matching). Precision is
    made monotone and read at the 101 recall points 0, 0.01, ..., 1 (0 beyond the largest recall
    reached); AP is its mean. Over several images, detections of all images are ranked together.

    Parameters
    ----------
    pred_instances : array_like of int, or a sequence of them
        Predicted instance ids (0 = background), 2D or 3D; several images as a list.
    gt_instances : array_like of int, or a sequence of them
        Ground-truth instance ids, the same shapes.
    scores : dict, pandas.Series or array_like, or a sequence of them (one per image)
        Confidence of each predicted instance: ``{id: score}`` or one value per id in increasing
        id order.
    iou_thresholds : sequence of float, default 0.50:0.95:0.05
        Thresholds AP is averaged over.

    Returns
    -------
    dict
        ``AP`` (mean over the thresholds), ``AP50``, ``AP75`` (NaN when 0.5 / 0.75 is not a
        threshold), ``per_threshold`` ({threshold: AP}), ``n_pred``, ``n_gt``. AP is NaN when
        there is no GT instance, 0 when there is no detection.

    Raises
    ------
    ValueError
        Shapes differ, negative ids, a missing or non-finite score, thresholds outside (0, 1].
    TypeError
        Non-integer maps.

    Example
    -------
    >>> gt = np.zeros((4, 6), int); gt[:2, :2] = 1; gt[2:, 3:] = 2
    >>> pred = np.zeros((4, 6), int); pred[:2, :2] = 1; pred[2:, 4:] = 2
    >>> r = instance_ap(pred, gt, {1: 0.9, 2: 0.8})
    >>> r["AP50"], round(r["AP75"], 3)  # at IoU 0.75 one of two found: recall 0.5 = 51 of 101 points
    (1.0, 0.505)
    """
    several = isinstance(pred_instances, (list, tuple))
    preds = list(pred_instances) if several else [pred_instances]
    gts = list(gt_instances) if isinstance(gt_instances, (list, tuple)) else [gt_instances]
    if several:
        if not isinstance(scores, (list, tuple)):
            raise TypeError("with several images, scores must be a list with one entry per image")
        score_list = list(scores)
    else:
        score_list = [scores]
    if not (len(preds) == len(gts) == len(score_list)):
        raise ValueError(f"got {len(preds)} predicted maps, {len(gts)} GT maps and {len(score_list)} "
                         "score sets; they must pair up")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or np.any(~np.isfinite(thresholds)) or np.any(thresholds <= 0) \
            or np.any(thresholds > 1):
        raise ValueError(f"iou_thresholds must be numbers in (0, 1], got {list(thresholds)}")
    all_scores, all_hits = [], [[] for _ in thresholds]
    n_gt = n_pred = 0
    for i, (p, g, s) in enumerate(zip(preds, gts, score_list, strict=True)):
        where = f"image {i}" if several else "instance_ap"
        p = _instance_ids(p, "pred_instances")
        g = _instance_ids(g, "gt_instances")
        if p.shape != g.shape:
            raise ValueError(f"{where}: pred_instances has shape {p.shape}, gt_instances {g.shape}")
        pred_ids, gt_ids, iou = _pair_ious(p, g)
        sc = _scores_of(s, pred_ids, where)
        order = np.argsort(-sc, kind="mergesort")
        n_gt += gt_ids.size
        n_pred += pred_ids.size
        all_scores.append(sc[order])
        for t, thr in enumerate(thresholds):
            all_hits[t].append(_greedy_matches(iou, order, float(thr)))
    scores_cat = np.concatenate(all_scores) if all_scores else np.zeros(0)
    per = {}
    for t, thr in enumerate(thresholds):
        hits = np.concatenate(all_hits[t]) if all_hits[t] else np.zeros(0, bool)
        per[round(float(thr), 4)] = _interpolated_ap(hits, scores_cat, n_gt)
    values = np.array(list(per.values()))
    return {
        "AP": float(values.mean()) if n_gt else float("nan"),
        "AP50": per.get(0.5, float("nan")),
        "AP75": per.get(0.75, float("nan")),
        "per_threshold": per,
        "n_pred": int(n_pred),
        "n_gt": int(n_gt),
    }
