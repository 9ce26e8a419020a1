"""The numerical engine: numpy, numba, scikit-learn and pandas only (no Qt, no napari).

Data flows one way: inputs (validate) -> heatmaps -> segments -> metrics table -> meta model ->
predictions.
"""

from .heatmaps import MEASURES, SAMPLE_MEASURES, dispersion_maps
from .inputs import ProbabilityWarning, as_probabilities, check_ground_truth
from .metrics import iter_segment_metrics, metric_columns, segment_metrics
from .segments import MODES, label_segments

# The meta-model stage needs scikit-learn (about a second to import); it is loaded on first use
# so that validating, measuring and labelling stay quick to start.
_LAZY = {
    "active_learning": ("order_ranking", "predicted_quality", "rank_cases"),
    "error_maps": ("ErrorCalibration", "calibrate_errors", "error_detection_scores", "flag_errors"),
    "image_quality": ("compare_auroc", "evaluate_quality", "fit_image_regressor", "image_features"),
    "label_errors": ("evaluate_label_errors", "find_label_errors", "inject_label_errors"),
    "meta_dataset": ("NON_FEATURE_COLUMNS", "SIZE_COLUMNS", "MetaDataset", "feature_columns",
                     "training_rows"),
    "meta_io": ("MetaModelFileError", "load_models", "save_models"),
    "meta_model": ("CLASSIFIER_KINDS", "REGRESSOR_KINDS", "Evaluation", "MetaClassifier",
                   "MetaRegressor", "check_columns", "evaluate", "evaluation_splits",
                   "logistic_lasso_path", "predict_table", "refit"),
    "ood": ("evaluate_ood", "ood_regions", "pixel_scores", "region_hits"),
    "plots": ("plot_iou_scatter", "plot_lasso_path", "plot_roc"),
    "scores": ("instance_ap", "segmentation_scores"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))


__all__ = [
    "CLASSIFIER_KINDS",
    "MEASURES",
    "MODES",
    "NON_FEATURE_COLUMNS",
    "REGRESSOR_KINDS",
    "SAMPLE_MEASURES",
    "SIZE_COLUMNS",
    "ErrorCalibration",
    "Evaluation",
    "MetaClassifier",
    "MetaDataset",
    "MetaModelFileError",
    "MetaRegressor",
    "ProbabilityWarning",
    "as_probabilities",
    "calibrate_errors",
    "check_columns",
    "check_ground_truth",
    "compare_auroc",
    "dispersion_maps",
    "error_detection_scores",
    "evaluate",
    "evaluate_label_errors",
    "evaluate_ood",
    "evaluate_quality",
    "evaluation_splits",
    "feature_columns",
    "find_label_errors",
    "fit_image_regressor",
    "flag_errors",
    "image_features",
    "inject_label_errors",
    "instance_ap",
    "iter_segment_metrics",
    "label_segments",
    "load_models",
    "logistic_lasso_path",
    "metric_columns",
    "ood_regions",
    "order_ranking",
    "pixel_scores",
    "plot_iou_scatter",
    "plot_lasso_path",
    "plot_roc",
    "predict_table",
    "predicted_quality",
    "rank_cases",
    "refit",
    "region_hits",
    "save_models",
    "segment_metrics",
    "segmentation_scores",
    "training_rows",
]
