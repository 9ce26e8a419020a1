"""Meta-model files: JSON that describes fitted models completely and can be shared safely.

A file holds one classifier and/or one regressor as plain numbers (standardisation, linear
coefficients or the node arrays of the boosted trees), their feature names and order, the
provenance of the training (cases, segment counts, library versions, refits) and optionally an
:class:`~napari_metaseg.core.meta_model.Evaluation`. Loading only parses JSON and validates
every field: nothing in the file is ever executed (no pickle, no joblib, no imports by name),
and a sha256 checksum of the payload catches truncated or edited files.

Layout (format version 1)::

    {"format": "napari-metaseg/meta-model", "format_version": 1, "sha256": "<hex>",
     "payload": {"created": ..., "versions": {...}, "feature_names": [...],
                 "classifier": {...} | null, "regressor": {...} | null,
                 "evaluation": {...} | null}}

Optional payload entries (absent when unknown, so older files load as before): ``segmentation``,
``training_data``, ``ood`` (region models) and ``image_quality`` (an image-level regressor stored
like the segment models, with ``by``, ``target``, ``background`` and ``fail_below``).

The checksum is the sha256 of the payload serialised canonically
(``json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)``). Non-finite floats (thresholds of the trees can be +inf) are written as
the strings ``"inf"``, ``"-inf"``, ``"nan"`` so that the file is strict JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .meta_model import (
    CLASSIFIER_KINDS,
    REGRESSOR_KINDS,
    Evaluation,
    MetaClassifier,
    MetaRegressor,
    _LinearModel,
    _TreeEnsemble,
    _utc_now,
    check_columns,
    check_model_pair,
    library_versions,
)
from .safe_json import JSONLimitError, load_json_file, short_repr

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "TABLE_KINDS", "MetaModelFileError", "load_models", "save_models"]

#: Value of the ``format`` field of every meta-model file.
FORMAT_NAME = "napari-metaseg/meta-model"
#: Newest format version written and read by this code.
FORMAT_VERSION = 1

_NONFINITE = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}

# Limits of what a model file may hold, checked before anything is built from it (a crafted file
# must fail with MetaModelFileError, not MemoryError / RecursionError / OverflowError). The
# largest real file, a boosted pair with default settings on 5 000 segments, is 0.5 MiB with
# 24 features and nesting depth 6.
#: Largest model file, and largest decompressed content of a ``.json.gz`` file (bytes).
MAX_MODEL_BYTES = 32 * 2**20
#: Deepest nesting of lists/objects in a model file.
MAX_MODEL_DEPTH = 32
#: Most features (= linear coefficients) a model may have.
MAX_FEATURES = 10_000
#: Most nodes of all trees of a boosted model together.
MAX_TREE_NODES = 2_000_000
#: Largest magnitude of any stored number (coefficients, intercepts, scaler, tree values and
#: finite thresholds); larger values only come from a damaged or crafted file.
MAX_ABS_VALUE = 1e15


class MetaModelFileError(ValueError):
    """A file is not a (readable, intact, supported) meta-model file."""


# ============================================================================================
# Saving
# ============================================================================================
#: Keys of the optional ``segmentation`` record: how the training tables' segments were made.
#: ``iou_adj`` (the regressor's target definition) is there only when it is ``"local"``: a
#: record without it (every file written before the local variant existed) means ``"paper"``.
SEGMENTATION_KEYS = ("mode", "slice_axis", "ignore_index", "iou_adj")
#: What a file's models were fitted on: segment metrics tables, or OoD region tables (target
#: ``hit``, see :mod:`napari_metaseg.core.ood`); a region model's file holds an ``ood`` record.
TABLE_KINDS = ("segments", "ood_regions")
#: Keys of the ``ood`` record: how the training regions were made (threshold of which heatmap,
#: predicted classes left out of the candidates).
OOD_KEYS = ("threshold", "measure", "exclude_classes")


def save_models(path, classifier=None, regressor=None, *, evaluation=None, segmentation=None,
                training_data=None, ood=None, image_quality=None) -> Path:
    """Write fitted meta models (and their evaluation) to a JSON model file.

    Parameters
    ----------
    path : str or pathlib.Path
        Destination; ``.json`` (plain) or ``.json.gz`` (gzip-compressed).
    classifier : MetaClassifier, optional
        Fitted on a metrics table (so that its feature names are known).
    regressor : MetaRegressor, optional
        Fitted on a table with the same feature columns as ``classifier``.
    evaluation : Evaluation or dict, optional
        Result of :func:`~napari_metaseg.core.meta_model.evaluate`, stored with the models.
    segmentation : dict, optional
        How the training tables' segments were made (``mode``, ``slice_axis``,
        ``ignore_index``), so that tables made otherwise can be refused; ``info["segmentation"]``
        on load (None when not recorded).
    training_data : dict, optional
        Reference to the training dataset saved beside the model: ``file`` (a file name in the
        model's folder), ``sha256``, ``cases``, ``n_segments``, ``min_interior``;
        ``info["training_data"]`` on load (None when not recorded). Written by
        :func:`napari_metaseg.workflows.save_model`.
    ood : dict, optional
        Marks an OoD region model (a classifier of ``hit`` fitted on region tables) and records
        how its regions were made (``threshold``, ``measure``, ``exclude_classes``);
        ``info["ood"]`` on load. Such a file is refused where a segment model is expected.
    image_quality : dict, optional
        The image-level quality regressor saved with segment models: ``regressor`` (a
        :class:`~napari_metaseg.core.meta_model.MetaRegressor` fitted on
        :func:`~napari_metaseg.core.image_quality.image_features` rows), ``by`` (``"slice"`` or
        ``"case"``), ``target`` (an image score, e.g. ``"mean_iou"``), ``background`` (class id or
        None) and ``fail_below``; ``info["image_quality"]`` on load (the same keys, the regressor
        rebuilt like the others; None when absent).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If no model is given, a model is not fitted or was fitted on an array without column
        names, the two models have different features, or the suffix is not ``.json`` /
        ``.json.gz``.
    TypeError
        If a model or the evaluation has the wrong type.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> t = synthetic_metrics_table(300, random_state=0)
    >>> clf = MetaClassifier(kind="logistic").fit(t)
    >>> p = save_models(pathlib.Path(tempfile.mkdtemp()) / "model.json", clf)
    >>> clf2, reg2, info = load_models(p)
    >>> bool((clf2.predict_proba(t) == clf.predict_proba(t)).all()), reg2
    (True, None)
    """
    path = Path(path)
    _check_suffix(path)
    check_model_pair(classifier, regressor, what="save_models needs a classifier, a regressor or both",
                     same_features=True)
    models = {"classifier": classifier, "regressor": regressor}
    names = None
    for role, model in models.items():
        if model is None:
            continue
        if not hasattr(model, "feature_names_in_"):
            raise ValueError(
                f"the {role} was fitted on an array without column names; fit it on a metrics "
                "table so that the file can record its features"
            )
        names = [str(c) for c in model.feature_names_in_]
    if evaluation is not None:
        if isinstance(evaluation, Evaluation):
            evaluation = evaluation.to_dict()
        elif not isinstance(evaluation, dict):
            raise TypeError(
                f"evaluation must be an Evaluation or a dict, got {type(evaluation).__name__}"
            )
        Evaluation.from_dict(evaluation)  # validates before anything is written
    if segmentation is not None:
        segmentation = _check_segmentation(segmentation, ValueError)
    if training_data is not None:
        training_data = _check_training_data(training_data, ValueError)
    if ood is not None:
        ood = _check_ood(ood, ValueError)
        if regressor is not None:
            raise ValueError("an OoD region model holds a classifier (of hit) only, not a regressor")
    if image_quality is not None:
        if ood is not None:
            raise ValueError("an OoD region model holds no image-quality regressor")
        image_quality = _image_quality_to_dict(image_quality)
    payload = {
        "created": _utc_now(),
        "versions": library_versions(),
        "feature_names": names,
        "n_classes": _n_cprob(names),
        "classifier": None if classifier is None else _model_to_dict(classifier),
        "regressor": None if regressor is None else _model_to_dict(regressor),
        "evaluation": evaluation,
    }
    if segmentation is not None:  # absent, not null, when unknown: older readers see no change
        payload["segmentation"] = segmentation
    if training_data is not None:
        payload["training_data"] = training_data
    if ood is not None:  # absent for segment models: their files are unchanged
        payload["ood"] = ood
    if image_quality is not None:  # absent without one: older readers see no change
        payload["image_quality"] = image_quality
    canonical = _canonical(payload)
    doc = (
        "{" + f'"format": {json.dumps(FORMAT_NAME)},\n "format_version": {FORMAT_VERSION},\n'
        f' "sha256": "{hashlib.sha256(canonical.encode("ascii")).hexdigest()}",\n'
        f' "payload": {canonical}' + "}\n"
    )
    data = doc.encode("ascii")
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    from .atomic import atomic_write_bytes

    return atomic_write_bytes(path, data)


def _check_segmentation(seg, error):
    """``seg`` restricted to :data:`SEGMENTATION_KEYS` with JSON scalar values, else ``error``."""
    if not isinstance(seg, dict):
        raise error(f"segmentation must be a dict, got {type(seg).__name__}")
    out = {}
    for k in SEGMENTATION_KEYS:
        v = seg.get(k)
        if isinstance(v, np.integer):
            v = int(v)
        if (v is not None and not isinstance(v, (str, int))) or isinstance(v, bool):
            raise error(f"segmentation {k!r} must be a string, an integer or None, got {short_repr(v)}")
        if k == "iou_adj":
            if v not in (None, "paper", "local"):
                raise error(f"segmentation 'iou_adj' must be 'paper' or 'local', got {short_repr(v)}")
            if v != "local":
                continue  # the paper's definition is the record without the key
        out[k] = v
    return out


#: Most case names a training-data reference lists.
MAX_TRAINING_CASES = 100_000


def _check_training_data(ref, error):
    """A training-data reference with exactly its keys and sane values, else ``error``."""
    if not isinstance(ref, dict):
        raise error(f"training_data must be a dict, got {type(ref).__name__}")
    name = ref.get("file")
    if (not isinstance(name, str) or not name or len(name) > 255 or "/" in name or "\\" in name
            or name in (".", "..") or "\x00" in name):
        raise error(f"training_data 'file' must be a plain file name, got {short_repr(name)}")
    digest = ref.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise error("training_data 'sha256' must be 64 lowercase hex digits")
    cases = ref.get("cases")
    if (not isinstance(cases, list) or len(cases) > MAX_TRAINING_CASES
            or not all(isinstance(c, str) and len(c) <= 1000 for c in cases)):
        raise error("training_data 'cases' must be a list of case names")
    out = {"file": name, "sha256": digest, "cases": list(cases)}
    for key in ("n_segments", "min_interior"):
        v = ref.get(key)
        if isinstance(v, np.integer):
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**53:
            raise error(f"training_data {key!r} must be a non-negative integer, got {short_repr(v)}")
        out[key] = v
    return out


def _check_ood(rec, error):
    """An ``ood`` record with exactly :data:`OOD_KEYS` and sane values, else ``error``."""
    if not isinstance(rec, dict):
        raise error(f"ood must be a dict, got {type(rec).__name__}")
    t = rec.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not np.isfinite(t):
        raise error(f"ood 'threshold' must be a finite number, got {short_repr(t)}")
    measure = rec.get("measure")
    if measure not in ("E", "D", "V"):
        raise error(f"ood 'measure' must be E, D or V, got {short_repr(measure)}")
    excl = rec.get("exclude_classes") or []
    if (not isinstance(excl, (list, tuple)) or len(excl) > 1000
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < 2**31
                       for c in excl)):
        raise error(f"ood 'exclude_classes' must be a list of class ids, got {short_repr(excl)}")
    return {"threshold": float(t), "measure": measure, "exclude_classes": [int(c) for c in excl]}


#: Keys of the ``image_quality`` record besides its ``regressor``.
IMAGE_QUALITY_KEYS = ("by", "target", "background", "fail_below")


def _image_quality_fields(rec, error):
    """``by``, ``target``, ``background``, ``fail_below`` of an ``image_quality`` record, checked."""
    from ..names import IMAGE_TARGETS

    if not isinstance(rec, dict):
        raise error(f"image_quality must be a dict, got {type(rec).__name__}")
    by, target = rec.get("by"), rec.get("target")
    if by not in ("slice", "case"):
        raise error(f"image_quality 'by' must be 'slice' or 'case', got {short_repr(by)}")
    if target not in IMAGE_TARGETS:
        raise error(f"image_quality 'target' must be one of {list(IMAGE_TARGETS)}, got {short_repr(target)}")
    bg = rec.get("background")
    if isinstance(bg, np.integer):
        bg = int(bg)
    if bg is not None and (isinstance(bg, bool) or not isinstance(bg, int) or not 0 <= bg < 2**31):
        raise error(f"image_quality 'background' must be a class id or None, got {short_repr(bg)}")
    fb = rec.get("fail_below")
    if (isinstance(fb, bool) or not isinstance(fb, (int, float, np.integer, np.floating))
            or not abs(float(fb)) <= MAX_ABS_VALUE):
        raise error(f"image_quality 'fail_below' must be a finite number, got {short_repr(fb)}")
    return {"by": by, "target": target, "background": bg, "fail_below": float(fb)}


def _image_quality_to_dict(rec) -> dict:
    out = _image_quality_fields(rec, ValueError)
    reg = rec.get("regressor")
    if not isinstance(reg, MetaRegressor):
        raise TypeError(f"image_quality 'regressor' must be a fitted MetaRegressor, got {type(reg).__name__}")
    if not hasattr(reg, "feature_names_in_"):
        raise ValueError("the image-quality regressor was fitted on an array without column names; fit it "
                         "on image_features rows so that the file can record its features")
    return {**out, "regressor": _model_to_dict(reg)}


def _image_quality_from_dict(rec, where) -> dict:
    """The ``image_quality`` record of a file, validated like the segment models."""
    out = _image_quality_fields(rec, lambda m: MetaModelFileError(f"{where}: {m}"))
    v = _Validator(f"{where}: image_quality")
    d = v.get(rec, "regressor", dict)
    names = v.str_list(d, "feature_names", unique=True, nonempty=True, max_len=MAX_FEATURES)
    out["regressor"] = _model_from_dict(v.sub("regressor"), d, MetaRegressor, names)
    return out


def _check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not (name.endswith(".json") or name.endswith(".json.gz")):
        raise ValueError(f"a meta-model file must end in .json or .json.gz, got {path.name!r}")


def _n_cprob(names) -> int:
    return sum(1 for c in names if c.startswith("cprob") and c[5:].isdigit())


def _canonical(payload) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _floats(a) -> list:
    out = []
    for v in np.asarray(a, dtype=np.float64).ravel().tolist():
        if v != v:
            out.append("nan")
        elif v in (np.inf, -np.inf):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(v)
    return out


def _scalar(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, float, str, bool)):
        return v
    raise TypeError(f"class label {v!r} of type {type(v).__name__} cannot be stored")


def _jsonable(obj):
    """Deep copy of provenance records with numpy scalars turned into Python ones."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, (int, str, bool)):
        return obj
    return str(obj)


def _model_to_dict(model) -> dict:
    m = model.model_
    if isinstance(m, _LinearModel):
        body = {"type": "linear", "coef": _floats(m.coef), "intercept": _floats([m.intercept])[0]}
    elif isinstance(m, _TreeEnsemble):
        body = {
            "type": "trees",
            "baseline": _floats([m.baseline])[0],
            "offsets": m.offsets.tolist(),
            "feature": m.feature.tolist(),
            "threshold": _floats(m.threshold),
            "left": m.left.tolist(),
            "right": m.right.tolist(),
            "value": _floats(m.value),
            "is_leaf": m.is_leaf.astype(int).tolist(),
            "missing_left": m.missing_left.astype(int).tolist(),
        }
    else:  # pragma: no cover - fit always produces one of the two
        raise TypeError(f"cannot store a model of type {type(m).__name__}")
    out = {
        "estimator": type(model).__name__,
        "params": {"kind": model.kind, "random_state": model.random_state,
                   "log_sizes": bool(model.log_sizes)},
        "feature_names": [str(c) for c in model.feature_names_in_],
        "log_features": [str(c) for c in model.log_features_],
        "scaler": {"mean": _floats(model.scaler_mean_), "scale": _floats(model.scaler_scale_)},
        "model": body,
        "lambda": getattr(model, "lambda_", None),
        "training_cases": [str(c) for c in model.training_cases_],
        "n_segments": int(model.n_segments_),
        "provenance": _jsonable(model.provenance_),
    }
    if isinstance(model, MetaClassifier):
        out["classes"] = [_scalar(c) for c in np.asarray(model.classes_).tolist()]
    return out


# ============================================================================================
# Loading
# ============================================================================================
def load_models(path, *, table: pd.DataFrame | None = None, table_kind: str | None = "segments"):
    """Read a model file written by :func:`save_models`, without executing anything in it.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.json`` or ``.json.gz`` meta-model file.
    table : pandas.DataFrame, optional
        A metrics table the models are meant for; when given, its metric columns must match
        the models' features (same measures, same number of classes).
    table_kind : {"segments", "ood_regions"} or None, default "segments"
        What the models must have been fitted on: segment metrics tables, or OoD region tables
        (the file has an ``ood`` record); None accepts both.

    Returns
    -------
    classifier : MetaClassifier or None
    regressor : MetaRegressor or None
    info : dict
        ``format_version``, ``created``, ``versions`` (libraries at save time),
        ``feature_names``, ``n_classes`` (number of ``cprob`` columns), ``training_cases``,
        ``counts`` (segments per model and target class), ``segmentation``, ``training_data``, ``evaluation``
        (:class:`~napari_metaseg.core.meta_model.Evaluation` or None), ``image_quality`` (see
        :func:`save_models`; None when the file has none) and ``path``.

    Raises
    ------
    MetaModelFileError
        (a ValueError) if the file is not a meta-model file, is truncated or corrupted, was
        edited (checksum mismatch), comes from a newer format version, or holds malformed
        values.
    ValueError
        If ``table`` is given and its columns do not match the models' features.
    FileNotFoundError
        If ``path`` does not exist.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> t = synthetic_metrics_table(300, random_state=0)
    >>> p = save_models(pathlib.Path(tempfile.mkdtemp()) / "m.json", regressor=MetaRegressor().fit(t))
    >>> clf, reg, info = load_models(p, table=t)
    >>> clf is None, info["n_classes"]
    (True, 4)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such meta-model file: {path}")
    where = f"{path.name}"
    try:
        doc = load_json_file(path, max_bytes=MAX_MODEL_BYTES, max_depth=MAX_MODEL_DEPTH)
    except JSONLimitError as err:
        raise MetaModelFileError(
            f"{where} is not a napari-metaseg meta-model file, or it is truncated or corrupted "
            f"({err})"
        ) from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise MetaModelFileError(
            f"{where} is not a napari-metaseg meta-model file (expected a JSON object with "
            f'"format": "{FORMAT_NAME}")'
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MetaModelFileError(f"{where}: invalid format_version {short_repr(version)}")
    if version > FORMAT_VERSION:
        raise MetaModelFileError(
            f"{where} uses meta-model format version {version}, newer than the version this "
            f"napari-metaseg reads ({FORMAT_VERSION}); upgrade napari-metaseg to load it"
        )
    payload = doc.get("payload")
    digest = doc.get("sha256")
    if not isinstance(payload, dict) or not isinstance(digest, str):
        raise MetaModelFileError(f"{where}: missing payload or sha256 checksum")
    try:
        actual = hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()
    except ValueError as err:
        raise MetaModelFileError(f"{where}: payload cannot be checked: {err}") from err
    if actual != digest:
        raise MetaModelFileError(
            f"{where} failed its integrity check (sha256 of the payload is {actual[:12]}..., "
            f"the file says {digest[:12]}...): it was modified or damaged after it was saved"
        )
    _check_table_kind(payload, table_kind, where)
    v = _Validator(where)
    names = v.str_list(payload, "feature_names", unique=True, nonempty=True, max_len=MAX_FEATURES)
    models = {}
    for role, cls in (("classifier", MetaClassifier), ("regressor", MetaRegressor)):
        d = payload.get(role)
        if d is None:
            models[role] = None
            continue
        models[role] = _model_from_dict(v.sub(role), d, cls, names)
    if models["classifier"] is None and models["regressor"] is None:
        raise MetaModelFileError(f"{where}: the file holds no model")
    evaluation = payload.get("evaluation")
    if evaluation is not None:
        try:
            evaluation = Evaluation.from_dict(evaluation)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as err:
            raise MetaModelFileError(f"{where}: evaluation: {short_repr(str(err), 300)}") from err
    if table is not None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        for model in models.values():
            if model is not None:
                check_columns(model, table)
    first = models["classifier"] or models["regressor"]
    counts = {}
    for role, model in models.items():
        if model is not None:
            rec = model.provenance_[-1] if model.provenance_ else {}
            counts[role] = {k: rec[k] for k in ("n_segments", "n_iou0", "n_iou_pos") if k in rec}
            counts[role]["n_segments"] = model.n_segments_
    info = {
        "format_version": version,
        "created": payload.get("created"),
        "versions": payload.get("versions") if isinstance(payload.get("versions"), dict) else {},
        "feature_names": names,
        "n_classes": _n_cprob(names),
        "training_cases": list(first.training_cases_),
        "counts": counts,
        "evaluation": evaluation,
        "segmentation": None,
        "training_data": None,
        "table_kind": "segments",
        "ood": None,
        "image_quality": None,
        "path": str(path),
    }
    if payload.get("ood") is not None:
        info["ood"] = _check_ood(payload["ood"], lambda m: MetaModelFileError(f"{where}: {m}"))
        info["table_kind"] = "ood_regions"
    if payload.get("segmentation") is not None:
        info["segmentation"] = _check_segmentation(
            payload["segmentation"], lambda m: MetaModelFileError(f"{where}: {m}"))
    if payload.get("training_data") is not None:
        info["training_data"] = _check_training_data(
            payload["training_data"], lambda m: MetaModelFileError(f"{where}: {m}"))
    if payload.get("image_quality") is not None:
        if info["ood"] is not None:
            raise MetaModelFileError(f"{where}: an OoD region model cannot hold an image-quality regressor")
        info["image_quality"] = _image_quality_from_dict(payload["image_quality"], where)
    return models["classifier"], models["regressor"], info


def _is_image_quality(payload):
    """Whether a model file holds an image-quality regressor (its last fit records it)."""
    reg = payload.get("regressor")
    prov = reg.get("provenance") if isinstance(reg, dict) else None
    last = prov[-1] if isinstance(prov, list) and prov else None
    return isinstance(last, dict) and "image_quality" in last


def _check_table_kind(payload, table_kind, where):
    """Refuse a region model where a segment model is expected, and vice versa."""
    if table_kind is not None and table_kind not in TABLE_KINDS:
        raise ValueError(f"table_kind must be one of {TABLE_KINDS} or None, got {table_kind!r}")
    is_ood = payload.get("ood") is not None
    if table_kind == "segments" and is_ood:
        raise MetaModelFileError(
            f"{where} is an OoD region model (a classifier of out-of-distribution candidate regions, "
            "trained on region tables): it cannot rate segments; use it with `napari-metaseg ood "
            "--model` or the OoD panel, and a segment model (trained on metrics tables) here")
    if table_kind == "segments" and _is_image_quality(payload):
        raise MetaModelFileError(
            f"{where} is an image-quality model (it rates whole slices or cases, trained by "
            "`napari-metaseg quality train`): it cannot rate segments; use it with `napari-metaseg "
            "quality predict`, and a segment model (trained on metrics tables) here")
    if table_kind == "ood_regions" and not is_ood:
        raise MetaModelFileError(
            f"{where} is a segment model (trained on segment metrics tables), not an OoD region "
            "model: train one on region tables (`napari-metaseg ood` with annotations, then "
            "`napari-metaseg train` on its region tables)")


class _Validator:
    """Typed access to untrusted JSON with messages that say where the problem is."""

    def __init__(self, where: str):
        self.where = where

    def sub(self, key: str) -> _Validator:
        return _Validator(f"{self.where}: {key}")

    def fail(self, msg):
        raise MetaModelFileError(f"{self.where}: malformed meta-model file: {msg}")

    def get(self, d, key, types):
        if not isinstance(d, dict):
            self.fail(f"expected an object holding {key!r}")
        if key not in d:
            self.fail(f"missing {key!r}")
        val = d[key]
        if isinstance(val, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(f"{key!r} has the wrong type (bool)")
        if not isinstance(val, types):
            self.fail(f"{key!r} has the wrong type ({type(val).__name__})")
        return val

    def str_list(self, d, key, *, unique=False, nonempty=False, max_len=None):
        val = self.get(d, key, list)
        if max_len is not None and len(val) > max_len:
            self.fail(f"{key!r} has {len(val)} entries, more than the {max_len} accepted")
        if not all(isinstance(s, str) for s in val):
            self.fail(f"{key!r} must be a list of strings")
        if unique and len(set(val)) != len(val):
            self.fail(f"{key!r} has duplicates")
        if nonempty and not val:
            self.fail(f"{key!r} is empty")
        return list(val)

    def floats(self, d, key, n=None, *, finite=True):
        val = self.get(d, key, list)
        out = np.empty(len(val), dtype=np.float64)
        for i, x in enumerate(val):
            if isinstance(x, bool):
                self.fail(f"{key!r} holds a boolean")
            if isinstance(x, (int, float)):
                out[i] = float(x)
            elif isinstance(x, str) and x in _NONFINITE and not finite:
                out[i] = _NONFINITE[x]
            else:
                self.fail(f"{key!r} holds a non-number {short_repr(x)}")
        if finite and not np.isfinite(out).all():
            self.fail(f"{key!r} holds non-finite values")
        if (np.abs(out[np.isfinite(out)]) > MAX_ABS_VALUE).any():
            self.fail(f"{key!r} holds values beyond +-{MAX_ABS_VALUE:g}")
        if n is not None and out.shape[0] != n:
            self.fail(f"{key!r} has {out.shape[0]} entries, expected {n}")
        return out

    def float(self, d, key):
        val = self.get(d, key, (int, float))
        if not abs(val) <= MAX_ABS_VALUE:  # NaN fails too
            self.fail(f"{key!r} is not a finite number within +-{MAX_ABS_VALUE:g}")
        return float(val)

    def ints(self, d, key, n=None, *, lo=None, hi=None):
        val = self.get(d, key, list)
        if not all(isinstance(x, int) and not isinstance(x, bool) and abs(x) < 2**62 for x in val):
            self.fail(f"{key!r} must hold integers (of at most 62 bits)")
        out = np.array(val, dtype=np.int64) if val else np.zeros(0, dtype=np.int64)
        if n is not None and out.shape[0] != n:
            self.fail(f"{key!r} has {out.shape[0]} entries, expected {n}")
        if out.size and ((lo is not None and out.min() < lo) or (hi is not None and out.max() > hi)):
            self.fail(f"{key!r} holds values outside [{lo}, {hi}]")
        return out


def _model_from_dict(v: _Validator, d, cls, names):
    if not isinstance(d, dict):
        v.fail("expected an object")
    est_name = v.get(d, "estimator", str)
    if est_name != cls.__name__:
        v.fail(f"estimator is {short_repr(est_name)}, expected {cls.__name__!r}")
    params = v.get(d, "params", dict)
    kind = v.get(params, "kind", str)
    kinds = CLASSIFIER_KINDS if cls is MetaClassifier else REGRESSOR_KINDS
    if kind not in kinds:
        v.fail(f"unknown kind {short_repr(kind)} (known: {list(kinds)})")
    rs = params.get("random_state")
    if rs is not None and (isinstance(rs, bool) or not isinstance(rs, int)):
        v.fail("random_state must be null or an integer")
    log_sizes = v.get(params, "log_sizes", bool)
    feats = v.str_list(d, "feature_names", unique=True, nonempty=True, max_len=MAX_FEATURES)
    if feats != names:
        v.fail("feature_names differ from the file's feature_names")
    log_features = v.str_list(d, "log_features", unique=True)
    if not set(log_features) <= set(feats):
        v.fail("log_features must be feature names")
    p = len(feats)
    scaler = v.get(d, "scaler", dict)
    mean = v.floats(scaler, "mean", p)
    scale = v.floats(scaler, "scale", p)
    if (scale <= 0).any():
        v.fail("scaler scale must be positive")
    body = v.get(d, "model", dict)
    mtype = v.get(body, "type", str)
    if mtype == "linear":
        if kind == "gbm":
            v.fail("a gbm model must hold trees")
        model = _LinearModel(v.floats(body, "coef", p), v.float(body, "intercept"))
    elif mtype == "trees":
        if kind != "gbm":
            v.fail(f"a {kind} model must be linear")
        model = _trees_from_dict(v, body, p)
    else:
        v.fail(f"unknown model type {short_repr(mtype)}")
    est = cls(kind=kind, random_state=rs, log_sizes=log_sizes)
    est.feature_names_in_ = np.array(feats, dtype=object)
    est.n_features_in_ = p
    est.log_features_ = log_features
    est.scaler_mean_ = mean
    est.scaler_scale_ = scale
    est.model_ = model
    if isinstance(model, _LinearModel):
        est.coef_ = model.coef.copy()
        est.intercept_ = model.intercept
    lam = d.get("lambda")
    if lam is not None:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not np.isfinite(lam):
            v.fail("lambda must be a finite number or null")
        est.lambda_ = float(lam)
    est.training_cases_ = v.str_list(d, "training_cases", max_len=MAX_TRAINING_CASES)
    n_seg = v.get(d, "n_segments", int)
    if n_seg < 0:
        v.fail("n_segments must be >= 0")
    est.n_segments_ = n_seg
    prov = v.get(d, "provenance", list)
    if not all(isinstance(r, dict) for r in prov):
        v.fail("provenance must be a list of objects")
    est.provenance_ = prov
    if cls is MetaClassifier:
        classes = v.get(d, "classes", list)
        if len(classes) != 2 or not all(
            isinstance(c, (int, float, str, bool)) for c in classes
        ) or classes[0] == classes[1]:
            v.fail("classes must be two distinct labels")
        est.classes_ = np.array(classes)
    return est


def _trees_from_dict(v: _Validator, body, p):
    offsets = v.ints(body, "offsets", lo=0, hi=MAX_TREE_NODES)
    if offsets.shape[0] < 2 or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
        v.fail("offsets must start at 0 and increase strictly")
    n_nodes = int(offsets[-1])  # <= MAX_TREE_NODES: the node arrays are checked against it
    feature = v.ints(body, "feature", n_nodes, lo=0, hi=p - 1)
    threshold = v.floats(body, "threshold", n_nodes, finite=False)
    left = v.ints(body, "left", n_nodes, lo=0)
    right = v.ints(body, "right", n_nodes, lo=0)
    value = v.floats(body, "value", n_nodes)
    is_leaf = v.ints(body, "is_leaf", n_nodes, lo=0, hi=1).astype(bool)
    missing_left = v.ints(body, "missing_left", n_nodes, lo=0, hi=1).astype(bool)
    baseline = v.float(body, "baseline")
    if np.isnan(threshold).any():
        v.fail("thresholds must not be NaN")
    for t in range(offsets.shape[0] - 1):
        lo, hi = int(offsets[t]), int(offsets[t + 1])
        size = hi - lo
        inner = ~is_leaf[lo:hi]
        local = np.arange(size)
        # Children must come after their parent inside the same tree: traversal then always
        # terminates, whatever the file says.
        if np.any((left[lo:hi][inner] <= local[inner]) | (left[lo:hi][inner] >= size)) or np.any(
            (right[lo:hi][inner] <= local[inner]) | (right[lo:hi][inner] >= size)
        ):
            v.fail(f"tree {t} has child indices outside the tree or before their parent")
    return _TreeEnsemble(baseline, offsets, feature, threshold, left, right, value, is_leaf,
                         missing_left, p)
