"""Colours as a colour-blind reviewer sees them, for the colour tests (not a test module)."""

import numpy as np


def seen(rgb, vision):
    """CAM02-UCS coordinates of sRGB colours (0-1) under full ``vision`` deficiency
    ("deuteranomaly", "protanomaly", "tritanomaly" at severity 100, Machado et al. via
    colorspacious), or normal vision for None. Distances of 2-3 units are just noticeable."""
    import colorspacious

    rgb = np.asarray(rgb, dtype=np.float64)
    if vision is not None:
        cvd = {"name": "sRGB1+CVD", "cvd_type": vision, "severity": 100}
        rgb = np.clip(colorspacious.cspace_convert(rgb, cvd, "sRGB1"), 0, 1)
    return colorspacious.cspace_convert(rgb, "sRGB1", "CAM02-UCS")
