"""The README's demo (``python -m napari_metaseg``) in a real viewer: brain sample, panel docked
and run, hover table, colours on the canvas, a row click moving to the right axial slice."""

import numpy as np
import pytest
from _gui_helpers import canvas_rgb_oriented, deep_pixel, is_best, is_worst, wait_for_worker

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))


def test_demo_brain_panel_colours_and_slice_navigation(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg.__main__ import populate_demo

    viewer = make_napari_viewer(show=True)
    widget = populate_demo(viewer)
    wait_for_worker(qtbot, widget)
    names = [la.name for la in viewer.layers]
    assert names == ["brain T1", "brain softmax", "brain ground truth", "heatmap E", "segments"]
    seg_layer = viewer.layers["segments"]
    table = seg_layer.features
    assert {"index", "slice", "class", "iou_adj", "E"} <= set(table.columns)
    assert table["index"].tolist() == list(range(1, len(table) + 1))
    np.testing.assert_allclose(seg_layer.scale, viewer.layers["brain T1"].scale)
    np.testing.assert_allclose(seg_layer.translate, viewer.layers["brain T1"].translate)
    assert viewer.layers["heatmap E"].data.shape == seg_layer.data.shape

    # the worst sizeable foreground segment and a right one on the same axial slice
    fg = table[(table["class"] > 0) & (table["S_in"] > 20)]
    bad = fg.sort_values("iou_adj").iloc[0]
    assert bad["iou_adj"] < 0.1
    same = fg[(fg["slice"] == bad["slice"]) & (fg["iou_adj"] > 0.85)]
    good = same.sort_values("S_in").iloc[-1]
    z = int(bad["slice"])

    # clicking the bad segment's row moves the z slider to its slice
    row = widget.model.row_of("index", int(bad["index"]))
    widget.select_row(row)
    assert seg_layer.selected_label == int(bad["index"])
    z_world = viewer.dims.point[-1]
    assert round((z_world - seg_layer.translate[-1]) / seg_layer.scale[-1]) == z

    for layer in viewer.layers:
        layer.visible = layer.name == "segments"
    seg_layer.opacity = 1.0
    viewer.reset_view()
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    plane = seg_layer.data[:, :, z]

    def rgb(seg_id):
        i, j = deep_pixel(plane == seg_id)  # (x, y) voxel; displayed rows = y, columns = x
        world = seg_layer.data_to_world((i, j, z))
        return canvas_rgb_oriented(viewer, shot, (world[1], world[0]))

    assert is_worst(rgb(int(bad["index"]))), rgb(int(bad["index"]))
    assert is_best(rgb(int(good["index"]))), rgb(int(good["index"]))
