"""The review queue in a real viewer on the brain sample: find, navigate, decide, lock, restore."""

import json
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_metaseg._layers import camera

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]



def _brain_review(make_napari_viewer, show=False):
    from napari_metaseg.__main__ import axial_view

    viewer = make_napari_viewer(show=show)
    viewer.open_sample("napari-metaseg", "brain3d")
    axial_view(viewer)
    _, widget = viewer.window.add_plugin_dock_widget("napari-metaseg", "Label-error review")
    assert widget.form.probabilities.value == "brain softmax"
    assert widget.form.ground_truth.value == "brain ground truth"
    return viewer, widget


def _find(qtbot, widget):
    with qtbot.waitSignal(widget.ready, timeout=120_000):
        widget.find_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


def _expected_view(viewer, widget, i):
    """World (z slider, camera centre) the proposal ``i`` should be shown at."""
    gt = viewer.layers["brain ground truth"]
    rec = widget.store.proposals[i]
    mask = widget._voxels(rec)
    coords = np.argwhere(mask)
    centroid = np.asarray(rec["centroid"])
    point = coords[np.argmin(((coords - centroid) ** 2).sum(1))]
    assert mask[tuple(point)]
    return np.asarray(gt.data_to_world(point)), np.asarray(gt.data_to_world(centroid)), rec


def _assert_shown(viewer, widget, i):
    world, world_c, rec = _expected_view(viewer, widget, i)
    assert widget.current == i
    # the probabilities add a leading class axis: the GT's axes are viewer axes 1..3; z is axis 3
    assert viewer.dims.displayed == (2, 1)
    assert viewer.dims.point[3] == pytest.approx(world[2])
    if rec.get("slice") is not None:
        assert world[2] == pytest.approx(viewer.layers["brain ground truth"].data_to_world(
            [0, 0, rec["slice"]])[2])
    np.testing.assert_allclose(camera(viewer).center[-2:], [world_c[1], world_c[0]], atol=1e-6)
    # the highlight holds exactly the proposal's voxels, the box encloses them on this slice
    hl = viewer.layers["review: proposal"].data
    np.testing.assert_array_equal(hl > 0, widget._voxels(rec))
    box = viewer.layers["review: box"].data[0]
    n = len(rec["bbox"]) // 2
    lo, hi = np.asarray(rec["bbox"][:n]), np.asarray(rec["bbox"][n:])
    assert np.all(box[:, :2].min(0) < lo[:2]) and np.all(box[:, :2].max(0) > hi[:2] - 1)
    assert np.all(box[:, 2] == world[2] / 2 - (-71.5) / 2)  # voxel z of the slice


def _press(qtbot, viewer, key, modifier=Qt.NoModifier):
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def test_review_queue_end_to_end_on_the_brain_sample(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg._sample_data import SAMPLE_DIR
    from napari_metaseg._widgets.review import ReviewWidget
    from napari_metaseg.io.layers import read_layers
    from napari_metaseg.io.review import file_sha256, reviews_dir

    viewer, widget = _brain_review(make_napari_viewer)
    layers_before = [la.name for la in viewer.layers]
    # no model yet: a clear message, nothing changed
    widget.find_button.click()
    assert "no meta classifier" in widget.status.text() and widget.worker is None
    assert [la.name for la in viewer.layers] == layers_before
    assert not reviews_dir().exists() or not list(reviews_dir().iterdir())

    widget.load_sample_model()
    assert "sub-01" in widget.model_label.text()
    _find(qtbot, widget)
    store = widget.store
    sidecar = store.path
    assert sidecar.parent == reviews_dir()  # the package's sample folder is not written into
    n = len(store.proposals)
    assert n > 100 and "proposals in" in widget.status.text()
    queue = widget.queue()
    assert queue["id"].tolist() == list(range(n))
    assert np.all(np.diff(queue["score"].astype(float).to_numpy()) <= 0)  # ranked
    assert {"kind", "label", "predicted", "score", "size", "slice", "decision"} <= set(queue.columns)
    assert (queue["label"] != queue["predicted"]).all()  # a proposal is a disagreement
    # the panel's min size (default 10 voxels) holds, and is recorded with the proposals
    assert widget.form.min_size.value == 10
    assert queue["size"].astype(int).min() >= 10
    assert store.settings["min_size"] == 10
    _assert_shown(viewer, widget, 0)

    # buttons and keys move dims and camera to the proposal
    widget.next_button.click()
    _assert_shown(viewer, widget, 1)
    widget.next_button.click()
    _assert_shown(viewer, widget, 2)
    widget.prev_button.click()
    _assert_shown(viewer, widget, 1)
    _press(qtbot, viewer, Qt.Key_K)
    _assert_shown(viewer, widget, 0)
    _press(qtbot, viewer, Qt.Key_J)
    _press(qtbot, viewer, Qt.Key_J)
    _assert_shown(viewer, widget, 2)
    widget.go_to(0)

    # decisions are on disk at once (button, then keys); the queue advances
    widget.note_edit.setText("missing CSF label")
    widget.decision_buttons["label_error"].click()
    doc = json.loads(sidecar.read_text())
    assert doc["proposals"][0]["decision"] == "label_error"
    assert doc["proposals"][0]["note"] == "missing CSF label"
    _assert_shown(viewer, widget, 1)
    _press(qtbot, viewer, Qt.Key_2, Qt.AltModifier)
    _press(qtbot, viewer, Qt.Key_3, Qt.AltModifier)
    doc = json.loads(sidecar.read_text())
    assert [p["decision"] for p in doc["proposals"][:4]] == ["label_error", "not_error", "unsure", None]
    assert widget.queue()["decision"].tolist()[:4] == ["Label error", "Not an error", "Unsure", ""]

    # a second panel on the same case is refused (read-only view) and writes nothing
    other = ReviewWidget(viewer)
    qtbot.addWidget(other)
    other.load_sample_model()
    _find(qtbot, other)
    assert "open in another viewer" in other.status.text() and "READ-ONLY" in other.status.text()
    assert other.store.read_only and not other.decision_buttons["label_error"].isEnabled()
    before = sidecar.read_bytes()
    other.go_to(3)
    assert other.decide("label_error") is None
    assert sidecar.read_bytes() == before
    other.close()

    # fix the label in place, then write it back as a new file; the original stays
    gt_layer = viewer.layers["brain ground truth"]
    original = SAMPLE_DIR / "brain3d_gt.nii.gz"
    original_sha = file_sha256(original)
    rec = store.proposals[0]
    mask = widget._voxels(rec)
    edited = np.asarray(gt_layer.data).copy()
    edited[mask] = rec["class"]
    gt_layer.data = edited
    assert widget.save_corrected_gt(original) is None  # the original: refused without the choice
    assert "the original ground truth" in widget.status.text()
    out = widget.save_corrected_gt(tmp_path / "brain_gt_fixed.nii.gz")
    (back, meta, _), = read_layers(out, kind="labels")
    np.testing.assert_array_equal(back, gt_layer.data)
    np.testing.assert_array_equal(meta["metadata"]["original_affine"],
                                  gt_layer.metadata["original_affine"])
    assert file_sha256(original) == original_sha
    assert json.loads(sidecar.read_text())["corrections"][0]["path"] == str(out.resolve())

    # exports equal the decisions
    csv_path = widget.export("csv", tmp_path / "r.csv")
    json_path = widget.export("json", tmp_path / "r.json")
    import pandas as pd

    got = pd.read_csv(csv_path, keep_default_na=False)["decision"].tolist()
    assert got[:4] == ["label_error", "not_error", "unsure", ""] and len(got) == n
    assert [p["decision"] for p in json.loads(json_path.read_text())["proposals"]][:3] == got[:3]

    # closing the panel releases the lock and unbinds the keys; reopening restores the review
    widget.close()
    assert not sidecar.with_name(sidecar.name + ".lock").exists()
    assert "review: proposal" not in viewer.layers
    from napari.utils.key_bindings import coerce_keybinding

    assert coerce_keybinding("J") not in viewer.keymap
    again = ReviewWidget(viewer)
    qtbot.addWidget(again)
    _find(qtbot, again)  # no model needed to restore
    assert "restored" in again.status.text() and not again.store.read_only
    assert again.queue()["decision"].tolist()[:4] == ["Label error", "Not an error", "Unsure", ""]
    assert again.current == 3  # the first undecided proposal
    _assert_shown(viewer, again, 3)
    again.close()


def test_cancel_changes_nothing(make_napari_viewer, qtbot, monkeypatch):
    from napari_metaseg import workflows
    from napari_metaseg.io.review import reviews_dir

    gate, reached = threading.Event(), threading.Event()
    original = workflows.find_in_case

    def held(*args, **kwargs):
        gen = original(*args, **kwargs)
        yield next(gen)
        reached.set()
        gate.wait(30)
        return (yield from gen)

    monkeypatch.setattr(workflows, "find_in_case", held)
    viewer, widget = _brain_review(make_napari_viewer)
    widget.load_sample_model()
    before = [la.name for la in viewer.layers]
    widget.find_button.click()
    assert widget.find_button.text() == "Cancel"
    worker = widget.worker
    qtbot.waitUntil(reached.is_set, timeout=30_000)
    with qtbot.waitSignal(worker.aborted, timeout=30_000):
        widget.find_button.click()
        gate.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert [la.name for la in viewer.layers] == before
    assert "cancelled" in widget.status.text() and widget.store is None
    assert not reviews_dir().exists() or not list(reviews_dir().iterdir())  # no file, no lock
    assert widget.find_button.text() == "Find label errors"


def test_errors_are_shown_and_change_nothing(make_napari_viewer, qtbot):
    from napari_metaseg.io.review import case_identity, sidecar_path

    viewer, widget = _brain_review(make_napari_viewer)
    widget.load_sample_model()
    gt_layer = viewer.layers["brain ground truth"]
    case = case_identity(gt_layer.data, probs_shape=(98, 116, 78, 4),
                         gt_path=gt_layer.metadata["source"])
    path = sidecar_path(case)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "napari-metaseg-review", "format_version": 1, "case": {')
    before = [la.name for la in viewer.layers]
    widget.find_button.click()
    assert "is not valid JSON" in widget.status.text() and widget.worker is None
    assert path.read_text().endswith('"case": {') and [la.name for la in viewer.layers] == before
    assert not path.with_name(path.name + ".lock").exists()
    # wrong shapes
    viewer.add_labels(np.zeros((10, 10, 10), np.uint8), name="small gt")
    widget.form.ground_truth.value = "small gt"
    widget.find_button.click()
    assert "not the same case" in widget.status.text() and widget.worker is None


def _is_magenta(rgb):
    return rgb[0] > 0.6 and rgb[2] > 0.55 and rgb[1] < 0.35


def test_highlight_is_drawn_on_the_canvas(make_napari_viewer, qtbot):
    """The proposal's voxels are magenta on the canvas (not only in the layer's data)."""
    from _gui_helpers import canvas_rgb_oriented, deep_pixel

    viewer, widget = _brain_review(make_napari_viewer, show=True)
    viewer.layers["brain ground truth"].visible = True  # the highlight must win over the GT
    widget.load_sample_model()
    _find(qtbot, widget)
    # a sizeable proposal, so its deepest voxel lies well inside it on the canvas
    i = max(range(min(50, len(widget.store.proposals))),
            key=lambda k: widget.store.proposals[k]["size"])
    widget.go_to(i)
    rec = widget.store.proposals[i]
    mask = widget._voxels(rec)
    z = int(widget._proposal_point(rec, mask)[0][2])  # a voxel: integral
    r, c = deep_pixel(mask[:, :, z])
    gt = viewer.layers["brain ground truth"]
    world = gt.data_to_world([r, c, z])
    assert viewer.dims.point[3] == pytest.approx(world[2])
    shot = viewer.screenshot(canvas_only=True, flash=False)
    # displayed viewer axes (2, 1): rows are the GT's axis 1, columns its axis 0
    rgb = canvas_rgb_oriented(viewer, shot, (world[1], world[0]))
    assert _is_magenta(rgb), rgb
    # and not magenta beside the proposal, 4 voxels beyond its box
    n = len(rec["bbox"]) // 2
    lo, hi = rec["bbox"][0], rec["bbox"][n]
    r2 = hi + 3 if hi + 3 < mask.shape[0] else lo - 4
    assert not mask[r2, c, z]
    w2 = gt.data_to_world([r2, c, z])
    assert not _is_magenta(canvas_rgb_oriented(viewer, shot, (w2[1], w2[0])))


def _hand_made_proposals(widget, viewer):
    """Three proposals as find_label_errors may return them: a segment, a "region" without
    segment or GT-object id (NA in both), and a kind this panel does not know, without voxels."""
    import pandas as pd

    gt = np.asarray(viewer.layers["brain ground truth"].data)
    region = np.zeros(gt.shape, bool)
    region[40:46, 50:53, 30] = True
    seg_vox = np.zeros(gt.shape, bool)
    seg_vox[20:22, 30:33, 40] = True
    return pd.DataFrame({
        "case": ["brain", "brain", "brain"],
        "kind": ["segment", "region", "blob"],
        "class": [1, 2, 3],
        "index": pd.array([7, pd.NA, pd.NA], dtype="Int64"),
        "gt_object": [np.nan, np.nan, np.nan],
        "score": [0.9, 0.8, 0.7],
        "size": [6, 18, 4],
        "slice": [40, 30, 12],
        "bbox": [[20, 30, 40, 22, 33, 41], [40, 50, 30, 46, 53, 31], [60, 60, 12, 62, 62, 13]],
        "centroid": [[20.5, 31.0, 40.0], [42.5, 51.0, 30.0], [60.5, 60.5, 12.0]],
        "voxels": [np.flatnonzero(seg_vox), np.flatnonzero(region), None],
    }), region


def test_region_proposals_with_missing_ids(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    """Any kind is shown; NA ids are empty cells and nulls; highlights come from the voxels."""
    import napari_metaseg.core as core
    from napari_metaseg._widgets.review import ReviewWidget
    from napari_metaseg.io.review import box_bits_to_mask

    viewer, widget = _brain_review(make_napari_viewer)
    table, region = _hand_made_proposals(widget, viewer)
    monkeypatch.setattr(core, "find_label_errors", lambda *a, **k: table.copy())
    widget.load_sample_model()
    _find(qtbot, widget)
    queue = widget.queue()
    assert queue["kind"].tolist() == ["segment", "region", "blob"]
    col = list(queue.columns).index("kind")
    assert widget.model.data(widget.model.index(1, col)) == "region"
    assert set(queue.columns) >= {"slice", "size", "label", "predicted"}
    doc = json.loads(widget.store.path.read_text())
    p = doc["proposals"]
    assert [q["index"] for q in p] == [7, None, None] and [q["gt_object"] for q in p] == [None] * 3
    np.testing.assert_array_equal(box_bits_to_mask(p[1]["voxels"], region.shape), region)
    assert "voxels" not in p[2] and "runs" not in p[2]
    csv_rows = widget.export("csv", tmp_path / "r.csv").read_text()
    assert "region" in csv_rows and "nan" not in csv_rows.lower() and "<NA>" not in csv_rows

    widget.go_to(1)
    hl = viewer.layers["review: proposal"].data
    np.testing.assert_array_equal(hl > 0, region)
    assert viewer.dims.point[3] == pytest.approx(viewer.layers["brain ground truth"].data_to_world(
        [0, 0, 30])[2])
    # no voxels and no id: the box and the slice from bbox / centroid, no highlight, no error
    widget.go_to(2)
    assert not viewer.layers["review: proposal"].data.any()
    assert "review: box" in viewer.layers
    assert viewer.dims.point[3] == pytest.approx(viewer.layers["brain ground truth"].data_to_world(
        [0, 0, 12])[2])

    # restored from the sidecar (no model, no find_label_errors): the same voxels
    widget.close()
    again = ReviewWidget(viewer)
    qtbot.addWidget(again)
    _find(qtbot, again)
    assert "restored 3 proposals" in again.status.text()
    again.go_to(1)
    np.testing.assert_array_equal(viewer.layers["review: proposal"].data > 0, region)
    again.close()
