"""Validation and normalisation of softmax inputs and ground truth.

Every public entry point of the engine funnels its arrays through here once; the numba
kernels further down the pipeline trust what comes out: float32, C-contiguous, classes last,
finite, non-negative, rows summing to 1 (up to float32 rounding).
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit

from .parallel import bounds, run_chunks

__all__ = ["as_probabilities", "check_ground_truth", "check_ignore_index"]

#: Row sums within this distance of 1 are float rounding: the array is used as given.
SUM_EXACT_TOL = 1e-4
#: Row sums within this distance of 1 are quantisation (uint8 maps, float16): silently renormalised.
SUM_QUIET_TOL = 0.02
#: Negative values down to this are float noise around 0 and are clipped, not reported.
NEGATIVE_NOISE = 1e-6


class ProbabilityWarning(UserWarning):
    """Raised (as a warning) when an input had to be converted to look like probabilities."""


_VBLOCK = 1024
_EXP_MASK = 0x7F800000
_ABS_MASK = 0x7FFFFFFF
_INT32_MAX = 0x7FFFFFFF


@njit(cache=True, nogil=True, error_model="numpy")
def _row_stats(a, pred, ch, nchunks, istats, fstats):
    """Chunk ``ch`` of ``nchunks`` of one pass over an (n, q) float32 array: checks, value range,
    class-sum range, argmax.

    Writes ``istats[ch] = (non-finite count, largest |negative| bits, smallest non-negative bits,
    largest non-negative bits, pixels with class sum <= 0)`` and ``fstats[ch] = (smallest class
    sum, largest class sum)``. The value checks run on the int32 bit patterns (exponent all ones
    = NaN/inf; for non-negative floats integer order is float order), so they vectorise without
    fast-math. The argmax (ties to the lower class, like ``np.argmax``) is written to ``pred``; it
    does not change under the renormalisation or softmax applied afterwards, so no second pass is
    needed.
    """
    n, q = a.shape
    flat = a.reshape(-1)
    bits = flat.view(np.int32)
    nblocks = (n + _VBLOCK - 1) // _VBLOCK
    nf = 0
    negm = np.int32(0)
    pmin = np.int32(_INT32_MAX)
    pmax = np.int32(0)
    lsmin = np.inf
    lsmax = -np.inf
    zr = 0
    uq = np.uint64(q)
    for blk in range(ch * nblocks // nchunks, (ch + 1) * nblocks // nchunks):
        lo = blk * _VBLOCK
        w = min(n, lo + _VBLOCK) - lo
        # Loops index slices of the block from 0, or with unsigned indices: numba wraps every
        # signed index that might be negative (a compare and a select per access), which keeps
        # LLVM from vectorising and costs several times the memory floor.
        block_bits = bits[lo * q : (lo + w) * q]
        for k in range(block_bits.size):
            b = block_bits[k]
            nf += (b & _EXP_MASK) == _EXP_MASK
            neg = b < 0
            negm = max(negm, np.int32(b & _ABS_MASK) if neg else np.int32(0))
            pmin = min(pmin, np.int32(_INT32_MAX) if neg else b)
            pmax = max(pmax, b)
        # four pixels at a time, each summed and compared class by class: four independent
        # chains keep the adder busy (one pixel's sum waits on every add), and transposing the
        # block to vectorise over pixels costs more in scattered stores than it saves
        block = flat[lo * q : (lo + w) * q]
        block_pred = pred[lo : lo + w]
        for j in range(0, w, 4):
            if j + 4 <= w:
                s0 = np.uint64(j) * uq
                s1, s2, s3 = s0 + uq, s0 + uq + uq, s0 + uq + uq + uq
                b0, b1, b2, b3 = block[s0], block[s1], block[s2], block[s3]
                t0, t1, t2, t3 = b0, b1, b2, b3
                a0 = a1 = a2 = a3 = 0
                for c in range(1, q):
                    cu = np.uint64(c)
                    v0, v1, v2, v3 = block[s0 + cu], block[s1 + cu], block[s2 + cu], block[s3 + cu]
                    t0 += v0
                    t1 += v1
                    t2 += v2
                    t3 += v3
                    if v0 > b0:
                        b0, a0 = v0, c
                    if v1 > b1:
                        b1, a1 = v1, c
                    if v2 > b2:
                        b2, a2 = v2, c
                    if v3 > b3:
                        b3, a3 = v3, c
                block_pred[j], block_pred[j + 1], block_pred[j + 2], block_pred[j + 3] = a0, a1, a2, a3
                u0, u1 = np.float64(t0), np.float64(t1)
                u2, u3 = np.float64(t2), np.float64(t3)
                lsmin = min(lsmin, u0, u1, u2, u3)
                lsmax = max(lsmax, u0, u1, u2, u3)
                zr += (u0 <= 0.0) + (u1 <= 0.0) + (u2 <= 0.0) + (u3 <= 0.0)
            else:
                for jj in range(j, w):
                    src = np.uint64(jj) * uq
                    best = block[src]
                    total = best
                    arg = 0
                    for c in range(1, q):
                        v = block[src + np.uint64(c)]
                        total += v
                        if v > best:
                            best, arg = v, c
                    block_pred[jj] = arg
                    u = np.float64(total)
                    lsmin = min(lsmin, u)
                    lsmax = max(lsmax, u)
                    zr += u <= 0.0
    istats[ch, 0] = nf
    istats[ch, 1] = negm
    istats[ch, 2] = pmin
    istats[ch, 3] = pmax
    istats[ch, 4] = zr
    fstats[ch, 0] = lsmin
    fstats[ch, 1] = lsmax


def readonly(a):
    """A read-only view of ``a``.

    Kernels get every input array read-only, so numba compiles one specialisation per dtype
    and layout, not two (writable and read-only inputs are different numba types, and two
    compilations may vectorise differently, which would change results in the last bits).
    """
    view = a.view()
    view.flags.writeable = False
    return view


def _bits_to_float(b):
    return float(np.array([b], np.int32).view(np.float32)[0])


def _value_stats(flat, pred):
    """:func:`_row_stats` over all chunks, in threads, with the bit-level extremes turned back
    into floats."""
    nchunks = max(1, min(-(-flat.shape[0] // _VBLOCK), 64))
    istats = np.empty((nchunks, 5), np.int64)
    fstats = np.empty((nchunks, 2), np.float64)
    a = readonly(flat)
    run_chunks(lambda ch: _row_stats(a, pred, ch, nchunks, istats, fstats), nchunks)
    nonfinite, zero_rows = istats[:, 0].sum(), istats[:, 4].sum()
    negmag, posmin, posmax = istats[:, 1].max(), istats[:, 2].min(), istats[:, 3].max()
    smin, smax = fstats[:, 0].min(), fstats[:, 1].max()
    vmin = -_bits_to_float(negmag) if negmag > 0 else _bits_to_float(posmin)
    vmax = _bits_to_float(posmax) if posmin != _INT32_MAX else -_bits_to_float(negmag)
    return int(nonfinite), vmin, vmax, float(smin), float(smax), int(zero_rows)


@njit(cache=True, nogil=True)
def _renormalise(a, out, lo, hi):
    """Clip float noise below 0 and divide every row ``lo .. hi-1`` by its sum."""
    q = a.shape[1]
    for i in range(lo, hi):
        s = 0.0
        for c in range(q):
            s += max(a[i, c], 0.0)
        inv = 1.0 / s
        for c in range(q):
            out[i, c] = max(a[i, c], 0.0) * inv


@njit(cache=True, nogil=True)
def _softmax(a, out, lo, hi):
    """Softmax of every row ``lo .. hi-1``."""
    q = a.shape[1]
    for i in range(lo, hi):
        m = a[i, 0]
        for c in range(1, q):
            m = max(m, a[i, c])
        s = 0.0
        for c in range(q):
            e = np.exp(np.float64(a[i, c]) - m)
            out[i, c] = e
            s += e
        inv = 1.0 / s
        for c in range(q):
            out[i, c] = out[i, c] * inv


@njit(cache=True, nogil=True)
def _count_bad_ids(g, q, ignore, has_ignore):
    n_bad = 0
    lo = np.int64(2**40)
    hi = -lo
    for i in range(g.size):
        v = g[i]
        if (v < 0 or v >= q) and not (has_ignore and v == ignore):
            n_bad += 1
            lo = min(lo, v)
            hi = max(hi, v)
    return n_bad, lo, hi


def _rowwise(kernel, a, out):
    """``kernel(a, out, lo, hi)`` over all rows of ``a``, in threads."""
    n = a.shape[0]
    nchunks = max(1, min(64, n // 4096))
    a = readonly(a)
    run_chunks(lambda ch: kernel(a, out, *bounds(n, nchunks, ch)), nchunks)


def _pred_dtype(q):
    return np.uint8 if q <= 256 else np.int32


def _to_float32(x, scale, name):
    """Convert to float32 (copy only where needed), applying ``scale`` to integer maps."""
    if x.dtype == np.bool_ or np.iscomplexobj(x) or x.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {x.dtype}; expected float16/32/64 or an unsigned integer map")
    if x.dtype.kind in "iu":
        if scale is None:
            if x.dtype.kind == "u":
                scale = 1.0 / np.iinfo(x.dtype).max
            else:
                raise TypeError(
                    f"{name} has signed integer dtype {x.dtype}; pass scale= (the value of one step) "
                    "to read it as quantised probabilities"
                )
        out = np.empty(x.shape, np.float32)
        np.multiply(x, np.float32(scale), out=out, casting="unsafe")
        return out
    if scale is not None:
        raise ValueError(f"scale={scale!r} is only meaningful for integer maps; {name} is {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _normalise_axis(axis, ndim, argname):
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{argname} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{argname}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def _canonical(x, *, class_axis, sample_axis, scale, name):
    """Validate ``x`` and return ``(probs, pred)``.

    ``probs`` is float32, C-contiguous, with the sample axis first (when given) and classes last;
    ``pred`` is the argmax over classes (of the sample mean is computed elsewhere; here it is the
    argmax of each row, used only when there is no sample axis).
    """
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); expected a probability map")
    n_extra = 0 if sample_axis is None else 1
    spatial_ndim = x.ndim - 1 - n_extra
    if spatial_ndim not in (2, 3):
        layout = "(samples, " if n_extra else "("
        raise ValueError(
            f"{name} has {x.ndim} dimensions (shape {x.shape}); expected "
            f"{2 + 1 + n_extra} or {3 + 1 + n_extra}: {layout}2D or 3D spatial axes, a class axis)"
        )
    cax = _normalise_axis(class_axis, x.ndim, "class_axis")
    if sample_axis is not None:
        sax = _normalise_axis(sample_axis, x.ndim, "sample_axis")
        if sax == cax:
            raise ValueError(f"sample_axis and class_axis are both axis {cax}")
        x = np.moveaxis(x, (sax, cax), (0, -1))
    else:
        x = np.moveaxis(x, cax, -1)
    q = x.shape[-1]
    if q < 2:
        raise ValueError(
            f"the class axis (axis {class_axis}) of {name} has size {q}; a probability map needs at "
            "least 2 classes (for a single foreground probability p, stack [1 - p, p])"
        )
    a = _to_float32(x, scale, name)
    flat = a.reshape(-1, q)
    pred = np.empty(flat.shape[0], _pred_dtype(q))
    nonfinite, vmin, vmax, smin, smax, zero_rows = _value_stats(flat, pred)
    if nonfinite:
        raise ValueError(
            f"{name} contains {nonfinite} NaN or inf values; probabilities must be finite"
        )
    owned = not np.may_share_memory(a, x)
    probabilities_range = vmin >= -NEGATIVE_NOISE and vmax <= 1.0 + NEGATIVE_NOISE
    sums_ok = abs(smin - 1.0) <= SUM_QUIET_TOL and abs(smax - 1.0) <= SUM_QUIET_TOL
    if not probabilities_range:
        if vmin < 0 and sums_ok:
            raise ValueError(
                f"{name} has negative probabilities (minimum {vmin:.4g}) although its class sums "
                f"are close to 1 ({smin:.4g}..{smax:.4g}); probabilities must be >= 0"
            )
        warnings.warn(
            f"{name} looks like logits, not probabilities (values {vmin:.4g}..{vmax:.4g}, "
            f"class sums {smin:.4g}..{smax:.4g}); applying softmax over the class axis",
            ProbabilityWarning,
            stacklevel=3,
        )
        out = a if owned else np.empty_like(a)
        _rowwise(_softmax, flat, out.reshape(-1, q))
        return out, pred
    if zero_rows:
        raise ValueError(
            f"{name} has {zero_rows} pixels whose class probabilities are all 0; "
            "every pixel needs a probability distribution"
        )
    exact = (
        abs(smin - 1.0) <= SUM_EXACT_TOL
        and abs(smax - 1.0) <= SUM_EXACT_TOL
        and vmin >= 0.0
    )
    if exact:
        if not owned:
            a = a.view()
            a.flags.writeable = False
        return a, pred
    if not sums_ok:
        warnings.warn(
            f"the class probabilities of {name} sum to {smin:.4g}..{smax:.4g}, off by more than "
            f"{SUM_QUIET_TOL:.0%} from 1; renormalising each pixel",
            ProbabilityWarning,
            stacklevel=3,
        )
    out = a if owned else np.empty_like(a)
    _rowwise(_renormalise, flat, out.reshape(-1, q))
    return out, pred


def as_probabilities(x, *, class_axis=-1, sample_axis=None, scale=None):
    """Validate a softmax output and return it as float32 probabilities, classes last.

    Parameters
    ----------
    x : array_like
        Class probabilities with 2D or 3D spatial axes and one class axis, and optionally a
        leading (or any) sample axis of MC-dropout / ensemble samples. float16/32/64, or
        unsigned integers holding quantised probabilities.
    class_axis : int, default -1
        Axis of ``x`` holding the classes.
    sample_axis : int or None, default None
        Axis of ``x`` holding MC samples; the samples are validated and their mean returned.
    scale : float or None, default None
        Value of one integer step for integer maps; ``None`` means ``1 / dtype max``
        (``1/255`` for uint8).

    Returns
    -------
    numpy.ndarray
        float32, C-contiguous, shape ``spatial + (q,)``. Pixels whose class sums were off by at
        most 2 % (quantisation) are renormalised silently. When ``x`` already is such an array it
        is returned as a read-only view, not copied.

    Raises
    ------
    ValueError
        Empty input, wrong number of dimensions, fewer than 2 classes, NaN/inf, negative
        probabilities, pixels whose probabilities are all 0.
    TypeError
        Non-numeric dtype, or a signed integer map without ``scale``.

    Warns
    -----
    ProbabilityWarning
        Logits (values outside [0, 1]) are softmaxed; class sums off by more than 2 % are
        renormalised.

    Examples
    --------
    >>> import numpy as np
    >>> p = as_probabilities(np.full((4, 4, 3), 85, np.uint8))
    >>> p.dtype, p.shape, float(p.sum(-1).max())
    (dtype('float32'), (4, 4, 3), 1.0)
    """
    a, _ = _canonical(x, class_axis=class_axis, sample_axis=sample_axis, scale=scale, name="x")
    if sample_axis is not None:
        return a.mean(axis=0, dtype=np.float64).astype(np.float32)
    return a


def check_ignore_index(ignore_index, n_classes):
    """Refuse an ``ignore_index`` that is also a real class id (``0 <= ignore_index < n_classes``).

    The kernels leave every pixel whose label equals ``ignore_index`` out of IoU and label-error
    statistics; with 256 or more classes the default 255 would silently drop class 255.

    Raises
    ------
    ValueError
        Naming the collision and the fix.

    Examples
    --------
    >>> check_ignore_index(255, 4)
    >>> check_ignore_index(None, 300)
    """
    if ignore_index is not None and 0 <= int(ignore_index) < int(n_classes):
        ign, q = int(ignore_index), int(n_classes)
        raise ValueError(
            f"ignore_index={ign} is also a class id: the probabilities have {q} classes (0..{q - 1}), "
            f"so the pixels labelled {ign} would be left out of the statistics as unlabelled. Pass "
            "ignore_index=None (CLI: --ignore-index none; panels: -1), or the id your ground truth "
            f"uses for unlabelled pixels if it is {q} or more")


def check_ground_truth(gt, spatial_shape, n_classes, *, ignore_index=255, name="gt"):
    """Validate ground truth class ids against a probability map.

    Parameters
    ----------
    gt : array_like
        Integer class ids (or a float array holding integers) with the spatial shape of the
        probabilities.
    spatial_shape : tuple of int
        Spatial shape of the probabilities.
    n_classes : int
        Number of classes ``q``; valid ids are ``0 .. q-1`` and ``ignore_index``.
    ignore_index : int or None, default 255
        Id of pixels excluded from the quality statistics.

    Returns
    -------
    numpy.ndarray
        C-contiguous, same shape: uint8 when every value fits (no copy when the input already is
        C-contiguous uint8), else int32.

    Raises
    ------
    ValueError
        Shape mismatch, non-integer values, ids outside ``0 .. q-1`` other than ``ignore_index``,
        or an ``ignore_index`` that is also a class id (see :func:`check_ignore_index`).

    Examples
    --------
    >>> check_ground_truth(np.array([[0, 1], [255, 1]]), (2, 2), 2).dtype
    dtype('uint8')
    """
    check_ignore_index(ignore_index, n_classes)
    gt = np.asarray(gt)
    if tuple(gt.shape) != tuple(spatial_shape):
        raise ValueError(
            f"{name} has shape {gt.shape} but the probabilities have spatial shape "
            f"{tuple(spatial_shape)}; they must match"
        )
    if gt.dtype == np.bool_:
        gt = gt.astype(np.int32)
    if gt.dtype.kind == "f":
        if not np.all(np.isfinite(gt)):
            raise ValueError(f"{name} contains NaN or inf; expected integer class ids")
        if not np.array_equal(gt, np.round(gt)):
            raise ValueError(f"{name} is a float array with non-integer values; expected integer class ids")
    elif gt.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {gt.dtype}; expected integer class ids")
    lo, hi = (int(gt.min()), int(gt.max()))
    ign = None if ignore_index is None else int(ignore_index)
    if lo < 0 or hi >= n_classes:
        if max(abs(lo), abs(hi)) >= 2**31:
            raise ValueError(f"{name} contains class ids {lo}..{hi}, far outside 0..{n_classes - 1}")
        gt = np.ascontiguousarray(gt, dtype=np.int32)
        n_bad, bad_lo, bad_hi = _count_bad_ids(gt.reshape(-1), n_classes, -1 if ign is None else ign,
                                               ign is not None)
        if n_bad:
            raise ValueError(
                f"{name} contains {n_bad} pixels with class ids in {bad_lo}..{bad_hi}, outside "
                f"0..{n_classes - 1} (the probabilities have {n_classes} classes) and not "
                f"ignore_index={ignore_index}"
            )
    return np.ascontiguousarray(gt, dtype=np.uint8 if 0 <= lo and hi <= 255 else np.int32)
