"""The MetaSeg dock: every part of the review loop in one dock widget, one tab each.

Analyse (heatmaps, rated segments, table), Model (train, load, refit), Review (label errors),
Quality (scores of the case and its slices, flagged voxels), Triage (rank cases for
annotation), Colours (colour segments by any column), Unknown (out-of-distribution regions).
Each tab scrolls on its own, so the dock fits a laptop screen (1366 x 768) with every part
available; the parts share the viewer's session (one set of meta models) and the canvas legend.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .legend import legend_for

#: (tab title, attribute, panel class path), in the order of the review loop.
TABS = (
    ("Analyse", "analysis", "napari_metaseg._widgets.analysis:AnalysisWidget"),
    ("Model", "meta", "napari_metaseg._widgets.meta:MetaWidget"),
    ("Review", "review", "napari_metaseg._widgets.review:ReviewWidget"),
    ("Quality", "quality", "napari_metaseg._widgets.quality:QualityWidget"),
    ("Triage", "active_learning", "napari_metaseg._widgets.active_learning:ActiveLearningWidget"),
    ("Colours", "overlay", "napari_metaseg._widgets.overlay:OverlayWidget"),
    ("Unknown", "ood", "napari_metaseg._widgets.ood:OodWidget"),
)
#: Widest the dock asks to be by default (its parts scroll sideways below that).
DOCK_WIDTH = 440


def _import(path):
    from importlib import import_module

    module, name = path.split(":")
    return getattr(import_module(module), name)


def scrolled(widget):
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.NoFrame)
    area.setWidget(widget)
    area.setMinimumSize(120, 120)
    return area


class MetaSegDock(QWidget):
    """One dock with a tab per part of the loop (attributes ``analysis``, ``meta``, ``review``,
    ``quality``, ``active_learning``, ``overlay``, ``ood``: the panels themselves)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setElideMode(Qt.ElideRight)
        for title, attr, path in TABS:
            panel = _import(path)(napari_viewer)
            setattr(self, attr, panel)
            self.tabs.addTab(scrolled(panel), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.legend = legend_for(napari_viewer)
        self.setMinimumWidth(240)
        from .warmup import engine_warm_up

        self.warm_up = engine_warm_up()  # compiles the engine in a child process (first run only)
        self.analysis.wait_for_engine(self.warm_up)

    def sizeHint(self):
        hint = super().sizeHint()
        hint.setWidth(min(hint.width(), DOCK_WIDTH))
        return hint

    def show_tab(self, attr):
        """Bring the tab of panel ``attr`` (e.g. ``"review"``) to the front; returns the panel."""
        for i, (_, name, _) in enumerate(TABS):
            if name == attr:
                self.tabs.setCurrentIndex(i)
                return getattr(self, attr)
        raise KeyError(attr)

    def closeEvent(self, event):
        for _, attr, _ in TABS:
            getattr(self, attr).close()
        super().closeEvent(event)
