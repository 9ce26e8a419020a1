"""Out-of-distribution (OoD) regions: dispersion candidates, region features and their evaluation.

The post-processing of meta-ood (Chan, Rottmann, Gottschalk, ICCV 2021) on a softmax alone:
threshold a dispersion heatmap (by default the normalised entropy E), take the connected regions
above the threshold as OoD candidates (8-connectivity in 2D and within slices, 26 in 3D), and
describe every region by the MetaSeg-style features a meta classifier can use to discard the
false alarms: sizes of the region, its interior and boundary, mean and variance of E, D (margin)
and V (variation ratio) over the three, the mean class probabilities and the shares of the
predicted classes.

A region is a true positive (``hit`` = 1) when it touches an annotated OoD voxel (meta-ood
eq. 6). Evaluation: pixel level AUROC, AUPRC and FPR at 95 % TPR of each heatmap; object level
per threshold the annotated objects touched by a kept region (TP), those touched by none (FN),
the kept regions touching no object (FP), F1 = 2 TP / (2 TP + FP + FN), and the in-distribution
miss rate (the share of in-distribution voxels inside kept regions: voxels whose prediction is
withdrawn as "unknown"), once keeping every candidate and once keeping those the meta classifier
rates as true positives.

Candidates are a small share of a volume (on the lesion brains 0.2 % at E >= 0.5, 4.9 % at
0.3), so labelling and features work on the list of candidate voxels only: a union-find over
the runs of candidates along the last axis (each run joined with the runs it touches in the
earlier neighbouring rows), then one pass over the candidates for the features. The region map
is allocated zeroed and written at the candidates only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numba import njit

from .heatmaps import MEASURES, dispersion_maps
from .inputs import ProbabilityWarning, as_probabilities, readonly
from .segments import _find, _resolve_mode

__all__ = [
    "OodCase",
    "OodEvaluation",
    "PixelCounts",
    "evaluate_ood",
    "evaluation_from_parts",
    "object_counts",
    "ood_objects",
    "ood_region_columns",
    "ood_regions",
    "pixel_scores",
    "region_hits",
    "summarise_counts",
]

#: Accumulator layout of :func:`_region_sums`: size, interior size, then per measure (sum,
#: sum of squares, interior sum, interior sum of squares), then class-probability sums, then
#: predicted-class counts.
_COL_S = 0
_COL_SIN = 1
_COL_M0 = 2
_PER_MEASURE = 4


# ============================================================================================
# Kernels
# ============================================================================================
@njit(cache=True, nogil=True)
def _candidate_runs(idx, d2, join):
    """Runs of consecutive candidates along the last axis (single voxels when ``join`` is False:
    the last axis is the slice axis): ``(row, start, stop, first k)`` of each run."""
    m = idx.size
    n_runs = 0
    for k in range(m):
        if k == 0 or not join or idx[k] != idx[k - 1] + 1 or idx[k] % d2 == 0:
            n_runs += 1
    row = np.empty(n_runs, np.int64)
    start = np.empty(n_runs, np.int64)
    stop = np.empty(n_runs, np.int64)
    kfirst = np.empty(n_runs + 1, np.int64)
    r = -1
    for k in range(m):
        i = idx[k]
        if k == 0 or not join or i != idx[k - 1] + 1 or i % d2 == 0:
            r += 1
            row[r] = i // d2
            start[r] = i % d2
            kfirst[r] = k
        stop[r] = i % d2 + 1
    kfirst[n_runs] = m
    return row, start, stop, kfirst


@njit(cache=True, nogil=True)
def _label_sparse(idx, out, d0, d1, d2, u0, u1, u2):
    """Connected components of the voxels ``idx`` (sorted C-order flat indices in a (d0, d1, d2)
    grid; neighbours along the axes flagged ``u0, u1, u2``, diagonals included).

    Union-find over the runs of candidates along the last axis: each run is united with the
    runs it touches in the (up to four) earlier rows that are its neighbours, found by merging
    the sorted run lists. A component's root is always its first run, so one forward sweep
    numbers the components in the order of their first voxel. ``out`` (int32, zeros,
    d0 * d1 * d2) receives the component id of every listed voxel. Returns ``(n, first)``: the
    count and each component's first flat index.
    """
    row, start, stop, kfirst = _candidate_runs(idx, d2, u2)
    nr = row.size
    nrows = d0 * d1
    row_ptr = np.zeros(nrows + 1, np.int64)
    for r in range(nr):
        row_ptr[row[r] + 1] += 1
    for j in range(nrows):
        row_ptr[j + 1] += row_ptr[j]
    parent = np.arange(nr)
    reach = 1 if u2 else 0  # diagonal / along-row touching only when the last axis counts
    # the (up to four) earlier neighbour rows of the current grid row and, in each, the first run
    # that may still touch: runs of one row come in order, so the pointers only move forward
    nb_row = np.empty(4, np.int64)
    nb_ptr = np.empty(4, np.int64)
    n_nb = 0
    current = -1
    for r in range(nr):
        if row[r] != current:
            current = row[r]
            b = current % d1
            a = current // d1
            n_nb = 0
            for da in range(-1 if u0 else 0, 1):
                aa = a + da
                if aa < 0:
                    continue
                for db in range(-1 if u1 else 0, (2 if u1 else 1) if da < 0 else 0):
                    bb = b + db
                    if bb < 0 or bb >= d1 or (da == 0 and db == 0):
                        continue
                    nb_row[n_nb] = aa * d1 + bb
                    nb_ptr[n_nb] = row_ptr[aa * d1 + bb]
                    n_nb += 1
        lo = start[r] - reach
        hi = stop[r] + reach
        for s_ in range(n_nb):
            end = row_ptr[nb_row[s_] + 1]
            t = nb_ptr[s_]
            while t < end and stop[t] <= lo:
                t += 1
            nb_ptr[s_] = t
            while t < end and start[t] < hi:
                rr = _find(parent, r)
                rt = _find(parent, t)
                if rt < rr:
                    parent[rr] = rt
                elif rr < rt:
                    parent[rt] = rr
                t += 1
    lab = np.empty(nr, np.int32)
    first = np.empty(nr, np.int64)
    n = 0
    for r in range(nr):
        root = _find(parent, r)
        if root == r:
            first[n] = idx[kfirst[r]]
            n += 1
            lab[r] = n
        else:
            lab[r] = lab[root]
        for k in range(kfirst[r], kfirst[r + 1]):
            out[idx[k]] = lab[r]
    return n, first[:n]


@njit(cache=True, nogil=True)
def _gather_rows(flat, idx):
    """The rows ``flat[idx]`` (float32) and their argmax (ties to the lower class), in one pass."""
    m = idx.size
    q = flat.shape[1]
    rows = np.empty((m, q), np.float32)
    pred = np.empty(m, np.int64)
    for k in range(m):
        i = idx[k]
        best = 0
        for c in range(q):
            v = np.float32(flat[i, c])
            rows[k, c] = v
            if v > rows[k, best]:
                best = c
        pred[k] = best
    return rows, pred


@njit(cache=True, nogil=True)
def _region_sums(pf, pred, e, d, v, reg, idx, d0, d1, d2, u0, u1, u2, nreg, q):
    """Per-region sums over the candidate voxels ``idx`` (row 0 unused); ``pf`` (flat, ``q`` per
    candidate) and ``pred`` hold the candidates' probabilities and classes in ``idx`` order.

    A voxel is interior when every neighbour inside the image (along the axes flagged in
    ``u0, u1, u2``: not the slice axis) belongs to its region; neighbours outside the image are
    ignored, as for segments. Sums are float64, added in C order: the result does not depend on
    threads or builds.
    """
    off_c = _COL_M0 + 3 * _PER_MEASURE
    ncols = off_c + 2 * q
    acc = np.zeros((nreg + 1, ncols))
    lo0 = -1 if u0 else 0
    hi0 = 2 if u0 else 1
    lo1 = -1 if u1 else 0
    hi1 = 2 if u1 else 1
    lo2 = -1 if u2 else 0
    hi2 = 2 if u2 else 1
    for k in range(idx.size):
        i = idx[k]
        r = reg[i]
        c = i % d2
        t = i // d2
        b = t % d1
        a = t // d1
        inside = True
        for da in range(lo0, hi0):  # stops at the first neighbour outside (most voxels are)
            aa = a + da
            if not inside:
                break
            if aa < 0 or aa >= d0:
                continue
            for db in range(lo1, hi1):
                bb = b + db
                if not inside:
                    break
                if bb < 0 or bb >= d1:
                    continue
                nb = (aa * d1 + bb) * d2
                for dc in range(lo2, hi2):
                    cc = c + dc
                    if cc < 0 or cc >= d2:
                        continue
                    if reg[nb + cc] != r:
                        inside = False
                        break
        row = acc[r]
        fin = 1.0 if inside else 0.0
        row[_COL_S] += 1.0
        row[_COL_SIN] += fin
        x = np.float64(e[i])
        row[_COL_M0] += x
        row[_COL_M0 + 1] += x * x
        row[_COL_M0 + 2] += fin * x
        row[_COL_M0 + 3] += fin * x * x
        x = np.float64(d[i])
        row[_COL_M0 + 4] += x
        row[_COL_M0 + 5] += x * x
        row[_COL_M0 + 6] += fin * x
        row[_COL_M0 + 7] += fin * x * x
        x = np.float64(v[i])
        row[_COL_M0 + 8] += x
        row[_COL_M0 + 9] += x * x
        row[_COL_M0 + 10] += fin * x
        row[_COL_M0 + 11] += fin * x * x
        pbase = k * q
        for kk in range(q):
            row[off_c + kk] += np.float64(pf[pbase + kk])
        row[off_c + q + pred[k]] += 1.0
    return acc


@njit(cache=True, nogil=True)
def _pair_hits(reg, lab, nreg, nlab):
    """Distinct (region, object) pairs that share a voxel, as a boolean (nreg + 1, nlab + 1)
    table would be too large: returns the pairs' region ids and object ids (unsorted)."""
    regs = np.empty(1024, np.int64)
    objs = np.empty(1024, np.int64)
    n = 0
    last_r = -1
    last_o = -1
    for i in range(reg.size):
        r = reg[i]
        o = lab[i]
        if r == 0 or o == 0 or (r == last_r and o == last_o):
            continue
        last_r = r
        last_o = o
        if n == regs.size:
            regs = np.concatenate((regs, np.empty(regs.size, np.int64)))
            objs = np.concatenate((objs, np.empty(objs.size, np.int64)))
        regs[n] = r
        objs[n] = o
        n += 1
    return regs[:n], objs[:n]


# ============================================================================================
# Regions
# ============================================================================================
def _grid(shape, mode, sax):
    """(d0, d1, d2) and the axes whose neighbours count (not the slice axis, not 2D's padding)."""
    dims = (1, *shape) if len(shape) == 2 else tuple(shape)
    use = [s > 1 for s in dims]
    if len(shape) == 2:
        use[0] = False
    elif mode == "slices":
        use[sax] = False
    return dims, tuple(use)


def _label_candidates(cand, mode, sax, idx=None):
    """Connected components of the True voxels of ``cand`` (bool, 2D/3D) in ``mode``.

    Returns ``(region_ids int32 of cand's shape, n, plane of each region or None, idx)`` with
    ``idx`` the candidates' flat indices; ids are consecutive in the order of each region's
    first voxel (slice by slice in slices mode).
    """
    shape = cand.shape
    if idx is None:
        idx = np.flatnonzero(cand)
    dims, use = _grid(shape, mode, sax)
    out = np.zeros(cand.size, np.int32)  # zeroed lazily by the OS: only candidate pages are touched
    n, first = _label_sparse(readonly(idx), out, *dims, *use)
    planes = None
    if mode == "slices":
        planes = np.unravel_index(first, shape)[sax].astype(np.int64)
        order = np.lexsort((first, planes))
        if np.any(order != np.arange(n)):  # slice by slice: renumber at the candidates only
            remap = np.empty(n + 1, np.int32)
            remap[0] = 0
            remap[order + 1] = np.arange(1, n + 1, dtype=np.int32)
            out[idx] = remap[out[idx]]
            planes = planes[order]
    return out.reshape(shape), n, planes, idx


def ood_region_columns(n_classes, *, slices=False):
    """Column names of a region table, in order (without ``hit`` / ``p_hit``).

    Parameters
    ----------
    n_classes : int
        Number of classes (``cprob*`` and ``share*`` columns).
    slices : bool
        Whether the table has a ``slice`` column (slices mode).

    Returns
    -------
    list of str

    Example
    -------
    >>> ood_region_columns(2)[:8]
    ['index', 'S', 'S_in', 'S_bd', 'S_rel', 'S_rel_in', 'E', 'E_in']
    """
    cols = ["index"] + (["slice"] if slices else []) + ["S", "S_in", "S_bd", "S_rel", "S_rel_in"]
    for m in MEASURES:
        cols += [m, f"{m}_in", f"{m}_bd", f"{m}_var", f"{m}_in_var", f"{m}_bd_var", f"{m}_rel",
                 f"{m}_rel_in"]
    cols += [f"cprob{c}" for c in range(n_classes)] + [f"share{c}" for c in range(n_classes)]
    return cols


def _mean_var(total, total_sq, count):
    """Mean and variance (population, clipped at 0) of sums over ``count`` values; 0 where empty."""
    safe = np.where(count > 0, count, 1.0)
    mean = np.where(count > 0, total / safe, 0.0)
    var = np.where(count > 0, np.clip(total_sq / safe - mean * mean, 0.0, None), 0.0)
    return mean, var


def _region_table(acc, planes, q):
    acc = acc[1:]
    n = acc.shape[0]
    size = acc[:, _COL_S]
    size_in = acc[:, _COL_SIN]
    size_bd = size - size_in
    denom_bd = np.where(size_bd > 0, size_bd, 1.0)
    s_rel = size / denom_bd
    s_rel_in = size_in / denom_bd
    cols = {"index": np.arange(1, n + 1, dtype=np.int64)}
    if planes is not None:
        cols["slice"] = planes
    cols["S"] = size.astype(np.int64)
    cols["S_in"] = size_in.astype(np.int64)
    cols["S_bd"] = size_bd.astype(np.int64)
    cols["S_rel"] = s_rel
    cols["S_rel_in"] = s_rel_in
    for k, m in enumerate(MEASURES):
        o = _COL_M0 + _PER_MEASURE * k
        tot, tot_sq, tin, tin_sq = (acc[:, o + j] for j in range(_PER_MEASURE))
        mean, var = _mean_var(tot, tot_sq, size)
        mean_in, var_in = _mean_var(tin, tin_sq, size_in)
        mean_bd, var_bd = _mean_var(tot - tin, tot_sq - tin_sq, size_bd)
        cols[m] = mean
        cols[f"{m}_in"] = mean_in
        cols[f"{m}_bd"] = np.clip(mean_bd, 0.0, None)
        cols[f"{m}_var"] = var
        cols[f"{m}_in_var"] = var_in
        cols[f"{m}_bd_var"] = var_bd
        cols[f"{m}_rel"] = mean * s_rel
        cols[f"{m}_rel_in"] = mean_in * s_rel_in
    off = _COL_M0 + _PER_MEASURE * len(MEASURES)
    safe = np.where(size > 0, size, 1.0)
    for c in range(q):
        cols[f"cprob{c}"] = acc[:, off + c] / safe
    for c in range(q):
        cols[f"share{c}"] = acc[:, off + q + c] / safe
    return pd.DataFrame(cols)


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    return float(threshold)


def _check_mask(mask, spatial, name="mask"):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial):
        raise ValueError(f"{name} has shape {mask.shape}; expected the spatial shape {tuple(spatial)}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "iu":
            raise TypeError(f"{name} has dtype {mask.dtype}; expected bool (or integers, nonzero = True)")
        mask = mask != 0
    return mask


def _check_maps(maps, spatial):
    if not isinstance(maps, Mapping) or any(m not in maps for m in MEASURES):
        raise ValueError(f"maps must be a dict holding {MEASURES} (from dispersion_maps of the same "
                         "probabilities)")
    out = {}
    for m in MEASURES:
        a = np.asarray(maps[m])
        if a.shape != tuple(spatial):
            raise ValueError(f"maps[{m!r}] has shape {a.shape}; the probabilities have spatial shape "
                             f"{tuple(spatial)}")
        out[m] = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    return out


def ood_regions(probs, *, threshold=0.5, measure="E", mode="auto", slice_axis=-1, mask=None,
                class_axis=-1, maps=None):
    """OoD candidate regions of a softmax and their meta-ood features.

    Candidates are the voxels where the heatmap ``measure`` is at least ``threshold`` (and
    ``mask`` is True); regions are their connected components.

    Parameters
    ----------
    probs : array_like
        Softmax output: 2D or 3D spatial axes plus a class axis (validated and normalised as by
        :func:`~napari_metaseg.core.as_probabilities`).
    threshold : float, default 0.5
        Candidates: ``heatmap >= threshold``.
    measure : {"E", "D", "V"}, default "E"
        The heatmap thresholded: normalised entropy, probability margin or variation ratio.
    mode : {"auto", "2d", "3d", "slices"}, default "auto"
        Connectivity: 8 in 2D, 26 in 3D, 8 in-plane in slices mode (``auto``: 2d/3d by dimension).
    slice_axis : int, default -1
        Slice axis in slices mode.
    mask : array_like of bool, optional
        Where candidates may lie (spatial shape); default everywhere.
    class_axis : int, default -1
        Class axis of ``probs``.
    maps : dict, optional
        ``dispersion_maps(probs)`` computed already (E, D and V): reused, not recomputed (for
        several thresholds on one case); then only the candidates' probabilities are checked.

    Returns
    -------
    region_ids : numpy.ndarray of int32
        Region ids ``1..n`` (0 outside every region), spatial shape; ids follow the C-order
        position of each region's first voxel (slice by slice in slices mode).
    table : pandas.DataFrame
        One row per region, ordered by ``index``: ``index``, ``slice`` (slices mode), ``S``,
        ``S_in``, ``S_bd``, ``S_rel`` = S / S_bd, ``S_rel_in`` = S_in / S_bd; per measure ``H``
        in E, D, V: the means ``H``, ``H_in``, ``H_bd`` and variances ``H_var``, ``H_in_var``,
        ``H_bd_var`` over region, interior and boundary (0 where empty), ``H_rel``,
        ``H_rel_in``; the mean class probabilities ``cprob0 ..`` and the shares of voxels
        predicted as each class ``share0 ..``.

    Raises
    ------
    ValueError
        Invalid probabilities, unknown measure or mode, a mask or maps of another shape.
    TypeError
        A threshold that is not a number, a mask that is not boolean or integer.

    Example
    -------
    >>> p = np.zeros((4, 5, 2), np.float32); p[..., 0] = 1.0
    >>> p[1:3, 1:3] = 0.5                      # a 2 x 2 block of maximal entropy
    >>> ids, table = ood_regions(p, threshold=0.5)
    >>> table[["index", "S", "S_in", "E"]].to_numpy().tolist()
    [[1.0, 4.0, 0.0, 1.0]]
    """
    threshold = _check_threshold(threshold)
    if measure not in MEASURES:
        raise ValueError(f"measure={measure!r}; expected one of {MEASURES}")
    x = np.asarray(probs)
    if isinstance(class_axis, bool) or not isinstance(class_axis, (int, np.integer)):
        raise TypeError(f"class_axis must be an integer, got {class_axis!r}")
    if not -x.ndim <= class_axis < x.ndim:
        raise ValueError(f"class_axis={class_axis} is out of range for probs of shape {x.shape}")
    moved = np.moveaxis(x, int(class_axis), -1)
    spatial, q = moved.shape[:-1], moved.shape[-1]
    if len(spatial) not in (2, 3):
        raise ValueError(f"probs has {x.ndim} dimensions (shape {x.shape}); expected 3 or 4: 2D or 3D "
                         "spatial axes and a class axis")
    mode, sax = _resolve_mode(mode, len(spatial), slice_axis)
    mask = _check_mask(mask, spatial)
    if maps is None:  # validates the whole map (and raises for invalid probabilities)
        flat_maps = {m: h.reshape(-1) for m, h in dispersion_maps(x, class_axis=class_axis).items()}
    else:
        flat_maps = _check_maps(maps, spatial)
    cand = flat_maps[measure].reshape(spatial) >= np.float32(threshold)
    if mask is not None:
        cand &= mask
    region_ids, n, planes, idx = _label_candidates(cand, mode, sax)
    rows, pred = _candidate_rows(moved, idx, spatial)
    dims, use = _grid(spatial, mode, sax)
    acc = _region_sums(readonly(rows.reshape(-1)), readonly(pred), readonly(flat_maps["E"]),
                       readonly(flat_maps["D"]), readonly(flat_maps["V"]),
                       readonly(region_ids.reshape(-1)), readonly(idx), *dims, *use, n, q)
    return region_ids, _region_table(acc, planes, q)


def _candidate_rows(moved, idx, spatial):
    """Probabilities (validated and normalised like the whole map, float32, C order) and the
    predicted class of the candidate voxels only: the features need no other voxel, and
    gathering them from the input avoids a second pass over the whole map."""
    q = moved.shape[-1]
    if idx.size == 0:
        return np.zeros((0, q), np.float32), np.zeros(0, np.int64)
    if moved.flags.c_contiguous and moved.dtype in (np.float32, np.float64):  # one pass, no copy
        raw, pred = _gather_rows(readonly(moved.reshape(-1, q)), readonly(idx))
    else:
        raw, pred = moved[np.unravel_index(idx, spatial)], None
    with warnings.catch_warnings():  # the whole map's conversion was reported already
        warnings.simplefilter("ignore", ProbabilityWarning)
        rows = as_probabilities(raw[None], class_axis=-1)[0]
    if pred is None or not np.shares_memory(rows, raw):  # converted: the argmax of the result
        rows = np.ascontiguousarray(rows, np.float32)
        pred = rows.argmax(axis=1)
    return rows, pred


# The evaluation lives in its own module; its public names stay importable from here.
from .ood_evaluation import (  # noqa: E402
    OodCase,
    OodEvaluation,
    PixelCounts,
    evaluate_ood,
    evaluation_from_parts,
    object_counts,
    ood_objects,
    pixel_scores,
    region_hits,
    summarise_counts,
)
