"""Colours for segment quality: red (bad) through yellow to green (good)."""

from __future__ import annotations

import numpy as np

__all__ = ["quality_rgba"]

_STOPS = np.array([[0.84, 0.10, 0.11], [0.99, 0.80, 0.18], [0.10, 0.64, 0.25]])


def quality_rgba(values, *, alpha=0.7, nan_color=(0.55, 0.55, 0.55)):
    """Map quality values in [0, 1] to RGBA: 0 red, 0.5 yellow, 1 green.

    Parameters
    ----------
    values : array_like of float
        Quality per segment (e.g. IoU_adj); clipped to [0, 1]. NaN gets ``nan_color``.
    alpha : float, default 0.7
        Opacity of every colour.
    nan_color : tuple of 3 floats
        RGB for NaN (no quality known, e.g. a segment entirely on ignored pixels).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(n, 4)``.

    Examples
    --------
    >>> quality_rgba([0.0, 1.0])[:, :3].round(2).tolist()
    [[0.84, 0.1, 0.11], [0.1, 0.64, 0.25]]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.isnan(v)
    t = np.clip(np.where(nan, 0.0, v), 0.0, 1.0) * 2.0
    lo = np.minimum(t.astype(np.int64), 1)
    frac = (t - lo)[:, None]
    rgb = _STOPS[lo] * (1.0 - frac) + _STOPS[lo + 1] * frac
    rgb[nan] = nan_color
    out = np.empty((v.size, 4), np.float32)
    out[:, :3] = rgb
    out[:, 3] = alpha
    return out
