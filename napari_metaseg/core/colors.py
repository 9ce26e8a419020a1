"""Colours for segment quality, safe for colour-vision deficiencies.

The ramp runs from vermillion (0, worst) through yellow and sky blue to blue (1, best): the
Okabe-Ito colours, chosen because worst, best and "not rated" stay apart under simulated
deuteranopia, protanopia and tritanopia (``tests/test_colors.py`` measures the CAM02-UCS
distances with colorspacious). "Not rated" (NaN) is a dark neutral grey, unlike every rated
colour. Red-to-green maps fail here: under deuteranopia their red turns olive, like grey.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOT_RATED", "QUALITY_STOPS", "quality_rgba"]

#: The ramp's stops, evenly spaced from quality 0 (worst) to 1 (best).
QUALITY_STOPS = np.array([
    [0.84, 0.37, 0.00],  # vermillion
    [0.94, 0.89, 0.26],  # yellow
    [0.34, 0.71, 0.91],  # sky blue
    [0.00, 0.45, 0.70],  # blue
])
#: RGB of a segment whose quality is unknown (NaN).
NOT_RATED = (0.2, 0.2, 0.2)


def quality_rgba(values, *, alpha=0.7, nan_color=NOT_RATED):
    """Map quality values in [0, 1] to RGBA: 0 vermillion (worst), 1 blue (best).

    Parameters
    ----------
    values : array_like of float
        Quality per segment (e.g. IoU_adj); clipped to [0, 1]. NaN gets ``nan_color``.
    alpha : float, default 0.7
        Opacity of every colour.
    nan_color : tuple of 3 floats
        RGB for NaN (no quality known: not rated).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(n, 4)``.

    Examples
    --------
    >>> quality_rgba([0.0, 1.0])[:, :3].round(2).tolist()
    [[0.84, 0.37, 0.0], [0.0, 0.45, 0.7]]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.isnan(v)
    n_seg = len(QUALITY_STOPS) - 1
    t = np.clip(np.where(nan, 0.0, v), 0.0, 1.0) * n_seg
    lo = np.minimum(t.astype(np.int64), n_seg - 1)
    frac = (t - lo)[:, None]
    rgb = QUALITY_STOPS[lo] * (1.0 - frac) + QUALITY_STOPS[lo + 1] * frac
    rgb[nan] = nan_color
    out = np.empty((v.size, 4), np.float32)
    out[:, :3] = rgb
    out[:, 3] = alpha
    return out
