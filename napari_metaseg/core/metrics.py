"""Per-segment MetaSeg metrics and segment quality against ground truth.

One fused pass over the probabilities accumulates, per segment, the size, the interior size,
the sums of every heatmap over the segment and its interior, and the class-probability sums; the
heatmaps are computed on the fly and never stored, so the extra memory is the class map, the
segment map and the per-segment accumulators. A second pass over the class maps (no
probabilities) counts the overlaps that IoU and IoU_adj need.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
from numba import njit, prange

from .heatmaps import MEASURES, SAMPLE_MEASURES, _check_measures, _row_measures, _sample_maps, padded_stride
from .inputs import _canonical, check_ground_truth
from .segments import _label_any, _resolve_mode

__all__ = ["iter_segment_metrics", "metric_columns", "segment_metrics"]

# Accumulator columns: size, interior size, then (sum, interior sum) per measure, then class sums.
_COL_S = 0
_COL_SIN = 1
_COL_M0 = 2


@njit(cache=True, nogil=True, inline="always")
def _and_row(inside, srow, nb, w, diag):
    """``inside[j] &= nb[j'] == srow[j]`` for ``j' in j-1..j+1`` (only ``j' = j`` without ``diag``).

    ``nb`` is a neighbouring row (or the row itself); neighbours outside the row are ignored.
    Written branch-free so it vectorises.
    """
    if not diag:
        for j in range(w):
            inside[j] &= nb[j] == srow[j]
        return
    if w == 1:
        inside[0] &= nb[0] == srow[0]
        return
    inside[0] &= (nb[0] == srow[0]) & (nb[1] == srow[0])
    for j in range(1, w - 1):
        sj = srow[j]
        inside[j] &= (nb[j - 1] == sj) & (nb[j] == sj) & (nb[j + 1] == sj)
    inside[w - 1] &= (nb[w - 2] == srow[w - 1]) & (nb[w - 1] == srow[w - 1])


@njit(cache=True, nogil=True, inline="always")
def _row_interior(seg, inside, a, b, d0, d1, d2, use0, use1, use2):
    """Interior flags of row (a, b): every in-array neighbour (along used axes) in the same segment."""
    base = (a * d1 + b) * d2
    srow = seg[base : base + d2]
    inside[:] = True
    if use2:
        _and_row(inside, srow, srow, d2, True)
    for da in range(-1, 2):
        if da != 0 and (not use0 or a + da < 0 or a + da >= d0):
            continue
        for db in range(-1, 2):
            if db != 0 and (not use1 or b + db < 0 or b + db >= d1):
                continue
            if da == 0 and db == 0:
                continue
            nbase = ((a + da) * d1 + b + db) * d2
            _and_row(inside, srow, seg[nbase : nbase + d2], d2, use2)


@njit(cache=True, nogil=True, parallel=True, fastmath=True, error_model="numpy")
def _accumulate(flat, seg, d0, d1, d2, skip_axis, want_e, extra, nseg, nchunks):
    """Per-segment sums over a C-contiguous (d0, d1, d2) grid; returns (nseg + 1, ncols) float64.

    Works row by row (rows along the contiguous axis): heatmaps of the row, interior flags of the
    row, then one update of the segment's accumulators per run of equal segment id.
    """
    q = flat.shape[1]
    n_extra = extra.shape[0]
    nm = 3 + n_extra
    ncols = _COL_M0 + 2 * nm + q
    off_c = _COL_M0 + 2 * nm
    pf = flat.reshape(-1)
    w = d2
    ws = padded_stride(w)
    inv_logq = np.float32(1.0 / np.log(q))
    use0 = skip_axis != 0 and d0 > 1
    use1 = skip_axis != 1 and d1 > 1
    use2 = skip_axis != 2 and d2 > 1
    nrows = d0 * d1
    partial = np.zeros((nchunks, nseg + 1, ncols))
    for ch in prange(nchunks):
        acc = partial[ch]
        tr = np.empty(ws * q, np.float32)
        tri = tr.view(np.int32)
        ent = np.empty(w, np.float32)
        p1 = np.empty(w, np.float32)
        p2 = np.empty(w, np.float32)
        maps = np.empty((nm, w), np.float32)
        inside = np.empty(w, np.bool_)
        for r in range(ch * nrows // nchunks, (ch + 1) * nrows // nchunks):
            a = r // d1
            b = r - a * d1
            base = r * w
            _row_measures(pf, base, w, ws, q, tr, tri, ent, p1, p2, want_e, maps[0], maps[1], maps[2],
                          inv_logq)
            for x in range(n_extra):
                maps[3 + x, :] = extra[x, base : base + w]
            _row_interior(seg, inside, a, b, d0, d1, d2, use0, use1, use2)
            j0 = 0
            while j0 < w:
                s = seg[base + j0]
                j1 = j0 + 1
                while j1 < w and seg[base + j1] == s:
                    j1 += 1
                row = acc[s]
                n_in = 0
                for j in range(j0, j1):
                    n_in += inside[j]
                row[_COL_S] += j1 - j0
                row[_COL_SIN] += n_in
                for m in range(nm):
                    tot = 0.0
                    tin = 0.0
                    for j in range(j0, j1):
                        v = np.float64(maps[m, j])
                        tot += v
                        tin += v if inside[j] else 0.0
                    row[_COL_M0 + 2 * m] += tot
                    row[_COL_M0 + 2 * m + 1] += tin
                for c in range(q):
                    tot = 0.0
                    for j in range(c * ws + j0, c * ws + j1):
                        tot += tr[j]
                    row[off_c + c] += tot
                j0 = j1
    out = partial[0]
    for ch in range(1, nchunks):
        out += partial[ch]
    return out


@njit(cache=True, nogil=True)
def _overlaps(pred, seg, gt, gtseg, nseg, ngt, ignore, has_ignore):
    """Intersection and union counts for IoU and IoU_adj, one pass over the label maps.

    For a segment k of class c, with K' the GT components of class c that meet k:
    ``|k ∩ K'|`` is the number of (non-ignored) pixels of k whose GT is c; ``|K'|`` and the
    number of pixels of K' predicted as c (by any segment) are sums over the distinct GT
    components meeting k, found from (segment, component) pairs recorded on matching pixels.
    """
    n = seg.size
    nk = np.zeros(nseg + 1, np.int64)
    inter = np.zeros(nseg + 1, np.int64)
    gsize = np.zeros(ngt + 1, np.int64)
    gpred = np.zeros(ngt + 1, np.int64)
    last = np.full(nseg + 1, -1, np.int64)
    cap = 1024
    pk = np.empty(cap, np.int32)
    pg = np.empty(cap, np.int32)
    npairs = 0
    for i in range(n):
        g = gt[i]
        if has_ignore and g == ignore:
            continue
        k = seg[i]
        gc = gtseg[i]
        nk[k] += 1
        gsize[gc] += 1
        if pred[i] == g:
            inter[k] += 1
            gpred[gc] += 1
            if last[k] != gc:
                last[k] = gc
                if npairs == cap:
                    cap *= 2
                    pk2 = np.empty(cap, np.int32)
                    pg2 = np.empty(cap, np.int32)
                    pk2[:npairs] = pk[:npairs]
                    pg2[:npairs] = pg[:npairs]
                    pk = pk2
                    pg = pg2
                pk[npairs] = k
                pg[npairs] = gc
                npairs += 1
    # Counting sort of the pairs by segment, then distinct components per segment.
    offs = np.zeros(nseg + 2, np.int64)
    for p in range(npairs):
        offs[pk[p] + 1] += 1
    for k in range(nseg + 1):
        offs[k + 1] += offs[k]
    fill = offs[:-1].copy()
    comps = np.empty(npairs, np.int32)
    for p in range(npairs):
        k = pk[p]
        comps[fill[k]] = pg[p]
        fill[k] += 1
    mark = np.full(ngt + 1, -1, np.int64)
    iou = np.empty(nseg + 1, np.float64)
    iou_adj = np.empty(nseg + 1, np.float64)
    for k in range(1, nseg + 1):
        sum_g = 0
        sum_p = 0
        for p in range(offs[k], offs[k + 1]):
            gc = comps[p]
            if mark[gc] != k:
                mark[gc] = k
                sum_g += gsize[gc]
                sum_p += gpred[gc]
        if nk[k] == 0:
            iou[k] = np.nan
            iou_adj[k] = np.nan
        else:
            iou[k] = inter[k] / (nk[k] + sum_g - inter[k])
            iou_adj[k] = inter[k] / (nk[k] + sum_g - sum_p)
    return iou[1:], iou_adj[1:]


def metric_columns(measures=MEASURES, n_classes=None):
    """Column names of the metrics table, in order (without ``index``/``slice``/GT columns).

    Parameters
    ----------
    measures : sequence of str
        Heatmap names, as given to :func:`segment_metrics`.
    n_classes : int or None
        Number of classes; adds ``cprob0 .. cprob{q-1}`` when given.

    Returns
    -------
    list of str

    Examples
    --------
    >>> metric_columns(("E",), 2)[5:]
    ['S_rel_in', 'E', 'E_in', 'E_bd', 'E_rel', 'E_rel_in', 'cprob0', 'cprob1']
    """
    cols = ["class", "S", "S_in", "S_bd", "S_rel", "S_rel_in"]
    for m in measures:
        cols += [m, f"{m}_in", f"{m}_bd", f"{m}_rel", f"{m}_rel_in"]
    if n_classes is not None:
        cols += [f"cprob{c}" for c in range(n_classes)]
    return cols


def _build_table(acc, cls, plane, measures, order, q, mode):
    """Assemble the pandas table from the accumulator rows 1..n."""
    acc = acc[1:]
    size = acc[:, _COL_S]
    size_in = acc[:, _COL_SIN]
    size_bd = size - size_in
    denom_bd = np.where(size_bd > 0, size_bd, 1.0)
    s_rel = size / denom_bd
    s_rel_in = size_in / denom_bd
    n = acc.shape[0]
    cols = {"index": np.arange(1, n + 1, dtype=np.int64)}
    if mode == "slices":
        cols["slice"] = plane[1:].astype(np.int64)
    cols["class"] = cls[1:].astype(np.int64)
    cols["S"] = size.astype(np.int64)
    cols["S_in"] = size_in.astype(np.int64)
    cols["S_bd"] = size_bd.astype(np.int64)
    cols["S_rel"] = s_rel
    cols["S_rel_in"] = s_rel_in
    with np.errstate(invalid="ignore", divide="ignore"):
        for m in measures:
            k = order[m]
            total = acc[:, _COL_M0 + 2 * k]
            inner = acc[:, _COL_M0 + 2 * k + 1]
            mean = total / size
            mean_in = np.where(size_in > 0, inner / np.where(size_in > 0, size_in, 1.0), 0.0)
            mean_bd = np.where(size_bd > 0, (total - inner) / denom_bd, 0.0)
            cols[m] = mean
            cols[f"{m}_in"] = mean_in
            cols[f"{m}_bd"] = np.clip(mean_bd, 0.0, None)
            cols[f"{m}_rel"] = mean * s_rel
            cols[f"{m}_rel_in"] = mean_in * s_rel_in
    nm = acc.shape[1] - _COL_M0 - q
    off = _COL_M0 + nm
    for c in range(q):
        cols[f"cprob{c}"] = acc[:, off + c] / size
    return pd.DataFrame(cols)


def iter_segment_metrics(probs, gt=None, *, class_axis=-1, mode="auto", slice_axis=-1,
                         ignore_index=255, measures=MEASURES, sample_axis=None):
    """Generator form of :func:`segment_metrics` for progress bars and cancellation.

    Yields ``(fraction_done, stage_name)`` after each stage and returns ``(seg, table)`` as the
    generator's return value (``StopIteration.value``; ``yield from`` passes it on). Closing the
    generator between stages stops the work; nothing is modified.

    Parameters and results are those of :func:`segment_metrics`.

    Examples
    --------
    >>> import numpy as np
    >>> gen = iter_segment_metrics(np.full((4, 4, 2), 0.5, np.float32))
    >>> next(gen)
    (0.2, 'validated')
    """
    measures = _check_measures(measures, samples_given=sample_axis is not None)
    a, pred = _canonical(probs, class_axis=class_axis, sample_axis=sample_axis, scale=None,
                         name="probs")
    samples = None
    if sample_axis is not None:
        samples = a
        a = samples.mean(axis=0, dtype=np.float64).astype(np.float32)
        pred = a.reshape(-1, a.shape[-1]).argmax(axis=1).astype(pred.dtype)
    spatial = a.shape[:-1]
    q = a.shape[-1]
    mode, sax = _resolve_mode(mode, len(spatial), slice_axis)
    if gt is not None:
        gt = check_ground_truth(gt, spatial, q, ignore_index=ignore_index)
    pred = pred.reshape(spatial)
    yield 0.2, "validated"

    seg, n, cls, plane = _label_any(pred, mode, sax)
    yield 0.4, "labelled"

    extra_names = [m for m in measures if m in SAMPLE_MEASURES]
    if extra_names:
        mi, var = _sample_maps(samples)
        extra = np.stack([{"MI": mi, "VAR": var}[m] for m in extra_names])
    else:
        extra = np.zeros((0, 1), np.float32)
    order = {"E": 0, "D": 1, "V": 2}
    order.update({m: 3 + j for j, m in enumerate(extra_names)})
    if len(spatial) == 2:
        grid = (spatial[0], 1, spatial[1])
        skip = -1
    else:
        grid = spatial
        skip = -1 if sax is None else sax
    nchunks = max(1, min(numba.get_num_threads(), grid[0] * grid[1]))
    acc = _accumulate(a.reshape(-1, q), seg.reshape(-1), *grid, skip, "E" in measures, extra, n,
                      nchunks)
    table = _build_table(acc, cls, plane, measures, order, q, mode)
    yield 0.8 if gt is not None else 1.0, "measured"

    if gt is not None:
        gtseg, ngt, _, _ = _label_any(gt, mode, sax)
        has_ignore = ignore_index is not None
        iou, iou_adj = _overlaps(pred.reshape(-1), seg.reshape(-1), gt.reshape(-1),
                                 gtseg.reshape(-1), n, ngt,
                                 int(ignore_index) if has_ignore else -1, has_ignore)
        table["iou"] = iou
        table["iou_adj"] = iou_adj
        yield 1.0, "compared with ground truth"
    return seg, table


def segment_metrics(probs, gt=None, *, class_axis=-1, mode="auto", slice_axis=-1,
                    ignore_index=255, measures=MEASURES, sample_axis=None):
    """Segment the prediction and compute the MetaSeg metrics of every segment.

    Parameters
    ----------
    probs : array_like
        Softmax output: 2D or 3D spatial axes plus a class axis (validated and normalised as by
        :func:`as_probabilities`), or MC samples with ``sample_axis``.
    gt : array_like of int, optional
        Ground-truth class ids, spatial shape of ``probs``; adds ``iou`` and ``iou_adj``.
    class_axis : int, default -1
        Class axis of ``probs``.
    mode : {"auto", "2d", "3d", "slices"}, default "auto"
        Segmentation mode (see :func:`label_segments`).
    slice_axis : int, default -1
        Slice axis in ``"slices"`` mode, counted over the spatial axes.
    ignore_index : int or None, default 255
        GT id excluded from the quality statistics.
    measures : sequence of str, default ("E", "D", "V")
        Heatmaps to aggregate; ``"MI"`` and ``"VAR"`` need ``sample_axis``.
    sample_axis : int or None, default None
        Axis of ``probs`` holding MC samples; their mean is the probability used everywhere.

    Returns
    -------
    seg : numpy.ndarray of int32
        Segment ids ``1..n`` with the spatial shape of ``probs``.
    table : pandas.DataFrame
        One row per segment, ordered by ``index``: ``index``, ``slice`` (slices mode),
        ``class``, ``S``, ``S_in``, ``S_bd``, ``S_rel``, ``S_rel_in``, per measure ``H``:
        ``H``, ``H_in``, ``H_bd``, ``H_rel``, ``H_rel_in``; ``cprob0 ..``; with ``gt`` also
        ``iou`` and ``iou_adj`` (NaN for a segment lying entirely on ignored pixels).

    Raises
    ------
    ValueError
        Invalid probabilities or ground truth (see :func:`as_probabilities` and
        :func:`check_ground_truth`), unknown mode or measure.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((3, 3, 2), np.float32); p[..., 0] = 0.9; p[..., 1] = 0.1
    >>> p[1, 1] = (0.2, 0.8)
    >>> seg, table = segment_metrics(p)
    >>> table[["index", "class", "S", "S_in"]].to_numpy().tolist()
    [[1, 0, 8, 0], [2, 1, 1, 0]]
    """
    gen = iter_segment_metrics(probs, gt, class_axis=class_axis, mode=mode,
                               slice_axis=slice_axis, ignore_index=ignore_index,
                               measures=measures, sample_axis=sample_axis)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
