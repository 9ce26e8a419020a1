"""Names every layer shares (engine, workflows, panels, CLI), each defined once here.

No imports: the CLI builds its argument parser from these without loading the engine, so that
``napari-metaseg --help`` answers at once.
"""

__all__ = [
    "CLASSIFIER_KINDS",
    "DEFAULT_TRAINING",
    "DISPLAY_COLUMNS",
    "IMAGE_SCORE_COLUMNS",
    "IMAGE_TARGETS",
    "IOU_ADJ",
    "MODEL_PAIRS",
    "MODES",
    "OOD_COLUMNS",
    "PREDICTION_COLUMNS",
    "RANK_MIN_FOREGROUND",
    "REGRESSOR_KINDS",
    "SPLITS",
]

#: Segmentation modes: ``auto`` (2d for images, 3d for volumes), ``2d`` (8-connectivity), ``3d``
#: (26-connectivity), ``slices`` (each slice of a volume on its own, 8-connectivity in-plane).
MODES = ("auto", "2d", "3d", "slices")
#: Definitions of IoU_adj: ``paper`` (the MetaSeg paper's, the default) and ``local`` (the variant
#: the authors' code computes; docs/engine.md, "The local IoU_adj").
IOU_ADJ = ("paper", "local")
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
#: What :func:`napari_metaseg.workflows.train` fits when no kind is given, per segmentation mode:
#: (classifier kind, regressor kind, min_interior). Chosen by grouped cross-validation across
#: subjects (``benchmarks/model_kinds_realdata.py``; docs/meta_models.md, "Default model kinds"):
#: whole-volume segments are mostly specks without interior, so 3D keeps them (min_interior 0)
#: and uses the kinds that transfer best to a new subject there.
DEFAULT_TRAINING = {"2d": ("lasso", "linear", 1), "slices": ("lasso", "linear", 1),
                    "3d": ("logistic", "gbm", 0)}
#: Columns a meta model adds to a metrics table: P(IoU_adj = 0) and the predicted IoU_adj.
PREDICTION_COLUMNS = ("p_iou0", "iou_adj_pred")
#: Ground-truth columns broadcast to every segment of a table measured with ground truth: the
#: mean IoU / Dice of the slice (slice-wise segmentation) or image / volume the segment lies in.
#: Targets of the image-level regressor, never segment features.
IMAGE_SCORE_COLUMNS = ("image_mean_iou", "image_mean_dice")
#: Image scores an image-level quality regressor can be trained to predict.
IMAGE_TARGETS = ("mean_iou", "mean_dice", "pixel_accuracy")
#: Default minimum foreground of a ranked slice (case): rows whose predicted foreground is below
#: this share of the largest one of the same case (by slice) or of all cases (by case) rank last.
RANK_MIN_FOREGROUND = 0.01
#: Columns of an OoD region table that are never features: the target ``hit`` (1 = the region
#: touches an annotated OoD voxel) and the region meta classifier's probability of it, ``p_hit``.
OOD_COLUMNS = ("hit", "p_hit")
#: Columns the napari panels add to a metrics table for the reviewer (never metrics).
DISPLAY_COLUMNS = ("class_name",)
#: What stays together in the evaluation's 50/50 splits (``auto``: by case with several cases,
#: else by slice for slice-wise tables, else by segment).
SPLITS = ("auto", "case", "slice", "segment")
