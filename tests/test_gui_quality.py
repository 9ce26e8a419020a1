"""The Quality tab in a real viewer: the scores table of the current case (per case and per
slice, checked against segmentation_scores and by hand), a slice row moves the slider, the
flagged-voxel contours are flag_errors' voxels, no ground truth says what to do, cancelling
adds nothing; the contour colour stays apart from the segment colours for colour-blind users."""

import threading

import numpy as np
import pytest
from _gui_helpers import metaseg_dock, wait_for_worker
from qtpy.QtCore import Qt

from napari_metaseg.core import flag_errors, segmentation_scores

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]





def _wait_ready(qtbot, panel, start):
    with qtbot.waitSignal(panel.ready, timeout=120_000):
        assert start() is not None
    wait_for_worker(qtbot, panel)


# A tiny volume of 2 x 2 spatial voxels and 2 slices (last axis), 2 classes, small enough to score
# by hand. Prediction (argmax) and ground truth, slice 0 then slice 1:
#   pred [[0, 1], [1, 1]]  gt [[0, 1], [0, 1]]  |  pred [[0, 0], [0, 0]]  gt [[0, 0], [0, 255]]
PRED = np.zeros((2, 2, 2), np.int64)
PRED[..., 0] = [[0, 1], [1, 1]]
GT = np.zeros((2, 2, 2), np.int32)
GT[..., 0] = [[0, 1], [0, 1]]
GT[..., 1] = [[0, 0], [0, 255]]


def _tiny_viewer(make_napari_viewer, *, with_gt=True):
    viewer = make_napari_viewer()
    p1 = np.where(PRED == 1, 0.8, 0.3).astype(np.float32)
    probs = np.stack([1 - p1, p1])  # classes first, as the readers open probability maps
    meta = {"metaseg": {"kind": "probabilities", "class_axis": 0, "class_names": ["background", "lesion"]}}
    viewer.add_image(probs, name="tiny softmax", metadata=meta)
    if with_gt:
        viewer.add_labels(GT, name="tiny gt")
    return viewer


def test_scores_table_is_segmentation_scores_and_hand_checked(make_napari_viewer, qtbot):
    viewer = _tiny_viewer(make_napari_viewer)
    panel = metaseg_dock(viewer).quality
    assert panel.strip_slot.itemAt(0).widget() is panel.slice_quality  # the quality strip on top
    assert panel.form.probabilities.value == "tiny softmax" and panel.form.ground_truth.value == "tiny gt"
    _wait_ready(qtbot, panel, panel.compute_scores)
    case, slices = panel.case_table(), panel.slice_table()
    # by hand. Slice 0: lesion predicted at 3 voxels, in the GT at 2, both at 2: IoU 2/3, Dice 4/5;
    # background 1 vs 2 voxels, 1 shared: IoU 1/2, Dice 2/3; 3 of 4 voxels right. Slice 1: the
    # ignored voxel left out, 3 background voxels right, no lesion anywhere (no score, not 0 or 1).
    # Whole case: lesion IoU 2/3; background P = 4, G = 5 (of 7 scored), 4 shared: IoU 4/5.
    assert slices["slice"].tolist() == [0, 1]
    np.testing.assert_allclose(slices["IoU lesion"], [2 / 3, np.nan])
    np.testing.assert_allclose(slices["Dice lesion"], [4 / 5, np.nan])
    np.testing.assert_allclose(slices["IoU background"], [1 / 2, 1.0])
    np.testing.assert_allclose(slices["Dice background"], [2 / 3, 1.0])
    np.testing.assert_allclose(slices["mean_iou"], [2 / 3, np.nan])  # background left out of the mean
    np.testing.assert_allclose(slices["pixel_accuracy"], [3 / 4, 1.0])
    assert slices["n_pixels"].tolist() == [4, 3]
    np.testing.assert_allclose(case[["IoU background", "IoU lesion", "pixel_accuracy"]].iloc[0],
                               [4 / 5, 2 / 3, 6 / 7])
    # and the engine's scores computed here, column by column
    want_case = segmentation_scores(PRED, GT, n_classes=2)
    want_slices = segmentation_scores(PRED, GT, per="slice", slice_axis=-1, n_classes=2)
    same = ("mean_iou", "mean_dice", "pixel_accuracy", "n_pixels")
    for shown, col in (*zip(same, same, strict=True), ("IoU background", "iou_0"), ("IoU lesion", "iou_1"),
                       ("Dice background", "dice_0"), ("Dice lesion", "dice_1")):
        np.testing.assert_allclose(case[shown].to_numpy(float), want_case[col].to_numpy(float))
        np.testing.assert_allclose(slices[shown].to_numpy(float), want_slices[col].to_numpy(float))
    assert "mean IoU 0.667" in panel.status.text()


def test_no_ground_truth_says_so_and_flagging_still_works(make_napari_viewer, qtbot):
    viewer = _tiny_viewer(make_napari_viewer, with_gt=False)
    panel = metaseg_dock(viewer).quality
    assert panel.form.ground_truth.value == "(none)"
    assert panel.compute_scores() is None and panel.worker is None
    text = panel.status.text()
    assert "No ground truth" in text and "choose it above" in text
    assert panel.gt_note.isVisibleTo(panel) and panel.case_table().empty
    panel.flag_form.foreground_only.value = False
    panel.value.setValue(0.9)  # fixed: E >= 0.9, i.e. every voxel here (p = 0.7 / 0.8)
    _wait_ready(qtbot, panel, panel.flag)
    assert "precision" not in panel.status.text() and "voxels flagged" in panel.status.text()


def _brain(make_napari_viewer, qtbot):
    from napari_metaseg.__main__ import populate_demo

    viewer = make_napari_viewer(show=True)
    analysis = populate_demo(viewer, sample="brain3d", run=False)
    with qtbot.waitSignal(analysis.finished, timeout=120_000):
        analysis.run()
    wait_for_worker(qtbot, analysis)
    dock = analysis.parentWidget()
    while not hasattr(dock, "show_tab"):
        dock = dock.parentWidget()
    return viewer, dock


def _brain_arrays(viewer):
    probs = np.moveaxis(np.asarray(viewer.layers["brain softmax"].data), 0, -1)
    return probs, np.asarray(viewer.layers["brain ground truth"].data)


def test_slice_row_click_moves_the_slider_and_keeps_the_view(make_napari_viewer, qtbot):
    from napari_metaseg._layers import camera

    viewer, dock = _brain(make_napari_viewer, qtbot)
    panel = dock.show_tab("quality")
    # the panel took the analysed case's layers and slice axis
    assert panel.form.probabilities.value == "brain softmax"
    assert panel.form.ground_truth.value == "brain ground truth" and panel.form.slice_axis.value == -1
    _wait_ready(qtbot, panel, panel.compute_scores)
    probs, gt = _brain_arrays(viewer)
    want = segmentation_scores(probs.argmax(-1), gt, per="slice", slice_axis=-1, n_classes=4)
    table = panel.slice_table()
    assert len(table) == gt.shape[-1]
    np.testing.assert_allclose(table["mean_iou"].to_numpy(float), want["mean_iou"].to_numpy(float))
    np.testing.assert_allclose(table["IoU grey matter"].to_numpy(float), want["iou_2"].to_numpy(float))
    order, orientation = viewer.dims.order, tuple(camera(viewer).orientation2d)
    view = panel.slice_view
    view.sortByColumn(list(table.columns).index("mean_iou"), Qt.AscendingOrder)  # worst slice first
    for row in (0, 5):
        target = int(panel.slice_table()["slice"].iloc[row])
        where = view.visualRect(panel.slice_model.index(row, 0)).center()
        qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=where)
        assert viewer.dims.current_step[viewer.dims.ndim - 1] == target  # the z slider: axial slices
    assert viewer.dims.order == order and tuple(camera(viewer).orientation2d) == orientation


def test_flagged_contours_are_flag_errors(make_napari_viewer, qtbot):
    viewer, dock = _brain(make_napari_viewer, qtbot)
    panel = dock.show_tab("quality")
    probs, gt = _brain_arrays(viewer)
    brain = probs.argmax(-1) != 0
    for rule, value, kwargs in (("fixed threshold", 0.4, {"method": "fixed", "threshold": 0.4}),
                                ("quantile share", 0.1, {"method": "quantile", "share": 0.1})):
        panel.flag_form.method.value = rule
        panel.flag_form.measure.value = "D"
        panel.value.setValue(value)
        _wait_ready(qtbot, panel, panel.flag)
        layer = viewer.layers["brain3d flagged voxels"]
        want = flag_errors(probs, measure="D", mask=brain, **kwargs)
        np.testing.assert_array_equal(np.asarray(layer.data) == 1, want)
        assert layer.contour >= 1 and np.allclose(layer.colormap.map(np.array([1]))[0][:3], (1, 1, 1))
        assert tuple(layer.scale) == tuple(viewer.layers["brain ground truth"].scale)
        # the status: count, share and precision / recall against the misclassified voxels
        err = (probs.argmax(-1) != gt) & brain
        hits = int((want & err).sum())
        text = panel.status.text()
        assert f"{int(want.sum())} voxels flagged ({100 * want.sum() / brain.sum():.2f} %" in text
        pr = f"precision {hits / want.sum():.3f}, recall {hits / err.sum():.3f} of the {int(err.sum())} "
        assert pr in text
    assert [la.name for la in viewer.layers].count("brain3d flagged voxels") == 1  # updated in place


def test_cancel_leaves_nothing_half_added(make_napari_viewer, qtbot, monkeypatch):
    from napari_metaseg import workflows

    viewer = _tiny_viewer(make_napari_viewer)
    panel = metaseg_dock(viewer).quality
    panel.flag_form.foreground_only.value = False
    _wait_ready(qtbot, panel, panel.flag)  # a first run: the layer the cancelled run must not touch
    layer = viewer.layers["tiny flagged voxels"]
    before = np.asarray(layer.data).copy()
    layers_before = [(la.name, id(la)) for la in viewer.layers]
    for name, start, button in (("flag_case", panel.flag, panel.flag_button),
                                ("case_scores", panel.compute_scores, panel.score_button)):
        gate, reached = threading.Event(), threading.Event()
        original = getattr(workflows, name)

        def held(*args, _original=original, _gate=gate, _reached=reached, **kwargs):
            gen = _original(*args, **kwargs)
            yield next(gen)
            _reached.set()
            _gate.wait(30)  # the test cancels while the worker is in the middle
            return (yield from gen)

        monkeypatch.setattr(workflows, name, held)
        panel.value.setValue(0.1)  # another threshold: a finished run would change the layer
        start()
        worker = panel.worker
        assert button.text() == "Cancel"
        qtbot.waitUntil(reached.is_set, timeout=30_000)
        with qtbot.waitSignal(worker.aborted, timeout=30_000):
            button.click()
            gate.set()
        wait_for_worker(qtbot, panel)
        assert "cancelled" in panel.status.text() and button.text() in ("Flag", "Compute scores")
    assert [(la.name, id(la)) for la in viewer.layers] == layers_before
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    assert panel.case_table().empty and panel.slice_table().empty


def test_calibrated_rule_needs_other_cases(make_napari_viewer, qtbot, tmp_path):
    viewer = _tiny_viewer(make_napari_viewer)
    panel = metaseg_dock(viewer).quality
    panel.flag_form.method.value = "calibrated"
    assert not panel.flag_form.training_cases.native.isHidden()
    assert panel.value_label.text() == "target recall"
    assert panel.flag() is None and "training cases" in panel.status.text()
    # the current case among the training cases would tune the flags on its own errors
    tiny = np.moveaxis(np.asarray(viewer.layers["tiny softmax"].data), 0, -1)
    np.save(tmp_path / "tiny_softmax.npy", tiny)
    np.save(tmp_path / "tiny_gt.npy", GT)
    panel.flag_form.training_cases.value = str(tmp_path)
    assert panel.flag() is None and "among the training cases" in panel.status.text()
    # another case: P(error | entropy) learnt there, applied here
    rng = np.random.default_rng(3)
    p1 = rng.uniform(0.05, 0.95, (6, 6, 3)).astype(np.float32)
    other = np.stack([1 - p1, p1], axis=-1)
    other_gt = (rng.uniform(size=p1.shape) < p1).astype(np.uint8)  # errors where p is near 0.5
    train = tmp_path / "train"
    train.mkdir()
    np.save(train / "other_softmax.npy", other)
    np.save(train / "other_gt.npy", other_gt)
    panel.flag_form.training_cases.value = str(train)
    panel.flag_form.foreground_only.value = False
    panel.value.setValue(0.6)
    _wait_ready(qtbot, panel, panel.flag)
    from napari_metaseg.core import calibrate_errors

    cal = calibrate_errors([other], [other_gt], measure="E")
    want = flag_errors(tiny, method="calibrated", calibration=cal, target_recall=0.6)
    np.testing.assert_array_equal(np.asarray(viewer.layers["tiny flagged voxels"].data) == 1, want)
    assert viewer.layers["tiny flagged voxels"].metadata["metaseg"]["training_cases"] == ["other"]


def test_flag_colour_stays_apart_for_colour_blind_reviewers():
    """White contours: apart from every ramp colour and far from the grey of unrated segments,
    under normal vision and simulated deuteranopia, protanopia and tritanopia."""
    pytest.importorskip("colorspacious")
    from _cvd import seen

    from napari_metaseg._layers import FLAG_RGB
    from napari_metaseg.core.colors import NOT_RATED, quality_rgba

    ramp = quality_rgba(np.linspace(0, 1, 201))[:, :3]
    for vision, min_ramp in ((None, 20.0), ("deuteranomaly", 20.0), ("protanomaly", 20.0),
                             ("tritanomaly", 15.0)):
        flag = seen(np.array(FLAG_RGB), vision)
        assert np.linalg.norm(seen(ramp, vision) - flag, axis=1).min() >= min_ramp, vision
        assert np.linalg.norm(seen(np.array(NOT_RATED), vision) - flag) >= 60.0, vision
