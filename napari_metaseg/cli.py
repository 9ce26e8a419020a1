"""``napari-metaseg``: the headless command line over :mod:`napari_metaseg.core` and ``io``.

Subcommands: ``metrics``, ``train``, ``evaluate``, ``predict``, ``rank``, ``label-errors``,
``report``, ``demo``. Run ``napari-metaseg <command> --help``.

Exit codes: 0 everything done, 1 some case (or the computation) failed, 2 usage error.
Heavy modules (numba, pandas, scikit-learn, dask) are imported inside the commands, so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def _ignore_index(text):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def _add_case_options(p, *, out_help, resumable=True):
    p.add_argument("cases", nargs="*", metavar="CASES",
                   help="softmax files <case>_softmax.<ext> (with <case>_gt.<ext>), case folders holding "
                        "softmax*.<ext> and gt.<ext>, folders of these, or glob patterns "
                        "(npy, npz, NIfTI, TIFF)")
    p.add_argument("--pairs", metavar="CSV",
                   help="CSV file with the header case,softmax,gt (gt may be empty)")
    p.add_argument("--out", required=True, metavar="DIR" if resumable else "CSV", help=out_help)
    p.add_argument("--mode", choices=("auto", "2d", "3d", "slices"), default=None,
                   help="segments in 2D, 3D or slice by slice (default: the model's training mode "
                        "where a model is given, else auto = 2d/3d by dimension)")
    p.add_argument("--slice-axis", type=int, default=None,
                   help="slice axis in slices mode (default: the model's, else -1)")
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
                        "results are bit-identical between runs with the same value")
    if resumable:
        p.add_argument("--force", action="store_true", help="recompute cases that are already done")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def _add_table_options(p):
    p.add_argument("tables", nargs="+", metavar="TABLES",
                   help="metrics tables (.parquet/.csv, e.g. DIR/metrics.parquet) or output folders of "
                        "`metrics`/`predict`")
    p.add_argument("--min-interior", type=int, default=None, metavar="N",
                   help="use segments with at least N interior pixels (default 1, as in the paper; "
                        "use 0 for 3D mode)")
    p.add_argument("--random-state", type=int, default=0, help="seed (default 0)")


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

    p = sub.add_parser("train", help="fit meta models on metrics tables with ground truth")
    _add_table_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="model file (.json or .json.gz)")
    p.add_argument("--kind", default="linear", choices=("linear", "lasso", "logistic", "gbm"),
                   help="linear = L1 logistic classifier + linear regression (the paper's pair, default); "
                        "lasso = L1 for both; logistic = unpenalised logistic + linear; "
                        "gbm = gradient boosting for both")
    p.add_argument("--target", default="both", choices=("both", "classification", "regression"))
    p.add_argument("--splits", type=int, default=0, metavar="N",
                   help="also evaluate on N grouped splits and store the scores in the model (default 0)")

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


# ============================================================================================
# Case commands: metrics, predict, rank
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
    return {"mode": args.mode or "auto", "slice_axis": -1 if args.slice_axis is None else args.slice_axis,
            "ignore_index": args.ignore_index, "class_axis": args.class_axis}


#: --mode values compatible with a model trained in each mode: planar segments (2D images or
#: slices of volumes) and volumetric ones differ in their size and shape statistics.
_COMPATIBLE_MODES = {"slices": ("slices", "2d"), "2d": ("2d", "slices", "auto"), "3d": ("3d", "auto")}


def _segmentation_of_model(args, info, model):
    """Use the model's segmentation mode where the user gave none; refuse an incompatible one.

    A model trained slice-wise gets ``--mode slices`` (and its slice axis) by default; one trained
    in 3D gets ``3d``; ``--mode 3d`` for a slice-wise model (or ``slices`` for a 3D one) is a
    usage error. Models whose tables were made with ``auto`` (2D or 3D by input) or that do not
    record it are not checked.
    """
    seg = info.get("segmentation") or {}
    m_mode, m_axis = seg.get("mode"), seg.get("slice_axis")
    if m_mode not in _COMPATIBLE_MODES:
        return
    if args.mode is None and m_mode in ("slices", "3d"):
        args.mode = m_mode
    if args.mode == "slices" and m_mode == "slices" and args.slice_axis is None:
        args.slice_axis = m_axis
    axis_differs = (args.mode == "slices" and m_mode == "slices" and m_axis is not None
                    and args.slice_axis is not None and args.slice_axis != m_axis)
    if (args.mode is not None and args.mode not in _COMPATIBLE_MODES[m_mode]) or axis_differs:
        how = f"slice by slice along axis {m_axis}" if m_mode == "slices" else f"in {m_mode}"
        raise UsageError(
            f"model {model} was trained on segments made {how}; --mode {args.mode}"
            f"{f' --slice-axis {args.slice_axis}' if axis_differs else ''} would give it tables of "
            "another kind (leave out --mode and --slice-axis to use the model's)")


def _progress(args, total, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="case", disable=args.quiet or total == 0, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def _execute(args, fn, todo, fn_args, desc):
    """Run the tasks with a progress bar; return all results (failures included)."""
    from .batch import DistributedMissingError, run_tasks

    results = []
    bar = _progress(args, len(todo), desc)
    try:
        for r in run_tasks(fn, todo, args=fn_args, workers=args.workers, scheduler=args.scheduler,
                           threads=args.threads):
            results.append(r)
            bar.update(1)
            n_failed = sum(x["status"] != "done" for x in results)
            if n_failed:
                bar.set_postfix(failed=n_failed)
            if r["status"] != "done":
                bar.write(f"{PROG}: case {r['case']} failed: {r['error']}", file=sys.stderr)
    except DistributedMissingError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    return results


def _finish(args, out_dir, cases, results, skipped, combined_name, what):
    """Combined table, failed.csv, summary; returns the exit code."""
    import pandas as pd

    from .batch import case_table_path
    from .io.results import write_failed_csv, write_table

    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    failed_names = {c for c, _ in failed}
    parts = []
    for c in cases:
        path = case_table_path(out_dir, c.name)
        if c.name not in failed_names and path.is_file():
            parts.append(pd.read_parquet(path))
    if parts:
        write_table(pd.concat(parts, ignore_index=True), Path(out_dir) / combined_name,
                    settings={**_settings(args), "command": what})
    failed_csv = Path(out_dir) / "failed.csv"
    if failed:
        write_failed_csv(failed_csv, failed)
    else:
        failed_csv.unlink(missing_ok=True)
    n_done = len(results) - len(failed)
    _note(args, f"{what}: {_cases(len(cases))}: {n_done} computed, {skipped} already done"
                f"{' (use --force to recompute)' if skipped else ''}, {len(failed)} failed"
                f" -> {Path(out_dir) / combined_name}")
    if failed:
        print(f"{PROG}: {len(failed)} case(s) failed (listed in {failed_csv}):", file=sys.stderr)
        for c, e in failed:
            print(f"  {c}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _resumable(args, fn, extra_settings, extra_args, combined_name, what):
    from .batch import is_done
    from .io.results import TMP_SUFFIX

    cases = _collect_cases(args)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "cases").glob(f".*{TMP_SUFFIX}"):  # left by a killed run
        stale.unlink(missing_ok=True)
    settings = {**_settings(args), **extra_settings}
    todo = [c for c in cases if args.force or not is_done(out_dir, c, settings)]
    skipped = len(cases) - len(todo)
    if skipped:
        _note(args, f"{what}: {skipped} of {_cases(len(cases))} already done, skipped")
    results = _execute(args, fn, todo, (out_dir, settings, *extra_args), what)
    return _finish(args, out_dir, cases, results, skipped, combined_name, what)


def _cmd_metrics(args):
    from .batch import metrics_task

    return _resumable(args, metrics_task, {"command": "metrics"}, (), "metrics.parquet", "metrics")


def _check_model(path):
    from .core.meta_io import load_models

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model {path}: no such file")
    try:
        _, _, info = load_models(path)
    except ValueError as exc:
        raise UsageError(f"model {path}: {exc}") from None
    return path.resolve(), info


def _file_digest(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cmd_predict(args):
    from .batch import predict_task

    model, info = _check_model(args.model)
    _segmentation_of_model(args, info, model)
    extra = {"command": "predict", "model": str(model), "model_sha256": _file_digest(model)}
    return _resumable(args, predict_task, extra, (model,), "predictions.parquet", "predict")


def _cmd_rank(args):
    import pandas as pd

    from .batch import rank_task
    from .core.active_learning import order_ranking
    from .io.results import atomic_path

    model, info = _check_model(args.model)
    _segmentation_of_model(args, info, model)
    cases = _collect_cases(args)
    out = Path(args.out)
    settings = {**_settings(args), "background": None if args.keep_background else 0}
    results = _execute(args, rank_task, cases, (settings, model), "rank")
    ok = [r for r in results if r["status"] == "done"]
    # the order of the cases as given, whatever order the workers finished in: ties stay stable
    position = {c.name: i for i, c in enumerate(cases)}
    ok.sort(key=lambda r: position[r["case"]])
    cols = ["case", "n_segments", "size", "iou_adj_pred_mean", "share_likely_wrong", "iou_adj_mean"]
    table = pd.DataFrame([{k: r.get(k) for k in cols} for r in ok], columns=cols)
    if len(table):  # the same order as the active-learning panel (core.order_ranking)
        table = order_ranking(table.astype({c: float for c in cols[3:]}))
    else:
        table.insert(0, "rank", [])
    table = table.dropna(axis=1, how="all").rename(columns={"share_likely_wrong": "share_p_iou0_gt_05"})
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    _note(args, f"rank: {_cases(len(ok))} ranked (worst predicted quality first) -> {out}")
    return _report_failed_cases(results, out)


def _cmd_label_errors(args):
    import pandas as pd

    from .batch import label_errors_task
    from .core.meta_io import load_models
    from .io.results import atomic_path

    if args.min_size < 1:
        raise UsageError(f"--min-size must be >= 1, got {args.min_size}")
    model, info = _check_model(args.model)
    _segmentation_of_model(args, info, model)
    if load_models(model)[0] is None:
        raise UsageError(f"model {model}: holds no classifier; train with --target both or classification")
    cases = _collect_cases(args)
    trained = {str(c) for c in info.get("training_cases") or []}
    seen = sorted(trained & {c.name for c in cases})
    if seen and not args.allow_training_cases:
        raise UsageError(f"the model was trained on case(s) {', '.join(seen)}; leave them out or pass "
                         "--allow-training-cases")
    out = Path(args.out)
    results = _execute(args, label_errors_task, cases,
                       (_settings(args), model, args.threshold, args.allow_training_cases, args.min_size),
                       "label-errors")
    parts = [r["proposals"] for r in results if r["status"] == "done" and len(r["proposals"])]
    if parts:
        table = pd.concat(parts, ignore_index=True).sort_values("score", ascending=False, kind="stable")
    else:
        from .core.label_errors import _COLUMNS

        table = pd.DataFrame(columns=_COLUMNS)
    table.insert(0, "rank", range(1, len(table) + 1))
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    n_done = sum(r["status"] == "done" for r in results)
    _note(args, f"label-errors: {len(table)} proposals in {_cases(n_done)} (most likely first) -> {out}")
    return _report_failed_cases(results, out)


def _report_failed_cases(results, out):
    """List failed cases on stderr and in ``<out>_failed.csv``; the exit code for the run."""
    from .io.results import write_failed_csv

    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    if not failed:
        return EXIT_OK
    failed_csv = out.with_name(out.stem + "_failed.csv")
    write_failed_csv(failed_csv, failed)
    print(f"{PROG}: {len(failed)} case(s) failed (listed in {failed_csv}):", file=sys.stderr)
    for c, e in failed:
        print(f"  {c}: {e}", file=sys.stderr)
    return EXIT_FAILED


# ============================================================================================
# Table commands: train, evaluate, report
# ============================================================================================
def _read_one_table(path: Path):
    import pandas as pd

    if path.is_dir():
        for name in ("metrics.parquet", "predictions.parquet"):
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
            table = pd.read_csv(path)
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
    cols = list(tables[0].columns)
    for p, t in zip(paths[1:], tables[1:], strict=True):
        if sorted(t.columns) != sorted(cols):
            diff = sorted(set(cols) ^ set(t.columns))
            raise UsageError(f"{p}: columns differ from {paths[0]} ({', '.join(diff)})")
    return pd.concat([t[cols] for t in tables], ignore_index=True)


def _dataset(args, table):
    from .core.meta_dataset import MetaDataset

    try:
        min_interior = 1 if args.min_interior is None else args.min_interior
        return MetaDataset.from_table(table, min_interior=min_interior)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_train(args):
    from .core.meta_io import save_models
    from .core.meta_model import MODEL_PAIRS, MetaClassifier, MetaRegressor, evaluate

    out = Path(args.out)
    if not (out.name.endswith(".json") or out.name.endswith(".json.gz")):
        raise UsageError(f"--out {out}: a model file ends in .json or .json.gz")
    ds = _dataset(args, _load_tables(args.tables))
    if not ds.has_targets:
        raise UsageError("the tables have no iou_adj column: training needs cases with ground truth")
    segmentation = _tables_segmentation(args.tables)
    clf_kind, reg_kind = MODEL_PAIRS[args.kind]
    clf = reg = ev = None
    if args.target in ("both", "classification"):
        clf = MetaClassifier(kind=clf_kind, random_state=args.random_state).fit(ds)
    if args.target in ("both", "regression"):
        reg = MetaRegressor(kind=reg_kind, random_state=args.random_state).fit(ds)
    if args.splits > 0:
        ev = evaluate(ds, n_splits=args.splits, models=(args.kind,), random_state=args.random_state)
    save_models(out, clf, reg, evaluation=ev, segmentation=segmentation)
    model = clf if clf is not None else reg
    print(f"trained {args.kind} ({args.target}) on {_cases(len(ds.cases))}, {model.n_segments_} segments, "
          f"{len(model.feature_names_in_)} features -> {out}")
    if ev is not None:
        print(ev.to_markdown())
    return EXIT_OK


def _tables_segmentation(paths):
    """The segmentation settings ``metrics`` recorded in the tables (None where unknown, e.g.
    CSV); tables made in different ways are refused."""
    from .core.meta_io import SEGMENTATION_KEYS
    from .io.results import read_settings

    found = {}
    for p in map(Path, paths):
        target = p / "metrics.parquet" if p.is_dir() else p
        if p.is_dir() and not target.is_file():
            target = p / "predictions.parquet"
        settings = read_settings(target) if target.suffix.lower() in (".parquet", ".pq") else None
        if settings and "mode" in settings:
            found[str(p)] = {k: settings.get(k) for k in SEGMENTATION_KEYS}
            if found[str(p)]["mode"] != "slices":
                found[str(p)]["slice_axis"] = None  # not used: not part of how they were made
    kinds = {tuple(v.items()) for v in found.values()}
    if len(kinds) > 1:
        listing = "; ".join(f"{p}: {v}" for p, v in found.items())
        raise UsageError(f"the tables were made with different segmentation settings ({listing}); "
                         "train on tables of one kind")
    return next(iter(found.values())) if found else None


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
        from .io.results import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return EXIT_OK


def _case_summary(table):
    import numpy as np
    import pandas as pd

    rows = []
    for case, t in table.groupby("case", sort=False):
        row = {"case": case, "segments": len(t)}
        if "iou_adj" in t:
            v = t["iou_adj"].to_numpy(np.float64)
            fin = v[np.isfinite(v)]
            row["IoU_adj = 0 %"] = 100.0 * float(np.mean(fin == 0)) if fin.size else np.nan
            row["mean IoU_adj"] = float(fin.mean()) if fin.size else np.nan
        if "p_iou0" in t:
            row["p_iou0 > 0.5 %"] = 100.0 * float(np.mean(t["p_iou0"] > 0.5))
        if "iou_adj_pred" in t:
            row["mean predicted IoU_adj"] = float(t["iou_adj_pred"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _cmd_report(args):
    import datetime as dt
    import html

    from .core.meta_io import load_models
    from .core.meta_model import MetaClassifier, MetaRegressor, evaluate, predict_table
    from .core.plots import plot_iou_scatter, plot_lasso_path, plot_roc
    from .io.report import figure_html, html_page
    from .io.results import atomic_path

    table = _load_tables(args.tables)
    ds = _dataset(args, table)
    notes = []
    ev = None
    pred_source = None
    if args.model:
        clf, reg, info = load_models(args.model, table=table)
        table = predict_table(table, clf, reg)
        ev = info.get("evaluation")
        pred_source = f"model {args.model}"
    elif "p_iou0" in table or "iou_adj_pred" in table:
        pred_source = "predictions stored in the tables"
    elif ds.has_targets:
        usable = ds.training_table()
        clf = MetaClassifier(kind="lasso", random_state=args.random_state).fit(usable)
        reg = MetaRegressor(kind="linear", random_state=args.random_state).fit(usable)
        table = predict_table(table, clf, reg)
        pred_source = "an in-sample fit on these tables (optimistic; pass --model for held-out predictions)"
    if ds.has_targets and args.splits > 0 and len(ds.cases) >= 2:
        try:
            ev = evaluate(ds, n_splits=args.splits, models=("linear",), random_state=args.random_state)
        except ValueError as exc:
            notes.append(f"evaluation skipped: {exc}")
    elif ds.has_targets and len(ds.cases) < 2:
        notes.append("evaluation needs at least 2 cases (splits are grouped by case)")

    blocks = []
    intro = (f"<p>{len(ds.cases)} case(s), {len(table)} segments, from "
             f"{html.escape(', '.join(str(t) for t in args.tables))}. Generated "
             f"{dt.datetime.now().isoformat(timespec='seconds')}.</p>")
    if pred_source:
        intro += f"<p class='note'>Predictions: {html.escape(pred_source)}.</p>"
    for n in notes:
        intro += f"<p class='note'>{html.escape(n)}</p>"
    blocks.append(("Data", intro + _case_summary(table).to_html(index=False, float_format="%.3f",
                                                                  na_rep="")))
    if ev is not None:
        blocks.append((f"Meta models: evaluation ({ev.grouping}, {ev.n_splits} split(s))",
                       ev.summary().reset_index().to_html(index=False)))
    figs = []
    usable = table.loc[ds.training_rows()] if ds.has_targets else table
    if ds.has_targets and "p_iou0" in usable:
        try:
            figs.append(figure_html(plot_roc(usable),
                                    caption="ROC: IoU_adj = 0 detected by p_iou0 vs entropy"))
        except ValueError as exc:
            notes.append(f"no ROC: {exc}")
    if ds.has_targets and "iou_adj_pred" in usable:
        figs.append(figure_html(plot_iou_scatter(usable), caption="predicted vs true IoU_adj"))
    if ev is not None and ev.lasso_path is not None and len(ev.lasso_path):
        figs.append(figure_html(plot_lasso_path(ev), caption="LASSO path of the meta classifier"))
    if figs:
        blocks.append(("Figures", "\n".join(figs)))
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.write_text(html_page("napari-metaseg report", blocks), encoding="utf-8")
    print(f"report -> {out}")
    return EXIT_OK


def _cmd_demo(args):
    from .__main__ import main as demo_main

    demo_main(["--sample", args.sample, *(["--no-run"] if args.no_run else [])])
    return EXIT_OK


_COMMANDS = {
    "metrics": _cmd_metrics,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "rank": _cmd_rank,
    "label-errors": _cmd_label_errors,
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
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
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
    sys.exit(main())
