"""The reviewer's workspace in a real viewer: one dock that fits a laptop screen, the legend on the
canvas, hover and table order, volume defaults, case identity, failures, and the whole review
loop counted in user actions."""

import numpy as np
import pytest
from _gui_helpers import metaseg_dock, wait_for_worker

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]

LAPTOP = (1366, 768)





def _run(qtbot, analysis):
    with qtbot.waitSignal(analysis.finished, timeout=120_000):
        analysis.run_button.click()
    wait_for_worker(qtbot, analysis)
    return analysis.viewer.layers["segments"]


def _main_window(dock):
    return dock.window()


def test_one_dock_fits_a_laptop_screen_with_every_part(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-metaseg", "nuclei2d")
    dock = metaseg_dock(viewer)
    tabs = [dock.tabs.tabText(i) for i in range(dock.tabs.count())]
    assert tabs == ["Analyse", "Model", "Review", "Quality", "Triage", "Colours", "Unknown"]
    window = _main_window(dock)
    for i in range(dock.tabs.count()):
        dock.tabs.setCurrentIndex(i)
        qtbot.wait(20)
        hint = window.minimumSizeHint()
        assert hint.width() <= LAPTOP[0] and hint.height() <= LAPTOP[1], (tabs[i], hint)
    window.resize(*LAPTOP)
    qtbot.wait(100)
    assert window.height() <= LAPTOP[1] and window.width() <= LAPTOP[0]
    canvas = dock.legend.parentWidget()
    assert canvas.width() >= 500 and canvas.height() >= 400  # the image keeps most of the screen
    # the Model tab's plots scale with the dock (no fixed height that pushes the window open)
    assert max(c.minimumHeight() for c in dock.meta.canvases.values()) <= 160
    # no tab makes the reviewer scroll sideways in the dock's width on a laptop screen
    from qtpy.QtWidgets import QScrollArea

    for i in range(dock.tabs.count()):
        dock.tabs.setCurrentIndex(i)
        qtbot.wait(20)
        page = dock.tabs.currentWidget()
        area = page if isinstance(page, QScrollArea) else page.findChild(QScrollArea)
        assert area is not None, tabs[i]
        assert area.widget().minimumSizeHint().width() <= area.viewport().width(), (
            tabs[i], area.widget().minimumSizeHint().width(), area.viewport().width())


def test_legend_on_canvas_hover_and_table_order(make_napari_viewer, qtbot):
    from napari_metaseg.core.colors import NOT_RATED, quality_rgba

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-metaseg", "nuclei2d")
    dock = metaseg_dock(viewer)
    layer = _run(qtbot, dock.analysis)
    legend = dock.legend
    # the legend stays with the canvas whatever tab is shown, naming column and range
    for i in range(dock.tabs.count()):
        dock.tabs.setCurrentIndex(i)
        assert legend.isVisible(), dock.tabs.tabText(i)
    assert "true IoU_adj" in legend.text() and "0.00 worst" in legend.text() and "not rated" in legend.text()
    assert "hidden: background" in legend.text()
    # hover: the segment's class name, then its quality and size, before the other features
    table = layer.features
    row = table[(table["class"] == 1) & (table["S_in"] > 5)].iloc[0]
    voxel = np.argwhere(np.asarray(layer.data) == row["index"])[0]
    status = layer.get_status(tuple(float(v) for v in voxel), world=True)["coordinates"]
    text = status.split(";", 1)[1]
    assert text.strip().startswith(f"class_name: nucleus, iou_adj: {row['iou_adj']:.3g}")
    assert text.index("S:") < text.index("E:") < text.index("cprob0")
    # the table: no background, worst first by the colour column
    shown = dock.analysis.shown_table()
    assert (shown["class_name"] == "nucleus").all() and len(shown)
    assert np.all(np.diff(shown["iou_adj"].to_numpy()) >= 0)
    # recolour by size: robust range from the nuclei, not squashed by the background segment
    overlay = dock.overlay
    overlay.form.segments.value = "segments"
    overlay.form.column.value = "S"
    overlay.form.high_is_bad.value = False
    overlay.apply()
    meta = layer.metadata["metaseg"]
    lo, hi = meta["color_range"]
    sizes = table.loc[table["class"] == 1, "S"]
    assert np.isclose(lo, np.percentile(sizes, 2)) and np.isclose(hi, np.percentile(sizes, 98))
    assert hi < table["S"].max() / 10  # the background segment is far larger
    assert "colour: S" in legend.text() and f"{lo:.2f} worst" in legend.text()
    nuclei = table[table["class"] == 1]
    colours = layer.colormap.map(nuclei["index"].to_numpy())
    worst = quality_rgba([0.0])[0]
    near_worst = np.linalg.norm(colours - worst, axis=1) < 0.05
    assert near_worst.mean() < 0.2  # min-max over the background would make nearly all "worst"
    not_rated = np.all(np.isclose(colours[:, :3], NOT_RATED), axis=1)
    np.testing.assert_array_equal(not_rated, nuclei["S_in"].to_numpy() < meta["min_interior"])


def test_volume_opens_axial_radiological_slice_wise(make_napari_viewer, qtbot):
    from napari_metaseg._layers import camera
    from napari_metaseg._sample_data import SAMPLE_DIR

    viewer = make_napari_viewer()
    for name in ("t1", "softmax", "gt"):
        viewer.open(str(SAMPLE_DIR / f"brain3d_{name}.nii.gz"), plugin="napari-metaseg")
    dock = metaseg_dock(viewer)
    form = dock.analysis.form
    assert form.mode.value == "slices" and form.slice_axis.value == -1  # along z: axial slices
    assert dock.analysis.class_names() == ["background", "CSF", "grey matter", "white matter"]
    nd = viewer.dims.ndim
    assert tuple(viewer.dims.displayed) == (nd - 2, nd - 3)  # y up, x across: z on the slider
    assert tuple(str(o).split(".")[-1].lower() for o in camera(viewer).orientation2d) == ("up", "left")
    from napari_metaseg._layers import text_overlay

    assert "radiological" in text_overlay(viewer).text and text_overlay(viewer).visible
    # the case is named after its file, not the layer
    assert dock.meta.form.case_id.value == "brain3d"


def test_case_ids_follow_the_files_and_refit_never_silently_replaces(make_napari_viewer, qtbot, tmp_path):
    import nibabel as nib

    from napari_metaseg._sample_data import SAMPLE_DIR

    # two BIDS subjects whose files have the same names
    for sub in ("sub-01", "sub-02"):
        folder = tmp_path / sub / "anat"
        folder.mkdir(parents=True)
        for name in ("softmax", "gt"):
            img = nib.load(str(SAMPLE_DIR / f"brain3d_{name}.nii.gz"))
            nib.save(img, str(folder / f"{name}_rf.nii.gz" if name == "softmax" else folder / "gt.nii.gz"))
    viewer = make_napari_viewer()
    dock = metaseg_dock(viewer)
    for f in ("softmax_rf", "gt"):
        viewer.open(str(tmp_path / "sub-01" / "anat" / f"{f}.nii.gz"), plugin="napari-metaseg")
    dock.analysis.form.min_interior.value = 0
    _run(qtbot, dock.analysis)
    meta = dock.meta
    assert meta.form.case_id.value == "sub-01"
    meta.form.min_interior.value = 0
    meta.form.n_splits.value = 1
    results = []
    meta.trained.connect(results.append)
    meta.train()
    wait_for_worker(qtbot, meta)
    assert len(results) == 1, meta.status.text()
    # the next subject: its layers replace the first's; the id follows
    for la in list(viewer.layers):
        viewer.layers.remove(la)
    for f in ("softmax_rf", "gt"):
        viewer.open(str(tmp_path / "sub-02" / "anat" / f"{f}.nii.gz"), plugin="napari-metaseg")
    _run(qtbot, dock.analysis)
    assert meta.form.case_id.value == "sub-02"
    # naming the current case like a training case asks first; "no" refits nothing
    meta.form.case_id.value = "sub-01"
    asked = []
    meta.ask = lambda title, text: asked.append(text) or False
    assert meta.refit_current() is None
    assert asked and "already hold a case 'sub-01'" in asked[0]
    assert "not started" in meta.status.text()
    meta.form.case_id.value = "sub-02"
    assert meta.refit_current() is not None
    wait_for_worker(qtbot, meta)
    assert len(results) == 2 and meta.dataset.cases == ["sub-01", "sub-02"]


def test_a_failure_resets_the_bar_and_says_why_in_the_panel(make_napari_viewer, qtbot, monkeypatch):
    from napari_metaseg import workflows

    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "nuclei2d")
    dock = metaseg_dock(viewer)
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda *a, **k: None)

    def failing(*args, **kwargs):
        yield 0.5, "half way"
        raise ValueError("the probabilities hold NaN: replace them before the analysis")

    monkeypatch.setattr(workflows, "analyse", failing)
    dock.analysis.run_button.click()
    wait_for_worker(qtbot, dock.analysis)
    assert dock.analysis.progress.value() == 0
    assert dock.analysis.status.text().startswith("error: analysis failed: the probabilities hold NaN")
    # a ground truth of another grid is refused before any work, with the voxel sizes
    gt = viewer.layers["nuclei ground truth"]
    gt.scale = (2.0, 2.0)
    monkeypatch.undo()
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda *a, **k: None)
    assert dock.analysis.run() is None
    assert "voxel size 1 x 1 units vs 2 x 2 units" in dock.analysis.status.text()


def test_the_review_loop_in_at_most_eight_actions(make_napari_viewer, qtbot):
    """From the demo (brain sample analysed slice-wise, no model yet): find the worst place,
    fix the label, refit, see the new colours. Every click, key and edit is counted."""
    from napari_metaseg.__main__ import populate_demo

    viewer = make_napari_viewer()
    analysis = populate_demo(viewer)  # what `python -m napari_metaseg` shows
    wait_for_worker(qtbot, analysis)
    from napari_metaseg._widgets.dock import MetaSegDock

    dock = analysis
    while not isinstance(dock, MetaSegDock):  # the demo docks the one MetaSeg dock
        dock = dock.parentWidget()
    seg_layer = viewer.layers["segments"]
    gt_layer = viewer.layers["brain ground truth"]
    actions = []

    def act(what, step):
        actions.append(what)
        return step()

    act("open the Review tab", lambda: dock.tabs.setCurrentIndex(2))
    review = dock.review
    act("click Load sample model", review.sample_model_button.click)
    # the model colours at once, by its prediction
    assert seg_layer.metadata["metaseg"]["color_by"] in ("iou_adj_pred", "p_iou0")
    with qtbot.waitSignal(review.ready, timeout=120_000):
        act("click Find label errors", review.find_button.click)
    wait_for_worker(qtbot, review)
    rec = review.store.proposals[review.current]
    # shown in its plane, ready to fix: GT visible, paint mode, the proposed label selected
    assert gt_layer.visible and str(gt_layer.mode).split(".")[-1].lower() == "paint"
    assert gt_layer.selected_label == rec["predicted_class"]
    mask = review._voxels(rec)
    data = np.asarray(gt_layer.data)

    def paint():
        data[mask] = gt_layer.selected_label
        gt_layer.data = data

    act("paint the proposal", paint)
    act("open the Model tab", lambda: dock.tabs.setCurrentIndex(1))
    meta = dock.meta
    act("set min interior 0", lambda: setattr(meta.form.min_interior, "value", 0))
    before = seg_layer.colormap
    refits = []
    meta.trained.connect(refits.append)
    act("click Refit", meta.refit_button.click)
    wait_for_worker(qtbot, meta)
    assert len(refits) == 1, meta.status.text()
    assert len(actions) <= 8, actions
    # refitted on the corrected case, measured again, and recoloured without Apply
    result = refits[0]
    assert result.refit and result.measured is not None
    assert meta.classifier.provenance_[-1]["added_cases"] == ["brain3d"]
    assert dock.analysis.session.classifier is meta.classifier
    assert seg_layer.colormap is not before
    assert seg_layer.metadata["metaseg"]["color_by"] in ("iou_adj_pred", "p_iou0")
    fixed = seg_layer.features.set_index("index")
    ids = np.unique(np.asarray(seg_layer.data)[mask])
    ids = ids[ids > 0]
    assert (fixed.loc[ids, "iou_adj"] > 0).all()  # the fixed label now overlaps its segment


def test_a_case_opened_from_triage_arrives_with_its_quality_overlay(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg import workflows
    from napari_metaseg._sample_data import load_nuclei_arrays
    from napari_metaseg.core.progress import drain

    _, probs, gt = load_nuclei_arrays()
    folder = tmp_path / "cases"
    folder.mkdir()
    for name, flip in (("left", False), ("right", True)):
        p, g = (probs[:, ::-1], gt[:, ::-1]) if flip else (probs, gt)
        np.save(folder / f"{name}_softmax.npy", np.ascontiguousarray(p))
        np.save(folder / f"{name}_gt.npy", np.ascontiguousarray(g))
    from napari_metaseg.io.cases import find_cases

    model = drain(workflows.train(cases=find_cases([folder]), settings=workflows.case_settings(),
                                  min_interior=0, n_splits=0))
    viewer = make_napari_viewer()
    dock = metaseg_dock(viewer)
    dock.analysis.session.set(model)
    triage = dock.show_tab("active_learning")
    triage.form.inputs.value = str(folder)
    triage.form.mode.value = "auto"
    ranked = []
    triage.ranked.connect(ranked.append)
    triage.rank()
    wait_for_worker(qtbot, triage)
    assert len(ranked) == 1, triage.status.text()
    with qtbot.waitSignal(dock.analysis.finished, timeout=120_000):
        triage.open_row(0)
    wait_for_worker(qtbot, dock.analysis)
    layer = viewer.layers["segments"]
    case = triage.shown_table()["case"].iloc[0]
    assert dock.analysis.form.probabilities.value == f"{case} softmax"
    assert layer.metadata["metaseg"]["color_by"] == "iou_adj_pred"  # the session's model rated it
    assert layer.metadata["metaseg"]["case_id"] == case
    assert not dock.legend.isHidden() and "predicted IoU_adj" in dock.legend.text()


def test_the_dock_prepares_the_engine_and_starts_a_run_asked_for_meanwhile(make_napari_viewer, qtbot,
                                                                           monkeypatch):
    from napari_metaseg._widgets import warmup

    monkeypatch.delenv("NAPARI_METASEG_WARM_UP", raising=False)
    monkeypatch.setattr(warmup, "_INSTANCE", None)  # a new viewer process
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "nuclei2d")
    dock = metaseg_dock(viewer)
    warm = dock.warm_up
    assert isinstance(warm, warmup.EngineWarmUp)
    if not warm.is_ready:  # (numba's cache is warm here, so this takes about a second)
        assert dock.analysis.status.text().startswith("preparing the engine (first run only)")
        assert dock.analysis.run() is None  # asked for while preparing: starts when ready
        assert "starts when it is ready" in dock.analysis.status.text()
        with qtbot.waitSignal(dock.analysis.finished, timeout=180_000):
            pass
    else:
        _run(qtbot, dock.analysis)
    wait_for_worker(qtbot, dock.analysis)
    assert warm.is_ready and warm.process.exitCode() == 0
    assert "segments" in viewer.layers
