"""Per-segment MetaSeg metrics and segment quality against ground truth.

One fused pass over the probabilities accumulates, per segment, the size, the interior size,
the sums of every heatmap over the segment and its interior, and the class-probability sums; the
heatmaps are computed on the fly and never stored, so the extra memory is the class map, the
segment map and the per-segment accumulators. A second pass over the class maps (no
probabilities) counts the overlaps that IoU and IoU_adj need.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from ..names import IOU_ADJ
from .heatmaps import (
    MEASURES,
    SAMPLE_MEASURES,
    _check_measures,
    _class_major_measures,
    _measure_scratch,
    _sample_maps,
)
from .inputs import _canonical, check_ground_truth, readonly
from .iou_local import local_iou_adj
from .parallel import run_chunks
from .segments import _label_any, _resolve_mode

__all__ = ["iter_segment_metrics", "metric_columns", "segment_metrics"]

# Accumulator columns: size, interior size, then (sum, interior sum) per measure, then class sums.
_COL_S = 0
_COL_SIN = 1
_COL_M0 = 2


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _gather_row(src, base, stride, n, out):
    for j in range(n):
        out[j] = src[np.uint64(base + j * stride)]  # unsigned: numba does not wrap it (see below)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _accumulate(flat, seg, dims, strides, use, want_e, extra, ch, nchunks, rows_per_block, acc):
    """Per-segment sums of chunk ``ch`` of ``nchunks`` added to ``acc``, a zeroed
    (nseg + 1, ncols) float64 array (row 0 unused).

    The spatial grid is seen as (A, B, C) with pixel strides ``strides``: rows run along C and
    blocks are ``rows_per_block`` consecutive rows along B at one A, so a slice-wise volume whose
    slice axis is the contiguous one is still read along in-plane rows. ``use`` says along which
    of A, B, C neighbours count for the interior (not the slice axis, not a size-1 axis).

    Per block: probabilities transposed to class-major order, heatmaps by unit-stride loops,
    segment ids gathered row by row, interior flags from branch-free comparisons with the
    neighbouring rows, then one accumulator update per run of equal segment id.
    """
    q = flat.shape[1]
    n_extra = extra.shape[0]
    nm = 3 + n_extra
    off_c = _COL_M0 + 2 * nm
    pf = flat.reshape(-1)
    da_, db_, dc_ = dims
    sa, sb, sc = strides
    use_a, use_b, use_c = use
    w = dc_
    k = rows_per_block
    pmax = k * w
    inv_logq = np.float32(1.0 / np.log(q))
    nbb = (db_ + k - 1) // k
    nwork = da_ * nbb
    scratch = _measure_scratch(pmax, q)
    tr = scratch[0]
    ws = scratch[2]
    maps = np.empty((nm, pmax), np.float32)
    sbuf = np.empty(pmax, np.int32)
    nbuf = np.empty(w, np.int32)
    nplanes = np.empty((2, pmax), np.int32)
    inside = np.empty(pmax, np.bool_)
    insf = np.empty(pmax, np.float32)
    for item in range(ch * nwork // nchunks, (ch + 1) * nwork // nchunks):
        a = item // nbb
        b0 = (item - a * nbb) * k
        nrows = min(k, db_ - b0)
        npx = nrows * w
        # probabilities of the block, class-major; when B is the contiguous axis (slices
        # along the last axis) the block's rows are read column by column, so every read is
        # a contiguous stretch of memory rather than one pixel per cache line
        # (unsigned indices: numba wraps every signed index that might be negative, a compare
        # and a select per access that keeps these copies from vectorising)
        if sb == 1:
            for j in range(w):
                colbase = a * sa + b0 + j * sc
                for i in range(nrows):
                    src = (colbase + i) * q
                    p = i * w + j
                    for c in range(q):
                        tr[np.uint64(c * ws + p)] = pf[np.uint64(src + c)]
                    sbuf[p] = seg[np.uint64(colbase + i)]
        else:
            # class by class: unit-stride stores, strided (vectorised gather) loads
            for i in range(nrows):
                rowbase = a * sa + (b0 + i) * sb
                for c in range(q):
                    dst = c * ws + i * w
                    for j in range(w):
                        tr[np.uint64(dst + j)] = pf[np.uint64((rowbase + j * sc) * q + c)]
                _gather_row(seg, rowbase, sc, w, sbuf[i * w : (i + 1) * w])
        _class_major_measures(scratch, npx, q, want_e, maps[0], maps[1], maps[2], inv_logq)
        for i in range(nrows):
            rowbase = a * sa + (b0 + i) * sb
            for x in range(n_extra):
                _gather_row(extra[x], rowbase, sc, w, maps[3 + x, i * w : (i + 1) * w])
        # with B contiguous, the neighbouring planes' rows (a +- 1, same b) of the whole
        # block are read column by column too
        if sb == 1 and use_a:
            for side in range(2):
                an = a - 1 + 2 * side
                if 0 <= an < da_:
                    for j in range(w):
                        colbase = an * sa + b0 + j * sc
                        for i in range(nrows):
                            nplanes[side, i * w + j] = seg[np.uint64(colbase + i)]
        # interior flags, row by row
        for i in range(nrows):
            b = b0 + i
            srow = sbuf[i * w : (i + 1) * w]
            irow = inside[i * w : (i + 1) * w]
            irow[:] = True
            if use_c:
                _and_row(irow, srow, srow, w, use_c)
            for da in range(-1, 2):
                if da != 0 and (not use_a or a + da < 0 or a + da >= da_):
                    continue
                for db in range(-1, 2):
                    if db != 0 and (not use_b or b + db < 0 or b + db >= db_):
                        continue
                    if da == 0 and db == 0:
                        continue
                    if da == 0 and 0 <= i + db < nrows:
                        _and_row(irow, srow, sbuf[(i + db) * w : (i + db + 1) * w], w, use_c)
                    elif sb == 1 and db == 0:
                        side = (da + 1) // 2
                        _and_row(irow, srow, nplanes[side, i * w : (i + 1) * w], w, use_c)
                    else:
                        nbase = (a + da) * sa + (b + db) * sb
                        _gather_row(seg, nbase, sc, w, nbuf)
                        _and_row(irow, srow, nbuf, w, use_c)
        # one accumulator update per run of equal segment id
        for p in range(npx):
            insf[p] = np.float32(inside[p])
        p0 = 0
        while p0 < npx:
            sid = sbuf[p0]
            p_end = p0 + 1
            while p_end < npx and sbuf[p_end] == sid:
                p_end += 1
            row = acc[sid]
            n_in = np.float32(0.0)
            for p in range(p0, p_end):
                n_in += insf[p]
            row[_COL_S] += p_end - p0
            row[_COL_SIN] += n_in
            # float64 sums: whatever order vectorisation adds them in, the result moves
            # by ~1e-16 only, so tables agree across processes, threads and builds
            for m in range(nm):
                mrow = maps[m]
                tot = 0.0
                tin = 0.0
                for p in range(p0, p_end):
                    v = mrow[p]
                    tot += np.float64(v)
                    tin += np.float64(v * insf[p])
                row[_COL_M0 + 2 * m] += tot
                row[_COL_M0 + 2 * m + 1] += tin
            for c in range(q):
                tot = 0.0
                for p in range(c * ws + p0, c * ws + p_end):
                    tot += np.float64(tr[p])
                row[off_c + c] += tot
            p0 = p_end


@njit(cache=True, nogil=True)
def _overlaps(pred_runs, gt_runs, nseg, ngt, ignore, has_ignore):
    """IoU and IoU_adj of every segment from the run structures of prediction and GT labels.

    Both run lists tile the same rows, so merging them row by row yields intervals of constant
    (segment, GT component, class, GT class); every count is a sum of interval lengths, and the
    work is proportional to the number of runs, not of pixels.

    For a segment k of class c, with K' the GT components of class c that meet k:
    ``|k ∩ K'|`` is the number of (non-ignored) pixels of k whose GT is c; ``|K'|`` and the
    number of pixels of K' predicted as c (by any segment) are sums over the distinct GT
    components meeting k, found from (segment, component) records.
    """
    ptr_p, start_p, stop_p, lab_p, val_p = pred_runs
    ptr_g, start_g, stop_g, lab_g, val_g = gt_runs
    nrows = ptr_p.size - 1
    nk = np.zeros(nseg + 1, np.int64)
    inter = np.zeros(nseg + 1, np.int64)
    gsize = np.zeros(ngt + 1, np.int64)
    gpred = np.zeros(ngt + 1, np.int64)
    last = np.full(nseg + 1, -1, np.int64)
    nrec = np.zeros(nseg + 2, np.int64)
    offs = nrec
    comps = np.empty(0, np.int32)
    fill = nrec
    # Pass 0 counts, and per segment the number of records (one each time its matching
    # intervals move to another component); pass 1 writes the records grouped by segment.
    for step in range(2):
        if step == 1:
            offs = nrec.copy()  # running sum by hand: np.cumsum costs a compilation of its own
            for k in range(1, offs.size):
                offs[k] += offs[k - 1]
            comps = np.empty(offs[-1], np.int32)
            fill = offs[:-1].copy()
            last[:] = -1
        for r in range(nrows):
            i = ptr_p[r]
            iend = ptr_p[r + 1]
            j = ptr_g[r]
            jend = ptr_g[r + 1]
            while i < iend and j < jend:
                gv = val_g[j]
                if not (has_ignore and gv == ignore):
                    k = lab_p[i]
                    g = lab_g[j]
                    if step == 0:
                        length = min(stop_p[i], stop_g[j]) - max(start_p[i], start_g[j])
                        nk[k] += length
                        gsize[g] += length
                        if val_p[i] == gv:
                            inter[k] += length
                            gpred[g] += length
                    if val_p[i] == gv and last[k] != g:
                        last[k] = g
                        if step == 0:
                            nrec[k + 1] += 1
                        else:
                            comps[fill[k]] = g
                            fill[k] += 1
                if stop_p[i] < stop_g[j]:
                    i += 1
                elif stop_g[j] < stop_p[i]:
                    j += 1
                else:
                    i += 1
                    j += 1
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


_BLOCK_PIXELS = 2048
_MAX_CHUNKS = 8
_CHUNK_BUDGET = 256 * 2**20


def _virtual_grid(spatial, slice_axis):
    """(A, B, C) dims, pixel strides and neighbour use, rows along C (see :func:`_accumulate`).

    2D maps are (1, H, W). In slices mode the slice axis becomes A or B (never C, the row axis):
    a slice axis that is the contiguous one is swapped with the middle axis and read strided.
    """
    if len(spatial) == 2:
        h, w = spatial
        return (1, h, w), (h * w, w, 1), (False, h > 1, w > 1)
    x, y, z = spatial
    dims, strides = (x, y, z), (y * z, z, 1)
    use = [x > 1, y > 1, z > 1]
    if slice_axis == 2:
        dims, strides = (x, z, y), (y * z, 1, z)
        use = [x > 1, False, y > 1]
    elif slice_axis is not None:
        use[slice_axis] = False
    return dims, strides, tuple(use)


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
                         ignore_index=255, measures=MEASURES, sample_axis=None, iou_adj="paper"):
    """Generator form of :func:`segment_metrics` for progress bars and cancellation.

    Yields ``(fraction_done, stage_name)`` after each stage and returns ``(seg, table)`` as the
    generator's return value (``StopIteration.value``; ``yield from`` passes it on). Closing the
    generator between stages stops the work; nothing is modified.

    Parameters and results are those of :func:`segment_metrics`; with ``iou_adj="local"`` and
    ground truth a last stage ``"local IoU_adj"`` follows the comparison with the ground truth.

    Examples
    --------
    >>> import numpy as np
    >>> gen = iter_segment_metrics(np.full((4, 4, 2), 0.5, np.float32))
    >>> next(gen)
    (0.2, 'validated')
    """
    if not isinstance(iou_adj, str) or iou_adj not in IOU_ADJ:
        raise ValueError(f"iou_adj={iou_adj!r}; expected one of {IOU_ADJ} (the paper's definition or "
                         "the authors' local variant)")
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

    seg, n, cls, plane, pred_runs = _label_any(pred, mode, sax)
    yield 0.4, "labelled"

    extra_names = [m for m in measures if m in SAMPLE_MEASURES]
    if extra_names:
        mi, var = _sample_maps(samples)
        extra = np.stack([{"MI": mi, "VAR": var}[m] for m in extra_names])
    else:
        extra = np.zeros((0, 1), np.float32)
    order = {"E": 0, "D": 1, "V": 2}
    order.update({m: 3 + j for j, m in enumerate(extra_names)})
    dims, strides, use = _virtual_grid(spatial, sax)
    block_rows = max(1, _BLOCK_PIXELS // dims[2])
    nwork = dims[0] * -(-dims[1] // block_rows)
    # The work is cut into a number of chunks that depends on the input only, never on the
    # thread count, so results are bit-identical however many threads run them; each chunk
    # holds its own accumulators, so their number is capped by memory.
    ncols = 2 + 2 * (3 + len(extra_names)) + q
    chunk_bytes = (n + 1) * ncols * 8
    nchunks = int(max(1, min(_MAX_CHUNKS, nwork, _CHUNK_BUDGET // chunk_bytes)))
    partial = np.zeros((nchunks, n + 1, ncols))
    args = (readonly(a.reshape(-1, q)), readonly(seg.reshape(-1)), dims, strides, use, "E" in measures,
            readonly(extra))
    run_chunks(lambda ch: _accumulate(*args, ch, nchunks, block_rows, partial[ch]), nchunks)
    acc = partial[0]
    for ch in range(1, nchunks):
        acc += partial[ch]
    table = _build_table(acc, cls, plane, measures, order, q, mode)
    yield 0.8 if gt is not None else 1.0, "measured"

    if gt is not None:
        _, ngt, _, _, gt_runs = _label_any(gt, mode, sax, paint=False)
        has_ignore = ignore_index is not None
        iou, adj_paper = _overlaps(pred_runs, gt_runs, n, ngt, int(ignore_index) if has_ignore else -1,
                                   has_ignore)
        table["iou"] = iou
        if iou_adj == "local":
            yield 0.9, "compared with ground truth"
            table["iou_adj"] = local_iou_adj(pred, gt, seg, n, q, mode, sax, ignore_index)
            yield 1.0, "local IoU_adj"
        else:
            table["iou_adj"] = adj_paper
            yield 1.0, "compared with ground truth"
    return seg, table


def segment_metrics(probs, gt=None, *, class_axis=-1, mode="auto", slice_axis=-1,
                    ignore_index=255, measures=MEASURES, sample_axis=None, iou_adj="paper"):
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
    iou_adj : {"paper", "local"}, default "paper"
        Definition of IoU_adj (docs/engine.md). For a segment ``k`` of class ``c``, both have
        the numerator ``|k ∩ {gt = c}|`` and count only non-ignored pixels; with ``A_c`` the
        pixels whose ground truth is ``c`` and whose prediction is not:

        * ``"paper"`` (MetaSeg paper): ``|k ∩ K'| / |k ∪ (K' − Q)|`` with ``K'`` the
          ground-truth components of class ``c`` that meet ``k`` and ``Q`` the other predicted
          segments of class ``c``; the denominator is ``|k| + |K' ∩ A_c|``.
        * ``"local"`` (the variant the authors' code computes): the denominator is
          ``|k| + |R(k)|``, ``R(k)`` the pixels of ``A_c`` reached by flooding from the
          non-ignored pixels of ``k`` through ``A_c``, neighbours as for the segments (8 in 2D
          and within a slice, 26 in 3D). Pixels of ``K'`` reachable only through another
          segment of class ``c`` are left out; pixels of ``A_c`` next to ``k`` are counted even
          where their ground-truth component does not meet ``k``. Neither value bounds the
          other in general (both are 0 exactly together). Computed only when asked for.

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
        :func:`check_ground_truth`), unknown mode, measure or ``iou_adj``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((3, 3, 2), np.float32); p[..., 0] = 0.9; p[..., 1] = 0.1
    >>> p[1, 1] = (0.2, 0.8)
    >>> seg, table = segment_metrics(p)
    >>> table[["index", "class", "S", "S_in"]].to_numpy().tolist()
    [[1, 0, 8, 0], [2, 1, 1, 0]]

    The two IoU_adj where a ground-truth object (class 1, one row) is cut by a second segment
    of its class: the flood from segment 1 stops at segment 3.

    >>> pred = np.array([[1, 0, 1, 0, 0]])
    >>> p = np.stack([0.8 - 0.6 * pred, 0.2 + 0.6 * pred], -1).astype(np.float32)
    >>> gt = np.ones((1, 5), np.uint8)
    >>> segment_metrics(p, gt)[1]["iou_adj"].tolist()
    [0.25, 0.0, 0.25, 0.0]
    >>> segment_metrics(p, gt, iou_adj="local")[1]["iou_adj"].tolist()
    [0.5, 0.0, 0.25, 0.0]
    """
    gen = iter_segment_metrics(probs, gt, class_axis=class_axis, mode=mode,
                               slice_axis=slice_axis, ignore_index=ignore_index,
                               measures=measures, sample_axis=sample_axis, iou_adj=iou_adj)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
