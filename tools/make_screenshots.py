"""Screenshots of the panels for docs/ (run under Xvfb): ``python tools/make_screenshots.py``."""

import sys
import time
from pathlib import Path

import numpy as np


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
    # a 256-colour palette keeps the PNG small; the overlay colours survive it
    Image.fromarray(shot).quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)
    print(path, Path(path).stat().st_size // 1024, "KiB")


def main(out="docs"):
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_metaseg.__main__ import populate_demo

    app = QApplication.instance() or QApplication(sys.argv)
    for sample, name in (("nuclei2d", "gui_nuclei_2d.png"), ("brain3d", "gui_brain_3d.png")):
        viewer = napari.Viewer(title="napari-metaseg", show=True)
        viewer.window._qt_window.resize(1400, 900)
        widget = populate_demo(viewer, sample=sample)
        wait(app, widget)
        seg = viewer.layers["segments"]
        seg.opacity = 0.6 if sample == "nuclei2d" else 0.7
        if sample == "nuclei2d":
            bad = seg.features.query("`class` == 1").sort_values("iou_adj").iloc[0]
            widget.select_row(widget.model.row_of("index", int(bad["index"])))
            viewer.reset_view()
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        save(viewer, Path(out) / name)
        viewer.close()
    meta_panel(app, out)


def meta_panel(app, out="docs"):
    """The meta-model panel on the nuclei sample: trained, evaluated, applied (IoU_adj plot shown)."""
    import napari

    from napari_metaseg.__main__ import populate_demo

    viewer = napari.Viewer(title="napari-metaseg", show=True)
    viewer.window._qt_window.resize(1400, 1100)
    analysis = populate_demo(viewer, sample="nuclei2d")
    wait(app, analysis)
    from qtpy.QtWidgets import QDockWidget

    analysis_dock = analysis
    while not isinstance(analysis_dock, QDockWidget):
        analysis_dock = analysis_dock.parentWidget()
    meta_dock, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    qt_window = viewer.window._qt_window
    qt_window.tabifyDockWidget(analysis_dock, meta_dock)
    meta.min_interior_spin.setValue(0)  # the nuclei case has few IoU_adj = 0 segments with interior
    meta.train()
    wait(app, meta)
    meta.apply_to_current()
    viewer.layers["segments"].opacity = 0.6
    app.processEvents()
    meta_dock.raise_()
    meta.plot_tabs.setCurrentIndex(1)  # predicted vs true IoU_adj
    from qtpy.QtCore import Qt

    qt_window.resizeDocks([meta_dock], [560], Qt.Horizontal)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    save(viewer, Path(out) / "gui_meta_panel.png")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
