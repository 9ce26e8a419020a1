"""The local IoU_adj: the variant of IoU_adj the MetaSeg authors' code computes.

For a predicted segment ``k`` of class ``c`` let ``A_c`` be the pixels whose ground truth is ``c``
but whose prediction is not (ignored pixels never belong to it), and ``R(k)`` the pixels of
``A_c`` reached by flooding from ``k``: ``z`` is in ``R(k)`` when a chain of neighbouring pixels
``z0, z1, .., zm = z`` leads to it with ``z0`` a (non-ignored) pixel of ``k`` and ``z1 .. zm`` in
``A_c``, neighbours in the segments' connectivity (8 in 2D and within a slice, 26 in 3D). Then

    IoU_adj_local(k) = |k ∩ {gt = c}| / (|k| + |R(k)|)

with ``|k|`` the non-ignored pixels of ``k``. The paper's IoU_adj has the same numerator and
``|k| + |K' ∩ A_c|`` below (``K'`` the ground-truth components of class ``c`` that meet ``k``),
see :func:`napari_metaseg.core.segment_metrics`.

The flood is computed without a flood per segment: ``R(k)`` is the union of the connected
components of ``A_c`` that touch ``k`` (a component reached at one pixel is reached whole), so
one labelling of ``A = ∪_c A_c`` (components of equal ground-truth class, labelled by the
segments' own run-based labeller) and one pass over the pixels, recording at each pixel of
``A`` the (segment, component) pairs of neighbouring pixels, give every ``|R(k)|``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .inputs import readonly
from .segments import _label_any

__all__ = ["local_iou_adj"]


@njit(cache=True, nogil=True)
def _local_union(pred, gt, seg, alab, nseg, nlab, ignore, has_ignore, use0, use1, use2):
    """Per segment (rows 0..nseg, row 0 unused): non-ignored size, pixels whose ground truth is
    the segment's class, and ``|R(k)|``.

    ``pred``, ``gt``, ``seg`` (segment ids) and ``alab`` (labels of the map that holds the ground
    truth on ``A`` and another value elsewhere) are (d0, d1, d2) arrays; ``use0..2`` say along
    which axes neighbours count.
    """
    d0, d1, d2 = pred.shape
    nk = np.zeros(nseg + 1, np.int64)
    inter = np.zeros(nseg + 1, np.int64)
    asize = np.zeros(nlab + 1, np.int64)
    keys = np.empty(1024, np.int64)
    nkeys = 0
    stride = np.int64(nlab + 1)
    r0 = 1 if use0 else 0
    r1 = 1 if use1 else 0
    r2 = 1 if use2 else 0
    for i0 in range(d0):
        for i1 in range(d1):
            for i2 in range(d2):
                g = gt[i0, i1, i2]
                if has_ignore and g == ignore:
                    continue
                s = seg[i0, i1, i2]
                nk[s] += 1
                if pred[i0, i1, i2] == g:
                    inter[s] += 1
                    continue
                # a pixel of A (ground truth g, predicted otherwise): the segments of class g
                # next to it reach its whole component
                a = alab[i0, i1, i2]
                asize[a] += 1
                last = -1
                for j0 in range(max(i0 - r0, 0), min(i0 + r0 + 1, d0)):
                    for j1 in range(max(i1 - r1, 0), min(i1 + r1 + 1, d1)):
                        for j2 in range(max(i2 - r2, 0), min(i2 + r2 + 1, d2)):
                            if pred[j0, j1, j2] != g:
                                continue
                            if has_ignore and gt[j0, j1, j2] == ignore:
                                continue  # an ignored pixel of a segment floods nothing
                            k = seg[j0, j1, j2]
                            if k == last:
                                continue
                            last = k
                            if nkeys == keys.size:
                                grown = np.empty(2 * keys.size, np.int64)
                                grown[:nkeys] = keys
                                keys = grown
                            keys[nkeys] = k * stride + a
                            nkeys += 1
    keys = np.sort(keys[:nkeys])
    reach = np.zeros(nseg + 1, np.int64)
    prev = np.int64(-1)
    for p in range(nkeys):
        key = keys[p]
        if key != prev:
            prev = key
            reach[key // stride] += asize[key % stride]
    return nk, inter, reach


def local_iou_adj(pred, gt, seg, n, n_classes, mode, sax, ignore_index):
    """Local IoU_adj of segments ``1..n``.

    Inputs are trusted: :func:`napari_metaseg.core.segment_metrics` validates them and calls
    this with ``iou_adj="local"``.

    Parameters
    ----------
    pred : numpy.ndarray of int
        Predicted class ids ``0 .. n_classes-1``, 2D or 3D.
    gt : numpy.ndarray of int
        Checked ground truth, same shape.
    seg : numpy.ndarray of int32
        Segment ids ``1..n`` of ``pred`` labelled in ``mode``.
    n, n_classes : int
        Number of segments and of classes.
    mode : {"2d", "3d", "slices"}
        Resolved segmentation mode; ``sax`` is the slice axis in ``"slices"`` mode.
    sax : int or None
    ignore_index : int or None
        Ground-truth id of ignored pixels.

    Returns
    -------
    numpy.ndarray of float64
        One value per segment; NaN for a segment lying entirely on ignored pixels.

    Examples
    --------
    >>> pred = np.array([[1, 0, 1, 0, 0]], np.uint8)
    >>> seg = np.array([[1, 2, 3, 4, 4]], np.int32)
    >>> local_iou_adj(pred, np.ones_like(pred), seg, 4, 2, "2d", None, 255).tolist()
    [0.5, 0.0, 0.25, 0.0]
    """
    has_ignore = ignore_index is not None
    ignore = int(ignore_index) if has_ignore else -1
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    in_a = pred != gt
    if has_ignore:
        in_a &= gt != ignore
    # outside A a value that is no class id, so components never run across A's border; uint8
    # when it fits, which the labelling kernels are compiled for already
    amap = np.full(gt.shape, n_classes, np.uint8 if n_classes <= 255 else np.int32)
    amap[in_a] = gt[in_a]
    del in_a
    alab, nlab, _, _, _ = _label_any(amap, mode, sax)
    del amap
    if pred.dtype != np.uint8 or gt.dtype != np.uint8:
        pred, gt = pred.astype(np.int32), gt.astype(np.int32)
    shape3 = (1, *pred.shape) if pred.ndim == 2 else pred.shape
    use = [True, True, True]
    if mode == "2d":
        use[0] = False
    elif mode == "slices":
        use[sax] = False
    arrays = (readonly(np.ascontiguousarray(x).reshape(shape3)) for x in (pred, gt, seg, alab))
    nk, inter, reach = _local_union(*arrays, int(n), int(nlab), ignore, has_ignore, *use)
    nk, inter, reach = nk[1:], inter[1:], reach[1:]
    out = np.full(int(n), np.nan)
    ok = nk > 0
    out[ok] = inter[ok] / (nk[ok] + reach[ok])
    return out
