"""Jobs on case files: measure one case, and measure or predict whole datasets (resumable).

A per-case *task* (:func:`metrics_task`, :func:`predict_task`) takes a
:class:`~napari_metaseg.io.cases.Case`, reads its own files and writes its own result, so it
can run on a Dask worker (:func:`napari_metaseg.batch.run_tasks`). The dataset jobs
(:func:`measure_cases`, :func:`predict_cases`, :func:`over_cases`) are generators yielding
``(fraction, stage)`` after each case, like every job of :mod:`napari_metaseg.workflows`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "RUN_LOCK",
    "OutputBusyError",
    "RunSummary",
    "case_settings",
    "case_table_path",
    "input_fingerprint",
    "is_done",
    "measure_cases",
    "measure_file",
    "metrics_task",
    "over_cases",
    "predict_cases",
    "predict_task",
    "resolve_models",
]


#: Lock file of a run in its output folder: one ``metrics``/``predict`` run per folder at a time.
RUN_LOCK = ".napari-metaseg-run.lock"


class OutputBusyError(ValueError):
    """Another run is writing to the same output folder."""


def case_settings(*, mode="auto", slice_axis=-1, ignore_index=255, class_axis=-1, iou_adj="paper",
                  **extra) -> dict:
    """How a case is read and segmented: ``mode``, ``slice_axis``, ``ignore_index``,
    ``class_axis``, and which IoU_adj its table holds, ``iou_adj`` (None values take the
    defaults); ``extra`` keys are kept (they are recorded with results, e.g. ``command``)."""
    return {"mode": mode or "auto", "slice_axis": -1 if slice_axis is None else int(slice_axis),
            "ignore_index": ignore_index, "class_axis": -1 if class_axis is None else int(class_axis),
            "iou_adj": iou_adj or "paper", **extra}


def measure_file(case, settings: dict):
    """Read a case and compute its segment metrics: returns ``(seg, table, affine)``.

    With ground truth the table also carries the image scores of the slice (slice-wise) or image
    each segment lies in (:func:`~napari_metaseg.workflows.quality.with_image_scores`).
    """
    from ..core.metrics import segment_metrics
    from ..io.cases import read_case

    probs, gt, affine = read_case(case, class_axis=settings.get("class_axis", -1))
    seg, table = segment_metrics(probs, gt, mode=settings.get("mode", "auto"),
                                 slice_axis=settings.get("slice_axis", -1),
                                 ignore_index=settings.get("ignore_index", 255),
                                 iou_adj=settings.get("iou_adj", "paper"))
    if gt is not None:
        from .quality import predicted_classes, with_image_scores

        table = with_image_scores(table, predicted_classes(seg, table), gt,
                                  segmentation={"slice_axis": settings.get("slice_axis", -1),
                                                "ignore_index": settings.get("ignore_index", 255)})
    return seg, table, affine


def resolve_models(models, table=None):
    """``(classifier, regressor)`` from a model file path, a ``MetaModels`` or a pair; the
    models' features are checked against ``table`` when given."""
    from ..core.meta_model import check_columns

    if isinstance(models, (str, Path)):
        from ..core.meta_io import load_models

        clf, reg, _ = load_models(models, table=table)
        return clf, reg
    pair = models.pair if hasattr(models, "pair") else tuple(models)
    if table is not None:
        for m in pair:
            if m is not None:
                check_columns(m, table)
    return pair


def with_case(table, name):
    """``table`` with a ``case`` column in front."""
    out = table.copy()
    if "case" in out.columns:
        out["case"] = name
    else:
        out.insert(0, "case", name)
    return out


# ============================================================================================
# Per-case tasks (run through napari_metaseg.batch.run_case)
# ============================================================================================
def case_table_path(out_dir, case_name: str) -> Path:
    """``<out_dir>/cases/<case>.parquet``."""
    return Path(out_dir) / "cases" / f"{case_name}.parquet"


#: What a case table file holds: 2 = with ground truth, the image scores of each segment's slice or
#: image (``image_mean_iou``, ``image_mean_dice``); a resumed run recomputes older tables of such cases.
TABLE_VERSION = 2


def _full_settings(case, settings: dict) -> dict:
    return {**settings, "softmax": str(case.softmax), "gt": None if case.gt is None else str(case.gt)}


def input_fingerprint(path) -> dict | None:
    """``{"size", "mtime_ns", "sha256"}`` of an input file (None for None).

    The SHA-256 covers the whole file: 2.3 ms for the 3.5 MB ``softmax_rf.nii.gz`` of the real
    brain data on the development machine (about 1.5 GB/s), against 117 ms to read that file.
    """
    if path is None:
        return None
    from .models import _sha256

    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "sha256": _sha256(path)}


def _case_inputs(case) -> dict:
    """Fingerprints of a case's files, taken before they are read (a file rewritten while it is
    being read then differs from the record next time, and the case is recomputed)."""
    return {"softmax": input_fingerprint(case.softmax), "gt": input_fingerprint(case.gt)}


def _same_content(stored, now) -> bool:
    """Whether two fingerprints (or Nones) describe the same content (size and SHA-256; the
    modification time is recorded, not compared: copying a file changes it, not its content)."""
    if stored is None or now is None:
        return stored is None and now is None
    return (isinstance(stored, dict) and stored.get("size") == now["size"]
            and stored.get("sha256") == now["sha256"])


def is_done(out_dir, case, settings: dict) -> bool:
    """Whether the case's table exists and was computed with ``settings`` from the same files
    holding the same content (size and SHA-256 recorded in the table: a file rewritten at the
    same path is recomputed)."""
    from ..io.results import read_settings

    stored = read_settings(case_table_path(out_dir, case.name))
    if stored is not None and case.gt is not None and stored.get("table_version", 1) < TABLE_VERSION:
        return False  # made before the tables of cases with ground truth carried the image scores
    if stored is not None and "iou_adj" not in stored:
        stored = {**stored, "iou_adj": "paper"}  # written before the choice existed: the paper's
    expected = _full_settings(case, settings)
    # the stored settings also record the resolved segmentation (not part of the request)
    if stored is None or {k: stored.get(k) for k in expected} != expected:
        return False
    inputs = stored.get("inputs")
    if not isinstance(inputs, dict):
        return False  # written before inputs were recorded: their content cannot be vouched for
    now = _case_inputs(case)
    return all(_same_content(inputs.get(k), now[k]) for k in ("softmax", "gt"))


def metrics_task(case, out_dir, settings: dict) -> dict:
    """Compute the metrics table of one case and write ``<out_dir>/cases/<case>.parquet``.

    ``settings`` (see :func:`case_settings`) are stored in the file, so a resumed run can tell
    a finished case from one computed otherwise. Returns ``{"n_segments": n}``.

    Examples
    --------
    >>> from napari_metaseg.batch import run_case
    >>> run_case(metrics_task, case, "out", case_settings())["status"]  # doctest: +SKIP
    'done'
    """
    from ..io.results import write_table

    inputs = _case_inputs(case)
    seg, table, _ = measure_file(case, settings)
    write_table(with_case(table, case.name), case_table_path(out_dir, case.name),
                settings=_recorded(case, settings, seg, inputs))
    return {"n_segments": len(table)}


def _recorded(case, settings, seg, inputs):
    """What a case's table file records: the request, the files (with their fingerprints) and the
    resolved segmentation."""
    from .models import segmentation_of

    return {**_full_settings(case, settings), "inputs": inputs,
            "segmentation": segmentation_of(settings, ndim=seg.ndim), "table_version": TABLE_VERSION}


def predict_task(case, out_dir, settings: dict, models) -> dict:
    """Predict the quality of every segment of one case with a meta model.

    Writes ``<out_dir>/cases/<case>.parquet`` (the metrics table with ``p_iou0`` and
    ``iou_adj_pred``) and, when the model has a regressor, a map of the predicted IoU_adj per
    pixel/voxel: ``<out_dir>/maps/<case>_iou_adj_pred.nii.gz`` with the input's affine for
    NIfTI input, ``.npy`` otherwise (float32). ``models``: a model file path (what Dask
    workers are sent) or a pair. Returns ``{"n_segments": n}``.
    """
    from ..core.atomic import atomic_path
    from ..core.meta_model import predict_table
    from ..io.cases import is_nifti
    from ..io.results import write_nifti_like, write_table

    inputs = _case_inputs(case)
    seg, table, affine = measure_file(case, settings)
    clf, reg = resolve_models(models, table)
    table = predict_table(table, clf, reg)
    if "iou_adj_pred" in table:
        lut = np.concatenate([[np.nan], table["iou_adj_pred"].to_numpy(np.float32)]).astype(np.float32)
        values = lut[seg]
        maps = Path(out_dir) / "maps"
        if is_nifti(case.softmax):
            write_nifti_like(values, affine, maps / f"{case.name}_iou_adj_pred.nii.gz", like=case.softmax)
        else:
            with atomic_path(maps / f"{case.name}_iou_adj_pred.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, values)
    write_table(with_case(table, case.name), case_table_path(out_dir, case.name),
                settings=_recorded(case, settings, seg, inputs))
    return {"n_segments": len(table)}


# ============================================================================================
# Over cases
# ============================================================================================
def over_cases(fn, cases, args=(), *, workers=None, scheduler=None, threads=None, what="case"):
    """Job: run the task ``fn(case, *args)`` for every case (see :func:`napari_metaseg.batch.run_tasks`).

    Yields ``(fraction, stage)`` after each case; a failed case's stage reads
    ``"case <case> failed: <error>"``. Returns the results (dicts of
    :func:`~napari_metaseg.batch.run_case`) in the order of ``cases``, whatever order the
    workers finished in.
    """
    from ..batch import run_tasks

    cases = list(cases)
    n = max(len(cases), 1)
    results = []
    for r in run_tasks(fn, cases, args=tuple(args), workers=workers, scheduler=scheduler, threads=threads):
        results.append(r)
        if r["status"] == "done":
            stage = f"{what} {r['case']} done ({len(results)}/{len(cases)})"
        else:
            stage = f"case {r['case']} failed: {r['error']}"
        yield len(results) / n, stage
    position = {c.name: i for i, c in enumerate(cases)}
    results.sort(key=lambda r: position.get(r["case"], len(position)))
    return results


@dataclass
class RunSummary:
    """What :func:`measure_cases` / :func:`predict_cases` did."""

    out: Path
    n_cases: int
    computed: int
    skipped: int  # already done with the same settings and files
    failed: list = field(default_factory=list)  # [(case, error)]
    combined: Path | None = None  # the combined table (None when no case is done)
    results: list = field(default_factory=list)


def _resumable(fn, cases, out_dir, settings, extra_args, combined_name, *, force, workers, scheduler,
               threads, what):
    from ..io.locks import release_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    token = _lock_output(out_dir, what)
    try:
        return (yield from _resumable_locked(fn, cases, out_dir, settings, extra_args, combined_name,
                                             force=force, workers=workers, scheduler=scheduler,
                                             threads=threads, what=what))
    finally:  # also when the job is cancelled (GeneratorExit) or fails
        release_lock(out_dir / RUN_LOCK, token)


def _lock_output(out_dir, what):
    """Take the output folder's run lock (a lock of a run that no longer runs is taken over)."""
    from ..io.locks import LockBusy, take_lock

    lock = out_dir / RUN_LOCK
    try:
        return take_lock(lock, what=f"{what} run", take_over_stale=True)
    except LockBusy as busy:
        doing = busy.holder.get("what") or "run"
        raise OutputBusyError(
            f"{out_dir} is being written by another {doing} ({busy.reason}); two runs into one folder "
            f"would overwrite each other's results. Wait for it to finish, or choose another output "
            f"folder (if no run is active, delete {lock})") from None


def _resumable_locked(fn, cases, out_dir, settings, extra_args, combined_name, *, force, workers,
                      scheduler, threads, what):
    import pandas as pd

    from ..core.atomic import remove_leftovers
    from ..io.results import read_settings, write_failed_csv, write_table
    from .models import _merge_segmentation, recorded_segmentation

    # under the run lock: no other run of this folder is writing, only killed runs left these
    remove_leftovers(out_dir / "cases")
    remove_leftovers(out_dir)
    todo = [c for c in cases if force or not is_done(out_dir, c, settings)]
    skipped = len(cases) - len(todo)
    if skipped:
        yield 0.0, f"{what}: {skipped} of {len(cases)} case(s) already done, skipped"
    results = yield from over_cases(fn, todo, (out_dir, settings, *extra_args), workers=workers,
                                    scheduler=scheduler, threads=threads, what=what)
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    failed_names = {c for c, _ in failed}
    done = [case_table_path(out_dir, c.name) for c in cases
            if c.name not in failed_names and case_table_path(out_dir, c.name).is_file()]
    combined = None
    if done:
        records = [recorded_segmentation(read_settings(p)) for p in done]
        try:
            segmentation = _merge_segmentation(records, "the cases")
        except ValueError:  # e.g. 2D images and volumes in one "auto" run: nothing to record
            segmentation = None
        combined = write_table(pd.concat([pd.read_parquet(p) for p in done], ignore_index=True),
                               out_dir / combined_name, settings={**settings, "segmentation": segmentation})
    failed_csv = out_dir / "failed.csv"
    if failed:
        write_failed_csv(failed_csv, failed)
    else:
        failed_csv.unlink(missing_ok=True)
    return RunSummary(out_dir, len(cases), len(results) - len(failed), skipped, failed, combined, results)


def measure_cases(cases, out_dir, settings, *, force=False, workers=None, scheduler=None, threads=None):
    """Job: the metrics table of every case, resumable.

    Writes ``out_dir/cases/<case>.parquet`` per case and ``out_dir/metrics.parquet`` (all done
    cases, with a ``case`` column); cases already done from the same files with the same
    settings are skipped unless ``force``; failed cases are listed in ``out_dir/failed.csv``.
    Yields ``(fraction, stage)``; returns a :class:`RunSummary`.
    """
    settings = case_settings(**{**settings, "command": "metrics"})
    return (yield from _resumable(metrics_task, list(cases), out_dir, settings, (), "metrics.parquet",
                                  force=force, workers=workers, scheduler=scheduler, threads=threads,
                                  what="metrics"))


def predict_cases(cases, out_dir, settings, model_path, *, force=False, workers=None, scheduler=None,
                  threads=None):
    """Job: predictions of a model file for every case, resumable (as :func:`measure_cases`,
    with ``predictions.parquet`` and the maps of :func:`predict_task`); the model file's path
    and sha256 are part of the settings, so a changed model recomputes every case."""
    from .models import _sha256

    model_path = Path(model_path).resolve()
    settings = case_settings(**{**settings, "command": "predict", "model": str(model_path),
                                "model_sha256": _sha256(model_path)})
    return (yield from _resumable(predict_task, list(cases), out_dir, settings, (model_path,),
                                  "predictions.parquet", force=force, workers=workers,
                                  scheduler=scheduler, threads=threads, what="predict"))
