"""Shared helpers of the GUI tests (not a test module)."""

import numpy as np
from scipy import ndimage

from napari_metaseg._layers import camera


def deep_pixel(mask):
    """The pixel of ``mask`` farthest from its boundary."""
    dist = ndimage.distance_transform_edt(mask)
    return np.unravel_index(np.argmax(dist), mask.shape)


def canvas_rgb(viewer, shot, world_yx):
    """Mean RGB (0..1) of the 3 x 3 canvas patch at world coordinates ``world_yx`` (2D view)."""
    cam = camera(viewer)
    h, w = shot.shape[:2]
    cy = (world_yx[0] - cam.center[-2]) * cam.zoom + h / 2
    cx = (world_yx[1] - cam.center[-1]) * cam.zoom + w / 2
    patch = shot[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2, :3].reshape(-1, 3)
    return patch.mean(0) / 255.0


def is_worst(rgb):
    """The worst end of the quality ramp (vermillion): red well above green, hardly any blue."""
    return rgb[0] > 0.25 and rgb[0] > 1.3 * rgb[1] and rgb[0] > 3 * rgb[2]


def is_best(rgb):
    """The best end of the quality ramp (blue): blue above green, hardly any red."""
    return rgb[2] > 0.25 and rgb[2] > 1.2 * rgb[1] and rgb[2] > 3 * rgb[0]


def wait_for_worker(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def canvas_rgb_oriented(viewer, shot, world_rc):
    """Like :func:`canvas_rgb` for the displayed (row, column) world coordinates, honouring
    ``camera.orientation2d`` (the brain demo shows anterior up)."""
    cam = camera(viewer)
    h, w = shot.shape[:2]
    vsign = -1.0 if str(cam.orientation2d[0]) in ("up", "VerticalAxisOrientation.UP") else 1.0
    hsign = -1.0 if str(cam.orientation2d[1]) in ("left", "HorizontalAxisOrientation.LEFT") else 1.0
    cy = vsign * (world_rc[0] - cam.center[-2]) * cam.zoom + h / 2
    cx = hsign * (world_rc[1] - cam.center[-1]) * cam.zoom + w / 2
    patch = shot[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2, :3].reshape(-1, 3)
    return patch.mean(0) / 255.0


def metaseg_dock(viewer):
    """The MetaSeg dock added to ``viewer`` (the plugin's one dock widget)."""
    _, dock = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg")
    return dock
