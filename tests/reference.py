"""Slow, straightforward reference implementation of the MetaSeg segment metrics.

Written from the definitions in ``DESIGN.md`` and the engine contract only, never from the
engine's code, so that the tests hold the engine to an independent implementation. It is
also the "straightforward implementation" baseline of the benchmarks (``benchmarks/`` puts
this directory on ``sys.path``), which is why the per-segment means use ``np.bincount`` and
the IoU loop works inside bounding boxes; everything else favours clarity over speed.

How it differs from a fused single-pass kernel on purpose:

* segments: ``scipy.ndimage.label`` of ``pred == c`` for every class ``c`` with a full
  3x3 / 3x3x3 structure, then renumbered by the position of each segment's first pixel;
* interior: the label map is padded with 0 (a value no segment uses) and compared with each
  of its 8 / 26 shifted copies; a pixel is interior when every neighbour is either the same
  segment or outside the image;
* IoU / IoU_adj: a Python loop over segments with boolean masks (set algebra written out).

Inputs are trusted: probabilities are float arrays with classes last that sum to 1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "assert_label_maps_equivalent",
    "assert_tables_match",
    "check_partition_properties",
    "match_segments",
    "ref_dispersion_maps",
    "ref_interior",
    "ref_label_segments",
    "ref_segment_metrics",
    "resolve_mode",
    "table_columns",
]


# --------------------------------------------------------------------------------------------
# pixel-wise heatmaps
# --------------------------------------------------------------------------------------------
def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (natural log) along the last axis, with 0 log 0 = 0."""
    safe = np.where(p > 0, p, 1.0)  # log(1) = 0, so zero probabilities contribute nothing
    return -np.sum(np.where(p > 0, p * np.log(safe), 0.0), axis=-1)


def ref_dispersion_maps(probs, samples=None) -> dict[str, np.ndarray]:
    """Heatmaps E, D, V (and MI, VAR with ``samples``) in float64, clipped to [0, 1].

    probs: (*spatial, q); samples: (T, *spatial, q). MI uses the mean of the samples.
    """
    p = np.asarray(probs, dtype=np.float64)
    q = p.shape[-1]
    log_q = math.log(q)
    ordered = np.sort(p, axis=-1)
    p1 = ordered[..., -1]  # largest
    p2 = ordered[..., -2]  # second largest (equal to p1 on a tie)
    maps = {
        "E": _entropy(p) / log_q,
        "D": 1.0 - p1 + p2,
        "V": 1.0 - p1,
    }
    if samples is not None:
        s = np.asarray(samples, dtype=np.float64)
        mean = s.mean(axis=0)
        maps["MI"] = (_entropy(mean) - _entropy(s).mean(axis=0)) / log_q
        maps["VAR"] = s.var(axis=0).mean(axis=-1)  # population variance (ddof=0)
    return {name: np.clip(m, 0.0, 1.0) for name, m in maps.items()}


# --------------------------------------------------------------------------------------------
# segments
# --------------------------------------------------------------------------------------------
def resolve_mode(ndim: int, mode: str) -> str:
    if mode == "auto":
        if ndim not in (2, 3):
            raise ValueError(f"mode 'auto' needs a 2D or 3D map, got {ndim}D")
        return "2d" if ndim == 2 else "3d"
    expected = {"2d": 2, "3d": 3, "slices": 3}
    if mode not in expected:
        raise ValueError(f"unknown mode {mode!r}")
    if ndim != expected[mode]:
        raise ValueError(f"mode {mode!r} needs a {expected[mode]}D map, got {ndim}D")
    return mode


def _label_mask(mask: np.ndarray, mode: str, slice_axis: int) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask (full connectivity), ids unique in the array.

    In "slices" mode every slice along ``slice_axis`` is labelled on its own (8-connectivity).
    Numbering is whatever scipy gives; callers renumber.
    """
    if mode != "slices":
        return ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    moved = np.moveaxis(mask, slice_axis, 0)
    out = np.zeros(moved.shape, dtype=np.int64)
    n = 0
    for z in range(moved.shape[0]):
        lab, m = ndimage.label(moved[z], structure=np.ones((3, 3), dtype=bool))
        out[z][lab > 0] = lab[lab > 0] + n
        n += m
    return np.moveaxis(out, 0, slice_axis), n


def _renumber_by_first_pixel(lab: np.ndarray) -> np.ndarray:
    """Renumber labels 1..n in the C order of each label's first pixel (0 stays 0)."""
    flat = lab.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int64)
    lut[ids[np.argsort(first)]] = np.arange(1, ids.size + 1)
    return lut[lab]


def ref_label_segments(pred, mode: str = "auto", slice_axis: int = -1) -> tuple[np.ndarray, int]:
    """Connected components of equal predicted class; every pixel gets an id in 1..n.

    Numbering: raster (C) order of each segment's first pixel; in "slices" mode slice by slice
    (increasing index along ``slice_axis``) and raster order inside each 2D slice.
    """
    pred = np.asarray(pred)
    mode = resolve_mode(pred.ndim, mode)
    labels = np.zeros(pred.shape, dtype=np.int64)
    n = 0
    for c in np.unique(pred):
        lab, m = _label_mask(pred == c, mode, slice_axis)
        labels[lab > 0] = lab[lab > 0] + n
        n += m
    if mode == "slices":
        # C order of the array with the slice axis moved first = slice by slice, then the raster
        # order of each slice.
        moved = _renumber_by_first_pixel(np.moveaxis(labels, slice_axis, 0))
        labels = np.moveaxis(moved, 0, slice_axis)
    else:
        labels = _renumber_by_first_pixel(labels)
    return labels, n


def ref_interior(seg: np.ndarray, mode: str, slice_axis: int = -1) -> np.ndarray:
    """Pixels all of whose in-image neighbours (8 / 26; in-plane 8 in slices mode) share the id.

    ``seg`` must use ids >= 1 (0 marks outside the image after padding).
    """
    seg = np.asarray(seg)
    mode = resolve_mode(seg.ndim, mode)
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=seg.ndim) if any(o)]
    if mode == "slices":
        axis = slice_axis % seg.ndim
        offsets = [o for o in offsets if o[axis] == 0]
    padded = np.pad(seg, 1, mode="constant", constant_values=0)
    interior = np.ones(seg.shape, dtype=bool)
    for offset in offsets:
        window = tuple(
            slice(1 + d, 1 + d + size) for d, size in zip(offset, seg.shape, strict=True)
        )
        neighbour = padded[window]
        interior &= (neighbour == seg) | (neighbour == 0)
    return interior


# --------------------------------------------------------------------------------------------
# metrics table
# --------------------------------------------------------------------------------------------
def table_columns(q: int, measures=("E", "D", "V"), *, slices=False, with_gt=False) -> list[str]:
    cols = ["index"] + (["slice"] if slices else []) + ["class"]
    cols += ["S", "S_in", "S_bd", "S_rel", "S_rel_in"]
    for h in measures:
        cols += [h, f"{h}_in", f"{h}_bd", f"{h}_rel", f"{h}_rel_in"]
    cols += [f"cprob{c}" for c in range(q)]
    if with_gt:
        cols += ["iou", "iou_adj"]
    return cols


def _box_union(boxes):
    return tuple(
        slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
        for d in range(len(boxes[0]))
    )


def _ref_iou(seg, n, seg_class, pred, gt, q, mode, slice_axis, ignore_index):
    """IoU and IoU_adj per segment, by explicit set algebra on boolean masks."""
    gt = np.asarray(gt)
    valid = gt != ignore_index
    # GT components of every class, same connectivity / mode as the prediction.
    gt_comp = np.zeros(gt.shape, dtype=np.int64)
    offset = 0
    for c in range(q):
        lab, m = _label_mask((gt == c) & valid, mode, slice_axis)
        gt_comp[lab > 0] = lab[lab > 0] + offset
        offset += m
    seg_boxes = ndimage.find_objects(seg)
    gt_boxes = ndimage.find_objects(gt_comp)

    iou = np.zeros(n)
    iou_adj = np.zeros(n)
    for k in range(1, n + 1):
        c = seg_class[k - 1]
        box_k = seg_boxes[k - 1]
        in_k = seg[box_k] == k
        if not (in_k & valid[box_k]).any():
            iou[k - 1] = iou_adj[k - 1] = np.nan  # nothing of k is evaluated
            continue
        touched = np.unique(gt_comp[box_k][in_k & (gt[box_k] == c) & valid[box_k]])
        touched = touched[touched > 0]
        if touched.size == 0:
            continue  # K' is empty: both 0
        # Everything involved (k, K', and K' ∩ Q) lies inside the union of the boxes.
        box = _box_union([box_k] + [gt_boxes[g - 1] for g in touched])
        k_mask = seg[box] == k
        k_prime = np.isin(gt_comp[box], touched)
        q_mask = (pred[box] == c) & (seg[box] != k)  # the other predicted segments of class c
        v = valid[box]
        inter = np.count_nonzero(k_mask & k_prime & v)
        union = np.count_nonzero((k_mask | k_prime) & v)
        union_adj = np.count_nonzero((k_mask | (k_prime & ~q_mask)) & v)
        iou[k - 1] = inter / union
        iou_adj[k - 1] = inter / union_adj
    return iou, iou_adj


def ref_segment_metrics(
    probs,
    gt=None,
    *,
    mode: str = "auto",
    slice_axis: int = -1,
    ignore_index: int = 255,
    measures=("E", "D", "V"),
) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment label map and MetaSeg metrics table (see the engine contract for the columns)."""
    p = np.asarray(probs, dtype=np.float64)
    q = p.shape[-1]
    spatial = p.shape[:-1]
    mode = resolve_mode(len(spatial), mode)
    pred = np.argmax(p, axis=-1)  # ties -> lower class index
    seg, n = ref_label_segments(pred, mode, slice_axis)
    interior = ref_interior(seg, mode, slice_axis)
    maps = ref_dispersion_maps(p) if measures else {}

    ids = seg.ravel()
    in_flat = interior.ravel().astype(np.float64)
    bd_flat = 1.0 - in_flat

    def per_segment_sum(values):
        return np.bincount(ids, weights=values, minlength=n + 1)[1:]

    size = np.bincount(ids, minlength=n + 1)[1:]
    size_in = np.bincount(ids[interior.ravel()], minlength=n + 1)[1:]
    size_bd = size - size_in
    bd_for_ratio = np.maximum(size_bd, 1)  # a segment without boundary uses S_bd = 1 in ratios

    seg_class = np.zeros(n, dtype=np.int64)
    seg_class[ids - 1] = pred.ravel()  # every pixel of a segment has the same class

    cols: dict[str, np.ndarray] = {"index": np.arange(1, n + 1, dtype=np.int64)}
    if mode == "slices":
        coord = np.indices(spatial)[slice_axis % len(spatial)].ravel()
        seg_slice = np.zeros(n, dtype=np.int64)
        seg_slice[ids - 1] = coord
        cols["slice"] = seg_slice
    cols["class"] = seg_class
    cols["S"] = size
    cols["S_in"] = size_in
    cols["S_bd"] = size_bd
    cols["S_rel"] = size / bd_for_ratio
    cols["S_rel_in"] = size_in / bd_for_ratio
    for name in measures:
        h = maps[name].ravel()
        mean = per_segment_sum(h) / size
        mean_in = np.where(size_in > 0, per_segment_sum(h * in_flat) / np.maximum(size_in, 1), 0.0)
        mean_bd = np.where(size_bd > 0, per_segment_sum(h * bd_flat) / np.maximum(size_bd, 1), 0.0)
        cols[name] = mean
        cols[f"{name}_in"] = mean_in
        cols[f"{name}_bd"] = mean_bd
        cols[f"{name}_rel"] = mean * cols["S_rel"]
        cols[f"{name}_rel_in"] = mean_in * cols["S_rel_in"]
    for c in range(q):
        cols[f"cprob{c}"] = per_segment_sum(p[..., c].ravel()) / size
    if gt is not None:
        cols["iou"], cols["iou_adj"] = _ref_iou(
            seg, n, seg_class, pred, gt, q, mode, slice_axis, ignore_index
        )
    table = pd.DataFrame(cols)
    assert list(table.columns) == table_columns(
        q, measures, slices=mode == "slices", with_gt=gt is not None
    )
    return seg, table


# --------------------------------------------------------------------------------------------
# comparison helpers (independent of how either side numbers its segments)
# --------------------------------------------------------------------------------------------
def match_segments(seg_a, seg_b) -> dict[int, int]:
    """Map ids of ``seg_a`` to ids of ``seg_b`` when both label maps have the same segments.

    Each segment is identified by its pixel of minimum flat index; raises AssertionError when the
    two maps do not partition the image into the same pixel sets.
    """
    a = np.asarray(seg_a).ravel()
    b = np.asarray(seg_b).ravel()
    assert a.shape == b.shape, f"label maps differ in shape: {seg_a.shape} vs {seg_b.shape}"
    ids_a, first_a = np.unique(a, return_index=True)
    ids_b = np.unique(b)
    assert ids_a.size == ids_b.size, f"{ids_a.size} segments vs {ids_b.size} segments"
    mapping = {int(i): int(b[f]) for i, f in zip(ids_a, first_a, strict=True)}
    assert len(set(mapping.values())) == len(mapping), "two segments map to the same segment"
    lut = np.zeros(int(a.max()) + 1, dtype=np.int64)
    for i, j in mapping.items():
        lut[i] = j
    mismatch = np.flatnonzero(lut[a] != b)
    assert mismatch.size == 0, (
        f"segments differ at {mismatch.size} pixels, first at flat index {mismatch[0]}: "
        f"{a[mismatch[0]]} (a) vs {b[mismatch[0]]} (b)"
    )
    return mapping


def assert_label_maps_equivalent(seg_a, seg_b) -> None:
    match_segments(seg_a, seg_b)


def assert_tables_match(seg_a, table_a, seg_b, table_b, *, rtol=1e-5, atol=1e-6) -> None:
    """Same columns, same segments (by pixel set), same values row by row (NaN == NaN)."""
    assert list(table_a.columns) == list(table_b.columns), (
        f"columns differ:\n{list(table_a.columns)}\n{list(table_b.columns)}"
    )
    for seg, table in ((seg_a, table_a), (seg_b, table_b)):
        ids = np.unique(seg)
        np.testing.assert_array_equal(np.asarray(table["index"]), ids, "index column vs label map")
    mapping = match_segments(seg_a, seg_b)
    rows_b = table_b.set_index("index", drop=False)
    ordered_b = rows_b.loc[[mapping[int(i)] for i in table_a["index"]]]
    for col in table_a.columns:
        if col == "index":
            continue
        np.testing.assert_allclose(
            np.asarray(table_a[col], dtype=np.float64),
            np.asarray(ordered_b[col], dtype=np.float64),
            rtol=rtol,
            atol=atol,
            err_msg=f"column {col!r}",
        )


def check_partition_properties(pred, seg, mode: str, slice_axis: int = -1) -> None:
    """``seg`` is exactly the connected components of equal class in ``pred``.

    Checks: ids 1..n consecutive; no segment mixes classes; every segment is connected; any two
    neighbouring pixels (in the mode's connectivity) of equal class share the segment id.
    Together these pin down the connected components without using any labelling routine
    for the maximality part.
    """
    pred = np.asarray(pred)
    seg = np.asarray(seg)
    mode = resolve_mode(pred.ndim, mode)
    ids = np.unique(seg)
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1), "ids are not 1..n")
    cls_min = ndimage.minimum(pred, seg, ids)
    cls_max = ndimage.maximum(pred, seg, ids)
    np.testing.assert_array_equal(cls_min, cls_max, "a segment mixes classes")
    # Neighbour pairs: equal class <=> equal segment.
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=pred.ndim) if any(o)]
    if mode == "slices":
        axis = slice_axis % pred.ndim
        offsets = [o for o in offsets if o[axis] == 0]
    for offset in offsets:
        here = tuple(
            slice(max(0, -d), size - max(0, d)) for d, size in zip(offset, pred.shape, strict=True)
        )
        there = tuple(
            slice(max(0, d), size - max(0, -d)) for d, size in zip(offset, pred.shape, strict=True)
        )
        same_class = pred[here] == pred[there]
        same_seg = seg[here] == seg[there]
        assert np.array_equal(same_class, same_seg), f"neighbour rule broken for offset {offset}"
    # Connectedness of every segment (a segment spanning several slices would also fail here
    # in slices mode, because labelling is then per slice).
    for k, box in enumerate(ndimage.find_objects(seg), start=1):
        _, m = _label_mask(seg[box] == k, mode, slice_axis)
        assert m == 1, f"segment {k} has {m} connected parts"
