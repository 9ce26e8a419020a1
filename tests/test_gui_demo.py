"""The README's demo in a real viewer: layers, hover table, and the colours on the canvas."""

import numpy as np
import pytest
from scipy import ndimage

pytestmark = pytest.mark.gui


def _deep_pixel(mask):
    dist = ndimage.distance_transform_edt(mask)
    return np.unravel_index(np.argmax(dist), mask.shape)


def _canvas_rgb(viewer, shot, yx):
    cam = viewer.camera
    h, w = shot.shape[:2]
    cy = (yx[0] - cam.center[-2]) * cam.zoom + h / 2
    cx = (yx[1] - cam.center[-1]) * cam.zoom + w / 2
    patch = shot[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2, :3].reshape(-1, 3)
    return patch.mean(0) / 255.0


def test_demo_layers_and_colours(make_napari_viewer, tmp_path):
    from napari_metaseg.__main__ import populate_demo

    viewer = make_napari_viewer(show=True)
    populate_demo(viewer)
    names = [layer.name for layer in viewer.layers]
    assert names[:3] == ["nuclei image", "nuclei softmax", "nuclei ground truth"]
    assert "segments" in names and "heatmap E" in names
    seg_layer = viewer.layers["segments"]
    table = seg_layer.features
    assert {"index", "iou", "iou_adj", "E", "D", "V"} <= set(table.columns)
    assert table["index"].tolist() == list(range(1, len(table) + 1))
    assert int(seg_layer.data.max()) == len(table)

    # Only the segments, fully opaque, so canvas colours are the overlay's.
    for layer in viewer.layers:
        layer.visible = layer is seg_layer
    seg_layer.opacity = 1.0
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)

    bad = table[(table["iou_adj"] == 0) & (table["class"] == 1)].sort_values("S").iloc[-1]
    good = table[table["class"] == 1].sort_values("iou_adj").iloc[-1]
    assert good["iou_adj"] > 0.9
    bad_rgb = _canvas_rgb(viewer, shot, _deep_pixel(seg_layer.data == bad["index"]))
    good_rgb = _canvas_rgb(viewer, shot, _deep_pixel(seg_layer.data == good["index"]))
    # the background segment is transparent: black canvas there
    bg = table[table["class"] == 0].sort_values("S").iloc[-1]
    bg_rgb = _canvas_rgb(viewer, shot, _deep_pixel(seg_layer.data == bg["index"]))
    assert bg_rgb.max() < 0.05, bg_rgb
    # Hue, not brightness: the overlay's alpha darkens colours over the black canvas.
    assert bad_rgb[0] > 0.25 and bad_rgb[0] > 3 * max(bad_rgb[1], bad_rgb[2]), bad_rgb
    assert good_rgb[1] > 0.25 and good_rgb[1] > 2 * max(good_rgb[0], good_rgb[2]), good_rgb

    from skimage.io import imsave

    imsave(tmp_path / "demo_segments.png", shot, check_contrast=False)
    # and the view a reviewer gets: image below, overlay on top
    for layer in viewer.layers:
        layer.visible = layer.name in ("nuclei image", "segments")
    seg_layer.opacity = 0.6
    imsave(tmp_path / "demo_overlay.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)
