"""Pixel-wise dispersion heatmaps of a probability map.

All heatmaps lie in [0, 1], 1 meaning most uncertain. With ``p1 >= p2`` the two largest class
probabilities at a pixel and ``q`` the number of classes:

* ``E`` entropy ``-sum_y p_y log p_y / log q``
* ``D`` probability margin ``1 - p1 + p2``
* ``V`` variation ratio ``1 - p1``
* ``MI`` (MC samples) mutual information ``H(mean) - mean(H(sample))``, normalised by ``log q``
* ``VAR`` (MC samples) per-class variance over samples, averaged over classes (at most 0.25)

The entropy needs one logarithm per probability, which dominates the cost of a fused pass; a
float32 logarithm written with integer bit operations and a short odd polynomial vectorises
(plain ``logf`` does not), and is accurate to about 1e-7.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .inputs import _canonical, readonly
from .parallel import bounds, run_chunks

__all__ = ["MEASURES", "SAMPLE_MEASURES", "dispersion_maps"]

#: Heatmaps computed from the (mean) probabilities.
MEASURES = ("E", "D", "V")
#: Heatmaps that need MC-dropout / ensemble samples.
SAMPLE_MEASURES = ("MI", "VAR")

_LN2 = np.float32(0.6931471805599453)
_MANT = np.float32(1.0 / (1 << 23))
_SQRT2 = np.float32(1.4142135623730951)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
# Minimax coefficients of (log(1 + x) - x + x^2 / 2) / x^3 on [sqrt(1/2) - 1, sqrt(2) - 1]
# (Cephes' logf), highest degree first.
_LOG_P = (
    np.float32(7.0376836292e-2),
    np.float32(-1.1514610310e-1),
    np.float32(1.1676998740e-1),
    np.float32(-1.2420140846e-1),
    np.float32(1.4249322787e-1),
    np.float32(-1.6668057665e-1),
    np.float32(2.0000714765e-1),
    np.float32(-2.4999993993e-1),
    np.float32(3.3333331174e-1),
)
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8 = _LOG_P


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _split_floats(bits, out_m, out_e, n):
    """Mantissa in [1, 2) (as float32 bits, in ``out_m``) and unbiased exponent (``out_e``).

    Kept apart from the float arithmetic of :func:`_plogp`: an integer-only loop and a
    float-only loop each vectorise, one loop mixing both does not (LLVM keeps it scalar).
    """
    for j in range(n):
        b = bits[j]
        out_m[j] = (b & 0x7FFFFF) | 0x3F800000
        out_e[j] = np.float32(((b >> 23) & 0xFF) - 127)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _plogp(p, m, e):
    """``p * log(p)`` for float32 ``p = m 2^e`` with ``m`` in [1, 2) (see :func:`_split_floats`).

    ``m`` is folded into [sqrt(1/2), sqrt(2)), ``x = m - 1`` and
    ``log(1 + x) = x - x^2/2 + x^3 P(x)`` with a degree-8 minimax polynomial (about 1 ulp;
    no division, no branch, so it vectorises). ``p = 0`` (``e = -127``) gives 0, the limit.
    """
    big = np.float32(m > _SQRT2)
    m = m * (_ONE - _HALF * big)
    e = e + big
    x = m - _ONE
    z = x * x
    poly = _P0 * x + _P1
    poly = poly * x + _P2
    poly = poly * x + _P3
    poly = poly * x + _P4
    poly = poly * x + _P5
    poly = poly * x + _P6
    poly = poly * x + _P7
    poly = poly * x + _P8
    logm = x - _HALF * z + x * z * poly
    return p * (e * _LN2 + logm)


@njit(cache=True, nogil=True)
def padded_stride(w):
    """Row stride (in float32) of a class-major buffer for ``w`` pixels.

    Rounded up to 16 and then 16 more, so consecutive class rows never sit a multiple of 4 KiB
    apart (which would map them to the same L1 cache sets and make the transposition thrash).
    """
    return w + (-w) % 16 + 16


@njit(cache=True, nogil=True)
def _measure_scratch(n, q):
    """Buffers for :func:`_class_major_measures` over up to ``n`` pixels of ``q`` classes.

    ``(tr, tri, ws, ent, p1, p2, mbits, mant, expo)``: the class-major probabilities
    ``tr[c * ws + p]`` and their int32 view, its padded row stride, and per-pixel scratch
    (``mant`` is a float32 view of ``mbits``).
    """
    ws = padded_stride(n)
    tr = np.empty(ws * q, np.float32)
    mbits = np.empty(n, np.int32)
    return (tr, tr.view(np.int32), ws, np.empty(n, np.float32), np.empty(n, np.float32),
            np.empty(n, np.float32), mbits, mbits.view(np.float32), np.empty(n, np.float32))


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _class_major_measures(scratch, n, q, want_e, e_out, d_out, v_out, inv_logq):
    """E, D, V of ``n`` pixels whose probabilities sit class-major in ``scratch``'s ``tr``.

    Every loop runs over pixels with unit stride and vectorises: the running top two
    probabilities and the p log p terms.
    """
    tr, tri, ws, ent, p1, p2, mbits, mant, expo = scratch
    for p in range(n):
        p1[p] = tr[p]
        p2[p] = 0.0
        ent[p] = 0.0
    for c in range(1, q):
        off = c * ws
        for p in range(n):
            v = tr[off + p]
            p2[p] = max(p2[p], min(p1[p], v))
            p1[p] = max(p1[p], v)
    if want_e:
        for c in range(q):
            off = c * ws
            _split_floats(tri[off : off + n], mbits, expo, n)
            for p in range(n):
                ent[p] += _plogp(tr[off + p], mant[p], expo[p])
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for p in range(n):
        e_out[p] = min(max(-ent[p] * inv_logq, zero), one)
        d_out[p] = min(max(one - p1[p] + p2[p], zero), one)
        v_out[p] = min(max(one - p1[p], zero), one)


_BLOCK = 1024


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _maps_kernel(flat, want_e, e_out, d_out, v_out, blk_lo, blk_hi):
    """E, D, V of the pixels of blocks ``blk_lo .. blk_hi-1`` (``_BLOCK`` pixels each)."""
    n, q = flat.shape
    pf = flat.reshape(-1)
    inv_logq = np.float32(1.0 / np.log(q))
    scratch = _measure_scratch(min(_BLOCK, n), q)
    tr = scratch[0]
    ws = scratch[2]
    for blk in range(blk_lo, blk_hi):
        lo = blk * _BLOCK
        w = min(n, lo + _BLOCK) - lo
        for c in range(q):  # class by class: unit-stride stores, strided loads
            for j in range(w):  # unsigned indices: numba does not wrap them (see metrics)
                tr[np.uint64(c * ws + j)] = pf[np.uint64((lo + j) * q + c)]
        _class_major_measures(scratch, w, q, want_e, e_out[lo : lo + w], d_out[lo : lo + w],
                              v_out[lo : lo + w], inv_logq)


@njit(cache=True, nogil=True)
def _sample_maps_kernel(samples, mi_out, var_out, lo, hi):
    """MI and VAR of pixels ``lo .. hi-1`` from (T, n, q) samples, in float64 (a rarely used,
    small path)."""
    t, _, q = samples.shape
    inv_logq = 1.0 / np.log(q)
    for i in range(lo, hi):
        h_mean = 0.0
        mean_h = 0.0
        var = 0.0
        for c in range(q):
            s = 0.0
            ss = 0.0
            for k in range(t):
                v = np.float64(samples[k, i, c])
                s += v
                ss += v * v
                if v > 0.0:
                    mean_h -= v * np.log(v)
            m = s / t
            if m > 0.0:
                h_mean -= m * np.log(m)
            var += max(ss / t - m * m, 0.0)
        mi = (h_mean - mean_h / t) * inv_logq
        mi_out[i] = min(max(mi, 0.0), 1.0)
        var_out[i] = var / q


def _check_measures(measures, *, samples_given):
    if isinstance(measures, str):
        measures = (measures,)
    measures = tuple(measures)
    known = MEASURES + SAMPLE_MEASURES
    for m in measures:
        if m not in known:
            raise ValueError(f"unknown measure {m!r}; expected some of {known}")
        if m in SAMPLE_MEASURES and not samples_given:
            raise ValueError(f"measure {m!r} needs MC samples (samples= / sample_axis=)")
    if len(set(measures)) != len(measures):
        raise ValueError(f"measures {measures} name a measure twice")
    return measures


def _sample_maps(samples):
    """MI and VAR maps (float32, flat) from validated (T, ..., q) samples."""
    t = samples.shape[0]
    q = samples.shape[-1]
    flat = samples.reshape(t, -1, q)
    n = flat.shape[1]
    mi = np.empty(n, np.float32)
    var = np.empty(n, np.float32)
    flat = readonly(flat)
    nchunks = max(1, min(64, n // 1024))
    run_chunks(lambda ch: _sample_maps_kernel(flat, mi, var, *bounds(n, nchunks, ch)), nchunks)
    return mi, var


def dispersion_maps(probs, *, measures=MEASURES, samples=None, class_axis=-1, sample_axis=0):
    """Pixel-wise dispersion heatmaps of a probability map.

    Parameters
    ----------
    probs : array_like
        Probabilities, spatial axes plus a class axis (validated by :func:`as_probabilities`).
    measures : sequence of str, default ("E", "D", "V")
        Any of ``"E"`` (normalised entropy), ``"D"`` (probability margin), ``"V"`` (variation
        ratio), and with ``samples`` also ``"MI"`` (mutual information) and ``"VAR"``.
    samples : array_like or None
        MC-dropout / ensemble samples, ``(T,) + probs.shape`` by default (see ``sample_axis``).
    class_axis : int, default -1
        Class axis of ``probs`` (and of ``samples``).
    sample_axis : int, default 0
        Sample axis of ``samples``.

    Returns
    -------
    dict of str to numpy.ndarray
        One float32 map per measure, spatial shape, values in [0, 1].

    Raises
    ------
    ValueError
        Invalid probabilities, unknown measures, ``MI``/``VAR`` without samples, samples whose
        spatial shape or class count differ from ``probs``.

    Examples
    --------
    >>> import numpy as np
    >>> maps = dispersion_maps(np.full((2, 2, 4), 0.25, np.float32))
    >>> [round(float(maps[m].max()), 6) for m in ("E", "D", "V")]
    [1.0, 1.0, 0.75]
    """
    measures = _check_measures(measures, samples_given=samples is not None)
    p, _ = _canonical(probs, class_axis=class_axis, sample_axis=None, scale=None, name="probs")
    spatial = p.shape[:-1]
    q = p.shape[-1]
    flat = p.reshape(-1, q)
    out = {}
    if any(m in MEASURES for m in measures):
        n = flat.shape[0]
        e, d, v = (np.empty(n, np.float32) for _ in range(3))
        want_e = "E" in measures
        flat = readonly(flat)
        nblocks = -(-n // _BLOCK)
        nchunks = min(nblocks, 64)
        run_chunks(lambda ch: _maps_kernel(flat, want_e, e, d, v, *bounds(nblocks, nchunks, ch)),
                   nchunks)
        out.update(E=e, D=d, V=v)
    if samples is not None:
        s_cax = class_axis if class_axis < 0 else class_axis + 1
        s, _ = _canonical(samples, class_axis=s_cax, sample_axis=sample_axis, scale=None,
                          name="samples")
        if s.shape[1:] != p.shape:
            raise ValueError(
                f"samples have per-sample shape {s.shape[1:]} (classes last) but probs has "
                f"{p.shape}; they must match"
            )
        if any(m in SAMPLE_MEASURES for m in measures):
            out["MI"], out["VAR"] = _sample_maps(s)
    return {m: out[m].reshape(spatial) for m in measures}
