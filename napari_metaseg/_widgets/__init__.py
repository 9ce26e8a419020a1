"""Qt dock widgets (thin: computation only through :mod:`napari_metaseg.core`)."""

from .active_learning import ActiveLearningWidget
from .analysis import AnalysisWidget
from .overlay import OverlayWidget
from .review import ReviewWidget

__all__ = ["ActiveLearningWidget", "AnalysisWidget", "OverlayWidget", "ReviewWidget"]
