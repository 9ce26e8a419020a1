"""``napari-metaseg ood`` and training and refitting on OoD region tables: arguments and printing.

The work is :mod:`napari_metaseg.workflows.ood`. Registered by :mod:`napari_metaseg.cli`.
"""

from __future__ import annotations

from pathlib import Path

from .cli import (
    EXIT_OK,
    MODEL_PAIRS,
    UsageError,
    _add_case_options,
    _cases,
    _collect_cases,
    _ignore_index,
    _load_tables,
    _note,
    _out_folder,
    _report_failed,
    _run,
    _run_options,
    _warm_up,
)


def _add_ood_parser(sub):
    p = sub.add_parser("ood", help="out-of-distribution candidate regions, rated by a region model "
                                   "(resumable)",
                       description="Threshold a dispersion heatmap (default: entropy >= 0.5), take its "
                                   "connected regions as OoD candidates and describe each; with --model "
                                   "keep those the region meta classifier rates as OoD. Writes "
                                   "DIR/cases/<case>_ood.parquet, DIR/ood_regions.parquet and "
                                   "DIR/maps/<case>_ood_regions.nii.gz (ids of the kept regions, the "
                                   "input's affine); for cases with OoD annotations (an ood.<ext> file in "
                                   "the case folder, <case>_ood.<ext> beside the softmax, else ground-truth "
                                   "voxels equal to --ood-label) the regions get a hit column and "
                                   "DIR/ood_objects.csv / ood_pixels.csv the evaluation (from the "
                                   "per-case parts DIR/cases/<case>_ood_parts.npz). Cases already done "
                                   "with the same settings, model and input files are skipped unless "
                                   "--force; the combined table and the evaluation cover every done case. "
                                   "`train` on DIR/ood_regions.parquet fits a region model.")
    p.add_argument("--model", metavar="MODEL",
                   help="region model file (`train` on region tables); its threshold, measure and "
                        "excluded classes are used")
    # OoD voxels come from --ood-label (or an annotation file), not from an ignore label
    _add_case_options(p, out_help="output folder", resumable=True, ignore=False)
    next(a for a in p._actions if a.dest == "out").metavar = "DIR"
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="candidates: heatmap >= T (default: the model's, else 0.5)")
    p.add_argument("--measure", choices=("E", "D", "V"), default=None,
                   help="heatmap thresholded: E entropy (default), D margin, V variation ratio")
    p.add_argument("--exclude-class", type=int, action="append", default=None, metavar="C",
                   dest="exclude_classes",
                   help="no candidates where class C is predicted (repeatable; e.g. 0, the background "
                        "around a brain)")
    p.add_argument("--ood-label", type=_ignore_index, default=255, metavar="N",
                   help="ground-truth label of OoD voxels, or 'none' (an OoD annotation file comes first; "
                        "default 255)")
    p.add_argument("--p-keep", type=float, default=0.5, metavar="P",
                   help="keep regions whose P(OoD) from the model is >= P (default 0.5)")


def _cmd_ood(args):
    from .core.meta_io import MetaModelFileError
    from .workflows import ood_cases
    from .workflows.cases import OutputBusyError

    if args.model is not None and not Path(args.model).is_file():
        raise UsageError(f"model {args.model}: no such file")
    if not 0.0 <= args.p_keep <= 1.0:
        raise UsageError(f"--p-keep must lie in [0, 1], got {args.p_keep}")
    cases = _collect_cases(args)
    given = {"threshold": args.threshold, "measure": args.measure, "exclude_classes": args.exclude_classes,
             "mode": args.mode, "slice_axis": args.slice_axis}
    explicit = tuple(k for k, v in given.items() if v is not None)
    settings = {**given, "exclude_classes": args.exclude_classes or (), "ood_label": args.ood_label,
                "class_axis": args.class_axis, "p_keep": args.p_keep, "command": "ood"}
    _warm_up(args, ood=True)
    try:
        run = _run(args, ood_cases(cases, _out_folder(args), settings, args.model, explicit=explicit,
                                   force=args.force, **_run_options(args)), total=len(cases), desc="ood")
    except MetaModelFileError as exc:
        raise UsageError(f"model {args.model}: {exc}") from None
    except OutputBusyError:  # as for metrics: not a usage error, the folder is busy
        raise
    except ValueError as exc:  # settings that do not fit the model (cases fail on their own)
        raise UsageError(str(exc)) from None
    s = run.settings
    kept = f", {run.n_kept} kept by the model (P >= {s['p_keep']:g})" if args.model else ""
    skipped = run.skipped
    _note(args, f"ood: {_cases(run.n_cases)}: {run.computed} computed, {skipped} already done"
                f"{' (use --force to recompute)' if skipped else ''}, {len(run.failed)} failed; "
                f"{run.n_regions} candidate regions ({s['measure']} >= {s['threshold']:g}){kept} -> "
                f"{run.combined}")
    if run.evaluation is not None:
        print(f"evaluation on {_cases(len(run.annotated))} with OoD annotations "
              f"(-> {run.out / 'ood_objects.csv'}, {run.out / 'ood_pixels.csv'}):\n")
        print(run.evaluation.to_markdown())
    return _report_failed(run.failed, run.out / "failed.csv" if run.failed else None)


def _tables_ood(paths):
    """``(ood record, segmentation)`` that ``ood`` stored in region tables; tables made with
    different settings, or without settings (CSV), are refused."""
    from .io.results import read_settings

    found = []
    for p in map(Path, paths):
        target = p / "ood_regions.parquet" if p.is_dir() else p
        settings = read_settings(target) if target.suffix.lower() in (".parquet", ".pq") else None
        if not settings or "threshold" not in settings:
            raise UsageError(f"{p}: a region table without the settings it was made with (threshold, "
                             "measure); train on the .parquet tables `napari-metaseg ood` writes")
        found.append(({k: settings.get(k) for k in ("threshold", "measure", "exclude_classes")},
                      settings.get("segmentation")))
    for rec in found[1:]:
        if rec != found[0]:
            raise UsageError(f"the region tables were made with different settings ({found[0]} vs {rec}); "
                             "train on regions of one kind")
    return found[0]


def _train_regions(args, table, out):
    from .workflows import save_model, train_regions

    if args.target == "regression":
        raise UsageError("region tables train a classifier (of hit) only; leave out --target regression")
    clf_kind = MODEL_PAIRS.get(args.kind, MODEL_PAIRS["linear"])[0]  # auto: the L1 logistic classifier
    ood, seg = _tables_ood(args.tables)
    _note(args, "train: OoD region tables: fitting a classifier of hit (1 = the region touches an annotated "
                f"OoD voxel), {clf_kind}; no regressor")
    try:
        result = _run(args, train_regions(table, kind=clf_kind, random_state=args.random_state, ood=ood,
                                          segmentation=seg), total=100, desc="train", unit="%")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save_model(out, result)
    clf = result.classifier
    print(f"trained {clf_kind} OoD region classifier ({ood['measure']} >= {ood['threshold']:g}): "
          f"{result.note}; {len(clf.feature_names_in_)} features -> {out}")
    return EXIT_OK


def _is_region_model(path) -> bool:
    """Whether ``path`` is a readable OoD region model file (``refit`` routes it here)."""
    from .core.meta_io import MetaModelFileError
    from .workflows import load_model

    try:
        load_model(path, table_kind="ood_regions")
    except (MetaModelFileError, OSError, ValueError):
        return False
    return True


def _refit_regions(args, out):
    """``refit MODEL TABLES --out NEW`` for a region model: its training regions plus the
    labelled regions of the tables (``workflows.refit_regions``)."""
    from .workflows import dataset_path, load_model, refit_regions, save_model
    from .workflows.ood import is_region_table

    models = load_model(args.model, table_kind="ood_regions")
    table = _load_tables(args.tables)
    if not is_region_table(table):
        raise UsageError(f"model {args.model} is an OoD region model and the tables are segment metrics "
                         "tables: refit a region model on the region tables of `napari-metaseg ood` "
                         "(DIR/ood_regions.parquet), a segment model on metrics tables")
    ood, seg = _tables_ood(args.tables)
    unused = [o for o, v in (("--min-interior", args.min_interior), ("--splits", args.splits or None))
              if v is not None]
    if unused:
        _note(args, f"refit: {' and '.join(unused)} do not apply to a region model (every region is used; "
                    "no evaluation)")
    _note(args, f"refit: OoD region model ({models.ood['measure']} >= {models.ood['threshold']:g}); "
                f"{models.note}")
    try:
        result = _run(args, refit_regions(models, table=table, settings={**ood, "segmentation": seg},
                                          random_state=args.random_state), total=100, desc="refit", unit="%")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save_model(out, result.models)
    clf = result.models.classifier
    print(f"refitted {clf.kind} OoD region classifier: {result.note} -> {out} "
          f"(training regions: {dataset_path(out).name})")
    return EXIT_OK
