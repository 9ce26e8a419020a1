"""``napari-metaseg scores`` and ``napari-metaseg quality``: arguments and printing.

Evaluation scores against ground truth and image-level quality (train, predict, evaluate); the
work is :mod:`napari_metaseg.workflows.quality`. Registered by :mod:`napari_metaseg.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import (
    PROG,
    UsageError,
    _add_case_options,
    _cases,
    _collect_cases,
    _failed_csv,
    _hide_mode,
    _ignore_index,
    _model_out,
    _note,
    _out_folder,
    _report_failed,
    _run,
    _run_options,
    _warm_up,
    _write_csv,
)


def _add_scores_parser(sub):
    p = sub.add_parser("scores", help="evaluation scores against ground truth: IoU, Dice, accuracy per case",
                       description="Score the prediction (argmax of the softmax) of every case against its "
                                   "ground truth: IoU and Dice of every class, pixel accuracy, and mean "
                                   "IoU / Dice over the classes other than the background that occur in the "
                                   "case (absent classes are skipped, not counted as 0 or 1). Writes "
                                   "DIR/scores.csv (one row per case) and, with --per-slice, "
                                   "DIR/scores_slices.csv (one row per slice of every volume).")
    _add_case_options(p, out_help="output folder", resumable=False)
    next(a for a in p._actions if a.dest == "out").metavar = "DIR"
    _hide_mode(p)
    p.add_argument("--per-slice", action="store_true", help="also score every slice along --slice-axis")
    p.add_argument("--groups", metavar="JSON",
                   help='regions of several classes scored as one, from a JSON file such as '
                        '{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}')
    p.add_argument("--background", type=_ignore_index, default=0, metavar="N",
                   help="class left out of the mean IoU / Dice, or 'none' (default 0)")


def _add_quality_parser(sub):
    from .names import REGRESSOR_KINDS

    p = sub.add_parser("quality", help="image-level quality: train, predict, evaluate (per slice or case)",
                       description="Predict the quality (mean IoU, mean Dice or accuracy) of every slice or "
                                   "case from aggregates of its segment metrics, and judge the prediction as "
                                   "DeVries & Taylor do (RMSE, detection error, AUROC, AUPR-pass, AUPR-fail "
                                   "of pass vs fail at --fail-below).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    t = actions.add_parser("train", help="fit an image-quality model on cases with ground truth",
                           description="Fit a regressor of the image score on the image rows of the cases; "
                                       "writes the model file and, beside it, the training rows "
                                       "<name>.images.csv (an evaluation refits the size-and-segment-count "
                                       "baseline on them).")
    _add_case_options(t, out_help="model file (.json or .json.gz)", resumable=False)
    next(a for a in t._actions if a.dest == "out").metavar = "MODEL"
    t.add_argument("--by", choices=("slice", "case"), default="slice",
                   help="one row per slice of every volume (default; segments slice by slice) or per case")
    t.add_argument("--target", choices=("mean_iou", "mean_dice", "pixel_accuracy"), default="mean_iou",
                   help="score to predict (default mean_iou, the Jaccard index of DeVries & Taylor)")
    t.add_argument("--kind", choices=REGRESSOR_KINDS, default="lasso",
                   help="regressor: lasso (default), linear or gbm (gradient boosting)")
    t.add_argument("--fail-below", type=float, default=0.7, metavar="T",
                   help="a row fails when its score is below T (default 0.7); stored in the model")
    t.add_argument("--background", type=_ignore_index, default=0, metavar="N",
                   help="class left out of the aggregates and of the mean scores, or 'none' (default 0)")
    t.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    for name, helptext in (("predict", "predicted quality of every slice or case, pass or fail"),
                           ("evaluate", "DeVries & Taylor's figures of a model on cases with ground truth")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("model", metavar="MODEL", help="model file written by `quality train`")
        _add_case_options(a, out_help="CSV file of the rows with their predictions"
                          + (" (optional)" if name == "evaluate" else ""), resumable=False)
        if name == "evaluate":
            next(x for x in a._actions if x.dest == "out").required = False
            a.add_argument("--fail-below", type=float, default=None, metavar="T",
                           help="failure threshold (default: the model's)")


def _read_groups(path):
    from .core.safe_json import JSONLimitError, load_json_file

    if not Path(path).is_file():
        raise UsageError(f"--groups {path}: no such file")
    try:
        groups = load_json_file(path, max_bytes=1 << 20, max_depth=4)
    except (JSONLimitError, ValueError) as exc:
        raise UsageError(f"--groups {path}: not a JSON file ({exc})") from None
    from .core.scores import _check_groups

    try:
        return _check_groups(groups)
    except (TypeError, ValueError) as exc:
        raise UsageError(f'--groups {path}: {exc}; expected {{"WT": [1, 2, 4], ...}}') from None


def _score_cell(v):
    return "n/a" if v != v else f"{v:.4f}"  # NaN: the class or group is absent from the case


def _cmd_scores(args):
    from .core.csv_safe import write_csv
    from .workflows import case_settings, scores

    groups = _read_groups(args.groups) if args.groups else None
    cases = _collect_cases(args)
    out = _out_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    settings = case_settings(slice_axis=args.slice_axis, ignore_index=args.ignore_index,
                             class_axis=args.class_axis, background=args.background)
    job = scores(cases, settings, groups=groups, per_slice=args.per_slice, **_run_options(args))
    result = _run(args, job, total=len(cases), desc="scores")
    if len(result.cases):
        write_csv(result.cases, out / "scores.csv")
        if result.slices is not None:
            write_csv(result.slices, out / "scores_slices.csv")
        shown = ["mean_iou", "mean_dice", "pixel_accuracy", *[f"iou_{g}" for g in (groups or {})]]
        print("| case | " + " | ".join(shown) + " |\n|" + "---|" * (len(shown) + 1))
        for _, r in result.cases.iterrows():
            print(f"| {r['case']} | " + " | ".join(_score_cell(r[c]) for c in shown) + " |")
        print(f"| mean of {_cases(len(result.cases))} | "
              + " | ".join(_score_cell(result.summary[c]) for c in shown) + " |")
        slices = " and scores_slices.csv" if result.slices is not None else ""
        _note(args, f"scores: {_cases(len(result.cases))} scored, {len(result.failed)} failed -> "
                    f"{out / 'scores.csv'}{slices}")
    return _report_failed(result.failed, out / "failed.csv" if result.failed else None)


def _quality_rows(args, settings, desc):
    from .workflows import image_rows

    cases = _collect_cases(args)
    _warm_up(args)
    rows = _run(args, image_rows(cases, settings, **_run_options(args)), total=len(cases), desc=desc)
    if not len(rows.table):
        raise UsageError(f"no case could be read ({rows.failed[0][1] if rows.failed else 'none given'})")
    return rows


def _cmd_quality(args):
    actions = {"train": _quality_train, "predict": _quality_predict, "evaluate": _quality_evaluate}
    return actions[args.action](args)


def _quality_train(args):
    from .workflows import drain, save_quality_model, train_quality
    from .workflows.quality import quality_settings

    out = _model_out(args)
    try:
        settings = quality_settings(by=args.by, mode=args.mode, slice_axis=args.slice_axis,
                                    ignore_index=args.ignore_index, class_axis=args.class_axis,
                                    background=args.background)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = _quality_rows(args, settings, "rows")
    try:
        model = drain(train_quality(rows.table, settings, target=args.target, kind=args.kind,
                                    fail_below=args.fail_below, random_state=args.random_state))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save_quality_model(out, model)
    print(f"trained a {args.kind} image-quality model of {args.target} on {model.regressor.n_segments_} "
          f"{args.by} rows of {_cases(len(set(rows.table['case'])))}, "
          f"{len(model.regressor.feature_names_in_)} features -> {out}")
    return _report_failed(rows.failed, _failed_csv(out) if rows.failed else None)


def _quality_model(args):
    from .core.meta_io import MetaModelFileError
    from .workflows import load_quality_model
    from .workflows.quality import model_settings

    if not Path(args.model).is_file():
        raise UsageError(f"model {args.model}: no such file")
    try:
        model = load_quality_model(args.model)
        settings = model_settings(model, mode=args.mode, slice_axis=args.slice_axis,
                                  ignore_index=args.ignore_index, class_axis=args.class_axis)
    except MetaModelFileError as exc:
        raise UsageError(f"model {args.model}: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return model, settings


def _quality_predict(args):
    from .workflows import predict_quality

    model, settings = _quality_model(args)
    rows = _quality_rows(args, settings, "predict")
    try:
        table = predict_quality(rows.table, model)
    except ValueError as exc:
        raise UsageError(f"model {args.model}: {exc}") from None
    out = Path(args.out)
    _write_csv(table, out)
    n_fail = int((~table["pass_pred"]).sum())
    _note(args, f"quality: {len(table)} {model.by} rows of {_cases(len(set(table['case'])))}, {n_fail} "
                f"predicted to fail ({model.target} < {model.fail_below:g}) -> {out}")
    return _report_failed(rows.failed, _failed_csv(out) if rows.failed else None)


def _quality_evaluate(args):
    from .workflows import evaluate_quality_rows

    model, settings = _quality_model(args)
    rows = _quality_rows(args, settings, "evaluate")
    try:
        ev = evaluate_quality_rows(rows.table, model, fail_below=args.fail_below)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    trained = set(map(str, model.regressor.training_cases_)) & set(rows.table["case"].astype(str))
    if trained:
        print(f"{PROG}: warning: quality evaluate: case(s) {', '.join(sorted(trained))} were used to train "
              "the model: the figures are optimistic", file=sys.stderr)
    print(f"{model.by} rows: {ev.target}, failure below {ev.fail_below:g}\n")
    print(ev.to_markdown())
    if ev.note:
        _note(args, f"quality: {ev.note}")
    if args.out:
        _write_csv(ev.rows, Path(args.out))
    return _report_failed(rows.failed, _failed_csv(Path(args.out)) if rows.failed and args.out else None)
