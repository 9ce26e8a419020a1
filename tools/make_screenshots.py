"""Screenshots of the panels for docs/ (run under Xvfb): ``python tools/make_screenshots.py``."""

import sys
import time
from pathlib import Path

import numpy as np

from napari_metaseg._layers import camera


def wait(app, widget, timeout=300):
    t0 = time.time()
    while widget.worker is not None and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.01)


def save(viewer, path):
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from PIL import Image
    from qtpy.QtWidgets import QApplication
    from skimage.transform import rescale

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # napari's own "PyQt5 is deprecated" toast would cover the canvas
    QApplication.instance().processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)[..., :3]
    if shot.shape[1] > 1400:
        shot = (rescale(shot, 1400 / shot.shape[1], channel_axis=-1, anti_aliasing=True) * 255)
        shot = shot.astype(np.uint8)
    # A 128-colour palette keeps the PNG small, but median cut drops colours that cover few
    # pixels: it turned the magenta review highlight (~800 px) into the GT's lavender. Keep the
    # palette only when no pixel moves by more than a shade; else save the RGB image.
    img = Image.fromarray(shot)
    pal = img.quantize(colors=128, dither=Image.Dither.NONE)
    err = np.abs(np.asarray(pal.convert("RGB"), np.int16) - shot.astype(np.int16)).max(-1)
    (pal if err.max() <= 40 else img).save(path, optimize=True)
    if err.max() > 40:
        print(f"{path}: the palette would change {int((err > 40).sum())} pixels: saved as RGB")
    print(path, Path(path).stat().st_size // 1024, "KiB")


#: The window size of every screenshot: a laptop screen.
SCREEN = (1366, 768)


def _viewer(sample=None, run=True):
    """A viewer of SCREEN size with the MetaSeg dock (the demo's state); returns (viewer, dock)."""
    import napari

    from napari_metaseg.__main__ import populate_demo
    from napari_metaseg._widgets.dock import MetaSegDock

    viewer = napari.Viewer(title="napari-metaseg", show=True)
    viewer.window._qt_window.resize(*SCREEN)
    analysis = populate_demo(viewer, sample=sample, run=run)
    dock = analysis
    while not isinstance(dock, MetaSegDock):
        dock = dock.parentWidget()
    if run:  # the analysis starts once the engine's warm-up (a child process) is ready
        from qtpy.QtWidgets import QApplication

        app, t_end = QApplication.instance(), time.time() + 300
        while "segments" not in viewer.layers and time.time() < t_end:
            app.processEvents()
            time.sleep(0.02)
        wait(app, analysis)
    return viewer, dock


def settle(app, n=20):
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)


def main(out="docs"):
    import os
    import tempfile

    from qtpy.QtWidgets import QApplication

    os.environ["NAPARI_METASEG_REVIEW_DIR"] = tempfile.mkdtemp()  # not the user's own reviews
    app = QApplication.instance() or QApplication(sys.argv)
    nuclei(app, out)
    brain_axial(app, out)
    review_queue(app, out)
    meta_panel(app, out)
    quality_panel(app, out)


def nuclei(app, out="docs"):
    """The nuclei sample analysed (true IoU_adj), the worst nucleus selected in the table."""
    viewer, dock = _viewer("nuclei2d")
    wait(app, dock.analysis)
    dock.analysis.select_row(0)  # the table opens worst first
    viewer.reset_view()
    settle(app)
    save(viewer, Path(out) / "gui_nuclei_2d.png")
    viewer.close()


def brain_axial(app, out="docs"):
    """The brain sample in the axial radiological view, coloured by the sample model's prediction,
    with the legend on the canvas and the worst segment of the table selected."""
    viewer, dock = _viewer("brain3d")
    wait(app, dock.analysis)
    dock.review.load_sample_model()  # the session's model: the segments are recoloured at once
    dock.analysis.select_row(0)
    settle(app)
    save(viewer, Path(out) / "gui_brain_axial.png")
    viewer.close()


def review_queue(app, out="docs"):
    """The Review tab on the brain sample: sample model, proposals found, four decisions made, a
    proposal shown in its plane with the GT in paint mode on the proposed label."""
    viewer, dock = _viewer("brain3d")
    wait(app, dock.analysis)
    panel = dock.show_tab("review")
    panel.load_sample_model()
    panel.find()
    wait(app, panel)
    for decision in ("label_error", "not_error", "unsure", "not_error"):
        panel.decide(decision)
    props = panel.store.proposals
    big = [p for p in props if not p["decision"] and p["size"] >= 20]
    pick = big[0] if big else max(props[:50], key=lambda p: p["size"])
    panel.go_to(pick["id"])
    print(f"shown: proposal #{pick['id']} ({pick['kind']}, class {pick['class']}, "
          f"{pick['size']} voxels, slice {pick.get('slice')}, score {pick['score']:.3f})")
    camera(viewer).zoom *= 1.5
    settle(app)
    save(viewer, Path(out) / "gui_review_queue.png")
    print(panel.status.text())
    viewer.close()


def meta_panel(app, out="docs"):
    """The Model tab on the nuclei sample: trained and evaluated (ROC plot), applied at once."""
    viewer, dock = _viewer("nuclei2d")
    wait(app, dock.analysis)
    meta = dock.show_tab("meta")
    meta.form.min_interior.value = 0
    meta.train()
    wait(app, meta)
    settle(app)
    save(viewer, Path(out) / "gui_meta_panel.png")
    viewer.close()


def quality_panel(app, out="docs"):
    """The Quality tab on the brain sample (analysed slice-wise) rated by the sample model (trained
    on sub-01): the per-slice strip (predicted mean IoU of the image-level regressor, true mean IoU
    as dots); the scores of the case and of its slices, the worst-scored slice through the brain
    chosen in the table (the viewer goes to it), and the 10 % most uncertain voxels (entropy) of
    the predicted brain flagged, as white contours."""
    viewer, dock = _viewer("brain3d")
    wait(app, dock.analysis)
    dock.review.load_sample_model()  # the analysed case is rated at once
    settle(app)
    panel = dock.show_tab("quality")
    panel.compute_scores()
    wait(app, panel)
    panel.flag_form.method.value = "quantile share"
    panel.value.setValue(0.10)
    panel.flag()
    wait(app, panel)
    print(panel.status.text())
    table = panel.slice_table()
    inside = table[table["n_pixels"] > 0]
    brain = inside[(inside["slice"] > 0.3 * len(table)) & (inside["slice"] < 0.7 * len(table))]
    row = int(brain["mean_iou"].idxmin())
    panel.slice_view.selectRow(row)
    panel.go_to_slice_row(row)
    print(f"slice {table['slice'].iloc[row]}: mean IoU {table['mean_iou'].iloc[row]:.3f}")
    camera(viewer).zoom *= 1.3
    settle(app)
    save(viewer, Path(out) / "gui_quality.png")
    viewer.close()


def active_learning_panel(app, out="docs", data="../shared/data/brain"):
    """The active-learning panel ranking the slices of brain sub-02 (no GT given) with a meta model
    trained on sub-01 (full resolution, slice-wise, background segments left out); the top-ranked
    slice opened over the T1 image with the predicted labels."""
    import tempfile
    import time as _time

    import napari

    from napari_metaseg import workflows
    from napari_metaseg._widgets._session import session_for
    from napari_metaseg.core.progress import drain
    from napari_metaseg.io.cases import Case

    data = Path(data)
    if not (data / "sub-01").is_dir():
        print(f"skipped gui_active_learning.png: no {data}")
        return
    tmp = Path(tempfile.mkdtemp())
    t0 = _time.perf_counter()
    sub01 = data / "sub-01"
    trained = drain(workflows.train(cases=[Case("sub-01", sub01 / "softmax_rf.nii.gz", sub01 / "gt.nii.gz")],
                                    settings=workflows.case_settings(mode="slices"), n_splits=0))
    workflows.save_model(tmp / "brain_sub01.json.gz", trained)
    print(f"model trained on sub-01 in {_time.perf_counter() - t0:.1f} s ({trained.image_note})")
    (tmp / "cases" / "sub-02").mkdir(parents=True)
    # sub-02 as an unlabelled case: its softmax and its T1 image (opened beside it), no GT
    for name in ("softmax_rf.nii.gz", "t1.nii.gz"):
        (tmp / "cases" / "sub-02" / name).symlink_to((data / "sub-02" / name).resolve())

    viewer = napari.Viewer(title="napari-metaseg", show=True)
    viewer.window._qt_window.resize(*SCREEN)
    session_for(viewer).set(trained)
    _, dock = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg")
    panel = dock.show_tab("active_learning")
    panel.form.inputs.value = str(tmp / "cases")
    panel.form.mode.value = "slices"
    t0 = _time.perf_counter()
    panel.rank()
    wait(app, panel)
    print(f"ranked {len(panel.shown_table())} slices in {_time.perf_counter() - t0:.1f} s "
          f"({panel.status.text()})")
    print(panel.shown_table().head(5).to_string(index=False))
    # the top-ranked slice: T1, predicted labels (argmax; the softmax layer stays hidden)
    panel.open_row(0)
    t_end = _time.perf_counter() + 300  # the opened slice arrives with its quality overlay (after the
    while "segments" not in viewer.layers and _time.perf_counter() < t_end:  # engine's warm-up)
        settle(app, 5)
    wait(app, dock.analysis)
    settle(app)
    viewer.layers["sub-02 prediction"].visible = False
    panel.table_view.selectRow(0)
    viewer.reset_view()
    # zoom onto the slice's predicted foreground: what the ranking rated
    pred = viewer.layers["sub-02 prediction"]
    z_axis = viewer.dims.ndim - 1 if 3 not in viewer.dims.displayed else None
    if z_axis is not None:
        k = round(float(pred.world_to_data(viewer.dims.point[1:])[2]))
        fg = np.argwhere(pred.data[:, :, k] > 0)
        if len(fg):
            c = pred.data_to_world([*fg.mean(0), k])
            cam = camera(viewer)
            disp = [ax - 1 for ax in viewer.dims.displayed]
            cam.center = tuple(c[d] for d in disp)
            cam.zoom *= 4
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    save(viewer, Path(out) / "gui_active_learning.png")
    viewer.close()


def ood_refit_panel(app, out="docs", data="../shared/data/brain_ood"):
    """The Unknown tab after "Refit with my decisions" on sub-02L: a region model trained on
    sub-01L (E >= 0.5, 3D, background excluded), the 30 best-rated regions decided by the lesion
    annotation, then refitted."""
    import tempfile

    import napari

    from napari_metaseg._layers import axial_view
    from napari_metaseg.cli import main as cli

    data = Path(data)
    tmp = Path(tempfile.mkdtemp())
    model = tmp / "ood_model.json"
    assert cli(["ood", str(data / "sub-01L"), "--exclude-class", "0", "--out", str(tmp / "tr"), "-q"]) == 0
    assert cli(["train", str(tmp / "tr"), "--out", str(model), "-q"]) == 0
    viewer = napari.Viewer(title="napari-metaseg", show=True)
    viewer.window._qt_window.resize(*SCREEN)
    for name in ("t1", "softmax_rf", "lesions"):
        viewer.open(str(data / "sub-02L" / f"{name}.nii.gz"), plugin="napari-metaseg")
    axial_view(viewer)
    _, dock = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg")
    w = dock.show_tab("ood")
    w.form.ood_layer.value = "lesions"
    w.form.ood_label.value = -1
    w.load_model(model)
    w.find()
    wait(app, w)
    feat = w.regions_layer.features.set_index("index")
    for rid, hit in feat.sort_values("p_hit", ascending=False).head(30)["hit"].items():
        w.decide("unknown" if hit else "known", region=int(rid))
    w.refit()
    wait(app, w)
    print(w.status.text())
    w.select_row(0)
    viewer.layers["softmax_rf"].visible = False
    viewer.layers["lesions"].visible = False
    from qtpy.QtWidgets import QScrollArea

    area = w.parentWidget()
    while area is not None and not isinstance(area, QScrollArea):
        area = area.parentWidget()
    settle(app)
    if area is not None:  # the refit and save buttons in view
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    settle(app)
    save(viewer, Path(out) / "gui_ood_refit.png")
    viewer.close()


if __name__ == "__main__":
    funcs = {"active_learning": active_learning_panel, "review_queue": review_queue, "nuclei": nuclei,
             "brain_axial": brain_axial, "meta_panel": meta_panel, "quality": quality_panel,
             "ood_refit": ood_refit_panel}
    if len(sys.argv) > 1 and sys.argv[1] in funcs:
        from qtpy.QtWidgets import QApplication

        func = funcs[sys.argv[1]]
        func(QApplication.instance() or QApplication(sys.argv), *sys.argv[2:])
    else:
        main(*sys.argv[1:])
