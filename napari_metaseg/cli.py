"""``napari-metaseg``: the headless command line over :mod:`napari_metaseg.core` and ``io``.

Subcommands: ``metrics``, ``train``, ``refit``, ``evaluate``, ``predict``, ``rank``,
``label-errors``, ``ood``, ``scores``, ``quality``, ``errors``, ``report``, ``demo``. Run
``napari-metaseg <command> --help``.

Argument parsing and printing only: every job is a function of :mod:`napari_metaseg.workflows`
(the same the napari panels run), drained here with a progress bar.

Exit codes: 0 everything done, 1 some case (or the computation) failed, 2 usage error.
Heavy modules (numba, pandas, scikit-learn, dask) are imported inside the commands, so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .names import IOU_ADJ, MODEL_PAIRS, MODES, RANK_MIN_FOREGROUND, SPLITS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "napari-metaseg"


class UsageError(Exception):
    """A problem with the command line or the files it names (exit code 2)."""


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _cases(n):
    """``"1 case"`` / ``"3 cases"``."""
    return f"{n} case" if n == 1 else f"{n} cases"


def _note(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


# ============================================================================================
# Argument parsing
# ============================================================================================
def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _share(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def _ignore_index(text):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def _add_case_options(p, *, out_help, resumable=True, ignore=True):
    p.add_argument("cases", nargs="*", metavar="CASES",
                   help="softmax files <case>_softmax.<ext> (with <case>_gt.<ext>), case folders holding "
                        "softmax*.<ext> and gt.<ext>, folders of these, or glob patterns "
                        "(npy, npz, NIfTI, TIFF)")
    p.add_argument("--pairs", metavar="CSV",
                   help="CSV file with the header case,softmax,gt (gt may be empty)")
    p.add_argument("--out", required=True, metavar="DIR" if resumable else "CSV", help=out_help)
    p.add_argument("--mode", choices=MODES, default=None,
                   help="segments in 2D, 3D or slice by slice (default: the model's training mode "
                        "where a model is given, else auto = 2d/3d by dimension)")
    p.add_argument("--slice-axis", type=int, default=None,
                   help="slice axis in slices mode (default: the model's, else -1)")
    if ignore:  # not for commands that never compare with ground truth labels
        p.add_argument("--ignore-index", type=_ignore_index, default=255, metavar="N",
                       help="ground-truth id left out of IoU statistics, or 'none' (default 255)")
    p.add_argument("--class-axis", type=int, default=-1,
                   help="class axis of npy/npz/TIFF softmax files (default -1; NIfTI: last)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=_positive_int, metavar="N",
                   help="run on a local Dask cluster of N worker processes "
                        "(needs napari-metaseg[distributed])")
    g.add_argument("--scheduler", metavar="ADDR",
                   help="run on an existing dask.distributed cluster (tcp://host:8786); "
                        "workers must see the same files")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="numba threads per case (default: all cores serially, cores / N with --workers); "
                        "results do not depend on it")
    if resumable:
        p.add_argument("--force", action="store_true", help="recompute cases that are already done")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def _add_table_options(p):
    p.add_argument("tables", nargs="+", metavar="TABLES",
                   help="metrics tables (.parquet/.csv, e.g. DIR/metrics.parquet) or output folders of "
                        "`metrics`/`predict`")
    p.add_argument("--min-interior", type=int, default=None, metavar="N",
                   help="use segments with at least N interior pixels (default: 1 for 2D and slice-wise "
                        "tables, as in the paper; 0 for 3D tables, whose segments are mostly specks)")
    p.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_split_options(p, help_splits, default=10):
    p.add_argument("--splits", type=int, default=default, metavar="N", help=help_splits)
    p.add_argument("--split", default="auto", choices=SPLITS,
                   help="what stays together in a split (default auto: by case with 2 or more cases, "
                        "else by slice for slice-wise tables, else by segment)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``napari-metaseg`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MetaSeg on whole datasets: segment metrics, meta models, predictions, reports.",
        epilog="Exit codes: 0 all done, 1 some case failed, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("metrics", help="segment metrics of every case (resumable)",
                       description="Compute the MetaSeg metrics of every case: DIR/cases/<case>.parquet "
                                   "and DIR/metrics.parquet (with a case column). Cases already done "
                                   "are skipped unless --force; failed cases are listed in "
                                   "DIR/failed.csv.")
    _add_case_options(p, out_help="output folder")
    p.add_argument("--iou-adj", choices=IOU_ADJ, default="paper",
                   help="which IoU_adj the tables hold: paper (the MetaSeg paper's definition, default) "
                        "or local (the authors' code's variant; docs/engine.md)")

    p = sub.add_parser("train", help="fit meta models on metrics tables with ground truth",
                       description="Fit and evaluate the meta models; writes the model file and, beside "
                                   "it, its training data (<name>.dataset.csv), which a later refit "
                                   "extends.")
    _add_table_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="model file (.json or .json.gz)")
    p.add_argument("--kind", default="auto", choices=("auto", *MODEL_PAIRS),
                   help="auto (default) = the segmentation mode's defaults: 2D and slice-wise linear, 3D "
                        "logistic classifier + gradient-boosting regressor with every segment "
                        "(min interior 0); "
                        "linear = L1 logistic classifier + linear regression (the paper's pair); "
                        "lasso = L1 for both; logistic = unpenalised logistic + linear; "
                        "gbm = gradient boosting for both")
    p.add_argument("--target", default="both", choices=("both", "classification", "regression"))
    _add_split_options(p, "evaluate on N grouped 50/50 splits first and store the scores in the model "
                          "(default 10, as the meta-model panel; 0 = none)")

    p = sub.add_parser("refit", help="refit a model on its training data plus new tables",
                       description="Refit the models of MODEL (same kinds and settings) on the training "
                                   "data saved beside it plus the given tables (a case of the same name "
                                   "replaces the old one, and is said); writes a new model file. An OoD "
                                   "region model is refit on region tables (DIR/ood_regions.parquet of "
                                   "`ood`, with hit): its training regions plus theirs.")
    p.add_argument("model", metavar="MODEL", help="model file written by `train` or a panel")
    _add_table_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="new model file (.json or .json.gz)")
    _add_split_options(p, "evaluate on N grouped splits (default 0 = none)", default=0)

    p = sub.add_parser("evaluate", help="Table-2 style evaluation of the meta models")
    _add_table_options(p)
    p.add_argument("--splits", type=_positive_int, default=10, metavar="N", help="random 50/50 splits (10)")
    p.add_argument("--group", default="case", choices=("case", "case+slice", "segment"),
                   help="what stays on one side of a split (default case; segment = the paper)")
    p.add_argument("--models", nargs="+", default=["linear", "gbm"], metavar="MODEL",
                   help="linear, logistic, lasso, gbm (default: linear gbm)")
    p.add_argument("--validation-cases", nargs="+", metavar="CASE",
                   help="one fixed split: validate on these cases, train on the others")
    p.add_argument("--out", metavar="FILE", help="also write the table (Markdown) to FILE")

    p = sub.add_parser("predict", help="predicted IoU_adj per segment (and per voxel) with a model")
    p.add_argument("model", metavar="MODEL", help="model file written by `train`")
    _add_case_options(p, out_help="output folder: cases/<case>.parquet, predictions.parquet, "
                                  "maps/<case>_iou_adj_pred.nii.gz (NIfTI input) or .npy")

    p = sub.add_parser("rank", help="order cases by predicted quality (worst first) for review")
    p.add_argument("model", metavar="MODEL", help="model file written by `train`")
    _add_case_options(p, out_help="CSV file", resumable=False)
    p.add_argument("--keep-background", action="store_true",
                   help="count the background (class 0) segments in the ranking too (default: left "
                        "out, so the large background segment does not decide the order)")
    p.add_argument("--by", choices=("slice", "case"), default=None,
                   help="one row per slice or per case (default: slice for models trained slice by slice, "
                        "else case); ordered by the model's image-level regressor when it rates rows of "
                        "that kind, else by the size-weighted mean predicted IoU_adj")
    p.add_argument("--min-foreground", type=_share, default=RANK_MIN_FOREGROUND, metavar="F",
                   help="rank last the slices (cases) whose predicted foreground is below F times the "
                        f"largest of their case (of all cases by case); default {RANK_MIN_FOREGROUND}, "
                        "0 = rank every slice by its quality")

    p = sub.add_parser("label-errors", help="likely label errors in the ground truth, most likely first",
                       description="Rank places where the ground truth of each case is probably wrong: "
                                   "predicted segments with IoU_adj = 0 that the model rates as right "
                                   "(kind segment), GT objects the confident prediction never gives "
                                   "their class (kind gt_object) and the remaining confident "
                                   "disagreements (kind region). Writes one CSV over all cases.")
    p.add_argument("model", metavar="MODEL", help="model file written by `train` (needs a classifier)")
    _add_case_options(p, out_help="CSV file of ranked proposals", resumable=False)
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="keep proposals with score >= T (default: all candidates)")
    p.add_argument("--min-size", type=int, default=1, metavar="N",
                   help="leave out proposals of fewer than N voxels (default 1: all)")
    p.add_argument("--allow-training-cases", action="store_true",
                   help="also score cases the model was trained on (optimistic)")

    _part("cli_ood")._add_ood_parser(sub)
    _part("cli_quality")._add_scores_parser(sub)
    _part("cli_quality")._add_quality_parser(sub)
    _part("cli_quality")._add_errors_parser(sub)

    p = sub.add_parser("report", help="self-contained HTML report: tables and plots")
    _add_table_options(p)
    p.add_argument("--out", required=True, metavar="HTML", help="HTML file")
    p.add_argument("--model", metavar="MODEL", help="predict with this model (default: predictions in the "
                                                    "tables, else an in-sample fit)")
    p.add_argument("--splits", type=int, default=10, metavar="N",
                   help="grouped evaluation splits (default 10; 0 = none)")

    p = sub.add_parser("demo", help="open napari on a sample with the MetaSeg panel "
                                    "(same as python -m napari_metaseg)")
    p.add_argument("--sample", choices=("brain3d", "nuclei2d"), default="brain3d")
    p.add_argument("--no-run", action="store_true", help="dock the panel without running it")
    return parser


def _hide_mode(p):
    """Leave ``--mode`` out of the help of commands that do not segment (it is still accepted)."""
    next(a for a in p._actions if a.dest == "mode").help = argparse.SUPPRESS


# ============================================================================================
# Running jobs (the work is napari_metaseg.workflows; here: arguments in, progress and text out)
# ============================================================================================
def _collect_cases(args):
    from .io.cases import CaseError, find_cases, read_pairs_csv

    try:
        cases = []
        if args.pairs:
            cases.extend(read_pairs_csv(args.pairs))
        if args.cases:
            cases.extend(find_cases(args.cases))
        if not cases:
            raise UsageError("no cases given: name files, folders or patterns, or --pairs CSV")
        names = [c.name for c in cases]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError(f"case names given more than once: {', '.join(dup)}")
    except CaseError as exc:
        raise UsageError(str(exc)) from None
    return cases


def _settings(args) -> dict:
    from .workflows import case_settings

    return case_settings(mode=args.mode, slice_axis=args.slice_axis, ignore_index=args.ignore_index,
                         class_axis=args.class_axis, iou_adj=getattr(args, "iou_adj", "paper"))


def _run(args, job, *, total, desc, unit="case"):
    """Drain a workflow job with a progress bar on stderr; failed cases are written as they come."""
    from tqdm.auto import tqdm

    from .batch import DistributedMissingError
    from .workflows import drain

    quiet = getattr(args, "quiet", False) or total == 0
    bar = tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True,
               smoothing=0.1)
    failed = 0

    def step(fraction, stage):
        nonlocal failed
        bar.update(max(0, round(fraction * total) - bar.n))
        if " failed: " in stage:
            failed += 1
            bar.set_postfix(failed=failed)
            bar.write(f"{PROG}: {stage}", file=sys.stderr)

    try:
        return drain(job, step)
    except DistributedMissingError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()


def _run_options(args):
    return {"workers": args.workers, "scheduler": args.scheduler, "threads": args.threads}


#: Seconds after which the warm-up says what it is doing: loading the kernels from numba's cache
#: takes well under this, compiling them on a new installation (empty cache) several times more.
WARM_UP_NOTICE_AFTER = 2.0


def _warm_up(args, *, label_errors=False, ood=False):
    """Compile (first run) or load the engine's kernels before the first case, saying so on
    stderr once if that takes longer than :data:`WARM_UP_NOTICE_AFTER` seconds.

    Timing the warm-up tells a cold cache from a warm one without numba's internals or a marker
    file that could go stale (a numba upgrade or an edited kernel empties the cache too); local
    Dask workers started afterwards load what it compiled from the same cache.
    """
    import threading

    from .workflows import WARM_UP_STAGE, drain, warm_up_engine

    notice = threading.Timer(WARM_UP_NOTICE_AFTER, lambda: print(f"{PROG}: {WARM_UP_STAGE} ...",
                                                                 file=sys.stderr, flush=True))
    notice.daemon = True
    if not getattr(args, "quiet", False):
        notice.start()
    try:
        drain(warm_up_engine(label_errors=label_errors, ood=ood))
    finally:
        notice.cancel()


def _report_failed(failed, failed_csv) -> int:
    """List failed cases on stderr (and in ``failed_csv`` unless None); the exit code."""
    if not failed:
        return EXIT_OK
    if failed_csv is not None:
        from .io.results import write_failed_csv

        write_failed_csv(failed_csv, failed)
    where = f" (listed in {failed_csv})" if failed_csv is not None else ""
    print(f"{PROG}: {_cases(len(failed))} failed{where}:", file=sys.stderr)
    for c, e in failed:
        print(f"  {c}: {e}", file=sys.stderr)
    return EXIT_FAILED


def _check_model(args):
    """The model file's path and its models, with --mode / --slice-axis taken from or checked
    against the model's segmentation."""
    from .core.meta_io import MetaModelFileError
    from .workflows import check_segmentation, iou_adj_of, load_model

    path = Path(args.model)
    if not path.is_file():
        raise UsageError(f"model {path}: no such file")
    try:
        models = load_model(path)
    except MetaModelFileError as exc:
        raise UsageError(f"model {path}: {exc}") from None
    try:
        args.mode, args.slice_axis = check_segmentation(models.segmentation, mode=args.mode,
                                                        slice_axis=args.slice_axis, model=f"model {path}")
    except ValueError as exc:
        raise UsageError(f"{exc} (leave out --mode and --slice-axis to use the model's)") from None
    # cases are measured with the IoU_adj the model's regressor was trained on
    args.iou_adj = iou_adj_of(models.segmentation)
    return path.resolve(), models


def _summary(args, summary, what) -> int:
    skipped = summary.skipped
    combined = summary.combined or summary.out / ("metrics.parquet" if what == "metrics" else
                                                  "predictions.parquet")
    _note(args, f"{what}: {_cases(summary.n_cases)}: {summary.computed} computed, {skipped} already done"
                f"{' (use --force to recompute)' if skipped else ''}, {len(summary.failed)} failed"
                f" -> {combined}")
    return _report_failed(summary.failed, summary.out / "failed.csv" if summary.failed else None)


def _out_folder(args):
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    return out


def _cmd_metrics(args):
    from .workflows import measure_cases

    cases = _collect_cases(args)
    _warm_up(args)
    summary = _run(args, measure_cases(cases, _out_folder(args), _settings(args), force=args.force,
                                       **_run_options(args)), total=len(cases), desc="metrics")
    return _summary(args, summary, "metrics")


def _cmd_predict(args):
    from .workflows import predict_cases

    model, _ = _check_model(args)
    cases = _collect_cases(args)
    _warm_up(args)
    summary = _run(args, predict_cases(cases, _out_folder(args), _settings(args), model, force=args.force,
                                       **_run_options(args)), total=len(cases), desc="predict")
    return _summary(args, summary, "predict")


def _write_csv(table, out):
    from .core.csv_safe import write_csv  # atomic; case names never start a spreadsheet formula

    write_csv(table, out)


def _failed_csv(out):
    return out.with_name(out.stem + "_failed.csv")


def _cmd_rank(args):
    from .workflows import rank

    model, _ = _check_model(args)
    cases = _collect_cases(args)
    out = Path(args.out)
    _warm_up(args)
    by = args.by or ("slice" if args.mode == "slices" else "case")
    if by == "slice" and args.mode == "3d":
        raise UsageError("--by slice needs slice-wise segments (--mode slices); the model segments in 3d")
    result = _run(args, rank(cases, model, _settings(args), by=by,
                             background=None if args.keep_background else 0,
                             min_foreground=args.min_foreground, **_run_options(args)),
                  total=len(cases), desc="rank")
    table = result.ranking.dropna(axis=1, how="all").rename(
        columns={"share_likely_wrong": "share_p_iou0_gt_05"})
    first = [c for c in ("rank", "case", "slice", "quality_pred", "priority", "order") if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    _write_csv(table, out)
    rows = _cases(len(table)) if by == "case" else f"{len(table)} slices of {_cases(len(cases))}"
    _note(args, f"rank: {rows} ranked (worst predicted quality first) by {result.note} -> {out}")
    return _report_failed(result.failed, _failed_csv(out) if result.failed else None)


def _cmd_label_errors(args):
    from .workflows import label_errors

    if args.min_size < 1:
        raise UsageError(f"--min-size must be >= 1, got {args.min_size}")
    model, models = _check_model(args)
    if models.classifier is None:
        raise UsageError(f"model {model}: holds no classifier; train with --target both or classification")
    cases = _collect_cases(args)
    seen = sorted(set(map(str, models.classifier.training_cases_)) & {c.name for c in cases})
    if seen and not args.allow_training_cases:
        raise UsageError(f"the model was trained on case(s) {', '.join(seen)}; leave them out or pass "
                         "--allow-training-cases")
    out = Path(args.out)
    _warm_up(args, label_errors=True)
    result = _run(args, label_errors(cases, model, _settings(args), threshold=args.threshold,
                                     allow_training=args.allow_training_cases, min_size=args.min_size,
                                     **_run_options(args)), total=len(cases), desc="label-errors")
    _write_csv(result.proposals, out)
    _note(args, f"label-errors: {len(result.proposals)} proposals in {_cases(result.n_cases)} "
                f"(most likely first) -> {out}")
    return _report_failed(result.failed, _failed_csv(out) if result.failed else None)


# ============================================================================================
# Table commands: train, refit, evaluate, report
# ============================================================================================
def _read_one_table(path: Path):
    import pandas as pd

    if path.is_dir():
        for name in ("metrics.parquet", "predictions.parquet", "ood_regions.parquet"):
            if (path / name).is_file():
                return _read_one_table(path / name)
        raise UsageError(f"{path}: a folder without metrics.parquet or predictions.parquet")
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        elif suffix == ".csv":
            from .core.csv_safe import unescape_frame  # this package's CSVs quote formula-like text

            table = unescape_frame(pd.read_csv(path))
        else:
            raise UsageError(f"{path}: expected a .parquet or .csv table")
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if "case" not in table.columns:
        table.insert(0, "case", path.name.split(".")[0])
    table["case"] = table["case"].astype(str)
    return table


def _load_tables(paths):
    import pandas as pd

    tables = [_read_one_table(Path(p)) for p in paths]
    seen = {}
    for p, t in zip(paths, tables, strict=True):
        for c in t["case"].unique():
            if c in seen:
                raise UsageError(f"case {c!r} is in both {seen[c]} and {p}")
            seen[c] = p
    from .names import IMAGE_SCORE_COLUMNS

    # tables measured before the image scores were recorded lack them: NaN there, not an error
    scored = [c for c in IMAGE_SCORE_COLUMNS if any(c in t.columns for t in tables)]
    tables = [t.assign(**{c: float("nan") for c in scored if c not in t.columns}) for t in tables]
    cols = list(tables[0].columns)
    for p, t in zip(paths[1:], tables[1:], strict=True):
        if sorted(t.columns) != sorted(cols):
            diff = sorted(set(cols) ^ set(t.columns))
            raise UsageError(f"{p}: columns differ from {paths[0]} ({', '.join(diff)})")
    return pd.concat([t[cols] for t in tables], ignore_index=True)


def _min_interior(args):
    """``--min-interior``, else the default of the tables' segmentation mode (names.DEFAULT_TRAINING)."""
    from .names import DEFAULT_TRAINING

    if args.min_interior is not None:
        return args.min_interior
    seg = _tables_segmentation(args.tables) or {}
    return DEFAULT_TRAINING.get(seg.get("mode") or "2d", DEFAULT_TRAINING["2d"])[2]


def _dataset(args, table):
    from .core.meta_dataset import MetaDataset

    try:
        return MetaDataset.from_table(table, min_interior=_min_interior(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _tables_segmentation(paths):
    """The segmentation settings ``metrics`` recorded in the tables (None where unknown, e.g.
    CSV); tables made in different ways are refused."""
    from .io.results import read_settings
    from .workflows.models import _merge_segmentation, recorded_segmentation

    found = []
    for p in map(Path, paths):
        target = p / "metrics.parquet" if p.is_dir() else p
        if p.is_dir() and not target.is_file():
            target = p / "predictions.parquet"
        settings = read_settings(target) if target.suffix.lower() in (".parquet", ".pq") else None
        if settings and "mode" in settings:
            found.append(recorded_segmentation(settings))
    try:
        return _merge_segmentation(found, "the tables")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _model_out(args):
    out = Path(args.out)
    if not (out.name.endswith(".json") or out.name.endswith(".json.gz")):
        raise UsageError(f"--out {out}: a model file ends in .json or .json.gz")
    return out


def _print_trained(result, what, out):
    model = result.classifier if result.classifier is not None else result.regressor
    from .workflows import dataset_path

    print(f"{what} on {_cases(len(result.dataset.cases))}, {model.n_segments_} segments, "
          f"{len(model.feature_names_in_)} features -> {out} (training data: {dataset_path(out).name})")
    if result.replaced:
        print(f"replaced in the training data: {', '.join(result.replaced)}")
    if result.evaluation is not None:
        print(result.evaluation.to_markdown())
    elif result.evaluation_error:
        print(f"evaluation not possible: {result.evaluation_error}")
    if result.image_note:
        print(f"image-level regressor (ranks slices and cases): {result.image_note}")


def _cmd_train(args):
    from .core.meta_model import MODEL_PAIRS
    from .workflows import save_model, train

    out = _model_out(args)
    table = _load_tables(args.tables)
    from .workflows.ood import is_region_table

    if is_region_table(table):
        return _part("cli_ood")._train_regions(args, table, out)
    if "iou_adj" not in table.columns:
        raise UsageError("the tables have no iou_adj column: training needs cases with ground truth")
    seg = _tables_segmentation(args.tables)
    clf_kind, reg_kind = MODEL_PAIRS.get(args.kind, (None, None))
    targets = {"both": ("classification", "regression")}.get(args.target, (args.target,))
    try:
        result = _run(args, train(table=(table, seg), classifier_kind=clf_kind, regressor_kind=reg_kind,
                                  targets=targets, min_interior=args.min_interior, n_splits=args.splits,
                                  split=args.split, random_state=args.random_state),
                      total=100, desc="train", unit="%")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save_model(out, result)
    c = result.choice
    named = {"classifier_kind": "classifier", "regressor_kind": "regressor", "min_interior": "min interior"}
    defaulted = [named[k] for k in c.get("defaulted", ())]
    how = f" ({', '.join(defaulted)}: {c['mode']} defaults)" if defaulted else ""
    _print_trained(result, f"trained {c['classifier_kind']} + {c['regressor_kind']}, min interior "
                           f"{c['min_interior']}{how} ({args.target})", out)
    return EXIT_OK


def _cmd_refit(args):
    from .core.meta_io import MetaModelFileError
    from .workflows import load_model, refit, save_model

    out = _model_out(args)
    try:
        models = load_model(args.model)
    except (MetaModelFileError, FileNotFoundError) as exc:
        if _part("cli_ood")._is_region_model(args.model):  # refit on region tables
            return _part("cli_ood")._refit_regions(args, out)
        raise UsageError(f"model {args.model}: {exc}") from None
    table = _load_tables(args.tables)
    from .workflows.ood import is_region_table

    if is_region_table(table):
        raise UsageError(f"model {args.model} is a segment model and the tables are OoD region tables: "
                         "refit a segment model on metrics tables, a region model on region tables")
    if "iou_adj" not in table.columns:
        raise UsageError("the tables have no iou_adj column: refitting needs cases with ground truth")
    _note(args, f"refit: {models.note}")
    try:
        result = _run(args, refit(models, table=(table, _tables_segmentation(args.tables)),
                                  min_interior=args.min_interior, n_splits=args.splits, split=args.split,
                                  random_state=args.random_state), total=100, desc="refit", unit="%")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save_model(out, result)
    _print_trained(result, "refitted", out)
    return EXIT_OK


def _group(name):
    return {"case": "case", "case+slice": ("case", "slice"), "segment": None}[name]


def _cmd_evaluate(args):
    from .core.meta_model import evaluate

    ds = _dataset(args, _load_tables(args.tables))
    if not ds.has_targets:
        raise UsageError("the tables have no iou_adj column: evaluation needs cases with ground truth")
    ev = evaluate(ds, n_splits=args.splits, group=_group(args.group), models=tuple(args.models),
                  validation_cases=args.validation_cases, random_state=args.random_state)
    few = (" (every distinct split once: the groups allow no more)"
           if ev.grouping not in ("fixed", "segment") and ev.n_splits < args.splits else "")
    head = (f"{ev.n_segments} usable segments, {_cases(ev.n_cases)}, grouping {ev.grouping}, "
            f"{ev.n_splits} split(s){few}; mean ± std over splits")
    text = f"{head}\n\n{ev.to_markdown()}\n"
    print(text)
    if args.out:
        from .core.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    return EXIT_OK


def _cmd_report(args):
    from .core.atomic import atomic_write_text
    from .workflows import drain, report

    table = _load_tables(args.tables)
    _dataset(args, table)  # usage errors first
    text, notes = drain(report(table, sources=args.tables, model=args.model, splits=args.splits,
                               min_interior=_min_interior(args), random_state=args.random_state))
    out = Path(args.out)
    atomic_write_text(out, text)
    for n in notes:
        if n.startswith("in-sample"):  # the scores are optimistic: said even with -q
            print(f"{PROG}: warning: report: {n}", file=sys.stderr)
        else:
            _note(args, f"report: {n}")
    print(f"report -> {out}")
    return EXIT_OK


def _cmd_demo(args):
    from .__main__ import main as demo_main

    demo_main(["--sample", args.sample, *(["--no-run"] if args.no_run else [])])
    return EXIT_OK


def _part(name):
    """A command module of its own (``cli_ood``, ``cli_quality``): they use the helpers here, so
    they are imported when used, not when this module loads."""
    from importlib import import_module

    return import_module(f"napari_metaseg.{name}")


def _in(module, name):
    def command(args):
        return getattr(_part(module), name)(args)

    command.__name__ = name
    return command


_COMMANDS = {
    "metrics": _cmd_metrics,
    "train": _cmd_train,
    "refit": _cmd_refit,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "rank": _cmd_rank,
    "label-errors": _cmd_label_errors,
    "ood": _in("cli_ood", "_cmd_ood"),
    "scores": _in("cli_quality", "_cmd_scores"),
    "quality": _in("cli_quality", "_cmd_quality"),
    "errors": _in("cli_quality", "_cmd_errors"),
    "report": _cmd_report,
    "demo": _cmd_demo,
}


def main(argv=None) -> int:
    """Entry point of the ``napari-metaseg`` console script; returns the exit code.

    Examples
    --------
    >>> main(["metrics", "data/", "--out", "out"])  # doctest: +SKIP
    0
    """
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    with warnings.catch_warnings():  # restores the previous warning display afterwards
        warnings.showwarning = _own_warnings(warnings.showwarning)
        return _main(args)


def _own_warnings(show):
    """``warnings.showwarning`` printing this package's warnings (e.g. logits softmaxed) as one
    line ``napari-metaseg: warning: ...`` instead of a file:line report; others as before."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if getattr(category, "__module__", "").startswith("napari_metaseg"):
            print(f"{PROG}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _main(args) -> int:
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted; finished cases are kept, run the same command again to resume")
        return 130
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    # run the package's module, not this __main__ copy: the sub-commands' modules (cli_ood,
    # cli_quality) import UsageError and friends from napari_metaseg.cli, which must be the same
    from napari_metaseg.cli import main as _main

    sys.exit(_main())
