"""The analysis panel in a real viewer: run through the manifest, cancel, table <-> canvas, CSV."""

import threading

import numpy as np
import pandas as pd
import pytest
from _gui_helpers import canvas_rgb, deep_pixel, is_best, is_worst, wait_for_worker
from qtpy.QtCore import Qt

from napari_metaseg._layers import camera

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))


def _nuclei_panel(make_napari_viewer, show=False):
    viewer = make_napari_viewer(show=show)
    viewer.open_sample("napari-metaseg", "nuclei2d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    assert widget.form.probabilities.value == "nuclei softmax"
    assert widget.form.ground_truth.value == "nuclei ground truth"
    return viewer, widget


def _run(qtbot, viewer, widget):
    with qtbot.waitSignal(widget.finished, timeout=120_000):
        widget.run_button.click()
    wait_for_worker(qtbot, widget)
    # the widget holds napari's public-only proxy of the layer; tests compare the real one
    return viewer.layers["segments"]


def test_full_analysis_on_nuclei_through_the_manifest(make_napari_viewer, qtbot):
    from napari.utils.colormaps import DirectLabelColormap

    from napari_metaseg._sample_data import load_nuclei_arrays
    from napari_metaseg.core import segment_metrics

    viewer, widget = _nuclei_panel(make_napari_viewer)
    widget.form.heatmaps.D.value = True
    seg_layer = _run(qtbot, viewer, widget)
    names = [la.name for la in viewer.layers]
    assert names == ["nuclei image", "nuclei softmax", "nuclei ground truth", "heatmap E", "heatmap D",
                     "segments"]
    for name in ("heatmap E", "heatmap D"):
        assert tuple(viewer.layers[name].contrast_limits) == (0.0, 1.0)
        assert viewer.layers[name].data.shape == (512, 512)
    _, probs, gt = load_nuclei_arrays()
    seg, table = segment_metrics(probs, gt)
    np.testing.assert_array_equal(seg_layer.data, seg)
    from napari_metaseg.workflows import clean_table

    features = seg_layer.features.reset_index(drop=True)
    # with GT the analysis also carries each segment's image scores (tests/test_rank_quality.py)
    engine = clean_table(features).drop(columns=["image_mean_iou", "image_mean_dice"])
    pd.testing.assert_frame_equal(engine, table, check_dtype=False)
    # hover text and table: class name, quality and size first; names from the sample's data
    assert list(features.columns[:4]) == ["index", "class_name", "iou_adj", "S"]
    names = np.array(["background", "nucleus"], dtype=object)
    assert features["class_name"].tolist() == names[table["class"].to_numpy()].tolist()
    assert isinstance(seg_layer.colormap, DirectLabelColormap)
    assert seg_layer.metadata["metaseg"]["color_by"] == "iou_adj"
    # the legend on the canvas says what the colours mean and the range shown
    from napari_metaseg._widgets.legend import legend_for

    legend = legend_for(viewer)
    assert legend.isVisibleTo(legend.parentWidget()) and "true IoU_adj" in legend.text()
    assert "0.00 worst" in legend.text() and "best 1.00" in legend.text()
    # the table leaves out the background and segments without interior, worst first
    shown = widget.shown_table()
    assert len(shown) == int(((table["S_in"] >= 1) & (table["class"] != 0)).sum())
    assert list(shown.columns[:4]) == ["index", "class_name", "iou_adj", "S"]
    assert {"index", "class", "S", "E", "D", "iou_adj"} <= set(shown.columns)
    assert np.all(np.diff(shown["iou_adj"].to_numpy()) >= 0)
    # colours: worst nucleus at the ramp's worst end, best at its best end, background transparent
    from napari_metaseg.core.colors import quality_rgba

    worst = table[(table["class"] == 1) & (table["S_in"] > 0)].sort_values("iou_adj").iloc[0]
    best = table[table["class"] == 1].sort_values("iou_adj").iloc[-1]
    cmap = seg_layer.colormap
    for row in (worst, best):
        got = cmap.map(np.array([int(row["index"])]))[0]
        np.testing.assert_allclose(got, quality_rgba([row["iou_adj"]])[0], atol=1e-6)
    assert int(shown["index"].iloc[0]) == int(worst["index"]) or shown["iou_adj"].iloc[0] == worst["iou_adj"]
    assert cmap.map(np.array([1]))[0][3] == 0  # class 0 hidden
    # options persist for the next session
    from napari_metaseg._widgets._settings import section

    assert section("analysis")["heatmaps"] == ["E", "D"]


def test_cancel_mid_run_leaves_the_viewer_unchanged(make_napari_viewer, qtbot, monkeypatch):
    from napari_metaseg import workflows

    gate = threading.Event()
    reached = threading.Event()
    original = workflows.analyse

    def held(*args, **kwargs):
        gen = original(*args, **kwargs)
        yield next(gen)
        reached.set()
        gate.wait(30)  # the test cancels while the worker is in the middle
        return (yield from gen)

    monkeypatch.setattr(workflows, "analyse", held)
    viewer, widget = _nuclei_panel(make_napari_viewer)
    before = [(la.name, id(la)) for la in viewer.layers]
    with qtbot.waitSignal(widget.run_button.clicked):
        widget.run_button.click()
    assert widget.run_button.text() == "Cancel"
    worker = widget.worker
    qtbot.waitUntil(reached.is_set, timeout=30_000)  # the worker is mid-run
    with qtbot.waitSignal(worker.aborted, timeout=30_000):
        widget.run_button.click()  # Cancel
        gate.set()
    wait_for_worker(qtbot, widget)
    assert [(la.name, id(la)) for la in viewer.layers] == before
    assert widget.seg_layer is None and "cancelled" in widget.status.text()
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()


def test_table_row_selects_segment_and_centres_camera(make_napari_viewer, qtbot):
    viewer, widget = _nuclei_panel(make_napari_viewer)
    seg_layer = _run(qtbot, viewer, widget)
    view = widget.table_view
    view.sortByColumn(list(widget.shown_table().columns).index("S"), Qt.DescendingOrder)  # largest first
    row = 3
    seg_id = int(widget.shown_table()["index"].iloc[row])
    rect = view.visualRect(widget.model.index(row, 0))

    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=rect.center())
    assert seg_layer.selected_label == seg_id
    centroid = np.argwhere(seg_layer.data == seg_id).mean(0)
    np.testing.assert_allclose(camera(viewer).center[-2:], centroid, atol=0.5)


def test_canvas_click_selects_row(make_napari_viewer, qtbot):
    from types import SimpleNamespace

    viewer, widget = _nuclei_panel(make_napari_viewer)
    seg_layer = _run(qtbot, viewer, widget)
    table = widget.shown_table()
    seg_id = int(table[table["class"] == 1]["index"].iloc[5])
    pos = deep_pixel(seg_layer.data == seg_id)
    event = SimpleNamespace(type="mouse_press", position=tuple(float(p) for p in pos),
                            view_direction=None, dims_displayed=[0, 1])
    gen = widget._on_canvas_click(viewer, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert seg_layer.selected_label == seg_id
    rows = widget.table_view.selectionModel().selectedRows()
    assert len(rows) == 1 and int(table["index"].iloc[rows[0].row()]) == seg_id


def test_save_csv_writes_exactly_the_table_shown(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _nuclei_panel(make_napari_viewer)
    _run(qtbot, viewer, widget)
    widget.table_view.sortByColumn(list(widget.shown_table().columns).index("iou_adj"), Qt.AscendingOrder)
    path = widget.save_csv(tmp_path / "segments.csv")
    saved = pd.read_csv(path)
    shown = widget.shown_table()
    assert list(saved.columns) == list(shown.columns)
    assert saved["index"].tolist() == shown["index"].tolist()
    assert saved["iou_adj"].is_monotonic_increasing
    pd.testing.assert_frame_equal(saved, shown.reset_index(drop=True), check_dtype=False)
    # the model shows the same cells
    m = widget.model
    assert m.rowCount() == len(shown) and m.columnCount() == len(shown.columns)
    assert m.data(m.index(0, 0)) == str(shown.iloc[0, 0])


def test_screenshot_bad_segment_red_good_segment_green(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _nuclei_panel(make_napari_viewer, show=True)
    seg_layer = _run(qtbot, viewer, widget)
    table = seg_layer.features
    for layer in viewer.layers:
        layer.visible = layer is seg_layer
    seg_layer.opacity = 1.0
    viewer.reset_view()
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    bad = table[(table["iou_adj"] == 0) & (table["class"] == 1)].sort_values("S").iloc[-1]
    good = table[table["class"] == 1].sort_values("iou_adj").iloc[-1]
    assert good["iou_adj"] > 0.9
    bad_rgb = canvas_rgb(viewer, shot, deep_pixel(seg_layer.data == bad["index"]))
    good_rgb = canvas_rgb(viewer, shot, deep_pixel(seg_layer.data == good["index"]))
    assert is_worst(bad_rgb), bad_rgb
    assert is_best(good_rgb), good_rgb
    bg = table[table["class"] == 0].sort_values("S").iloc[-1]
    assert canvas_rgb(viewer, shot, deep_pixel(seg_layer.data == bg["index"])).max() < 0.05
    from skimage.io import imsave

    imsave(tmp_path / "nuclei_segments.png", shot, check_contrast=False)


def test_mode_box_offers_only_modes_that_apply_and_remembers_the_volume_mode(make_napari_viewer, qtbot):
    """A remembered volume mode is not shown for a 2D probability layer (it cannot apply); it
    comes back, and stays in the saved options, when a volume is chosen again."""
    from napari_metaseg._widgets._settings import update_settings
    from napari_metaseg._widgets.analysis import MODES

    update_settings("analysis", {"mode": "slices", "slice_axis": 0})
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    vol = rng.dirichlet(np.ones(3), size=(6, 20, 20)).astype(np.float32)
    meta = {"metaseg": {"kind": "probabilities", "class_axis": -1}}
    viewer.add_image(vol, name="volume softmax", metadata=meta, rgb=False)
    viewer.add_image(vol[0], name="image softmax", metadata=meta, rgb=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    enabled = lambda: {m: widget.form.mode.native.model().item(i).isEnabled() for i, m in enumerate(MODES)}  # noqa: E731

    widget.form.probabilities.value = "volume softmax"
    assert widget.form.mode.value == "slices" and widget.form.slice_axis.enabled
    assert all(enabled().values())
    widget.form.probabilities.value = "image softmax"
    assert widget.form.mode.value == "2d"
    assert enabled() == {"auto": True, "2d": True, "3d": False, "slices": False}
    assert not widget.form.slice_axis.enabled
    assert widget.options()["mode"] == "slices"  # what is saved is the user's volume choice
    widget.form.probabilities.value = "volume softmax"
    assert widget.form.mode.value == "slices" and all(enabled().values())

    widget.form.mode.value = "3d"
    widget.form.probabilities.value = "image softmax"
    widget.form.probabilities.value = "volume softmax"
    assert widget.form.mode.value == "3d"
    # a mode chosen by hand on the 2D layer is the user's new choice: kept for the volume too
    widget.form.probabilities.value = "image softmax"
    widget.form.mode.value = "auto"
    widget.form.probabilities.value = "volume softmax"
    assert widget.form.mode.value == "auto" and widget.options()["mode"] == "auto"
