"""Names every layer shares (engine, workflows, panels, CLI), each defined once here.

No imports: the CLI builds its argument parser from these without loading the engine, so that
``napari-metaseg --help`` answers at once.
"""

__all__ = [
    "CLASSIFIER_KINDS",
    "DISPLAY_COLUMNS",
    "MODEL_PAIRS",
    "MODES",
    "OOD_COLUMNS",
    "PREDICTION_COLUMNS",
    "REGRESSOR_KINDS",
    "SPLITS",
]

#: Segmentation modes: ``auto`` (2d for images, 3d for volumes), ``2d`` (8-connectivity), ``3d``
#: (26-connectivity), ``slices`` (each slice of a volume on its own, 8-connectivity in-plane).
MODES = ("auto", "2d", "3d", "slices")
#: Model families of the meta classifier (LASSO = L1-penalised logistic regression).
CLASSIFIER_KINDS = ("lasso", "logistic", "gbm")
#: Model families of the meta regressor.
REGRESSOR_KINDS = ("linear", "lasso", "gbm")
#: Named (classifier kind, regressor kind) pairs: ``linear`` is the paper's pair.
MODEL_PAIRS = {
    "linear": ("lasso", "linear"),
    "logistic": ("logistic", "linear"),
    "lasso": ("lasso", "lasso"),
    "gbm": ("gbm", "gbm"),
}
#: Columns a meta model adds to a metrics table: P(IoU_adj = 0) and the predicted IoU_adj.
PREDICTION_COLUMNS = ("p_iou0", "iou_adj_pred")
#: Columns of an OoD region table that are never features: the target ``hit`` (1 = the region
#: touches an annotated OoD voxel) and the region meta classifier's probability of it, ``p_hit``.
OOD_COLUMNS = ("hit", "p_hit")
#: Columns the napari panels add to a metrics table for the reviewer (never metrics).
DISPLAY_COLUMNS = ("class_name",)
#: What stays together in the evaluation's 50/50 splits (``auto``: by case with several cases,
#: else by slice for slice-wise tables, else by segment).
SPLITS = ("auto", "case", "slice", "segment")
