"""Label-error triage (Rottmann & Reese, WACV 2023): where is the ground truth probably wrong?

Two kinds of proposal, ranked together by ``score`` (higher = more likely a label error):

* ``"segment"``: a predicted segment with IoU_adj = 0 against the labels under review, scored by
  the meta classifier's P(IoU_adj > 0). The model thinks the segment is right; the label says it
  is entirely wrong, so one of the two is, and the confident ones point at missing labels.
* ``"gt_object"``: a ground-truth object (connected component of one class, same connectivity
  as the segments) that no predicted pixel of its class overlaps, scored by the mean of the
  prediction's maximum probability over the object. The prediction confidently says something
  else there: a possibly spurious or wrongly classed label.

:func:`inject_label_errors` corrupts a ground truth for evaluation and
:func:`evaluate_label_errors` matches proposals to the injected errors (see docs/label_errors.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from .segments import _resolve_mode, label_segments

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

PROPOSAL_KINDS = ("segment", "gt_object")
ERROR_KINDS = ("drop", "swap_class", "add_spurious", "shift")
#: A proposal matches an error when their IoU_adj reaches this (Rottmann & Reese).
MATCH_IOU = 0.25
#: Score thresholds of the precision / recall sweep.
THRESHOLDS = np.round(np.arange(0.0, 1.0 + 1e-9, 0.05), 2)

_COLUMNS = ["case", "kind", "class", "index", "gt_object", "score", "size", "bbox", "centroid"]


# ============================================================================================
# Helpers
# ============================================================================================
def _regions(lab, ids):
    """bbox (starts then stops, half-open), centroid and flat voxel indices of each id."""
    objs = ndimage.find_objects(lab)
    out = {}
    for i in ids:
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            out[i] = (None, None, np.empty(0, np.int64))
            continue
        local = np.nonzero(lab[sl] == i)
        coords = tuple(c + s.start for c, s in zip(local, sl, strict=True))
        bbox = tuple(int(s.start) for s in sl) + tuple(int(s.stop) for s in sl)
        centroid = tuple(float(c.mean()) for c in coords)
        out[i] = (bbox, centroid, np.ravel_multi_index(coords, lab.shape).astype(np.int64))
    return out


def _check_classifier(classifier):
    from sklearn.utils.validation import check_is_fitted

    from .meta_model import MetaClassifier

    if not isinstance(classifier, MetaClassifier):
        raise TypeError(f"classifier must be a fitted MetaClassifier, got {type(classifier).__name__}")
    check_is_fitted(classifier)
    if list(np.asarray(classifier.classes_).tolist()) != [0, 1]:
        raise ValueError(
            "classifier was fitted on custom labels, not on IoU_adj > 0 (classes_ must be [0, 1], "
            f"got {list(classifier.classes_)})"
        )


def _case_arrays(maps, case, n_cases):
    if maps is None:
        return None
    if isinstance(maps, tuple) and n_cases == 1:
        return maps
    if not isinstance(maps, dict):
        raise TypeError(f"maps must be a dict {{case: (probs, gt[, seg])}}, got {type(maps).__name__}")
    return maps.get(case)


# ============================================================================================
# Finding label errors
# ============================================================================================
def find_label_errors(table, classifier, *, maps=None, threshold=None, allow_training_cases=False,
                      mode=None, slice_axis=-1, background=0, ignore_index=255,
                      return_voxels=False):
    """Ranked proposals of label errors in the ground truth a metrics table was computed against.

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
        without ``case`` column is the case ``None``. Without maps there are no ``"gt_object"``
        proposals and ``bbox``/``centroid`` are None.
    threshold : float, optional
        Keep proposals with ``score >= threshold``; None keeps every candidate.
    allow_training_cases : bool, default False
        Score cases the classifier was fitted on (its predictions there are optimistic).
    mode : {"auto", "2d", "3d", "slices"}, optional
        Connectivity of segments and GT objects; default ``"slices"`` when the table has a
        ``slice`` column, else ``"auto"``.
    slice_axis : int, default -1
        Slice axis in slices mode.
    background : int or None, default 0
        GT class that is never proposed as a ``"gt_object"``.
    ignore_index : int or None, default 255
        GT id that is never an object.
    return_voxels : bool, default False
        Add a ``voxels`` column: flat (C-order) indices of each proposal's voxels, as
        :func:`evaluate_label_errors` needs (requires ``maps``).

    Returns
    -------
    pandas.DataFrame
        Columns ``case``, ``kind``, ``class``, ``index`` (segment id, kind "segment"),
        ``gt_object`` (GT component id, kind "gt_object"), ``score``, ``size`` (voxels),
        ``bbox`` (starts then stops, half-open), ``centroid``, plus ``slice`` in slices mode
        (and ``voxels``), sorted by ``score`` descending.

    Raises
    ------
    TypeError
        ``table`` not a DataFrame, ``classifier`` not a MetaClassifier, ``maps`` not a dict.
    ValueError
        No ``iou_adj`` column; a case the classifier was fitted on (unless allowed); arrays in
        ``maps`` whose segments do not match the table; ``return_voxels`` without maps.

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
    rows = []
    for case in cases:
        sel = (table["case"] == case).to_numpy() if has_case else np.ones(len(table), bool)
        t = table.loc[sel]
        p1 = score_all[sel]
        iou = t["iou_adj"].to_numpy(np.float64)
        cand = np.flatnonzero(iou == 0)
        arrays = _case_arrays(maps, case, len(cases))
        geo = {}
        seg = probs = gt = None
        if arrays is not None:
            probs, gt, seg = _unpack(arrays, case)
            if seg is None:
                seg, _ = label_segments(probs.argmax(-1), mode=mode, slice_axis=slice_axis)
            if int(seg.max()) != int(t["index"].max()) or seg.shape != gt.shape:
                raise ValueError(
                    f"case {case!r}: the segment map (max id {int(seg.max())}, shape {seg.shape}) does "
                    f"not match the table (max index {int(t['index'].max())}) or the gt {gt.shape}"
                )
            geo = _regions(seg, [int(i) for i in t["index"].to_numpy()[cand]])
        for k in cand:
            r = t.iloc[k]
            idx = int(r["index"])
            bbox, centroid, vox = geo.get(idx, (None, None, None))
            row = {"case": case, "kind": "segment", "class": int(r["class"]), "index": idx,
                   "gt_object": pd.NA, "score": float(p1[k]), "size": int(r["S"]),
                   "bbox": bbox, "centroid": centroid}
            if slices:
                row["slice"] = int(r["slice"])
            if return_voxels:
                row["voxels"] = vox
            rows.append(row)
        if arrays is not None:
            rows.extend(_gt_object_rows(case, probs, gt, mode, slice_axis, background, ignore_index,
                                        slices, return_voxels))
    cols = _COLUMNS + (["slice"] if slices else []) + (["voxels"] if return_voxels else [])
    out = pd.DataFrame(rows, columns=cols)
    out["index"] = out["index"].astype("Int64")
    out["gt_object"] = out["gt_object"].astype("Int64")
    out["score"] = out["score"].astype(np.float64)
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


def _gt_object_rows(case, probs, gt, mode, slice_axis, background, ignore_index, slices, voxels):
    pred = probs.argmax(-1)
    conf = probs.max(-1)
    lab, n = label_segments(gt, mode=mode, slice_axis=slice_axis)
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    flat_lab = lab.ravel()
    cls = np.zeros(n + 1, np.int64)
    cls[flat_lab] = gt.ravel()
    # Objects some pixel of which the prediction gives their own class are not proposed.
    agree = np.bincount(flat_lab, weights=(pred == gt).ravel(), minlength=n + 1)
    size = np.bincount(flat_lab, minlength=n + 1)
    csum = np.bincount(flat_lab, weights=conf.ravel().astype(np.float64), minlength=n + 1)
    keep = agree[ids] == 0
    for excluded in (background, ignore_index):
        if excluded is not None:
            keep &= cls[ids] != excluded
    chosen = [int(i) for i in ids[keep]]
    geo = _regions(lab, chosen)
    sax = _resolve_mode(mode, gt.ndim, slice_axis)[1]
    rows = []
    for i in chosen:
        bbox, centroid, vox = geo[i]
        row = {"case": case, "kind": "gt_object", "class": int(cls[i]), "index": pd.NA,
               "gt_object": i, "score": float(csum[i] / size[i]), "size": int(size[i]),
               "bbox": bbox, "centroid": centroid}
        if slices:
            row["slice"] = bbox[sax] if sax is not None else pd.NA
        if voxels:
            row["voxels"] = vox
        rows.append(row)
    return rows


# ============================================================================================
# Injecting label errors
# ============================================================================================
def inject_label_errors(gt, *, kinds=ERROR_KINDS, rate, seed, n_classes=None, mode="auto",
                        slice_axis=-1, background=0, ignore_index=255):
    """Corrupt a ground truth with simulated label errors, for evaluation.

    ``round(rate * n_objects)`` GT objects (connected components of a non-background class, in
    ``mode``) are picked at random, each gets one error of a kind drawn uniformly from
    ``kinds`` (among those possible for it), and errors never share a voxel:

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
    objects = [i for i in range(1, n + 1)
               if cls[i] != background and (ignore_index is None or cls[i] != ignore_index)]
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
    """IoU_adj of every overlapping (proposal, error) pair of the same case."""
    pairs = []
    fcase = [_case_key(found, i) for i in range(len(found))]
    tcase = [_case_key(truth, i) for i in range(len(truth))]
    for case in set(fcase):
        pidx = [i for i, c in enumerate(fcase) if c == case]
        eidx = [i for i, c in enumerate(tcase) if c == case]
        if not eidx:
            continue
        pvox = [np.unique(np.asarray(found["voxels"].iat[i], np.int64)) for i in pidx]
        evox = [np.unique(np.asarray(truth["voxels"].iat[i], np.int64)) for i in eidx]
        size = 1 + max(int(v.max()) for v in pvox + evox if v.size)
        cover = np.bincount(np.concatenate(pvox), minlength=size) if pvox else np.zeros(size, np.int64)
        for a, p in zip(pidx, pvox, strict=True):
            for b, e in zip(eidx, evox, strict=True):
                in_p = np.isin(e, p, assume_unique=True)
                inter = int(in_p.sum())
                if inter == 0:
                    continue
                # error voxels covered by other proposals leave the union (IoU_adj)
                free = (cover[e] - in_p) == 0
                union = p.size + int((free & ~in_p).sum())
                iou = inter / union
                if iou >= match_iou:
                    pairs.append((a, b, iou))
    return pd.DataFrame(pairs, columns=["proposal", "error", "iou_adj"])


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
