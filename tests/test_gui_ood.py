"""The OoD panel in a real viewer: manifest, preview, find with a region model, colours on the
canvas, table <-> canvas, "flag as unknown" saved and restored."""

import json

import numpy as np
import pytest
from _gui_helpers import canvas_rgb_oriented, wait_for_worker

from napari_metaseg._layers import axial_view, camera

try:
    from test_ood_cli import CUBES, N_CUBE, SHEETS, ood_case, write_cases
except ImportError:  # tests/ made a package
    from tests.test_ood_cli import CUBES, N_CUBE, SHEETS, ood_case, write_cases

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]



@pytest.fixture
def region_model(tmp_path):
    """A region model trained on three synthetic cases (cubes = OoD, sheets = false alarms)."""
    from napari_metaseg.cli import main

    write_cases(tmp_path / "train", (0, 1, 2))
    assert main(["ood", str(tmp_path / "train"), "--out", str(tmp_path / "tr"), "-q"]) == 0
    path = tmp_path / "region_model.json"
    assert main(["train", str(tmp_path / "tr"), "--out", str(path), "-q"]) == 0
    return path


def _open_case(make_napari_viewer, tmp_path, show=False):
    import nibabel as nib

    p, gt, ood = ood_case(9)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(p, affine), tmp_path / "case_softmax.nii.gz")
    nib.save(nib.Nifti1Image(gt, affine), tmp_path / "case_gt.nii.gz")
    viewer = make_napari_viewer(show=show)
    viewer.open(str(tmp_path / "case_softmax.nii.gz"), plugin="napari-metaseg")
    viewer.open(str(tmp_path / "case_gt.nii.gz"), plugin="napari-metaseg")
    axial_view(viewer)  # z on the slider
    _, widget = viewer.window.add_plugin_dock_widget("napari-metaseg", "OoD regions")
    assert widget.form.probabilities.value == "case_softmax"
    widget.form.ood_layer.value = "case_gt"
    widget.form.exclude_background.value = False  # the synthetic sheets are predicted as class 0
    return viewer, widget, p, ood


def _show_slice(viewer, z_world):
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(viewer.dims.ndim - 1, z_world)


def _find(qtbot, widget):
    with qtbot.waitSignal(widget.ready, timeout=120_000):
        widget.find_button.click()
    wait_for_worker(qtbot, widget)


def test_ood_panel_preview_find_colours_table_and_decisions(make_napari_viewer, qtbot, tmp_path,
                                                            region_model):
    from napari_metaseg.core import dispersion_maps
    from napari_metaseg.core.ood import ood_regions
    from napari_metaseg.core.progress import drain
    from napari_metaseg.workflows import find_ood

    viewer, widget, p, ood = _open_case(make_napari_viewer, tmp_path, show=True)
    e = dispersion_maps(p)["E"]

    # the preview follows the slider and the slice shown, on that slice only
    z = 3  # cuts the first cube (z 2..4) and both sheets
    _show_slice(viewer, 2.0 * z)
    widget.slider.setValue(70)
    qtbot.waitUntil(lambda: "0.70" in widget.preview_status.text(), timeout=5000)
    preview = viewer.layers["ood preview"].data
    np.testing.assert_array_equal(preview[..., z] > 0, e[..., z] >= 0.7)  # only the cube (E = 1)
    assert not preview[..., :z].any() and not preview[..., z + 1:].any()
    widget.slider.setValue(50)
    qtbot.waitUntil(lambda: "0.50" in widget.preview_status.text(), timeout=5000)
    np.testing.assert_array_equal(preview[..., z] > 0, e[..., z] >= 0.5)  # cube and sheets
    assert "3 candidate regions" in widget.preview_status.text()
    _show_slice(viewer, 2.0 * 6)  # another slice: the old one is cleared
    qtbot.waitUntil(lambda: "slice 6" in widget.preview_status.text(), timeout=5000)
    assert not preview[..., z].any() and (preview[..., 6] > 0).sum() == (e[..., 6] >= 0.5).sum()

    # a segment model is refused, the region model sets the threshold it was trained at
    widget.slider.setValue(30)
    models = widget.load_model(region_model)
    assert widget.slider.value() == 50 and "trained on c0, c1, c2" in widget.model_label.text()
    _find(qtbot, widget)
    layer = viewer.layers["ood regions"]
    expected = drain(find_ood(p, settings=widget.settings(), classifier=models.classifier, ood=ood))
    np.testing.assert_array_equal(layer.data, expected.region_ids)
    np.testing.assert_allclose(layer.features["p_hit"], expected.table["p_hit"])
    assert layer.features["hit"].tolist() == expected.table["hit"].tolist()
    assert "TP 2, FP 0, FN 0" in widget.status.text()  # the model keeps the cubes only
    assert not viewer.layers["ood preview"].visible
    _show_slice(viewer, 2.0 * 5)  # other slices: the found regions, no preview over them
    qtbot.wait(300)
    assert not viewer.layers["ood preview"].visible

    # colours: P(OoD) on the cividis ramp; a cube bright (high P), a sheet dark (low P)
    from napari_metaseg._widgets.ood import p_rgba

    ids, _ = ood_regions(p, threshold=0.5)
    table = layer.features.set_index("index")
    cube_id = int(ids[4, 4, 3])
    sheet_id = int(ids[9, 4, 3])
    assert table.loc[cube_id, "p_hit"] > 0.5 > table.loc[sheet_id, "p_hit"]
    layer.opacity = 1.0
    for name in ("case_softmax", "case_gt"):
        viewer.layers[name].visible = False
    _show_slice(viewer, 2.0 * z)
    camera(viewer).center = (20.0, 20.0)
    camera(viewer).zoom = 8.0
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    for vox, rid in (((4, 4), cube_id), ((9, 4), sheet_id)):
        world = np.asarray(layer.data_to_world([vox[0], vox[1], z]))
        rgba = p_rgba([table.loc[rid, "p_hit"]])[0]
        want = rgba[:3] * rgba[3]  # over the black canvas (the other layers are hidden)
        # displayed: y (rows) and x (columns)
        np.testing.assert_allclose(canvas_rgb_oriented(viewer, shot, (world[1], world[0])), want, atol=0.08)

    # table -> canvas: the row of the best-rated region centres the view on it
    shown = widget.shown_table()
    assert shown["p_hit"].is_monotonic_decreasing and set(shown["index"]) == set(table.index)
    widget.select_row(0)
    rid = int(shown["index"].iloc[0])
    assert layer.selected_label == rid
    coords = np.argwhere(layer.data == rid)
    assert viewer.dims.point[-1] == pytest.approx(2.0 * coords[:, 2].mean(), abs=2.0)
    # canvas -> table
    layer.selected_label = int(shown["index"].iloc[2])
    assert widget.table_view.selectionModel().selectedRows()[0].row() == 2

    # "flag as unknown": saved at once beside the softmax file, shown in the table
    widget.select_row(0)
    assert widget.flag_button.isEnabled()
    widget.flag_button.click()
    sidecar = tmp_path / "case_softmax.metaseg-ood.json"
    doc = json.loads(sidecar.read_text())
    decided = {r["index"]: r["decision"] for r in doc["regions"] if r["decision"]}
    assert decided == {rid: "unknown"}
    assert doc["settings"]["threshold"] == 0.5 and doc["model"] == str(region_model)
    assert widget.shown_table()["decision"].iloc[0] == "unknown"
    widget.decide("known", region=int(shown["index"].iloc[1]))
    assert len(json.loads(sidecar.read_text())["regions"]) == len(table)

    # the same regions again: the decisions come back
    _find(qtbot, widget)
    assert "2 decisions restored" in widget.status.text()
    row = widget.model.row_of("index", rid)
    assert widget.shown_table()["decision"].iloc[row] == "unknown"

    # with the model, another threshold is refused; nothing changes
    widget.slider.setValue(60)
    qtbot.waitUntil(lambda: viewer.layers["ood preview"].visible, timeout=5000)  # a new threshold
    widget.find_button.click()
    assert "threshold = 0.5" in widget.status.text() and widget.worker is None

    # without the model, regions of another threshold would drop the decisions: asked, kept
    widget.models = None
    widget.ask = lambda title, text: False
    before = sidecar.read_text()
    _find(qtbot, widget)
    assert "earlier review was kept" in widget.status.text()
    assert sidecar.read_text() == before
    assert "p_hit" not in viewer.layers["ood regions"].features
    assert not widget.flag_button.isEnabled()


def test_ood_panel_refuses_a_segment_model_and_runs_without_annotation(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier
    from napari_metaseg.workflows import MetaModels, save_model

    viewer, widget, _, _ = _open_case(make_napari_viewer, tmp_path)
    clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(100, random_state=0))
    seg_model = save_model(tmp_path / "seg.json", MetaModels(clf))
    assert widget.load_model(seg_model) is None
    assert "is a segment model" in widget.status.text() and widget.models is None
    widget.form.ood_layer.value = "(none)"
    _find(qtbot, widget)
    features = viewer.layers["ood regions"].features
    assert sorted(features["S"].tolist()) == sorted([N_CUBE] * len(CUBES) + [36] * len(SHEETS))
    assert "hit" not in features and "TP" not in widget.status.text()
    # decisions are saved in the user's folder when the softmax has no writable file: here it has
    assert (tmp_path / "case_softmax.metaseg-ood.json").is_file()


def test_ood_panel_shows_a_locked_review_read_only_and_takes_a_stale_lock_over_when_asked(
        make_napari_viewer, qtbot, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from napari_metaseg._widgets.ood import OodWidget

    viewer, widget, _, _ = _open_case(make_napari_viewer, tmp_path)
    _find(qtbot, widget)
    sidecar = tmp_path / "case_softmax.metaseg-ood.json"
    lock = sidecar.with_name(sidecar.name + ".lock")
    assert widget.store.holds_lock and json.loads(lock.read_text())["pid"] == os.getpid()
    rid = int(widget.shown_table()["index"].iloc[0])
    assert widget.decide("unknown", region=rid)["decision"] == "unknown"

    # a second panel on the same case: told who holds it, shown read-only, writes nothing
    other = OodWidget(viewer)
    qtbot.addWidget(other)
    other.form.exclude_background.value = False
    other.form.ood_layer.value = "case_gt"
    before = sidecar.read_bytes()
    _find(qtbot, other)
    text = other.status.text()
    assert "open in another viewer of this process" in text and "READ-ONLY" in text
    assert "open it read-only or close it there first" in text and "showing its 1 decisions" in text
    assert other.store.read_only and not other.store.holds_lock
    row = other.model.row_of("index", rid)
    assert other.shown_table()["decision"].iloc[row] == "unknown"
    other.select_row(row)
    assert not other.flag_button.isEnabled() and not other.known_button.isEnabled()
    assert other.decide("known", region=rid) is None and "read-only" in other.status.text()
    assert sidecar.read_bytes() == before and json.loads(lock.read_text())["pid"] == os.getpid()
    other.close()
    assert lock.exists()  # the read-only panel never held it

    # the panel re-finding its own case keeps its lock (no refusal by itself)
    _find(qtbot, widget)
    assert "1 decisions restored" in widget.status.text() and not widget.store.read_only
    # closing releases the lock
    widget.close()
    assert not lock.exists()
    before = sidecar.read_bytes()

    # a lock left by a dead process: declined -> read-only, the lock untouched; accepted -> taken
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = json.dumps({"pid": proc.pid, "host": socket.gethostname(), "token": "dead"})
    lock.write_text(stale)
    third = OodWidget(viewer)
    qtbot.addWidget(third)
    third.form.exclude_background.value = False
    asked = []
    third.ask = lambda title, text: asked.append(text) or False
    _find(qtbot, third)
    assert len(asked) == 1 and f"process {proc.pid}" in asked[0] and "no longer running" in asked[0]
    assert "Take the lock over?" in asked[0]
    assert third.store.read_only and "READ-ONLY" in third.status.text()
    assert lock.read_text() == stale and sidecar.read_bytes() == before
    third.ask = lambda title, text: True
    _find(qtbot, third)
    assert not third.store.read_only and json.loads(lock.read_text())["pid"] == os.getpid()
    assert "1 decisions restored" in third.status.text()
    other_rid = int(third.shown_table()["index"].iloc[1])
    assert third.decide("known", region=other_rid)["decision"] == "known"
    decided = {r["index"]: r["decision"] for r in json.loads(sidecar.read_text())["regions"] if r["decision"]}
    assert decided == {rid: "unknown", other_rid: "known"}

    # the lock lost mid-session: the next decision is refused with the reason, nothing written
    lock.unlink()
    before = sidecar.read_bytes()
    assert third.decide(None, region=rid) is None
    assert "decision not saved" in third.status.text() and "lock of" in third.status.text()
    assert "was removed" in third.status.text() and sidecar.read_bytes() == before
    third.close()
