"""The numerical engine: numpy, numba, scikit-learn and pandas only (no Qt, no napari).

Data flows one way: inputs (validate) -> heatmaps -> segments -> metrics table.
"""

from .heatmaps import MEASURES, SAMPLE_MEASURES, dispersion_maps
from .inputs import ProbabilityWarning, as_probabilities, check_ground_truth
from .metrics import iter_segment_metrics, metric_columns, segment_metrics
from .segments import MODES, label_segments

__all__ = [
    "MEASURES",
    "MODES",
    "SAMPLE_MEASURES",
    "ProbabilityWarning",
    "as_probabilities",
    "check_ground_truth",
    "dispersion_maps",
    "iter_segment_metrics",
    "label_segments",
    "metric_columns",
    "segment_metrics",
]
