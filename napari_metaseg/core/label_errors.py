"""Label-error triage (Rottmann & Reese, WACV 2023): where is the ground truth probably wrong?

Three kinds of proposal, ranked together by ``score`` in [0, 1] (higher = more likely a label
error); the *doubt* of a voxel is 1 - the prediction's probability of the label it has:

* ``"segment"``: a predicted segment with IoU_adj = 0 against the labels under review, scored by
  the meta classifier's P(IoU_adj > 0) times its mean doubt. The model thinks the segment is
  right; the label says it is entirely wrong, so one of the two is, and the confident ones point
  at missing labels.
* ``"gt_object"``: a ground-truth object (connected component of one class, same connectivity
  as the segments) that no predicted pixel of its class overlaps, scored by its mean doubt: a
  possibly spurious or wrongly classed label.
* ``"region"``: what disagreement is left: connected voxels where prediction and label differ
  (one class pair each), scored by their mean doubt times the mean P(IoU_adj > 0) of the
  predicted segments they lie in: errors inside larger structures.

:func:`inject_label_errors` corrupts a ground truth for evaluation and
:func:`evaluate_label_errors` matches proposals to the injected errors (see docs/label_errors.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit
from scipy import ndimage

from .inputs import check_ignore_index, readonly
from .segments import _resolve_mode, class_ids, label_segments

__all__ = [
    "ERROR_KINDS",
    "MATCH_IOU",
    "PROPOSAL_KINDS",
    "THRESHOLDS",
    "LabelErrorEvaluation",
    "evaluate_label_errors",
    "find_label_errors",
    "inject_label_errors",
]

PROPOSAL_KINDS = ("segment", "gt_object", "region")
ERROR_KINDS = ("drop", "swap_class", "add_spurious", "shift")
#: A proposal matches an error when their IoU_adj reaches this (Rottmann & Reese).
MATCH_IOU = 0.25
#: Score thresholds of the precision / recall sweep.
THRESHOLDS = np.round(np.arange(0.0, 1.0 + 1e-9, 0.05), 2)

_COLUMNS = ["case", "kind", "class", "predicted_class", "label_class", "index", "gt_object", "score",
            "size", "bbox", "centroid"]


# ============================================================================================
# Helpers
# ============================================================================================
def _regions(lab, ids, *, voxels=False):
    """bboxes (starts then stops, half-open), centroids and (optionally) flat voxel indices of
    the ids of the label map ``lab``, as lists aligned with ``ids``, in one pass over their
    voxels only."""
    ids = np.asarray(ids, np.int64)
    if not ids.size:
        return [], [], []
    if np.any(np.diff(ids) <= 0):  # reduceat below needs ascending ids
        perm = np.argsort(ids, kind="stable")
        parts = _regions(lab, ids[perm], voxels=voxels)
        back = np.argsort(perm)
        return tuple([p[i] for i in back] if p else p for p in parts)
    n = int(lab.max())
    nz = np.flatnonzero(_member(lab, n, ids).ravel())
    nz_lab = lab.ravel()[nz]
    order = np.argsort(nz_lab, kind="stable")
    nz, nz_lab = nz[order], nz_lab[order]
    bounds = np.searchsorted(nz_lab, np.arange(n + 2))
    starts = bounds[ids]  # every id has voxels
    size = (bounds[ids + 1] - starts).astype(np.float64)
    coords = np.unravel_index(nz, lab.shape)
    lo = np.stack([np.minimum.reduceat(c, starts) for c in coords], axis=1)
    hi = np.stack([np.maximum.reduceat(c, starts) + 1 for c in coords], axis=1)
    centre = np.stack([np.add.reduceat(c.astype(np.float64), starts) / size for c in coords], axis=1)
    bboxes = list(map(tuple, np.concatenate([lo, hi], axis=1).tolist()))
    centroids = list(map(tuple, centre.tolist()))
    vox = [nz[bounds[i]:bounds[i + 1]] for i in ids.tolist()] if voxels else []
    return bboxes, centroids, vox


def _check_classifier(classifier):
    from .meta_estimators import MetaClassifier, check_model_pair

    if not isinstance(classifier, MetaClassifier):
        raise TypeError(f"classifier must be a fitted MetaClassifier, got {type(classifier).__name__}")
    check_model_pair(classifier, None)


def _case_arrays(maps, case, n_cases):
    if maps is None:
        return None
    if isinstance(maps, tuple) and n_cases == 1:
        return maps
    if not isinstance(maps, dict):
        raise TypeError(f"maps must be a dict {{case: (probs, gt[, seg])}}, got {type(maps).__name__}")
    return maps.get(case)


@njit(cache=True, nogil=True)
def _pred_doubt_kernel(probs, gt, ignore):  # pragma: no cover - compiled
    """Per voxel of ``probs`` (voxels x classes): the predicted class (first maximum, as
    ``argmax``) and 1 - the probability of the label ``gt`` (0 where the label is ``ignore``
    or no class)."""
    n, q = probs.shape
    pred = np.empty(n, np.int64)
    doubt = np.empty(n, np.float64)
    for i in range(n):
        best = 0
        for c in range(1, q):
            if probs[i, c] > probs[i, best]:
                best = c
        pred[i] = best
        g = np.int64(gt[i])
        doubt[i] = 0.0 if g < 0 or g >= q or g == ignore else 1.0 - np.float64(probs[i, g])
    return pred, doubt


def _pred_and_doubt(probs, gt, ignore_index):
    """The predicted class map and the per-voxel doubt of the label (see ``find_label_errors``)."""
    q = probs.shape[-1]
    check_ignore_index(ignore_index, q)  # an ignore id that is a class would drop that class silently
    # one kernel specialisation per probability dtype (float32, or float64 holding any other
    # float exactly) and one per label dtype (uint8 or int32), read-only like every kernel input
    flat = np.ascontiguousarray(probs, dtype=np.float32 if probs.dtype == np.float32 else np.float64)
    ignore = -1 if ignore_index is None else int(ignore_index)
    pred, doubt = _pred_doubt_kernel(readonly(flat.reshape(-1, q)), _flat_input(gt), ignore)
    return pred.reshape(gt.shape), doubt.reshape(gt.shape)


@njit(cache=True, nogil=True)
def _pair_codes(pred, gt, covered, q, ignore):  # pragma: no cover - compiled
    """1 + pred * q + label where prediction and label disagree (and the voxel is not covered,
    the label a class and not ``ignore``), else 0; flat arrays."""
    out = np.zeros(pred.size, np.int64)
    for i in range(pred.size):
        g = np.int64(gt[i])
        if covered[i] or g < 0 or g >= q or g == ignore or pred[i] == g:
            continue
        out[i] = 1 + pred[i] * q + g
    return out


# ============================================================================================
# Finding label errors
# ============================================================================================
def find_label_errors(table, classifier, *, maps=None, threshold=None, allow_training_cases=False,
                      mode=None, slice_axis=-1, background=0, ignore_index=255,
                      kinds=PROPOSAL_KINDS, min_size=1, return_voxels=False):
    """Ranked proposals of label errors in the ground truth a metrics table was computed against.

    Three kinds of proposal, ranked together by ``score`` in [0, 1] (higher = more likely a
    label error). *Doubt* of a voxel = 1 - the prediction's probability of the label it has.

    * ``"segment"``: a predicted segment with IoU_adj = 0 against the labels; evidence = the
      meta classifier's P(IoU_adj > 0) times the mean doubt over the segment (without
      ``maps``: the probability alone).
    * ``"gt_object"``: a GT object (component of one non-background class) no voxel of which is
      predicted as its class; evidence = its mean doubt. Needs ``maps``.
    * ``"region"``: the remaining disagreement: a connected component of the voxels where the
      predicted class differs from the label, one (predicted, label) class pair per region, not
      covered by a proposal of the other kinds; evidence = its mean doubt times the mean
      P(IoU_adj > 0) of the predicted segments it lies in; ``class`` is the label's class.
      Finds errors inside larger structures (a dropped or re-classed part of a tissue, a
      shifted outline) that no whole segment or object isolates. Needs ``maps``.

    ``score`` = evidence x (1 - 0.5 ** size): one disagreeing voxel counts half, ten 0.999.

    Parameters
    ----------
    table : pandas.DataFrame
        One or many metrics tables of :func:`napari_metaseg.core.segment_metrics` computed with
        the labels under review (needs ``iou_adj``); a ``case`` column separates cases.
    classifier : MetaClassifier
        Fitted on IoU_adj > 0, on cases other than these.
    maps : dict, optional
        ``{case: (probs, gt)}`` or ``{case: (probs, gt, seg)}`` (``seg`` as returned by
        ``segment_metrics``; without it the segments are relabelled from ``probs.argmax(-1)``),
        probabilities with classes last. With one case a plain tuple is accepted; a table
        without ``case`` column is the case ``None``. Without maps there are only ``"segment"``
        proposals and ``bbox``/``centroid``/``predicted_class`` are missing.
    threshold : float, optional
        Keep proposals with ``score >= threshold``; None keeps every candidate.
    allow_training_cases : bool, default False
        Score cases the classifier was fitted on (its predictions there are optimistic).
    mode : {"auto", "2d", "3d", "slices"}, optional
        Connectivity of segments, GT objects and regions; default ``"slices"`` when the table
        has a ``slice`` column, else ``"auto"``.
    slice_axis : int, default -1
        Slice axis in slices mode.
    background : int or None, default 0
        GT class that is never proposed as a ``"gt_object"``.
    ignore_index : int or None, default 255
        GT id that is never an object nor part of a region.
    kinds : sequence of str, default ``("segment", "gt_object", "region")``
        Which kinds to propose.
    min_size : int, default 1
        Leave out proposals of fewer voxels (after all kinds are formed, so a small region does
        not reappear inside another kind).
    return_voxels : bool, default False
        Add a ``voxels`` column: flat (C-order) indices of each proposal's voxels, as
        :func:`evaluate_label_errors` needs (requires ``maps``).

    Returns
    -------
    pandas.DataFrame
        Columns ``case``, ``kind``, ``class`` (a segment's predicted class; a GT object's or a
        region's label class), ``predicted_class`` and ``label_class`` (the prediction's and the
        label's majority class over the proposal), ``index`` (segment id, kind "segment"), ``gt_object`` (GT
        component id, kind "gt_object"), ``score``, ``size`` (voxels), ``bbox`` (starts then
        stops, half-open), ``centroid``, plus ``slice`` in slices mode (and ``voxels``), sorted
        by ``score`` descending (ties: kind order, then position).

    Raises
    ------
    TypeError
        ``table`` not a DataFrame, ``classifier`` not a MetaClassifier, ``maps`` not a dict.
    ValueError
        No ``iou_adj`` column; a case the classifier was fitted on (unless allowed); arrays in
        ``maps`` whose segments do not match the table; ``return_voxels`` without maps;
        unknown kinds.

    Example
    -------
    >>> found = find_label_errors(table, clf, maps={"a": (probs, gt, seg)})  # doctest: +SKIP
    >>> found.head(10)  # doctest: +SKIP
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if "iou_adj" not in table.columns:
        raise ValueError("table has no iou_adj column: compute it with the labels under review "
                         "(segment_metrics(probs, gt))")
    _check_classifier(classifier)
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    if return_voxels and maps is None:
        raise ValueError("return_voxels=True needs maps (the proposals' voxels come from the arrays)")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in PROPOSAL_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {PROPOSAL_KINDS}, got {kinds!r}")
    if int(min_size) < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size!r}")
    slices = "slice" in table.columns
    if mode is None:
        mode = "slices" if slices else "auto"
    has_case = "case" in table.columns
    cases = list(pd.unique(table["case"])) if has_case else [None]
    if has_case and not allow_training_cases:
        trained = {str(c) for c in classifier.training_cases_}
        seen = sorted({str(c) for c in cases} & trained)
        if seen:
            raise ValueError(
                f"the classifier was fitted on case(s) {', '.join(seen)}: its predictions there are "
                "optimistic; score held-out cases or pass allow_training_cases=True"
            )
    score_all = classifier.predict_proba(table)[:, 1]
    parts = []
    for case in cases:
        sel = (table["case"] == case).to_numpy() if has_case else np.ones(len(table), bool)
        arrays = _case_arrays(maps, case, len(cases))
        ctx = dict(case=case, table=table.loc[sel], p1=None if score_all is None else score_all[sel],
                   slices=slices, voxels=return_voxels, mode=mode, slice_axis=slice_axis)
        if arrays is None:
            if "segment" in kinds:
                parts.extend(_segment_rows(ctx, None))
            continue
        probs, gt, seg = _unpack(arrays, case)
        if seg is None:
            seg, _ = label_segments(probs.argmax(-1), mode=mode, slice_axis=slice_axis)
        t = ctx["table"]
        if int(seg.max()) != int(t["index"].max() if len(t) else 0) or seg.shape != gt.shape:
            raise ValueError(
                f"case {case!r}: the segment map (max id {int(seg.max())}, shape {seg.shape}) does "
                f"not match the table (max index {int(t['index'].max())}) or the gt {gt.shape}"
            )
        pred, doubt = _pred_and_doubt(probs, gt, ignore_index)
        arr = dict(probs=probs, gt=gt, seg=seg, pred=pred, doubt=doubt,
                   covered=np.zeros(gt.shape, bool), sax=_resolve_mode(mode, gt.ndim, slice_axis)[1])
        if "segment" in kinds:
            parts.extend(_segment_rows(ctx, arr))
        if "gt_object" in kinds:
            parts.extend(_gt_object_rows(ctx, arr, background, ignore_index))
        if "region" in kinds:
            parts.extend(_region_rows(ctx, arr, ignore_index))
    cols = _COLUMNS + (["slice"] if slices else []) + (["voxels"] if return_voxels else [])
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    out = out[cols]
    for c in ("index", "gt_object", "predicted_class", "label_class") + (("slice",) if slices else ()):
        out[c] = out[c].astype("Int64")
    out["size"] = out["size"].astype(np.int64)
    # evidence grows with size: a one-voxel disagreement counts half, ten voxels 0.999
    out["score"] = out["score"].astype(np.float64) * (1.0 - 0.5 ** out["size"].astype(np.float64))
    out = out.loc[out["size"] >= int(min_size)]
    if threshold is not None:
        out = out.loc[out["score"] >= threshold]
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _unpack(arrays, case):
    if not isinstance(arrays, tuple) or len(arrays) not in (2, 3):
        raise ValueError(f"maps[{case!r}] must be (probs, gt) or (probs, gt, seg)")
    probs = np.asarray(arrays[0])
    gt = np.asarray(arrays[1])
    seg = np.asarray(arrays[2]) if len(arrays) == 3 and arrays[2] is not None else None
    if probs.shape[:-1] != gt.shape:
        raise ValueError(f"case {case!r}: probs has shape {probs.shape}, expected gt's spatial shape "
                         f"{gt.shape} plus a class axis (classes last)")
    return probs, gt, seg


@njit(cache=True, nogil=True)
def _label_sums(lab, values, n):  # pragma: no cover - compiled
    """Sum of ``values`` and count per id 0..n of ``lab`` (flat arrays), one serial pass (the
    float64 sums are exact for the sizes here and independent of any thread count)."""
    sums = np.zeros(n + 1, np.float64)
    size = np.zeros(n + 1, np.int64)
    for i in range(lab.size):
        k = lab[i]
        sums[k] += values[i]
        size[k] += 1
    return sums, size


@njit(cache=True, nogil=True)
def _label_counts(lab, values, n, q):  # pragma: no cover - compiled
    """Counts of each value 0..q-1 of ``values`` per id 0..n of ``lab`` (flat arrays)."""
    counts = np.zeros((n + 1, q), np.int64)
    for i in range(lab.size):
        counts[lab[i], values[i]] += 1
    return counts


def _flat_input(x, dtype=None):
    """``x`` flat, C-contiguous and read-only, as ``dtype`` or (None: class ids) uint8 / int32 by
    range: the label-error kernels are compiled for these types only."""
    x = class_ids(np.asarray(x)) if dtype is None else np.asarray(x, dtype)
    return readonly(np.ascontiguousarray(x).ravel())


def _per_label(lab, n, values):
    """Mean of ``values`` over each id 0..n of ``lab``, and the ids' sizes."""
    sums, size = _label_sums(_flat_input(lab, np.int32), _flat_input(values, np.float64), n)
    return sums / np.maximum(size, 1), size


def _member(lab, n, ids):
    """Voxels of ``lab`` whose id is one of ``ids`` (ids 1..n)."""
    table = np.zeros(n + 1, bool)
    table[ids] = True
    return table[lab]


def _majority(lab, n, values, q, *, among=None):
    """The most frequent of ``values`` (0..q-1) over each id 0..n of ``lab``, counting only the
    values below ``among`` when given."""
    counts = _label_counts(_flat_input(lab, np.int32), _flat_input(values, np.int64), n, q)
    return counts[:, :among].argmax(1)


def _part(ctx, kind, n, *, cls, pred_cls=None, label_cls=None, index=None, obj=None, score, size,
          geo=None, slice_no=None):
    """A table of ``n`` proposals of one kind (columns as in :func:`find_label_errors`)."""
    na = [pd.NA] * n
    bboxes, centroids, vox = geo if geo is not None else ([None] * n, [None] * n, [None] * n)
    part = {"case": [ctx["case"]] * n, "kind": kind, "class": np.asarray(cls, np.int64),
            "predicted_class": na if pred_cls is None else np.asarray(pred_cls, np.int64),
            "label_class": na if label_cls is None else np.asarray(label_cls, np.int64),
            "index": na if index is None else np.asarray(index, np.int64),
            "gt_object": na if obj is None else np.asarray(obj, np.int64),
            "score": np.asarray(score, np.float64), "size": np.asarray(size, np.int64),
            "bbox": bboxes, "centroid": centroids}
    if ctx["slices"]:
        part["slice"] = na if slice_no is None else slice_no
    if ctx["voxels"]:
        part["voxels"] = vox
    return [pd.DataFrame(part)] if n else []


def _slices_of(arr, bboxes):
    sax = arr["sax"]
    return [b[sax] for b in bboxes] if sax is not None else None


def _segment_rows(ctx, arr):
    t = ctx["table"]
    cand = np.flatnonzero(t["iou_adj"].to_numpy(np.float64) == 0)
    ids = t["index"].to_numpy()[cand].astype(np.int64)
    score = ctx["p1"][cand]
    kw = dict(cls=t["class"].to_numpy()[cand], index=ids, size=t["S"].to_numpy()[cand],
              slice_no=t["slice"].to_numpy()[cand].astype(np.int64) if ctx["slices"] else None)
    if arr is not None and cand.size:
        seg = arr["seg"]
        n = int(seg.max())
        doubt, _ = _per_label(seg, n, arr["doubt"])
        score = score * doubt[ids]
        q = arr["probs"].shape[-1]
        kw["pred_cls"] = _majority(seg, n, arr["pred"], q)[ids]
        # the label's majority class over the segment (ignored voxels count for none)
        gl = arr["gt"].astype(np.int64)
        kw["label_cls"] = _majority(seg, n, np.where((gl >= 0) & (gl < q), gl, q), q + 1, among=q)[ids]
        kw["geo"] = _regions(seg, ids, voxels=ctx["voxels"])
        arr["covered"] |= _member(seg, n, ids)
    return _part(ctx, "segment", cand.size, score=score, **kw)


def _gt_object_rows(ctx, arr, background, ignore_index):
    gt, pred = arr["gt"], arr["pred"]
    lab, n = label_segments(gt, mode=ctx["mode"], slice_axis=ctx["slice_axis"])
    ids = np.arange(1, n + 1)
    flat_lab = lab.ravel()
    cls = np.zeros(n + 1, np.int64)
    cls[flat_lab] = gt.ravel()
    # Objects some pixel of which the prediction gives their own class are not proposed.
    agree = np.bincount(flat_lab, weights=(pred == gt).ravel(), minlength=n + 1)
    doubt, size = _per_label(lab, n, arr["doubt"])
    keep = agree[ids] == 0
    for excluded in (background, ignore_index):
        if excluded is not None:
            keep &= cls[ids] != excluded
    chosen = ids[keep]
    if not chosen.size:
        return []
    geo = _regions(lab, chosen, voxels=ctx["voxels"])
    arr["covered"] |= _member(lab, n, chosen)
    return _part(ctx, "gt_object", chosen.size, cls=cls[chosen], label_cls=cls[chosen], obj=chosen,
                 score=doubt[chosen],
                 pred_cls=_majority(lab, n, pred, arr["probs"].shape[-1])[chosen], size=size[chosen],
                 geo=geo, slice_no=_slices_of(arr, geo[0]))


def _region_rows(ctx, arr, ignore_index):
    gt, pred, q = arr["gt"], arr["pred"], arr["probs"].shape[-1]
    ignore = -1 if ignore_index is None else int(ignore_index)
    pair = _pair_codes(_flat_input(pred, np.int64), _flat_input(gt), _flat_input(arr["covered"], np.bool_),
                       q, ignore).reshape(gt.shape)
    if not pair.any():
        return []
    lab, n = label_segments(pair, mode=ctx["mode"], slice_axis=ctx["slice_axis"])
    doubt, size = _per_label(lab, n, arr["doubt"])
    code = np.zeros(n + 1, np.int64)
    code[lab.ravel()] = pair.ravel()
    ids = np.arange(1, n + 1)
    ids = ids[code[ids] > 0]  # label_segments labels the agreeing voxels (code 0) too
    geo = _regions(lab, ids, voxels=ctx["voxels"])
    if ctx["p1"] is not None:  # MetaSeg: how far the segments the region lies in are trusted
        t = ctx["table"]
        p_seg = np.zeros(int(arr["seg"].max()) + 1)
        p_seg[t["index"].to_numpy()] = ctx["p1"]
        doubt = doubt * _per_label(lab, n, p_seg[arr["seg"]])[0]
    return _part(ctx, "region", ids.size, cls=(code[ids] - 1) % q, label_cls=(code[ids] - 1) % q,
                 pred_cls=(code[ids] - 1) // q,
                 score=doubt[ids], size=size[ids], geo=geo, slice_no=_slices_of(arr, geo[0]))


# ============================================================================================
# Injecting label errors
# ============================================================================================
def inject_label_errors(gt, *, kinds=ERROR_KINDS, rate, seed, n_classes=None, mode="auto",
                        slice_axis=-1, background=0, ignore_index=255, min_size=1):
    """Corrupt a ground truth with simulated label errors, for evaluation.

    ``round(rate * n_objects)`` GT objects (connected components of a non-background class, in
    ``mode``, of at least ``min_size`` voxels) are picked at random, each gets one error of a
    kind drawn uniformly from ``kinds`` (among those possible for it), and errors never share a
    voxel:

    * ``"drop"``: the object becomes background;
    * ``"swap_class"``: the object gets another non-background class (needs >= 2 of them);
    * ``"add_spurious"``: a copy of the object's shape, with its class, is pasted on background
      at a random place (the original stays);
    * ``"shift"``: the object moves by 50-100 % of its extent along one in-plane axis (over
      background only).

    Parameters
    ----------
    gt : numpy.ndarray of int
        Ground truth, 2D or 3D. Not modified.
    kinds : sequence of str, default all of ``ERROR_KINDS``
    rate : float
        Share of GT objects to corrupt, in [0, 1].
    seed : int
        Seed; the same seed gives the same errors.
    n_classes : int, optional
        Number of classes (for ``swap_class``); default ``max(gt) + 1`` without ``ignore_index``.
    mode : {"auto", "2d", "3d", "slices"}, default "auto"
        Connectivity of the objects.
    slice_axis : int, default -1
    background : int, default 0
    ignore_index : int or None, default 255
    min_size : int, default 1
        Objects smaller than this are never corrupted (nor counted in ``n_objects``): a 2-voxel
        speck is not the label error a reviewer looks for.

    Returns
    -------
    corrupted : numpy.ndarray
        A copy of ``gt`` with the errors.
    errors : pandas.DataFrame
        One row per error: ``error`` (0..), ``kind``, ``class`` (the class the corrupted label
        shows, or the dropped class), ``original_class``, ``size``, ``bbox`` (starts then stops)
        and ``voxels`` (flat C-order indices of every voxel whose label changed).

    Raises
    ------
    ValueError
        Unknown kinds, ``rate`` outside [0, 1], a map that is not 2D/3D.
    TypeError
        A non-integer ``gt``.

    Example
    -------
    >>> gt = np.zeros((20, 20), np.uint8); gt[2:6, 2:6] = 1; gt[10:14, 10:14] = 1
    >>> bad, errors = inject_label_errors(gt, kinds=("drop",), rate=0.5, seed=0)
    >>> errors["kind"].tolist(), int((bad == 1).sum())
    (['drop'], 16)
    """
    gt = np.asarray(gt)
    if gt.dtype.kind not in "iu":
        raise TypeError(f"gt has dtype {gt.dtype}; expected integer class ids")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ERROR_KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of {ERROR_KINDS}, got {kinds!r}")
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    mode, sax = _resolve_mode(mode, gt.ndim, slice_axis)
    valid = gt if ignore_index is None else np.where(gt == ignore_index, background, gt)
    if n_classes is None:
        n_classes = int(valid.max()) + 1
    fg_classes = [c for c in range(n_classes) if c != background]
    rng = np.random.default_rng(seed)
    lab, n = label_segments(gt, mode=mode, slice_axis=slice_axis)
    cls = np.zeros(n + 1, np.int64)
    cls[lab.ravel()] = gt.ravel()
    if int(min_size) < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size!r}")
    size = np.bincount(lab.ravel(), minlength=n + 1)
    objects = [i for i in range(1, n + 1)
               if cls[i] != background and (ignore_index is None or cls[i] != ignore_index)
               and size[i] >= min_size]
    n_errors = round(float(rate) * len(objects))
    order = rng.permutation(len(objects))
    objs = ndimage.find_objects(lab)
    out = gt.copy()
    touched = np.zeros(gt.shape, bool)
    inplane = [a for a in range(gt.ndim) if a != sax]
    errors = []
    for j in order:
        if len(errors) >= n_errors:
            break
        i = objects[j]
        sl = objs[i - 1]
        mask = np.zeros(gt.shape, bool)
        mask[sl] = lab[sl] == i
        if (touched & mask).any():
            continue
        c = int(cls[i])
        options = [k for k in kinds if k != "swap_class" or len(fg_classes) >= 2]
        while options:
            kind = options[rng.integers(len(options))]
            changed, new_class = _apply(kind, out, mask, sl, c, fg_classes, background, touched,
                                        rng, inplane)
            if changed is not None:
                break
            options.remove(kind)
        if not options:
            continue
        touched |= changed
        coords = np.nonzero(changed)
        bbox = tuple(int(x.min()) for x in coords) + tuple(int(x.max()) + 1 for x in coords)
        errors.append({"error": len(errors), "kind": kind, "class": new_class, "original_class": c,
                       "size": int(changed.sum()), "bbox": bbox,
                       "voxels": np.flatnonzero(changed).astype(np.int64)})
    cols = ["error", "kind", "class", "original_class", "size", "bbox", "voxels"]
    return out, pd.DataFrame(errors, columns=cols)


def _translated(mask, offset):
    """``mask`` moved by ``offset`` (voxels falling off the edge are lost), or None if any is."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for o, s in zip(offset, mask.shape, strict=True):
        src.append(slice(max(0, -o), s - max(0, o)))
        dst.append(slice(max(0, o), s - max(0, -o)))
    out[tuple(dst)] = mask[tuple(src)]
    return out if out.sum() == mask.sum() else None


def _apply(kind, out, mask, sl, c, fg_classes, background, touched, rng, inplane, tries=30):
    """Apply one error in place; returns (changed voxels, class shown) or (None, None)."""
    if kind == "drop":
        out[mask] = background
        return mask, c
    if kind == "swap_class":
        others = [k for k in fg_classes if k != c]
        new = int(others[rng.integers(len(others))])
        out[mask] = new
        return mask, new
    free = (out == background) & ~touched
    if kind == "add_spurious":
        coords = np.nonzero(mask)
        lo = [int(x.min()) for x in coords]
        hi = [int(x.max()) for x in coords]
        for _ in range(tries):
            offset = [int(rng.integers(-a, s - b)) for a, b, s in zip(lo, hi, mask.shape, strict=True)]
            moved = _translated(mask, offset)
            if moved is not None and free[moved].all():
                out[moved] = c
                return moved, c
        return None, None
    # shift: over background and the object's own voxels only
    free_or_own = free | mask
    for _ in range(tries):
        ax = inplane[rng.integers(len(inplane))]
        extent = sl[ax].stop - sl[ax].start
        step = max(1, round(extent * rng.uniform(0.5, 1.0)))
        offset = [0] * mask.ndim
        offset[ax] = step if rng.integers(2) else -step
        moved = _translated(mask, offset)
        if moved is not None and free_or_own[moved].all():
            out[mask & ~moved] = background
            out[moved] = c
            return mask ^ moved, c
    return None, None


# ============================================================================================
# Evaluation
# ============================================================================================
@dataclass
class LabelErrorEvaluation:
    """Result of :func:`evaluate_label_errors`.

    Attributes
    ----------
    curve : pandas.DataFrame
        Per error kind (``"all"`` first) and threshold: ``kind``, ``threshold``,
        ``n_proposals``, ``n_true_proposals``, ``n_errors``, ``n_found``, ``precision``,
        ``recall``, ``f1``.
    auprc : pandas.Series
        Area under the precision-recall curve (average precision) per kind.
    matches : pandas.DataFrame
        ``proposal`` (row of ``found``), ``error`` (row of ``truth``), ``iou_adj`` of every
        pair with IoU_adj >= the match threshold.
    """

    curve: pd.DataFrame
    auprc: pd.Series
    matches: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Best F1 (with its threshold, precision, recall) and AUPRC per kind."""
        rows = []
        for kind, c in self.curve.groupby("kind", sort=False):
            best = c.loc[c["f1"].fillna(-1).idxmax()]
            rows.append({"kind": kind, "n_errors": int(best["n_errors"]), "best_f1": best["f1"],
                         "threshold": best["threshold"], "precision": best["precision"],
                         "recall": best["recall"], "auprc": float(self.auprc[kind])})
        return pd.DataFrame(rows)


def _case_key(table, i):
    return table["case"].iat[i] if "case" in table.columns else None


def _pair_ious(found, truth, match_iou):
    """IoU_adj of every overlapping (proposal, error) pair of the same case.

    With O the voxels of the proposals other than P, |P ∪ (E \\ O)| = |P| + |E \\ (P ∪ O)|: the
    union needs only each error's voxels that no proposal covers, so every pair's value comes
    from one sparse join of proposal voxels with error voxels.
    """
    pairs = []
    fcase = np.array([_case_key(found, i) for i in range(len(found))], dtype=object)
    tcase = np.array([_case_key(truth, i) for i in range(len(truth))], dtype=object)
    for case in pd.unique(fcase):
        pidx = np.flatnonzero(fcase == case)
        eidx = np.flatnonzero(tcase == case)
        if not len(eidx) or not len(pidx):
            continue
        pvox = [np.unique(np.asarray(found["voxels"].iat[i], np.int64)) for i in pidx]
        evox = [np.unique(np.asarray(truth["voxels"].iat[i], np.int64)) for i in eidx]
        psize = np.array([v.size for v in pvox], np.int64)
        pv = np.concatenate(pvox)
        pid = np.repeat(np.arange(len(pidx)), psize)
        order = np.argsort(pv, kind="stable")
        pv, pid = pv[order], pid[order]
        for b, e in enumerate(evox):
            lo = np.searchsorted(pv, e, "left")
            hi = np.searchsorted(pv, e, "right")
            n_cover = hi - lo
            uncovered = int((n_cover == 0).sum())
            if uncovered == e.size:
                continue
            # every (error voxel, covering proposal) pair, then intersections per proposal
            starts = np.repeat(lo, n_cover)
            within = np.arange(starts.size) - np.repeat(np.cumsum(n_cover) - n_cover, n_cover)
            inter = np.bincount(pid[starts + within], minlength=len(pidx))
            for a in np.flatnonzero(inter):
                iou = inter[a] / (psize[a] + uncovered)
                if iou >= match_iou:
                    pairs.append((int(pidx[a]), int(eidx[b]), float(iou)))
    pairs.sort()
    out = pd.DataFrame(pairs, columns=["proposal", "error", "iou_adj"])
    # integer row positions even when nothing matched (an empty frame would hold floats)
    return out.astype({"proposal": np.int64, "error": np.int64, "iou_adj": np.float64})


def _average_precision(scores, hit_sets, n_errors):
    """Average precision: sum over ranks of precision x recall gained (ties taken together)."""
    if n_errors == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    found, tp, ap, k = set(), 0, 0.0, 0
    while k < len(order):
        s = scores[order[k]]
        before = len(found)
        n_at = 0
        while k < len(order) and scores[order[k]] == s:
            h = hit_sets[order[k]]
            tp += bool(h)
            found |= h
            k += 1
            n_at += 1
        ap += (len(found) - before) / n_errors * tp / k
    return float(ap)


def evaluate_label_errors(found, truth, *, thresholds=THRESHOLDS, match_iou=MATCH_IOU):
    """Precision, recall, F1 and AUPRC of label-error proposals against known (injected) errors.

    A proposal matches an error of the same case when their IoU_adj >= ``match_iou``, with
    IoU_adj(P, E) = |P ∩ E| / |P ∪ (E \\ O)|, O being the voxels of the other proposals in
    ``found``: an error covered by several proposals (an object over several slices, found slice
    by slice) is not held against each of them. At threshold t the proposals with
    ``score >= t`` are kept; precision = kept proposals matching some error / kept proposals
    (NaN with none kept), recall = errors matched by some kept proposal / errors, so an error
    counts once however many proposals (slices) match it. Per error kind, proposals matching
    only errors of other kinds are left out (neither right nor wrong). AUPRC is the average
    precision of the ranking: sum over ranks of precision times the recall gained there.

    Parameters
    ----------
    found : pandas.DataFrame
        Proposals of :func:`find_label_errors` with ``return_voxels=True`` (``score`` and
        ``voxels``; ``case`` when there are several cases).
    truth : pandas.DataFrame
        Errors of :func:`inject_label_errors` (``kind`` and ``voxels``; ``case`` likewise).
    thresholds : array_like, default 0, 0.05, ..., 1
    match_iou : float, default 0.25

    Returns
    -------
    LabelErrorEvaluation

    Raises
    ------
    TypeError
        If ``found`` or ``truth`` is not a DataFrame.
    ValueError
        If a required column is missing, or only one of them has a ``case`` column.

    Example
    -------
    >>> ev = evaluate_label_errors(found, errors)  # doctest: +SKIP
    >>> ev.summary()  # doctest: +SKIP
    """
    for name, t, need in (("found", found, ("score", "voxels")), ("truth", truth, ("kind", "voxels"))):
        if not isinstance(t, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(t).__name__}")
        missing = [c for c in need if c not in t.columns]
        if missing:
            hint = " (find_label_errors(..., return_voxels=True))" if name == "found" else ""
            raise ValueError(f"{name} lacks column(s) {missing}{hint}")
    if ("case" in found.columns) != ("case" in truth.columns):
        raise ValueError("found and truth must both have a case column or both lack it")
    matches = _pair_ious(found, truth, match_iou)
    scores = found["score"].to_numpy(np.float64)
    hits = [set() for _ in range(len(found))]
    for a, b in zip(matches["proposal"], matches["error"], strict=True):
        hits[int(a)].add(int(b))
    kinds = ["all"] + [k for k in ERROR_KINDS if k in set(truth["kind"])] \
        + sorted(set(truth["kind"]) - set(ERROR_KINDS) - {"all"})
    err_kind = truth["kind"].to_numpy()
    rows, auprc = [], {}
    for kind in kinds:
        err_set = set(range(len(truth))) if kind == "all" else set(np.flatnonzero(err_kind == kind).tolist())
        use = np.array([kind == "all" or not h or bool(h & err_set) for h in hits], bool)
        k_hits = [h & err_set for h, u in zip(hits, use, strict=True) if u]
        k_scores = scores[use]
        auprc[kind] = _average_precision(k_scores, k_hits, len(err_set))
        for t in np.asarray(thresholds, np.float64):
            kept = k_scores >= t
            n_kept = int(kept.sum())
            got = set().union(*(h for h, k in zip(k_hits, kept, strict=True) if k))
            n_true = sum(bool(h) for h, k in zip(k_hits, kept, strict=True) if k)
            prec = n_true / n_kept if n_kept else np.nan
            rec = len(got) / len(err_set) if err_set else np.nan
            f1 = 2 * prec * rec / (prec + rec) if n_kept and err_set and prec + rec > 0 else (
                0.0 if n_kept and err_set else np.nan)
            rows.append({"kind": kind, "threshold": float(t), "n_proposals": n_kept,
                         "n_true_proposals": n_true, "n_errors": len(err_set), "n_found": len(got),
                         "precision": prec, "recall": rec, "f1": f1})
    return LabelErrorEvaluation(pd.DataFrame(rows), pd.Series(auprc, name="auprc"), matches)
