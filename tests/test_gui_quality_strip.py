"""The per-slice quality strip in the dock's Quality tab: what it shows for the analysed case, the
click that moves the viewer, the marker that follows the slider, and what it says without a
model or without slice-wise segments."""

from __future__ import annotations

import numpy as np
import pytest
from _gui_helpers import metaseg_dock, wait_for_worker
from test_gui_active_learning import _rank, _volume

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def slice_model(tmp_path_factory):
    """Segment models and an image-level regressor trained on 4 synthetic volumes, slice-wise."""
    from napari_metaseg import workflows
    from napari_metaseg.core.progress import drain
    from napari_metaseg.io.cases import find_cases

    folder = tmp_path_factory.mktemp("train")
    for i in range(4):
        _volume(folder, f"t{i}", [(i + k) % 9 for k in range(4)], 700 + 10 * i)
    model = drain(workflows.train(cases=find_cases([folder]), settings=workflows.case_settings(mode="slices"),
                                  n_splits=0))
    assert model.image_quality is not None, model.image_note
    return model


def _open_volume(make_napari_viewer, qtbot, tmp_path, model, mode="slices"):
    """The dock with ``model`` in the session and a 6-slice volume (with GT) opened from the
    Triage tab and analysed; returns (viewer, dock, strip view)."""
    from napari_metaseg._widgets._session import session_for

    folder = tmp_path / "vols"
    folder.mkdir()
    _volume(folder, "v", (0, 6, 2, 0, 4, 1), 900)
    viewer = make_napari_viewer()
    if model is not None:
        session_for(viewer).set(model)
    dock = metaseg_dock(viewer)
    triage = dock.show_tab("active_learning")
    triage.form.inputs.value = str(folder)
    triage.form.mode.value = mode
    if model is not None:
        _rank(qtbot, triage)
        with qtbot.waitSignal(dock.analysis.finished, timeout=120_000):
            triage.open_row(0)
    else:
        from napari_metaseg.io.cases import find_cases

        triage.cases = {c.name: c for c in find_cases([folder])}
        triage._opts = triage.options()
        with qtbot.waitSignal(dock.analysis.finished, timeout=120_000):
            triage.open_case("v", 0)
    wait_for_worker(qtbot, dock.analysis)
    quality = dock.show_tab("quality")
    qtbot.wait(50)  # the strip refreshes in the event-loop pass after the analysis
    return viewer, dock, quality.slice_quality


def test_strip_shows_the_image_regressor_per_slice_and_jumps(make_napari_viewer, qtbot, tmp_path,
                                                              slice_model):
    from napari_metaseg import workflows

    viewer, _, view = _open_volume(make_napari_viewer, qtbot, tmp_path, slice_model)
    layer = viewer.layers["segments"]
    expected = workflows.slice_quality(layer.features, slice_model, by="slice")
    strip = view.strip
    order = np.argsort(expected["slice"].to_numpy())
    np.testing.assert_array_equal(strip.slices, np.arange(6))
    np.testing.assert_allclose(strip.predicted, expected["quality_pred"].to_numpy(float)[order])
    assert strip.what == "predicted mean IoU"  # the image-level regressor, not the segment mean
    # the dots are the true mean IoU of each slice, recomputed here from the arrays
    from napari_metaseg.core.scores import segmentation_scores

    probs, gt = np.load(tmp_path / "vols" / "v_softmax.npy"), np.load(tmp_path / "vols" / "v_gt.npy")
    true = segmentation_scores(probs.argmax(-1), gt, per="slice", slice_axis=-1)["mean_iou"].to_numpy()
    np.testing.assert_allclose(strip.true, true)
    assert "dots: true mean IoU" in view.caption.text()
    # a click on slice 4's bar moves the slider there; the marker follows
    from qtpy.QtCore import QPoint, Qt

    with qtbot.waitSignal(strip.slice_clicked):
        qtbot.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(int(strip.x_of(4)), 40))
    z = viewer.dims.ndim - 1
    assert viewer.dims.point[z] == 4 and view.current_slice() == 4 and strip.current == 4
    viewer.dims.set_point(z, 1)
    assert strip.current == 1


def test_without_a_model_the_strip_shows_the_truth_only(make_napari_viewer, qtbot, tmp_path):
    _, _, view = _open_volume(make_napari_viewer, qtbot, tmp_path, None)
    assert view.strip.slices.size == 6 and np.isnan(view.strip.predicted).all()
    assert np.isfinite(view.strip.true).all()
    assert view.caption.text().startswith("no model")


def test_3d_segments_say_what_the_strip_needs(make_napari_viewer, qtbot, tmp_path):
    _, _, view = _open_volume(make_napari_viewer, qtbot, tmp_path, None, mode="3d")
    assert view.strip.span is None
    assert "slice-wise" in view.caption.text()
