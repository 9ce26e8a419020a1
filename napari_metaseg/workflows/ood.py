"""Out-of-distribution regions: find candidates in one case or a dataset, train their meta
classifier, evaluate against OoD annotations.

The engine is :mod:`napari_metaseg.core.ood`; here: settings, annotations on disk, files, the
region meta classifier (the project's :class:`~napari_metaseg.core.meta_model.MetaClassifier`
fitted on region tables with the target ``hit``), and the jobs the CLI (``napari-metaseg ood``,
``train`` on region tables) and the OoD panel run.

OoD annotations of a case file, first rule that applies:

1. a file ``ood.<ext>`` in the case's folder (case folders), or ``<case>_ood.<ext>`` beside the
   softmax: nonzero = OoD (distinct ids above 1 are distinct objects, else objects are the
   connected components of the mask);
2. the ground truth's voxels equal to ``ood_label`` (default 255: the developer data's lesion
   label); a case with ground truth and no such voxel has no OoD object;
3. none: the case is processed, not evaluated, and its regions carry no ``hit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.progress import drain
from .cases import over_cases, with_case

__all__ = [
    "OOD_TABLE",
    "OodResult",
    "OodRun",
    "RegionRefit",
    "annotation_file",
    "case_parts_path",
    "find_ood",
    "is_region_table",
    "ood_cases",
    "ood_done",
    "ood_settings",
    "ood_task",
    "read_annotation",
    "read_parts",
    "refit_regions",
    "region_classifier_ood",
    "train_regions",
]

#: The combined region table of an ``ood`` run (``<out>/ood_regions.parquet``).
OOD_TABLE = "ood_regions.parquet"
#: Suffix of the per-case region tables (``<out>/cases/<case>_ood.parquet``).
CASE_SUFFIX = "_ood.parquet"
#: Suffix of a case's evaluation parts (``<out>/cases/<case>_ood_parts.npz``, annotated cases).
PARTS_SUFFIX = "_ood_parts.npz"
#: Layout of the parts file; a resumed run recomputes cases whose record names another.
PARTS_VERSION = 1
#: The object counts a parts file holds, in this order (:func:`~napari_metaseg.core.ood.object_counts`).
COUNT_FIELDS = ("n_regions", "kept", "tp", "fn", "fp", "n_objects", "id_voxels", "id_flagged")


def ood_settings(*, threshold=0.5, measure="E", mode="auto", slice_axis=-1, exclude_classes=(),
                 ood_label=255, class_axis=-1, p_keep=0.5, **extra) -> dict:
    """How OoD candidates are made and judged (None values take the defaults).

    ``threshold`` / ``measure``: candidates are ``heatmap >= threshold``; ``exclude_classes``:
    predicted classes where no candidate may lie (e.g. ``(0,)``, the background outside the
    brain); ``mode`` / ``slice_axis``: connectivity; ``ood_label``: the ground-truth label of OoD
    voxels (None: annotations only from ``ood`` files); ``p_keep``: a region is kept when the
    meta classifier's P(hit) is at least this. ``extra`` keys are kept (recorded with results).
    """
    from ..core.heatmaps import MEASURES
    from ..names import MODES

    threshold = 0.5 if threshold is None else float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    measure = measure or "E"
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r}; expected one of {MEASURES}")
    mode = mode or "auto"
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; expected one of {MODES}")
    p_keep = 0.5 if p_keep is None else float(p_keep)
    if not 0.0 <= p_keep <= 1.0:
        raise ValueError(f"p_keep must lie in [0, 1], got {p_keep}")
    excl = sorted({int(c) for c in (exclude_classes or ())})
    return {"threshold": threshold, "measure": measure, "mode": mode,
            "slice_axis": -1 if slice_axis is None else int(slice_axis), "exclude_classes": excl,
            "ood_label": None if ood_label is None else int(ood_label),
            "class_axis": -1 if class_axis is None else int(class_axis), "p_keep": p_keep, **extra}


def _ood_record(settings) -> dict:
    """The ``ood`` record a region model file keeps (see ``core.meta_io``)."""
    return {"threshold": float(settings["threshold"]), "measure": settings["measure"],
            "exclude_classes": list(settings.get("exclude_classes") or [])}


def _segmentation_record(settings, ndim=None) -> dict:
    from .models import segmentation_of

    return segmentation_of({"mode": settings.get("mode"), "slice_axis": settings.get("slice_axis"),
                            "ignore_index": None}, ndim=ndim)


def region_classifier_ood(models, settings: dict, *, explicit=()) -> dict:
    """``settings`` with the region model's threshold, measure and excluded classes.

    Settings named in ``explicit`` (those the user set) must agree with the model's: a model
    fitted on regions made at one threshold rates regions made otherwise on features it never
    saw. Raises ValueError naming the difference and the fix.
    """
    rec = getattr(models, "ood", None) or {}
    out = dict(settings)
    for key in ("threshold", "measure", "exclude_classes"):
        if key not in rec:
            continue
        want = rec[key]
        have = settings.get(key)
        if key in explicit and have is not None and (
                (key == "threshold" and not np.isclose(float(have), float(want)))
                or (key != "threshold" and (sorted(have) if key == "exclude_classes" else have) != want)):
            raise ValueError(f"the model was trained on regions made with {key} = {want}; {key} = {have} "
                             f"would give it regions of another kind (leave it out to use the model's)")
        out[key] = want
    return out


# ============================================================================================
# One case in memory
# ============================================================================================
@dataclass
class OodResult:
    """Result of :func:`find_ood`: heatmaps ``{E, D, V}``, the region map, the region table
    (with ``hit`` when annotations were given, ``p_hit`` with a classifier), where candidates
    could lie (``mask``, None = everywhere), the settings and, with annotations, an
    :class:`~napari_metaseg.core.ood.OodEvaluation`."""

    maps: dict
    region_ids: np.ndarray
    table: pd.DataFrame
    mask: np.ndarray | None
    settings: dict
    evaluation: object = None

    @property
    def kept(self) -> np.ndarray:
        """Which regions the meta classifier keeps (all without one)."""
        if "p_hit" not in self.table:
            return np.ones(len(self.table), bool)
        return self.table["p_hit"].to_numpy(float) >= self.settings["p_keep"]


def _candidate_mask(pred, exclude):
    if not exclude:
        return None
    return ~np.isin(pred, np.asarray(exclude, dtype=pred.dtype))


def _predict(classifier, table):
    if classifier is None:
        return table
    from ..core.meta_model import check_columns

    table = table.drop(columns=[c for c in ("p_hit",) if c in table.columns])
    check_columns(classifier, table)
    p = classifier.predict_proba(table)[:, 1] if len(table) else np.zeros(0)
    return table.assign(p_hit=p)


def find_ood(probs, *, settings=None, classifier=None, ood=None, class_axis=-1, maps=None):
    """Job: OoD candidate regions of one case held in memory, rated and evaluated.

    Parameters
    ----------
    probs : array_like
        Probabilities (classes on ``class_axis``).
    settings : dict, optional
        :func:`ood_settings` (threshold, measure, mode, excluded classes, ``p_keep``).
    classifier : MetaClassifier, optional
        A region meta classifier: adds ``p_hit``.
    ood : array_like, optional
        OoD annotation (bool mask or instance ids): adds ``hit`` and an evaluation.
    maps : dict, optional
        Heatmaps of ``probs`` computed already.

    Yields ``(fraction, stage)``; returns an :class:`OodResult`.
    """
    from ..core import as_probabilities, dispersion_maps
    from ..core.ood import (
        OodCase,
        evaluate_ood,
        ood_regions,
        region_hits,
    )

    settings = ood_settings(**(settings or {}))
    probs = as_probabilities(probs, class_axis=class_axis)
    yield 0.15, "validated"
    if maps is None:
        maps = dispersion_maps(probs)
    yield 0.45, "heatmaps"
    pred = probs.argmax(-1)
    mask = _candidate_mask(pred, settings["exclude_classes"])
    ids, table = ood_regions(probs, threshold=settings["threshold"], measure=settings["measure"],
                             mode=settings["mode"], slice_axis=settings["slice_axis"], mask=mask, maps=maps)
    yield 0.8, f"{len(table)} candidate regions"
    evaluation = None
    if ood is not None:
        ood = np.asarray(ood)
        if ood.shape != ids.shape:
            raise ValueError(f"the OoD annotation has shape {ood.shape}; the probabilities have spatial "
                             f"shape {ids.shape}")
        table["hit"] = region_hits(ids, ood != 0, n_regions=len(table))
    table = _predict(classifier, table)
    if ood is not None:
        p_hit = table["p_hit"].to_numpy(float) if "p_hit" in table else None
        evaluation = evaluate_ood([OodCase(dict(maps), ood, {settings["threshold"]: (ids, p_hit)}, mask)],
                                  p_threshold=settings["p_keep"], mode=settings["mode"],
                                  slice_axis=settings["slice_axis"])
    yield 1.0, "rated" if classifier is not None else "found"
    return OodResult(dict(maps), ids, table, mask, settings, evaluation)


# ============================================================================================
# Case files
# ============================================================================================
def annotation_file(case) -> Path | None:
    """The OoD annotation file of a case (``ood.<ext>`` in its folder, ``<case>_ood.<ext>``
    beside its softmax), or None."""
    from ..io.cases import _stem, _supported

    folder = Path(case.softmax).parent
    names = {f"{case.name}_ood".lower()}
    if folder.name == case.name:
        names.add("ood")
    found = sorted(p for p in folder.iterdir() if _supported(p) and _stem(p).lower() in names)
    if len(found) > 1:
        raise ValueError(f"case {case.name}: several OoD annotation files {[p.name for p in found]}")
    return found[0] if found else None


def read_annotation(case, gt, settings):
    """The OoD annotation of a case: ``(array or None, where it came from)``.

    See the module's rules. Raises ValueError for an annotation file that cannot be read or has
    a float dtype.
    """
    from ..io.cases import _read_plain, is_nifti
    from ..io.nifti import read_nifti

    path, source = _annotation_source(case, settings)
    if path is not None:
        if is_nifti(path):
            ood, _ = read_nifti(path)
        else:
            ood = _read_plain(path, ("ood", "labels"))
        ood = np.asarray(ood)
        if ood.dtype != np.bool_ and ood.dtype.kind not in "iu":
            raise ValueError(f"{path}: an OoD annotation holds integers (0 = in distribution), "
                             f"got {ood.dtype}")
        return ood, source
    label = settings.get("ood_label")
    if gt is not None and label is not None:
        return np.asarray(gt) == label, f"ground truth == {label}"
    return None, None


def _annotation_source(case, settings):
    """``(annotation file or None, where the annotation comes from or None)`` of a case, known
    before its files are read (a resumed run compares it with the record)."""
    path = annotation_file(case)
    if path is not None:
        return path, str(path)
    label = settings.get("ood_label")
    if case.gt is not None and label is not None:
        return None, f"ground truth == {label}"
    return None, None


def case_ood_path(out_dir, case_name) -> Path:
    """``<out_dir>/cases/<case>_ood.parquet``."""
    return Path(out_dir) / "cases" / f"{case_name}{CASE_SUFFIX}"


def case_parts_path(out_dir, case_name) -> Path:
    """``<out_dir>/cases/<case>_ood_parts.npz``: the evaluation parts of an annotated case."""
    return Path(out_dir) / "cases" / f"{case_name}{PARTS_SUFFIX}"


def case_map_path(out_dir, case) -> Path:
    """``<out_dir>/maps/<case>_ood_regions.nii.gz`` for NIfTI input, ``.npy`` otherwise."""
    from ..io.cases import is_nifti

    ext = ".nii.gz" if is_nifti(case.softmax) else ".npy"
    return Path(out_dir) / "maps" / f"{case.name}_ood_regions{ext}"


def parts_bytes(pixels, counts) -> bytes:
    """The content of a parts file: ``pixels`` (:class:`~napari_metaseg.core.ood.PixelCounts`)
    and ``counts`` (``{keep: object_counts}``) as a compressed ``.npz`` of plain arrays
    (no Python objects: read back with ``allow_pickle=False``)."""
    import io

    arrays = {"format": np.array([PARTS_VERSION], np.int64),
              "measures": np.array(list(pixels.measures), dtype=str),
              "count_keys": np.array(list(counts), dtype=str),
              "count_fields": np.array(COUNT_FIELDS, dtype=str),
              "counts": np.array([[int(c[f]) for f in COUNT_FIELDS] for c in counts.values()],
                                 np.int64).reshape(len(counts), len(COUNT_FIELDS))}
    for i, (values, n_ood, n_in) in enumerate(pixels.measures.values()):
        arrays[f"values_{i}"] = values
        arrays[f"n_ood_{i}"] = n_ood
        arrays[f"n_in_{i}"] = n_in
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def read_parts(path):
    """The evaluation parts of a case, ``(PixelCounts, {keep: object_counts})``, checked.

    Raises
    ------
    ValueError
        A file that is missing, not an ``.npz`` of plain arrays (nothing is unpickled), of
        another layout version, or whose arrays have other names, shapes or dtypes, negative or
        inconsistent counts (what a damaged or foreign file gives): the case is then computed
        again.
    """
    from ..core.ood import PixelCounts

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # whatever a damaged zip raises (BadZipFile, zlib.error, EOFError, ...)
        raise ValueError(f"{path.name}: not a readable parts file ({type(exc).__name__}: {exc})") from None
    try:
        fmt = arrays.get("format")
        if fmt is None or fmt.shape != (1,) or fmt.dtype.kind not in "iu" or int(fmt[0]) != PARTS_VERSION:
            raise ValueError(f"layout {None if fmt is None else fmt.tolist()}, expected [{PARTS_VERSION}]")
        names = arrays.get("measures")
        if names is None or names.dtype.kind != "U" or names.ndim != 1:
            raise ValueError("no list of heatmaps")
        expected = {"format", "measures", "count_keys", "count_fields", "counts",
                    *(f"{w}_{i}" for i in range(names.size) for w in ("values", "n_ood", "n_in"))}
        if set(arrays) != expected:
            raise ValueError(f"arrays {sorted(arrays)}, expected {sorted(expected)}")
        pixels = PixelCounts({str(m): (arrays[f"values_{i}"], arrays[f"n_ood_{i}"], arrays[f"n_in_{i}"])
                              for i, m in enumerate(names)})
        keys, fields, table = arrays["count_keys"], arrays["count_fields"], arrays["counts"]
        if keys.dtype.kind != "U" or keys.ndim != 1 or not set(keys.tolist()) <= {"all", "meta"} \
                or len(set(keys.tolist())) != keys.size:
            raise ValueError(f"count keys {keys.tolist()}, expected 'all' and optionally 'meta'")
        if fields.dtype.kind != "U" or tuple(fields.tolist()) != COUNT_FIELDS:
            raise ValueError(f"count fields {fields.tolist()}, expected {list(COUNT_FIELDS)}")
        if table.dtype.kind not in "iu" or table.shape != (keys.size, len(COUNT_FIELDS)):
            raise ValueError(f"counts of dtype {table.dtype} and shape {table.shape}")
        counts = {}
        for key, row in zip(keys.tolist(), table.tolist(), strict=True):
            c = dict(zip(COUNT_FIELDS, (int(v) for v in row), strict=True))
            if min(c.values()) < 0 or c["tp"] + c["fn"] != c["n_objects"] or c["kept"] > c["n_regions"] \
                    or c["id_flagged"] > c["id_voxels"]:
                raise ValueError(f"inconsistent counts {c}")
            counts[key] = c
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path.name}: damaged parts file: {exc}") from None
    return pixels, counts


def _fingerprint(path):
    from .cases import input_fingerprint

    return input_fingerprint(path) if path is not None and Path(path).is_file() else None


def _case_record(case, settings: dict) -> dict:
    """What a case's region table records besides the outcome: the request and its files."""
    return {**settings, "softmax": str(case.softmax), "gt": None if case.gt is None else str(case.gt),
            "annotation": _annotation_source(case, settings)[1], "parts_version": PARTS_VERSION}


def ood_done(out_dir, case, settings: dict) -> bool:
    """Whether a case's region table, map and (annotated cases) evaluation parts exist and were
    made with ``settings`` (threshold, measure, excluded classes, mode, slice axis, p_keep,
    OoD label, model file and its sha256, ...) from the same files holding the same content
    (softmax, ground truth, annotation file: size and SHA-256), and the outputs are those the
    task wrote (map and parts: size and SHA-256; the parts file also read back and checked)."""
    from ..io.results import read_settings
    from .cases import _same_content, input_fingerprint

    stored = read_settings(case_ood_path(out_dir, case.name))
    if not stored:
        return False
    try:
        expected = _case_record(case, settings)
    except (OSError, ValueError):  # e.g. two annotation files: the task says so
        return False
    if {k: stored.get(k) for k in expected} != expected:
        return False
    inputs, outputs = stored.get("inputs"), stored.get("outputs")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        return False
    try:
        now = {"softmax": input_fingerprint(case.softmax), "gt": input_fingerprint(case.gt),
               "ood": input_fingerprint(annotation_file(case))}
    except (OSError, ValueError):  # a file gone or unreadable: the task reports it
        return False
    if not all(_same_content(inputs.get(k), now[k]) for k in now):
        return False
    if not _same_content(outputs.get("map"), _fingerprint(case_map_path(out_dir, case))):
        return False
    parts = case_parts_path(out_dir, case.name)
    if expected["annotation"] is None:
        return outputs.get("parts") is None
    if not _same_content(outputs.get("parts"), _fingerprint(parts)):
        return False
    try:
        read_parts(parts)
    except ValueError:
        return False
    return True


def ood_task(case, out_dir, settings: dict, model=None) -> dict:
    """OoD regions of one case file: writes its region table, a map of the kept regions and,
    for an annotated case, its evaluation parts.

    Writes ``<out_dir>/maps/<case>_ood_regions.nii.gz`` with the input's affine for NIfTI input
    (``.npy`` otherwise): the ids of the kept regions (all candidates without a model; float32
    for NIfTI, int32 for ``.npy``), 0 elsewhere; for a case with an annotation
    ``<out_dir>/cases/<case>_ood_parts.npz`` (:func:`parts_bytes`: per heatmap the distinct values
    inside the candidate mask with their numbers of OoD and in-distribution voxels, and the
    object counts); last ``<out_dir>/cases/<case>_ood.parquet`` (the region table with ``case``,
    ``hit`` when the case has an annotation, ``p_hit`` with a model), whose metadata records
    the settings, the fingerprints of the input files and of the map and parts written
    (:func:`ood_done`). ``model``: a region model file (what Dask workers are sent) or a
    ``MetaModels``.

    Returns ``n_regions``, ``n_kept``, ``annotation`` (where it came from, or None) and, with
    an annotation, ``counts`` (``{keep: object_counts}``).
    """
    from ..core.atomic import atomic_path, atomic_write_bytes
    from ..core.ood import PixelCounts, object_counts, ood_objects
    from ..io.cases import is_nifti, read_case
    from ..io.results import write_nifti_like, write_table
    from .cases import input_fingerprint
    from .models import load_model

    # fingerprints before reading: a file rewritten meanwhile then differs from the record
    inputs = {"softmax": input_fingerprint(case.softmax), "gt": input_fingerprint(case.gt),
              "ood": input_fingerprint(annotation_file(case))}
    probs, gt, affine = read_case(case, class_axis=settings.get("class_axis", -1))
    ood, source = read_annotation(case, gt, settings)
    classifier = None
    if model is not None:
        models = load_model(model, table_kind="ood_regions") if isinstance(model, (str, Path)) else model
        classifier = models.classifier
    result = drain(find_ood(probs, settings=settings, classifier=classifier, ood=None))
    table = result.table
    ids = result.region_ids
    out = {"n_regions": len(table), "annotation": source}
    if ood is not None:
        from ..core.ood import region_hits

        if ood.shape != ids.shape:
            raise ValueError(f"the OoD annotation ({source}) has shape {ood.shape}; the softmax has "
                             f"spatial shape {ids.shape}")
        table.insert(1 + ("slice" in table.columns), "hit", region_hits(ids, ood != 0, n_regions=len(table)))
        objects, _ = ood_objects(ood, mode=settings["mode"], slice_axis=settings["slice_axis"])
        counts = {"all": object_counts(ids, objects, mask=result.mask)}
        if classifier is not None:
            counts["meta"] = object_counts(ids, objects, keep=result.kept, mask=result.mask)
        out["counts"] = counts
        pixels = PixelCounts.from_voxels({m: result.maps[m] for m in ("E", "D", "V")}, ood, mask=result.mask)
    kept = result.kept
    out["n_kept"] = int(kept.sum())
    lut = np.zeros(len(table) + 1, np.int32)
    lut[1:][kept] = table["index"].to_numpy(np.int32)[kept]
    values = lut[ids]
    map_path = case_map_path(out_dir, case)
    if is_nifti(case.softmax):
        write_nifti_like(values.astype(np.float32), affine, map_path, like=case.softmax)
    else:
        with atomic_path(map_path) as tmp, open(tmp, "wb") as f:
            np.save(f, values)
    parts_path = case_parts_path(out_dir, case.name)
    if ood is not None:
        atomic_write_bytes(parts_path, parts_bytes(pixels, counts))
    else:  # left by a run with an annotation: not this case's any more
        parts_path.unlink(missing_ok=True)
    outputs = {"map": input_fingerprint(map_path),
               "parts": input_fingerprint(parts_path) if ood is not None else None}
    recorded = {**settings, "softmax": str(case.softmax), "gt": None if case.gt is None else str(case.gt),
                "annotation": source, "parts_version": PARTS_VERSION, "inputs": inputs, "outputs": outputs,
                "segmentation": _segmentation_record(settings, ids.ndim), "table": "ood_regions",
                "model": settings.get("model", None if model is None else str(getattr(model, "path", model)))}
    # the table last: it marks the case done, and its record vouches for the map and parts
    write_table(with_case(table, case.name), case_ood_path(out_dir, case.name), settings=recorded)
    return out


@dataclass
class OodRun:
    """What :func:`ood_cases` did: the output folder, cases done and failed (``[(case,
    error)]``), the combined region table's path, candidates and kept regions over all done
    cases, the cases with annotations and, when there are any, the :class:`OodEvaluation`;
    ``computed`` / ``skipped``: cases computed by this run / already done and skipped."""

    out: Path
    n_cases: int
    failed: list = field(default_factory=list)
    combined: Path | None = None
    n_regions: int = 0
    n_kept: int = 0
    annotated: list = field(default_factory=list)
    evaluation: object = None
    settings: dict = field(default_factory=dict)
    computed: int = 0
    skipped: int = 0


#: The evaluation files of an ``ood`` run (object level, pixel level).
EVALUATION_FILES = ("ood_objects.csv", "ood_pixels.csv")


def ood_cases(cases, out_dir, settings, model=None, *, explicit=(), force=False, workers=None, scheduler=None,
              threads=None):
    """Job: OoD regions of every case (:func:`ood_task`), combined and evaluated; resumable.

    Writes the per-case files of :func:`ood_task`, ``<out_dir>/ood_regions.parquet`` (every done
    case, with a ``case`` column; ``napari-metaseg train`` fits a region model on it when it
    holds ``hit``) and, when cases have annotations, ``<out_dir>/ood_objects.csv`` (object
    level: threshold, keep, TP, FP, FN, F1, in-distribution miss rate) and
    ``<out_dir>/ood_pixels.csv`` (pixel level per heatmap). Failed cases go to
    ``<out_dir>/failed.csv``. ``model``: a region model file (its threshold, measure and
    excluded classes are used, and its segmentation mode; the settings named in ``explicit``,
    set by the user, must agree with the model's, see :func:`region_classifier_ood`).

    Cases already done (:func:`ood_done`: same settings, same model file content, same input
    files) are skipped unless ``force``; the combined table and the evaluation are rebuilt
    from the files of every done case, skipped or computed, so a resumed run writes what a
    fresh one would. One run per output folder at a time (its lock, as for ``metrics``).

    Yields ``(fraction, stage)``; returns an :class:`OodRun`.

    Raises
    ------
    OutputBusyError
        Another run is writing to ``out_dir``.
    ValueError
        Settings that do not fit the model, an output path that is not a folder.
    """
    from ..io.locks import release_lock
    from .cases import RUN_LOCK, _lock_output
    from .models import _sha256, load_model

    settings = ood_settings(**settings)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    model_arg = None
    if model is not None:
        from .models import check_segmentation

        models = load_model(model, table_kind="ood_regions")
        settings = region_classifier_ood(models, settings, explicit=explicit)
        mode, axis = check_segmentation(
            models.segmentation, mode=settings["mode"] if "mode" in explicit else None,
            slice_axis=settings["slice_axis"] if "slice_axis" in explicit else None, model=f"model {model}")
        settings["mode"] = mode or "auto"
        settings["slice_axis"] = -1 if axis is None else int(axis)
        model_arg = str(Path(model).resolve())
    # a model rewritten at the same path recomputes every case
    settings = {**settings, "model": model_arg,
                "model_sha256": None if model_arg is None else _sha256(model_arg)}
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    token = _lock_output(out_dir, "ood")
    try:
        return (yield from _ood_cases_locked(list(cases), out_dir, settings, model_arg, force=force,
                                             workers=workers, scheduler=scheduler, threads=threads))
    finally:  # also when the job is cancelled (GeneratorExit) or fails
        release_lock(out_dir / RUN_LOCK, token)


def _ood_cases_locked(cases, out_dir, settings, model_arg, *, force, workers, scheduler, threads):
    from ..core.atomic import remove_leftovers
    from ..core.ood import evaluation_from_parts
    from ..io.results import read_settings, write_failed_csv, write_table

    # under the run lock: no other run of this folder is writing, only killed runs left these
    for folder in (out_dir / "cases", out_dir / "maps", out_dir):
        if folder.is_dir():
            remove_leftovers(folder)
    todo = [c for c in cases if force or not ood_done(out_dir, c, settings)]
    skipped = len(cases) - len(todo)
    if skipped:
        yield 0.0, f"ood: {skipped} of {len(cases)} case(s) already done, skipped"
    results = yield from over_cases(ood_task, todo, (out_dir, settings, model_arg), workers=workers,
                                    scheduler=scheduler, threads=threads, what="ood")
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    failed_names = {c for c, _ in failed}
    run = OodRun(out_dir, len(cases), failed, settings=settings, skipped=skipped,
                 computed=len(results) - len(failed))
    # every done case from its files, whether this run computed it or an earlier one
    tables, records, parts = [], [], []
    for case in cases:
        path = case_ood_path(out_dir, case.name)
        if case.name in failed_names or not path.is_file():
            continue
        record = read_settings(path) or {}
        part = None
        if record.get("annotation") is not None:
            try:
                part = read_parts(case_parts_path(out_dir, case.name))
            except ValueError as exc:  # changed since it was checked (only by hand: the folder is locked)
                run.failed.append((case.name, f"{exc}; run again to recompute the case"))
                continue
        tables.append(pd.read_parquet(path))
        records.append(record)
        parts.append((case.name, part))
    for t in tables:
        run.n_regions += len(t)
        kept = t["p_hit"].to_numpy(float) >= settings["p_keep"] if "p_hit" in t else np.ones(len(t), bool)
        run.n_kept += int(kept.sum())
    if tables:
        from .models import _merge_segmentation

        try:  # the cases' resolved modes (auto: 2d for images, 3d for volumes)
            seg = _merge_segmentation([r.get("segmentation") for r in records], "the cases")
        except ValueError:  # images and volumes in one auto run: nothing to record
            seg = None
        run.combined = write_table(pd.concat(tables, ignore_index=True), out_dir / OOD_TABLE,
                                   settings={**settings, "segmentation": seg, "table": "ood_regions",
                                             "model": model_arg})
    annotated = [(name, part) for name, part in parts if part is not None]
    run.annotated = [name for name, _ in annotated]
    if annotated:
        counts = {}
        for _, (_, case_counts) in annotated:
            for keep, c in case_counts.items():
                key = (settings["threshold"], keep)
                counts[key] = c if key not in counts else {k: counts[key][k] + c[k] for k in c}
        ev = evaluation_from_parts([pixels for _, (pixels, _) in annotated], counts, n_cases=len(annotated),
                                   p_threshold=settings["p_keep"])
        run.evaluation = ev
        from ..core.csv_safe import write_csv  # atomic; no cell starts a spreadsheet formula

        for name, frame in zip(EVALUATION_FILES, (ev.objects, ev.pixel), strict=True):
            write_csv(frame, out_dir / name)
    else:  # an evaluation of an earlier run would pass for this one's
        for name in EVALUATION_FILES:
            (out_dir / name).unlink(missing_ok=True)
    failed_csv = out_dir / "failed.csv"
    if run.failed:
        write_failed_csv(failed_csv, run.failed)
    else:
        failed_csv.unlink(missing_ok=True)
    return run


# ============================================================================================
# The region meta classifier
# ============================================================================================
def is_region_table(table) -> bool:
    """Whether ``table`` is an OoD region table (it has ``share*`` columns and no ``iou_adj``)."""
    cols = [str(c) for c in table.columns]
    return "iou_adj" not in cols and any(c.startswith("share") and c[5:].isdigit() for c in cols)


def _case_scores(table, kind, random_state):
    """Leave-one-case-out AUROC of ``hit`` (pooled over the held-out cases), or None."""
    from sklearn.metrics import roc_auc_score

    from ..core.meta_model import MetaClassifier

    if "case" not in table.columns or table["case"].nunique() < 2:
        return None
    preds = []
    for case in table["case"].unique():
        test = table[table["case"] == case]
        train = table[table["case"] != case]
        if train["hit"].nunique() < 2 or len(train) < 10:
            return None
        clf = MetaClassifier(kind=kind, random_state=random_state).fit(train, train["hit"].to_numpy())
        preds.append(pd.DataFrame({"hit": test["hit"].to_numpy(), "p": clf.predict_proba(test)[:, 1]}))
    both = pd.concat(preds)
    if both["hit"].nunique() < 2:
        return None
    return float(roc_auc_score(both["hit"], both["p"]))


def train_regions(table, *, kind="lasso", random_state=0, ood=None, segmentation=None):
    """Job: fit the region meta classifier (target ``hit``) on OoD region tables.

    Parameters
    ----------
    table : pandas.DataFrame
        Region tables of one or more cases (a ``case`` column keeps each case on one side of
        the LASSO strength's cross-validation folds, with 3 or more cases) with ``hit``.
    kind : {"lasso", "logistic", "gbm"}
        The classifier family.
    ood : dict, optional
        How the regions were made (``threshold``, ``measure``, ``exclude_classes``), recorded in
        the model; defaults to the defaults of :func:`ood_settings`.
    segmentation : dict, optional
        ``mode`` / ``slice_axis`` of the regions.

    Yields ``(fraction, stage)``; returns a :class:`~napari_metaseg.workflows.MetaModels` with
    the classifier, ``ood`` and ``note`` (the leave-one-case-out AUROC with 2 or more cases).

    Raises
    ------
    ValueError
        A table without ``hit`` (no annotations), with one class only, or under 10 regions.
    """
    from ..core.meta_model import MetaClassifier
    from ..names import CLASSIFIER_KINDS, OOD_COLUMNS
    from .models import MetaModels

    if kind not in CLASSIFIER_KINDS:
        raise ValueError(f"classifier kind {kind!r}; expected one of {CLASSIFIER_KINDS}")
    if "hit" not in table.columns:
        raise ValueError("the region tables have no hit column: training needs cases with OoD annotations "
                         "(an ood.<ext> file or ground-truth voxels of the OoD label)")
    table = table.drop(columns=[c for c in OOD_COLUMNS if c != "hit" and c in table.columns])
    hit = table["hit"].to_numpy()
    if len(table) < 10:
        raise ValueError(f"the region tables hold {len(table)} regions; at least 10 are needed")
    if np.unique(hit).size < 2:
        which = "touches" if hit[0] else "misses"
        raise ValueError(f"every region {which} the OoD annotations: a meta classifier needs regions of "
                         "both kinds (more cases, or another threshold)")
    yield 0.1, f"{len(table)} regions, {int(hit.sum())} touching OoD"
    auroc = _case_scores(table, kind, random_state)
    yield 0.6, "leave-one-case-out scores"
    clf = MetaClassifier(kind=kind, random_state=random_state).fit(table, hit.astype(np.int64))
    yield 1.0, "fitted"
    n_cases = table["case"].nunique() if "case" in table.columns else 1
    note = (f"{len(table)} regions of {n_cases} case(s), {int(hit.sum())} touching OoD"
            + (f"; leave-one-case-out AUROC of hit {auroc:.3f}" if auroc is not None else ""))
    seg = segmentation or _segmentation_record(ood_settings())
    return MetaModels(classifier=clf, segmentation=seg, ood=_ood_record(ood_settings(**(ood or {}))),
                      note=note, dataset=_region_dataset(table))


# ============================================================================================
# Refitting the region model (the review loop)
# ============================================================================================
#: Case id of region rows that came without a ``case`` column.
UNNAMED_CASE = "unnamed"
#: The reviewer's decisions as ``hit`` labels (undecided regions are left out).
DECISION_HIT = {"unknown": 1, "known": 0}


def _region_dataset(table):
    """The training regions as a :class:`~napari_metaseg.core.meta_dataset.MetaDataset` (every
    row kept: ``min_interior`` 0), what :func:`~napari_metaseg.workflows.save_model` writes beside
    the model as ``<name>.dataset.csv``, as it does for segment models."""
    from ..core.meta_dataset import MetaDataset

    if "case" not in table.columns:
        table = table.assign(case=UNNAMED_CASE)
    table = table.assign(case=table["case"].astype(str))
    return MetaDataset.from_table(table[["case", *[c for c in table.columns if c != "case"]]], min_interior=0)


@dataclass
class RegionRefit:
    """What :func:`refit_regions` did, besides the new models (``models``, a
    :class:`~napari_metaseg.workflows.MetaModels` with the old ``ood`` record).

    ``n_before`` / ``n_after``: regions the old and the new classifier were fitted on;
    ``n_previous``: earlier training regions kept (0 when the model had none stored beside it);
    ``n_decided`` (``n_unknown`` + ``n_known``): regions labelled by the reviewer's decisions;
    ``n_from_tables``: labelled regions of new tables; ``n_replaced``: earlier training regions
    replaced by a new label of the same case and index; ``added_cases``: cases new to the
    training data; ``had_training_regions``: whether the old model's training regions were known
    (False: fitted on the new regions only); ``note``: all of it in one line."""

    models: object
    n_before: int = 0
    n_after: int = 0
    n_previous: int = 0
    n_decided: int = 0
    n_unknown: int = 0
    n_known: int = 0
    n_from_tables: int = 0
    n_replaced: int = 0
    added_cases: list = field(default_factory=list)
    had_training_regions: bool = True
    note: str = ""


def _same_regions(rec, settings, what, table):
    """Refuse regions made otherwise than the model's threshold, measure or excluded classes;
    returns their segmentation record (``settings["segmentation"]``, else from ``mode``)."""
    from .models import segmentation_of

    if settings is None or settings.get("threshold") is None or not settings.get("measure"):
        raise ValueError(f"{what}: say how its regions were made (threshold, measure); use the region "
                         "tables `napari-metaseg ood` writes (.parquet, settings in the file)")
    keys = ("threshold", "measure", "exclude_classes")
    made = _ood_record(ood_settings(**{k: settings.get(k) for k in keys}))
    want = {"threshold": float(rec["threshold"]), "measure": rec["measure"],
            "exclude_classes": sorted(rec.get("exclude_classes") or [])}
    differ = [k for k in keys
              if (not np.isclose(made[k], want[k]) if k == "threshold" else made[k] != want[k])]
    if differ:
        have = ", ".join(f"{k} = {made[k]}" for k in differ)
        theirs = ", ".join(f"{k} = {want[k]}" for k in differ)
        raise ValueError(f"{what} were made with {have}; the region model was trained on regions made with "
                         f"{theirs}: make the regions again with the model's settings (`napari-metaseg ood "
                         "--model MODEL`, or Find regions with the model loaded)")
    if settings.get("segmentation"):
        return settings["segmentation"]
    return segmentation_of({"mode": settings.get("mode"), "slice_axis": settings.get("slice_axis"),
                            "ignore_index": None}, table=table)


def _decided_rows(case_id, table, decisions):
    """The rows of one case's region table that carry a decision, with ``hit`` from it."""
    bad = sorted({str(d) for d in decisions.values() if d is not None and d not in DECISION_HIT})
    if bad:
        raise ValueError(f"decisions must be one of {tuple(DECISION_HIT)} (or None), got {bad}")
    labels = {int(k): DECISION_HIT[d] for k, d in decisions.items() if d is not None}
    missing = sorted(set(labels) - set(table["index"].astype(int)))
    if missing:
        raise ValueError(f"decisions on regions {missing[:5]} that the region table of case {case_id} "
                         "does not hold: find the regions again before refitting")
    rows = table[table["index"].astype(int).isin(labels)]
    rows = rows.drop(columns=[c for c in ("hit", "p_hit", "case") if c in rows.columns])
    hit = rows["index"].astype(int).map(labels).to_numpy(np.int64)
    return rows.assign(case=str(case_id), hit=hit)


def refit_regions(models, *, table=None, settings=None, current=None, random_state=None):
    """Job: refit a region model on its training regions plus newly labelled regions.

    The review loop of the Unknown tab and ``napari-metaseg refit`` on region tables: the
    model's training regions (kept beside the model file since region models store them, see
    :func:`train_regions`) are extended by labelled regions; a region of the same case and
    ``index`` as an earlier one replaces it. A new classifier of the same kind and settings is
    fitted (the old one is not changed); it keeps the old model's ``ood`` record and
    segmentation, and its provenance lists every fit, the last marked ``refit`` with the
    counts of this one.

    Parameters
    ----------
    models : MetaModels
        A region model (with ``ood``); ``models.dataset`` holds its training regions (None: the
        new regions only, said in the note).
    table : pandas.DataFrame, optional
        Region tables with ``hit`` and ``case`` (``napari-metaseg ood`` output).
    settings : dict, optional
        How ``table``'s regions were made (``threshold``, ``measure``, ``exclude_classes``,
        optionally ``segmentation``); required with ``table``.
    current : (case_id, region table, decisions, settings), optional
        One case's regions and the reviewer's decisions ``{region index: "unknown" | "known" |
        None}``: ``unknown`` becomes ``hit`` 1, ``known`` 0, undecided regions are left out
        (a decision overrides an annotation's ``hit``); ``settings`` as for ``table``
        (:func:`ood_settings` of the run that found the regions).
    random_state : int, optional
        Seed of the new classifier (default: the old one's).

    Yields ``(fraction, stage)``; returns a :class:`RegionRefit`.

    Raises
    ------
    ValueError
        No region model; regions made with another threshold, heatmap, excluded classes or
        segmentation than the model's; a table without ``hit`` or ``case``; no labelled region;
        fewer than 10 regions or a single class of ``hit`` over old and new regions; features
        that differ from the model's.

    Example
    -------
    >>> job = refit_regions(models, current=("sub-02L", table, {3: "unknown"}, settings))  # doctest: +SKIP
    >>> r = drain(job)  # doctest: +SKIP
    >>> r.n_before, r.n_after  # doctest: +SKIP
    (4254, 4255)
    """
    import copy

    from sklearn.base import clone

    from ..core.meta_model import MetaClassifier, check_columns
    from .models import MetaModels, _merge_segmentation

    rec = getattr(models, "ood", None)
    old = getattr(models, "classifier", None)
    if models is None or rec is None or old is None:
        raise ValueError("no region model to refit: load one (a model `napari-metaseg train` fitted on the "
                         "region tables of `napari-metaseg ood`) or train one first")
    if not isinstance(old, MetaClassifier):
        raise ValueError(f"the region model holds a {type(old).__name__}, not a MetaClassifier")
    if table is None and current is None:
        raise ValueError("no labelled regions: give region tables with a hit column or decide regions "
                         "(Flag as unknown / Not OoD)")
    features = [str(c) for c in old.feature_names_in_]
    records = [models.segmentation]
    parts = []
    n_tables = n_unknown = n_known = 0
    if table is not None:
        if "hit" not in table.columns:
            raise ValueError("the region tables have no hit column: refitting needs regions of cases with "
                             "OoD annotations (an ood.<ext> file or ground-truth voxels of the OoD label)")
        if "case" not in table.columns:
            raise ValueError("the region tables have no case column: a region is known by its case and index "
                             "(use the tables `napari-metaseg ood` writes)")
        records.append(_same_regions(rec, settings, "the region tables", table))
        t = table.drop(columns=[c for c in ("p_hit",) if c in table.columns])
        t = t[np.isfinite(t["hit"].to_numpy(float))].assign(case=lambda d: d["case"].astype(str))
        n_tables = len(t)
        parts.append(t)
    if current is not None:
        case_id, case_table, decisions, case_settings = current
        records.append(_same_regions(rec, case_settings, f"the regions of case {case_id}", case_table))
        rows = _decided_rows(case_id, case_table, dict(decisions or {}))
        n_unknown = int((rows["hit"] == 1).sum())
        n_known = len(rows) - n_unknown
        parts.append(rows)
    seg = _merge_segmentation(records, "the model's regions and the new ones")
    new = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not len(new):
        raise ValueError("no labelled regions to refit on: decide at least one region (Flag as unknown / "
                         "Not OoD) or give region tables with a hit column")
    check_columns(old, new)
    keep = ["case", "index", *(["slice"] if "slice" in new.columns else []), *features, "hit"]
    # a region labelled twice (a table and a decision): the later label, the decision, wins
    new = new[keep].drop_duplicates(["case", "index"], keep="last")
    yield 0.1, f"{len(new)} labelled regions"

    base = getattr(models, "dataset", None)
    had = base is not None and len(base.cases) > 0
    n_replaced = n_previous = 0
    previous_cases = []
    if had:
        prev = base.table
        check_columns(old, prev)
        prev = prev.assign(case=prev["case"].astype(str))
        previous_cases = list(base.cases)
        key_new = pd.MultiIndex.from_frame(new[["case", "index"]].astype({"index": np.int64}))
        key_old = pd.MultiIndex.from_frame(prev[["case", "index"]].astype({"index": np.int64}))
        replaced = key_old.isin(key_new)
        n_replaced = int(replaced.sum())
        prev = prev.loc[~replaced, [c for c in keep if c in prev.columns]]
        n_previous = len(prev)
        both = pd.concat([prev, new], ignore_index=True)
    else:
        both = new.reset_index(drop=True)
    hit = both["hit"].to_numpy().astype(np.int64)
    if len(both) < 10:
        raise ValueError(f"{len(both)} labelled regions (old and new); at least 10 are needed: decide more "
                         "regions or add region tables with hit")
    if np.unique(hit).size < 2:
        which = "OoD (hit 1)" if hit[0] else "not OoD (hit 0)"
        raise ValueError(f"every labelled region is {which}: a region classifier needs both kinds; decide "
                         "regions of the other kind too")
    yield 0.2, f"refitting on {len(both)} regions, {int(hit.sum())} OoD"
    clf = clone(old)
    if random_state is not None:
        clf.set_params(random_state=random_state)
    clf.fit(both, hit)
    yield 0.9, "fitted"
    record = clf.provenance_[-1]
    record.update(refit=True, previous_cases=list(old.training_cases_),
                  added_cases=[c for c in clf.training_cases_ if c not in old.training_cases_],
                  dropped_cases=[c for c in old.training_cases_ if c not in clf.training_cases_],
                  regions_before=int(old.n_segments_), regions_previous=int(n_previous),
                  regions_replaced=n_replaced, regions_from_tables=int(n_tables),
                  decided_unknown=n_unknown, decided_known=n_known)
    clf.provenance_ = [*copy.deepcopy(old.provenance_), record]
    added = [c for c in pd.unique(new["case"]) if c not in previous_cases]
    kept_from = (f"{n_previous} earlier regions" if had
                 else "the new regions only (no training regions beside the model)")
    note = (f"refitted on {len(both)} regions of {both['case'].nunique()} case(s), {int(hit.sum())} OoD: "
            f"{kept_from} + {len(new)} labelled ({n_unknown} unknown, {n_known} not OoD by decision, "
            f"{len(new) - n_unknown - n_known} from tables; {n_replaced} replaced an earlier label); "
            f"{old.n_segments_} -> {clf.n_segments_} regions")
    out = MetaModels(classifier=clf, segmentation=seg, ood=dict(rec), note=note,
                     dataset=_region_dataset(both))
    yield 1.0, "refitted"
    return RegionRefit(out, n_before=int(old.n_segments_), n_after=int(clf.n_segments_),
                       n_previous=n_previous,
                       n_decided=n_unknown + n_known, n_unknown=n_unknown, n_known=n_known,
                       n_from_tables=len(new) - n_unknown - n_known, n_replaced=n_replaced,
                       added_cases=added, had_training_regions=had, note=note)
