"""Qt dock widgets (thin: computation only through :mod:`napari_metaseg.core`)."""

from .analysis import AnalysisWidget
from .overlay import OverlayWidget

__all__ = ["AnalysisWidget", "OverlayWidget"]
