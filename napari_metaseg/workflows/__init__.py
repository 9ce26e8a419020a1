"""Every user-facing job, once: the Qt-free layer that the panels, the CLI and batch runs share.

A *job* is a generator that yields ``(fraction, stage)`` and returns its result (the protocol
of :mod:`napari_metaseg.core.progress`): a panel runs it in a ``thread_worker`` (progress bar,
status line, cancel at the next yield), the CLI drains it with a progress bar, tests drain it
with :func:`~napari_metaseg.core.progress.drain`. A *task* is a plain function of one case
file that :mod:`napari_metaseg.batch` runs over many cases, serially or on Dask workers.

=====================  ==========================================  ==============================
job                    function                                    used by
=====================  ==========================================  ==============================
analyse a case         :func:`analyse`                             analysis panel
measure a dataset      :func:`measure_cases` (:func:`metrics_task`)  ``metrics``
predict a dataset      :func:`predict_cases` (:func:`predict_task`)  ``predict``
train                  :func:`train`                               meta panel, ``train``
refit                  :func:`refit`                               meta and active-learning panels, ``refit``
save / load a model    :func:`save_model`, :func:`load_model`      every panel, ``train``, ``refit``
rank cases             :func:`rank` (:func:`rank_task`)            active-learning panel, ``rank``
rank one case's slices :func:`slice_quality`                       active-learning panel
find label errors      :func:`find_in_case`, :func:`label_errors`  review panel, ``label-errors``
report                 :func:`report`                              ``report``
warm the engine        :func:`warm_up_engine`                      panels, case commands
OoD regions            :func:`find_ood`; over files :func:`ood_cases`  OoD panel, ``ood``
train a region model   :func:`train_regions`                       ``train`` on region tables
refit a region model   :func:`refit_regions`                       OoD panel, ``refit`` on region tables
evaluation scores      :func:`scores` (:func:`scores_task`)        ``scores``
image quality          :func:`image_rows`, :func:`train_quality`   ``quality``
voxel error detection  :func:`error_detection`                     ``errors evaluate``
case scores, flags     :func:`case_scores`, :func:`flag_case`      quality panel
voxel error maps       :func:`error_maps` (:func:`error_map_task`)  ``errors flag``
=====================  ==========================================  ==============================

``docs/maintainers.md`` explains the layers and how to add a job.
"""

from ..core.progress import drain, rescaled
from .analysis import Analysis, analyse, warm_up
from .cases import (
    RunSummary,
    case_settings,
    measure_cases,
    measure_file,
    metrics_task,
    over_cases,
    predict_cases,
    predict_task,
)
from .label_errors import LabelErrorsResult, find_in_case, label_errors, label_errors_task
from .models import (
    MetaModels,
    TrainResult,
    check_segmentation,
    clean_table,
    collect_dataset,
    dataset_path,
    default_training,
    iou_adj_of,
    load_model,
    refit,
    refit_case,
    resolve_split,
    save_model,
    train,
)
from .ood import OodResult, OodRun, RegionRefit, find_ood, ood_cases, ood_task, refit_regions, train_regions
from .quality import (
    ImageRows,
    QualityEvaluation,
    QualityModel,
    ScoresResult,
    calibrate_cases,
    case_scores,
    error_detection,
    error_maps,
    evaluate_quality_rows,
    flag_case,
    image_rows,
    load_quality_model,
    predict_quality,
    save_quality_model,
    scores,
    scores_task,
    train_quality,
)
from .rank import RankResult, rank, rank_task, slice_quality
from .report import report
from .warmup import WARM_UP_STAGE, warm_up_engine

__all__ = [
    "WARM_UP_STAGE",
    "Analysis",
    "ImageRows",
    "LabelErrorsResult",
    "MetaModels",
    "OodResult",
    "OodRun",
    "QualityEvaluation",
    "QualityModel",
    "RankResult",
    "RegionRefit",
    "RunSummary",
    "ScoresResult",
    "TrainResult",
    "analyse",
    "calibrate_cases",
    "case_scores",
    "case_settings",
    "check_segmentation",
    "clean_table",
    "collect_dataset",
    "dataset_path",
    "default_training",
    "drain",
    "error_detection",
    "error_maps",
    "evaluate_quality_rows",
    "find_in_case",
    "find_ood",
    "flag_case",
    "image_rows",
    "iou_adj_of",
    "label_errors",
    "label_errors_task",
    "load_model",
    "load_quality_model",
    "measure_cases",
    "measure_file",
    "metrics_task",
    "ood_cases",
    "ood_task",
    "over_cases",
    "predict_cases",
    "predict_quality",
    "predict_task",
    "rank",
    "rank_task",
    "refit",
    "refit_case",
    "refit_regions",
    "report",
    "rescaled",
    "resolve_split",
    "save_model",
    "save_quality_model",
    "scores",
    "scores_task",
    "slice_quality",
    "train",
    "train_quality",
    "train_regions",
    "warm_up",
    "warm_up_engine",
]
