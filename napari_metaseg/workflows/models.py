"""Meta-model jobs: gather training data, train, refit, save and load, check compatibility.

One place for what a saved model holds, whichever front end saved it (CLI, meta-model panel,
active-learning panel): the classifier and regressor, their evaluation, the segmentation
settings of the training tables, and a reference to the training dataset written beside the
model file (``<name>.dataset.csv``, with its sha256), so that a later refit can extend it.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.progress import rescaled
from ..names import DISPLAY_COLUMNS, MODES, PREDICTION_COLUMNS, SPLITS
from .cases import case_settings, measure_file

__all__ = [
    "COMPATIBLE_MODES",
    "SPLITS",
    "MetaModels",
    "TrainResult",
    "check_segmentation",
    "clean_table",
    "collect_dataset",
    "dataset_path",
    "default_training",
    "iou_adj_of",
    "load_model",
    "refit",
    "refit_case",
    "resolve_split",
    "save_model",
    "segmentation_of",
    "train",
]

#: Segmentation modes a model trained in each mode can be applied in: planar segments (2D
#: images or slices of volumes) and volumetric ones differ in their size and shape statistics.
COMPATIBLE_MODES = {"slices": ("slices", "2d"), "2d": ("2d", "slices", "auto"), "3d": ("3d", "auto")}


# ============================================================================================
# What a model is, in every front end
# ============================================================================================
@dataclass
class MetaModels:
    """A classifier / regressor pair with everything saved beside it.

    ``segmentation`` is how the training tables' segments were made (``mode``,
    ``slice_axis``, ``ignore_index``; None when unknown); ``dataset`` the training data (a
    ``MetaDataset``, None when not known); ``path`` the model file it was loaded from or
    saved to; ``note`` what happened to the training data on load; ``ood`` (None for segment
    models) marks an OoD region model and how its regions were made (``threshold``,
    ``measure``, ``exclude_classes``; see :mod:`napari_metaseg.workflows.ood`);
    ``image_quality`` (None, or a :class:`~napari_metaseg.workflows.quality.QualityModel`) the
    image-level regressor that predicts the mean IoU of a slice or case from its segment table
    (:func:`train` fits it when the training tables carry image scores; saved in the same file).
    """

    classifier: object = None
    regressor: object = None
    dataset: object = None
    evaluation: object = None
    segmentation: dict | None = None
    path: str | None = None
    note: str = ""
    ood: dict | None = None
    image_quality: object = None

    @property
    def has_models(self) -> bool:
        return self.classifier is not None or self.regressor is not None

    @property
    def pair(self):
        return self.classifier, self.regressor


@dataclass
class TrainResult(MetaModels):
    """:class:`MetaModels` from :func:`train` or :func:`refit`, with what the panels show."""

    evaluation_error: str = ""
    split_note: str = ""
    plot_table: object = None
    plot_note: str = ""
    skipped: list = field(default_factory=list)  # cases without ground truth
    replaced: list = field(default_factory=list)  # earlier training cases replaced by new tables
    previous_cases: list = field(default_factory=list)
    added_cases: list = field(default_factory=list)
    refit: bool = False
    measured: object = None  # the current case measured again (an Analysis), see refit_case
    image_note: str = ""  # whether the image-level regressor was fitted, and why not
    choice: dict = field(default_factory=dict)  # kinds and min_interior used (see default_training)


def dataset_path(model_path) -> Path:
    """Where the training dataset is kept beside a model file: ``<name>.dataset.csv``."""
    p = Path(model_path)
    name = p.name
    for suffix in (".json.gz", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".dataset.csv")


def clean_table(table: pd.DataFrame) -> pd.DataFrame:
    """A metrics table as the engine makes it: without earlier predictions (they are not
    metrics) or display columns (``class_name``), in the engine's column order (a segments
    layer shows the reviewer's columns first)."""
    from ..core.heatmaps import MEASURES, SAMPLE_MEASURES
    from ..core.metrics import metric_columns

    table = table.drop(columns=[c for c in (*PREDICTION_COLUMNS, *DISPLAY_COLUMNS) if c in table.columns])
    n_classes = sum(1 for c in table.columns if str(c).startswith("cprob") and str(c)[5:].isdigit())
    measures = tuple(m for m in (*MEASURES, *SAMPLE_MEASURES) if m in table.columns)
    order = ["case", "index", "slice", *metric_columns(measures, n_classes), "iou", "iou_adj"]
    known = [c for c in order if c in table.columns]
    return table[known + [c for c in table.columns if c not in known]]


# ============================================================================================
# Segmentation settings
# ============================================================================================
def segmentation_of(settings: dict, *, ndim: int | None = None, table: pd.DataFrame | None = None):
    """The segmentation record (``mode``, ``slice_axis``, ``ignore_index``) of tables made
    with ``settings``; ``auto`` is resolved where the dimension (``ndim``) or a table with or
    without a ``slice`` column tells it."""
    from ..core.meta_io import SEGMENTATION_KEYS

    rec = {k: settings.get(k) for k in SEGMENTATION_KEYS}
    mode = rec["mode"] or "auto"
    if mode == "auto" and ndim is not None:
        mode = "2d" if ndim == 2 else "3d"
    if mode == "auto" and table is not None and "slice" in table.columns:
        mode = "slices"
    rec["mode"] = mode
    if mode != "slices":
        rec["slice_axis"] = None  # not part of how the segments were made
    elif rec["slice_axis"] is None:
        rec["slice_axis"] = -1
    if rec.pop("iou_adj", None) == "local":  # the paper's definition is the record without it
        rec["iou_adj"] = "local"
    return rec


def recorded_segmentation(stored):
    """The segmentation record of a table file from its stored settings (None when unknown).

    Files written before the record carried ``iou_adj`` still name the definition in their
    request (``settings["iou_adj"]``); it is taken from there.
    """
    if not stored:
        return None
    rec = stored.get("segmentation") or (segmentation_of(stored) if "mode" in stored else None)
    if rec and stored.get("iou_adj") == "local" and "iou_adj" not in rec:
        rec = {**rec, "iou_adj": "local"}
    return rec


def iou_adj_of(segmentation) -> str:
    """The IoU_adj definition (``"paper"`` or ``"local"``) of tables or a model with this
    segmentation record; a record without one (or None) means the paper's.

    Example
    -------
    >>> iou_adj_of({"mode": "slices", "slice_axis": -1, "ignore_index": 255, "iou_adj": "local"})
    'local'
    >>> iou_adj_of(None)
    'paper'
    """
    return (segmentation or {}).get("iou_adj") or "paper"


def _merge_segmentation(records, what):
    """One segmentation record for tables made with ``records``; ``auto`` (tables made before
    the mode was resolved) agrees with ``2d`` and ``3d``; different ones are refused."""
    known = [dict(r) for r in records if r]
    if not known:
        return None
    first = ([r for r in known if r.get("mode") != "auto"] or known)[0]

    def agrees(r):
        return r == first or (r.get("mode") == "auto" and first.get("mode") in ("2d", "3d")
                              and r.get("ignore_index") == first.get("ignore_index")
                              and iou_adj_of(r) == iou_adj_of(first))

    definitions = {iou_adj_of(r) for r in known}
    if len(definitions) > 1:
        raise ValueError(f"{what} mix the paper's and the local IoU_adj (the regressor's target would "
                         "mean two things); measure every case with the same `metrics --iou-adj`")
    if not all(agrees(r) for r in known):
        listing = "; ".join(str(r) for r in known)
        raise ValueError(f"{what} were made with different segmentation settings ({listing}); train on "
                         "tables of one kind (same mode, slice axis and ignore label)")
    return first


def check_segmentation(model_segmentation, *, mode=None, slice_axis=None, model="the model"):
    """The segmentation to use for a model; refuses one the model was not trained for.

    Parameters
    ----------
    model_segmentation : dict or None
        The model's record (``MetaModels.segmentation``); None or ``auto``: nothing checked.
    mode : str, optional
        The mode asked for; None takes the model's (``slices`` or ``3d``).
    slice_axis : int, optional
        The slice axis asked for; None takes the model's in slices mode.
    model : str
        How to name the model in the message.

    Returns
    -------
    (mode, slice_axis)
        ``mode`` may stay None (then ``auto``); ``slice_axis`` None means the default.

    Raises
    ------
    ValueError
        ``mode`` or ``slice_axis`` would give the model tables of another kind.

    Example
    -------
    >>> check_segmentation({"mode": "slices", "slice_axis": 2, "ignore_index": 255})
    ('slices', 2)
    """
    seg = model_segmentation or {}
    m_mode, m_axis = seg.get("mode"), seg.get("slice_axis")
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode {mode!r}; expected one of {MODES}")
    if m_mode not in COMPATIBLE_MODES:
        return mode, slice_axis
    if mode is None and m_mode in ("slices", "3d"):
        mode = m_mode
    if mode == "slices" and m_mode == "slices" and slice_axis is None:
        slice_axis = m_axis
    axis_differs = (mode == "slices" and m_mode == "slices" and m_axis is not None
                    and slice_axis is not None and int(slice_axis) % 3 != int(m_axis) % 3)
    if (mode is not None and mode not in COMPATIBLE_MODES[m_mode]) or axis_differs:
        how = f"slice by slice along axis {m_axis}" if m_mode == "slices" else f"in {m_mode}"
        asked = f"mode {mode}" + (f" with slice axis {slice_axis}" if axis_differs else "")
        raise ValueError(f"{model} was trained on segments made {how}; {asked} would give it tables "
                         f"of another kind (use the model's segmentation: {how})")
    return mode, slice_axis


# ============================================================================================
# Training data
# ============================================================================================
def collect_dataset(*, cases=(), settings=None, current=None, table=None, base=None, min_interior=1):
    """Job: gather training data from case files, the current case, a table and a base dataset.

    Parameters
    ----------
    cases : sequence of Case
        Case files; each is read and measured with ``settings`` (cases without ground truth
        are skipped and listed).
    settings : dict, optional
        See :func:`~napari_metaseg.workflows.cases.case_settings`.
    current : (case_id, table, segmentation), optional
        A case measured elsewhere (the analysis panel); ``segmentation`` may be None.
    table : (stacked table, segmentation), optional
        Metrics tables with a ``case`` column (the CLI's tables).
    base : MetaModels or MetaDataset, optional
        Training data to extend; its cases with the id of a new case are replaced (listed).
    min_interior : int
        See :class:`~napari_metaseg.core.meta_dataset.MetaDataset`.

    Yields ``(fraction, stage)``; returns ``(dataset, segmentation, skipped, replaced)``.
    """
    from ..core.meta_dataset import MetaDataset

    settings = case_settings(**(settings or {}))
    new_ids = [c.name for c in cases]
    if current is not None:
        new_ids.append(str(current[0]))
    more = None
    if table is not None:
        more = MetaDataset.from_table(clean_table(table[0]), min_interior=min_interior)
        new_ids.extend(more.cases)
    records = []
    base_ds = base.dataset if isinstance(base, MetaModels) else base
    if isinstance(base, MetaModels):
        records.append(base.segmentation)
    replaced = []
    if base_ds is not None and len(base_ds.cases):
        old = base_ds.table
        replaced = [c for c in base_ds.cases if c in new_ids]
        old = old[~old["case"].astype(str).isin(new_ids)]
        ds = (MetaDataset.from_table(old, min_interior=min_interior) if len(old)
              else MetaDataset(min_interior=min_interior))
    else:
        ds = MetaDataset(min_interior=min_interior)
    if more is not None:
        records.append(table[1])
        for case_id in more.cases:
            part = more.table[more.table["case"] == case_id].drop(columns=["case"])
            ds = _add_case(ds, case_id, part)
    skipped = []
    n = max(len(cases), 1)
    for i, case in enumerate(cases):
        if case.gt is None:
            skipped.append(case.name)
            continue
        yield i / n, f"measuring {case.name} against its ground truth ({i + 1}/{n})"
        seg_ids, t, _ = measure_file(case, settings)
        records.append(segmentation_of(settings, ndim=seg_ids.ndim))
        ds = _add_case(ds, case.name, clean_table(t))
    if current is not None:
        case_id, t, seg = current
        records.append(seg)
        ds = _add_case(ds, str(case_id), clean_table(t))
    if not len(ds.cases):
        raise ValueError("no case with ground truth to train on"
                         + (f" (without ground truth: {', '.join(skipped)})" if skipped else ""))
    segmentation = _merge_segmentation(records, "the training cases")
    yield 1.0, f"{len(ds.cases)} case(s), {len(ds.table)} segments"
    return ds, segmentation, skipped, replaced


def _add_case(ds, case_id, table):
    """``ds.add(case_id, table)``; the image score columns (recorded since image-level ranking)
    are filled with NaN on the side that lacks them, so older training data and new tables mix.
    Returns the dataset (a new one when the older data gained the columns)."""
    import numpy as np

    from ..core.meta_dataset import MetaDataset
    from ..names import IMAGE_SCORE_COLUMNS

    if ds.cases:
        old = ds.table
        cols = [c for c in old.columns if c != "case"]
        lacking_new = [c for c in IMAGE_SCORE_COLUMNS if c in cols and c not in table.columns]
        lacking_old = [c for c in IMAGE_SCORE_COLUMNS if c in table.columns and c not in cols]
        if lacking_new:
            table = table.assign(**{c: np.nan for c in lacking_new})
        if lacking_old:
            ds = MetaDataset.from_table(old.assign(**{c: np.nan for c in lacking_old}),
                                        min_interior=ds.min_interior)
            cols += lacking_old
        if (lacking_new or lacking_old) and set(cols) == set(table.columns):
            table = table[cols]
    return ds.add(case_id, table)


def resolve_split(table, choice):
    """``(group, explanation)`` for :func:`~napari_metaseg.core.evaluate` on ``table``.

    ``auto``: by case when there are at least 2 cases; one case segmented slice by slice keeps
    whole slices together; otherwise segments are drawn independently (the paper's protocol).
    """
    if choice not in SPLITS:
        raise ValueError(f"split {choice!r}; expected one of {SPLITS}")
    n_cases = table["case"].nunique() if "case" in table.columns else 1
    has_slice = "slice" in table.columns
    if choice == "auto":
        choice = "case" if n_cases >= 2 else "slice" if has_slice else "segment"
    if choice == "case":
        return "case", (f"splits by case ({n_cases} cases): half of the cases train, the other half "
                        "validates; this is what to expect on a new case")
    if choice == "slice":
        if not has_slice:
            raise ValueError("split by slice needs slice-wise tables (analysis mode 'slices')")
        return ("case", "slice"), ("splits by slice: segments of one slice stay together; with one "
                                   "case this is optimistic for a new case")
    return None, ("segments split at random (the paper's protocol): with one case this is "
                  "optimistic for a new case; train on several cases for a fair estimate")


# ============================================================================================
# Training and refitting
# ============================================================================================
def _evaluate(ds, *, classifier_kind, regressor_kind, n_splits, split, random_state):
    from ..core.meta_model import evaluate

    data = ds.training_table()
    group, note = resolve_split(data, split)
    if n_splits < 1:
        return None, "", note, group
    try:
        ev = evaluate(ds, n_splits=n_splits, group=group, models=[(classifier_kind, regressor_kind)],
                      random_state=random_state)
    except ValueError as exc:  # e.g. a split whose training half has one class: train anyway
        return None, str(exc), note, group
    return ev, "", note, group


def _plot_predictions(ds, clf, reg, group, random_state):
    """Out-of-sample predictions for the ROC / scatter plots: the validation half of one split."""
    from sklearn.base import clone

    from ..core.meta_model import evaluation_splits, predict_table

    data = ds.training_table()
    try:
        splits, _ = evaluation_splits(data, n_splits=1, group=group, random_state=random_state)
        tr, va = splits[0]
        train_part = data.iloc[tr]
        c0 = None if clf is None else clone(clf).fit(train_part)
        r0 = None if reg is None else clone(reg).fit(train_part)
        return (predict_table(data.iloc[va], c0, r0),
                f"validation half of one split ({len(va)} segments; models fitted on the other {len(tr)})")
    except ValueError:
        return (predict_table(data, clf, reg),
                f"training segments (in-sample, optimistic; {len(data)} segments)")


def _with_hint(make, role, ds, segmentation):
    """``make(role)``; too few usable segments is said with what would give more."""
    try:
        return make(role)
    except ValueError as exc:
        if "usable segments" not in str(exc):
            raise
        mode = (segmentation or {}).get("mode")
        hints = []
        if mode in ("3d", "auto"):
            hints.append("segment the volumes slice by slice (mode 'slices': many more, planar segments)")
        if ds.min_interior > 0:
            hints.append(f"set min interior to 0 (now {ds.min_interior}: segments with a smaller interior "
                         "are left out)")
        hints.append("add cases")
        raise ValueError(f"cannot fit the {role}: {exc}. To get more: " + "; or ".join(hints)) from None


def _fit(ds, segmentation, *, make, n_splits, split, kinds, random_state, plots):
    """Job shared by train and refit: evaluate, fit both models with ``make(role)``, plots."""
    yield 0.0, f"evaluating ({n_splits} splits, {len(ds.training_table())} segments)"
    ev, ev_error, note, group = _evaluate(ds, classifier_kind=kinds[0], regressor_kind=kinds[1],
                                          n_splits=n_splits, split=split, random_state=random_state)
    yield 0.5, "fitting the classifier on all segments"
    clf = _with_hint(make, "classifier", ds, segmentation)
    yield 0.7, "fitting the regressor on all segments"
    reg = _with_hint(make, "regressor", ds, segmentation)
    plot_table, plot_note = None, ""
    if plots:
        yield 0.85, "predictions for the plots"
        plot_table, plot_note = _plot_predictions(ds, clf, reg, group, random_state)
    return TrainResult(classifier=clf, regressor=reg, dataset=ds, evaluation=ev,
                       segmentation=segmentation, evaluation_error=ev_error, split_note=note,
                       plot_table=plot_table, plot_note=plot_note)


def train(*, cases=(), settings=None, current=None, table=None, base=None, classifier_kind=None,
          regressor_kind=None, targets=("classification", "regression"), min_interior=None,
          n_splits=10, split="auto", random_state=0, plots=False):
    """Job: train new meta models (and evaluate them) on the given training data.

    Data sources are those of :func:`collect_dataset`. ``targets`` picks the models
    (``classification`` and/or ``regression``); ``n_splits`` grouped 50/50 splits evaluate
    the pair first (0: no evaluation; a failed evaluation is reported, the models are still
    fitted); ``plots`` adds out-of-sample predictions for the ROC and scatter plots.
    ``classifier_kind``, ``regressor_kind`` and ``min_interior`` left None take the defaults of
    the training data's segmentation mode (:func:`default_training`; 3D: logistic classifier,
    LASSO regressor, every segment); what was used and why is recorded in the models'
    provenance (``defaults``) and in ``TrainResult.choice``.

    Yields ``(fraction, stage)``; returns a :class:`TrainResult`.

    Example
    -------
    >>> from napari_metaseg.core.progress import drain
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> t = synthetic_metrics_table(300, random_state=0).assign(case="a")
    >>> r = drain(train(table=(t, None), n_splits=0))
    >>> r.classifier.kind, r.regressor.kind
    ('lasso', 'linear')
    """
    from ..core.meta_model import MetaClassifier, MetaRegressor
    from ..names import CLASSIFIER_KINDS, REGRESSOR_KINDS

    if classifier_kind is not None and classifier_kind not in CLASSIFIER_KINDS:
        raise ValueError(f"classifier kind {classifier_kind!r}; expected one of {CLASSIFIER_KINDS}")
    if regressor_kind is not None and regressor_kind not in REGRESSOR_KINDS:
        raise ValueError(f"regressor kind {regressor_kind!r}; expected one of {REGRESSOR_KINDS}")
    targets = tuple(targets)
    if not targets or set(targets) - {"classification", "regression"}:
        raise ValueError(f"targets {targets!r}; expected classification and/or regression")
    ds, seg, skipped, replaced = yield from rescaled(
        collect_dataset(cases=cases, settings=settings, current=current, table=table, base=base,
                        min_interior=1 if min_interior is None else min_interior), 0.0, 0.5)
    if not ds.has_targets:
        raise ValueError("the tables have no iou_adj column: training needs cases with ground truth")
    choice = default_training(seg, classifier_kind=classifier_kind, regressor_kind=regressor_kind,
                              min_interior=min_interior)
    classifier_kind, regressor_kind = choice["classifier_kind"], choice["regressor_kind"]
    ds.min_interior = choice["min_interior"]

    def make(role):
        if role == "classifier" and "classification" in targets:
            return MetaClassifier(kind=classifier_kind, random_state=random_state).fit(ds)
        if role == "regressor" and "regression" in targets:
            return MetaRegressor(kind=regressor_kind, random_state=random_state).fit(ds)
        return None

    result = yield from rescaled(_fit(ds, seg, make=make, n_splits=n_splits, split=split,
                                      kinds=(classifier_kind, regressor_kind),
                                      random_state=random_state, plots=plots), 0.5, 1.0)
    result.skipped, result.replaced = skipped, replaced
    result.added_cases = list(ds.cases)
    result.choice = choice
    for model in result.pair:
        if model is not None and getattr(model, "provenance_", None):
            model.provenance_[-1]["defaults"] = dict(choice)
    yield 0.95, "fitting the image-level regressor"
    result.image_quality, result.image_note = _image_model(ds, seg, random_state=random_state)
    return result


def _image_model(ds, segmentation, *, previous=None, random_state=0):
    """``(QualityModel or None, note)``: the image-level regressor fitted on the training data's
    image rows (:func:`~napari_metaseg.workflows.quality.fit_image_model`), with the kind and
    background of ``previous`` (a refit); when the data allow none, ``previous`` is kept."""
    from .quality import fit_image_model

    kind = getattr(getattr(previous, "regressor", None), "kind", "lasso")
    background = previous.background if previous is not None else 0
    try:
        model, note = fit_image_model(ds.table, segmentation, kind=kind, background=background,
                                      random_state=random_state)
    except ValueError as exc:
        model, note = None, f"not fitted: {exc}"
    if model is None and previous is not None:
        return previous, f"{note}; the previous image regressor is kept"
    if model is not None and previous is not None:
        note = "refitted " + note[len("fitted "):]
    return model, note


def default_training(segmentation, *, classifier_kind=None, regressor_kind=None, min_interior=None) -> dict:
    """The model kinds and ``min_interior`` :func:`train` uses: the given ones, else the defaults
    of the segmentation mode (:data:`napari_metaseg.names.DEFAULT_TRAINING`; unknown mode: 2D's).

    Returns ``{"mode", "classifier_kind", "regressor_kind", "min_interior", "defaulted"}`` where
    ``defaulted`` lists the settings taken from the mode's defaults.

    Example
    -------
    >>> default_training({"mode": "3d"})["regressor_kind"]
    'lasso'
    >>> default_training({"mode": "slices"}, min_interior=0)["min_interior"]
    0
    """
    from ..names import DEFAULT_TRAINING

    mode = (segmentation or {}).get("mode") or "2d"
    defaults = dict(zip(("classifier_kind", "regressor_kind", "min_interior"),
                        DEFAULT_TRAINING.get(mode, DEFAULT_TRAINING["2d"]), strict=True))
    given = {"classifier_kind": classifier_kind, "regressor_kind": regressor_kind,
             "min_interior": min_interior}
    out = {k: defaults[k] if v is None else v for k, v in given.items()}
    return {"mode": mode, **out, "defaulted": [k for k, v in given.items() if v is None]}


def refit(models: MetaModels, *, cases=(), settings=None, current=None, table=None, min_interior=None,
          n_splits=0, split="auto", random_state=0, plots=False):
    """Job: refit ``models`` on their training data plus new cases.

    ``models.dataset`` (when known; else the one saved beside ``models.path``) is extended by
    the new cases (a case of the same id is
    replaced and listed in ``replaced``); the new cases must be segmented like the models'
    training data. The models are not modified: new ones are fitted with the same settings,
    their provenance lists every fit. ``min_interior`` defaults to the dataset's (else 1).

    Yields ``(fraction, stage)``; returns a :class:`TrainResult` with ``refit=True``.
    """
    from ..core.meta_model import refit as refit_model

    if not models.has_models:
        raise ValueError("no model to refit: train or load one first")
    if models.dataset is None and models.path and Path(models.path).is_file():
        from ..core.meta_io import load_models

        models = copy.copy(models)  # the caller's models are not changed
        _attach_training_data(models, load_models(models.path)[2].get("training_data"))
    if min_interior is None:
        min_interior = models.dataset.min_interior if models.dataset is not None else _min_interior_of(models)
    ds, seg, skipped, replaced = yield from rescaled(
        collect_dataset(cases=cases, settings=settings, current=current, table=table, base=models,
                        min_interior=min_interior), 0.0, 0.6)
    previous = [c for c in (models.dataset.cases if models.dataset is not None else []) if c not in replaced]

    def make(role):
        model = models.classifier if role == "classifier" else models.regressor
        return None if model is None else refit_model(model, ds)

    kinds = (getattr(models.classifier, "kind", "lasso"), getattr(models.regressor, "kind", "linear"))
    result = yield from rescaled(_fit(ds, seg, make=make, n_splits=n_splits, split=split, kinds=kinds,
                                      random_state=random_state, plots=plots), 0.6, 1.0)
    result.skipped, result.replaced, result.refit = skipped, replaced, True
    result.previous_cases = previous
    result.added_cases = [c for c in ds.cases if c not in previous]
    yield 0.95, "refitting the image-level regressor"
    result.image_quality, result.image_note = _image_model(ds, seg, previous=models.image_quality,
                                                           random_state=random_state)
    return result


def refit_case(models: MetaModels, probs, gt, *, case_id, class_axis=-1, mode="auto", slice_axis=-1,
               ignore_index=255, min_interior=None, n_splits=0, split="auto", random_state=0, plots=False):
    """Job: measure a case held in memory against its (corrected) ground truth, then refit.

    The review loop's last step: after labels were fixed in place, the case's segments and
    metrics are computed again (:func:`~napari_metaseg.workflows.analyse`) and the models refit
    on their training data plus this case (:func:`refit`). Returns the :class:`TrainResult`
    with ``measured`` = the new :class:`~napari_metaseg.workflows.Analysis`.
    """
    from .analysis import analyse

    measured = yield from rescaled(analyse(probs, gt, class_axis=class_axis, mode=mode, slice_axis=slice_axis,
                                           ignore_index=ignore_index, heatmaps=(),
                                           iou_adj=iou_adj_of(models.segmentation)), 0.0, 0.4,
                                   prefix="measuring the corrected case: ")
    result = yield from rescaled(refit(models, current=(case_id, measured.table, measured.segmentation),
                                       min_interior=min_interior, n_splits=n_splits, split=split,
                                       random_state=random_state, plots=plots), 0.4, 1.0)
    result.measured = measured
    return result


def _min_interior_of(models):
    ref = models.classifier if models.classifier is not None else models.regressor
    prov = getattr(ref, "provenance_", None) or [{}]
    value = prov[-1].get("min_interior")
    return 1 if value is None else int(value)


# ============================================================================================
# Files
# ============================================================================================
def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(path, models: MetaModels) -> Path:
    """Write a model file and, beside it, its training dataset; the one way models are saved.

    The file records the models, their evaluation, the segmentation settings and a
    ``training_data`` reference (file name, sha256, cases, segments, min interior) to the
    dataset written first as ``<name>.dataset.csv`` (see :func:`dataset_path`).

    Returns the model file's path. Raises ValueError / TypeError / OSError like
    :func:`~napari_metaseg.core.meta_io.save_models`.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from napari_metaseg.core.progress import drain
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> t = synthetic_metrics_table(300, random_state=0).assign(case="a")
    >>> r = drain(train(table=(t, None), n_splits=0))
    >>> p = save_model(pathlib.Path(tempfile.mkdtemp()) / "m.json.gz", r)
    >>> m = load_model(p)
    >>> m.dataset.cases
    ['a']
    """
    from ..core.meta_io import save_models

    path = Path(path)
    training_data = None
    if models.dataset is not None and len(models.dataset.cases):
        ds_file = dataset_path(path)
        models.dataset.save(ds_file)
        ds = models.dataset
        training_data = {"file": ds_file.name, "sha256": _sha256(ds_file), "cases": list(map(str, ds.cases)),
                         "n_segments": len(ds.table), "min_interior": int(ds.min_interior)}
    image = None
    qm = getattr(models, "image_quality", None)
    if qm is not None:
        image = {"regressor": qm.regressor, "by": qm.by, "target": qm.target, "background": qm.background,
                 "fail_below": qm.fail_below}
    path = save_models(path, models.classifier, models.regressor, evaluation=models.evaluation,
                       segmentation=models.segmentation, training_data=training_data, ood=models.ood,
                       image_quality=image)
    models.path = str(path)
    return path


def load_model(path, *, table: pd.DataFrame | None = None, table_kind: str | None = "segments") -> MetaModels:
    """Read a model file and the training dataset beside it (when present and unchanged).

    ``table``: a metrics table the models are meant for (its columns are checked);
    ``table_kind``: ``"segments"`` refuses an OoD region model, ``"ood_regions"`` a segment
    model, None takes either (see :func:`~napari_metaseg.core.meta_io.load_models`). A dataset
    that is missing, changed since the model was saved or unreadable is left out and said in
    ``note`` (a refit then uses the new cases only). Raises like
    :func:`~napari_metaseg.core.meta_io.load_models`.
    """
    from ..core.meta_io import load_models

    clf, reg, info = load_models(path, table=table, table_kind=table_kind)
    models = MetaModels(clf, reg, evaluation=info.get("evaluation"), segmentation=info.get("segmentation"),
                        path=str(path), ood=info.get("ood"))
    models.image_quality = _quality_model_of(info.get("image_quality"), models.segmentation, str(path))
    return _attach_training_data(models, info.get("training_data"))


def _quality_model_of(image, segmentation=None, path=None):
    """The :class:`~napari_metaseg.workflows.quality.QualityModel` of a model file's
    ``image_quality`` record (None for None)."""
    if image is None:
        return None
    from .quality import QualityModel

    return QualityModel(image["regressor"], image["by"], image["target"], image["fail_below"], segmentation,
                        image["background"], None, path)


def _attach_training_data(models, ref):
    """Read the training dataset beside ``models.path`` into ``models`` (when present and, with a
    reference ``ref``, unchanged); ``models.note`` says what happened."""
    from ..core.meta_dataset import MetaDataset

    ds_file = dataset_path(models.path)
    if ref is not None:
        ds_file = Path(models.path).with_name(ref["file"])
    if not ds_file.is_file():
        models.note = "no training data beside the model: a refit uses the new cases only"
        return models
    if ref is not None and _sha256(ds_file) != ref["sha256"]:
        models.note = (f"training data {ds_file.name} changed since the model was saved: left out, "
                       "a refit uses the new cases only")
        return models
    if ref is not None:
        min_int = ref["min_interior"]
    else:  # files saved before the reference was recorded
        ev = models.evaluation
        min_int = int(ev.details.get("min_interior", 1)) if ev is not None else _min_interior_of(models)
    try:
        models.dataset = MetaDataset.load(ds_file, min_interior=min_int)
        models.note = f"training data {ds_file.name} ({len(models.dataset.cases)} cases)"
    except (ValueError, OSError) as exc:
        models.note = f"training data {ds_file.name} unreadable ({exc}): a refit uses the new cases only"
    return models
