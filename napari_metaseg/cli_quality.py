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


# ============================================================================================
# errors: voxel error detection (evaluate) and flagged-voxel maps (flag)
# ============================================================================================
_MEASURES = ("E", "D", "V")
_RULES = ("fixed", "quantile", "calibrated")


def _unit(text):
    """A number in [0, 1] (threshold, share, recall); the rules check their own range."""
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _add_errors_parser(sub):
    p = sub.add_parser("errors", help="voxel error maps: how well heatmaps find misclassified voxels; "
                                      "flagged-voxel maps",
                       description="Misclassified voxels (argmax != ground truth) and the dispersion "
                                   "heatmaps that find them (E entropy, D margin, V variation ratio): "
                                   "`evaluate` scores the heatmaps and the three flagging rules on test "
                                   "cases, set on training cases; `flag` writes a map of the voxels to "
                                   "check for every case.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser("evaluate", help="AUROC / AUPRC per heatmap; recall and precision per rule",
                           description="For every heatmap: AUROC and AUPRC for misclassified voxels on "
                                       "each case; for every rule (fixed threshold, quantile share, "
                                       "calibrated) set on the --train cases for each --target-recall: the "
                                       "recall and precision it reaches on the training and the test cases. "
                                       "Every case needs ground truth. With --out DIR: DIR/error_scores.csv "
                                       "and DIR/error_flags.csv.")
    _add_case_options(e, out_help="output folder for the tables (optional)", resumable=False)
    out = next(a for a in e._actions if a.dest == "out")
    out.required, out.metavar = False, "DIR"
    e.add_argument("--measures", nargs="+", choices=_MEASURES, default=list(_MEASURES), metavar="M",
                   help="heatmaps to score: E D V (default all)")
    e.add_argument("--target-recall", nargs="+", type=_unit, default=[0.8], metavar="R",
                   help="recall(s) each rule is set for on the training cases (default 0.8)")
    f = actions.add_parser("flag", help="write a flagged-voxel map of every case",
                           description="Flag the voxels most likely misclassified in every case and "
                                       "write DIR/maps/<case>_flagged.nii.gz (NIfTI input, with its affine) "
                                       "or .npy (uint8, 1 = flagged), and DIR/flagged.csv (voxels flagged, "
                                       "their share and, for cases with ground truth, the recall and "
                                       "precision of the flags against the misclassified voxels). Rules: "
                                       "fixed (heatmap >= --threshold, default 0.5), quantile (the --share "
                                       "of the voxels with the highest heatmap, per case), calibrated "
                                       "(P(error | heatmap) learnt on the --train cases; per case the most "
                                       "uncertain voxels holding --target-recall of its expected errors). "
                                       "With --train and --target-recall, fixed and quantile take the "
                                       "threshold or share that reached that recall on the training cases.")
    _add_case_options(f, out_help="output folder", resumable=False)
    next(a for a in f._actions if a.dest == "out").metavar = "DIR"
    f.add_argument("--measure", choices=_MEASURES, default="E", help="heatmap: E (default), D or V")
    f.add_argument("--method", choices=_RULES, default="fixed",
                   help="rule: fixed (default), quantile, calibrated")
    f.add_argument("--threshold", type=_unit, default=None, metavar="T",
                   help="fixed: heatmap >= T (default 0.5)")
    f.add_argument("--share", type=_unit, default=None, metavar="S",
                   help="quantile: the share S in (0, 1] of the voxels considered to flag")
    f.add_argument("--target-recall", type=_unit, default=None, metavar="R",
                   help="with --train: the recall the rule is set for (default 0.8 for calibrated)")
    for a in (e, f):
        _hide_mode(a)
        a.add_argument("--train", nargs="+", metavar="TRAIN", required=a is e,
                       help="training cases with ground truth (files, folders or patterns, as CASES)")
        a.add_argument("--mask", choices=("all", "foreground"), default="all",
                       help="voxels considered: all (default) or foreground = predicted as a class "
                            "other than --background")
        a.add_argument("--background", type=_ignore_index, default=0, metavar="N",
                       help="background class for --mask foreground (default 0)")


def _train_cases(args, test_cases):
    from .io.cases import CaseError, find_cases

    try:
        train = find_cases(args.train)
    except CaseError as exc:
        raise UsageError(f"--train: {exc}") from None
    without = [c.name for c in train if c.gt is None]
    if without:
        raise UsageError(f"--train: training cases need ground truth; {', '.join(without)} "
                         f"{'has' if len(without) == 1 else 'have'} none")
    both = sorted({c.name for c in train} & {c.name for c in test_cases})
    if both:
        print(f"{PROG}: warning: errors: case(s) {', '.join(both)} are training and test cases: their "
              "figures are optimistic", file=sys.stderr)
    return train


def _cmd_errors(args):
    return {"evaluate": _errors_evaluate, "flag": _errors_flag}[args.action](args)


def _errors_settings(args):
    return {"ignore_index": args.ignore_index, "class_axis": args.class_axis, "background": args.background}


def _errors_evaluate(args):
    from .workflows import error_detection

    cases = _collect_cases(args)
    without = [c.name for c in cases if c.gt is None]
    if without:
        raise UsageError(f"errors evaluate scores against ground truth; {', '.join(without)} "
                         f"{'has' if len(without) == 1 else 'have'} none (use `errors flag` for such cases)")
    train = _train_cases(args, cases)
    out = _out_folder(args) if args.out else None
    if args.mask == "foreground" and args.background is None:
        raise UsageError("--mask foreground needs a --background class")
    if any(r <= 0 for r in args.target_recall):
        raise UsageError("--target-recall: recalls must lie in (0, 1]")
    _warm_up(args)
    job = error_detection(train, cases, _errors_settings(args), measures=tuple(args.measures),
                          target_recalls=tuple(args.target_recall), mask=args.mask)
    total = 2 * len(train) + len(cases)
    result = _run(args, job, total=total, desc="errors")
    test = result.scores[result.scores["role"] == "test"]
    print("| case | measure | AUROC | AUPRC | errors | voxels |\n|---|---|---|---|---|---|")
    for _, r in test.iterrows():
        print(f"| {r['case']} | {r['measure']} | {_score_cell(r['auroc'])} | {_score_cell(r['auprc'])} | "
              f"{int(r['n_errors'])} | {int(r['n_voxels'])} |")
    flags = result.flags
    keys = ["role", "measure", "target_recall", "method"]
    mean = flags.groupby(keys, sort=False)[["recall", "precision"]].mean()
    print("\nrules set on the training cases, mean over the cases (recall / precision):\n")
    print("| measure | target recall | method | training cases | test cases |\n|---|---|---|---|---|")
    for (measure, target, method), _ in mean.loc["test"].iterrows():
        cells = []
        for role in ("train", "test"):
            r = mean.loc[(role, measure, target, method)]
            cells.append(f"{_score_cell(r['recall'])} / {_score_cell(r['precision'])}")
        print(f"| {measure} | {target:g} | {method} | {cells[0]} | {cells[1]} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(result.scores, out / "error_scores.csv")
        _write_csv(result.flags, out / "error_flags.csv")
        _note(args, f"errors: {_cases(len(cases))} evaluated -> {out / 'error_scores.csv'}, "
                    f"{out / 'error_flags.csv'}")
    return 0


def _errors_flag(args):
    from .workflows import error_maps
    from .workflows.quality import check_flag_options

    cases = _collect_cases(args)
    train = _train_cases(args, cases) if args.train else []
    out = _out_folder(args)
    try:  # every mistake in the options is found before anything is read or written
        check_flag_options(measure=args.measure, method=args.method, threshold=args.threshold,
                           share=args.share, target_recall=args.target_recall, calibrated=bool(train),
                           mask=args.mask)
        if args.mask == "foreground" and args.background is None:
            raise ValueError("--mask foreground needs a --background class")
    except ValueError as exc:
        raise UsageError(_option_names(str(exc))) from None
    _warm_up(args)
    job = error_maps(cases, out, _errors_settings(args), measure=args.measure, method=args.method,
                     threshold=args.threshold, share=args.share, target_recall=args.target_recall,
                     train_cases=train, mask=args.mask, **_run_options(args))
    try:
        result = _run(args, job, total=len(train) + len(cases), desc="errors")
    except ValueError as exc:
        if not str(exc).startswith("the calibration needs every training case"):
            raise
        raise UsageError(f"--train: {exc}") from None
    table = result.table
    if len(table):
        cols = [c for c in ("n_flagged", "share_flagged", "recall", "precision") if c in table.columns]
        print("| case | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
        for _, r in table.iterrows():
            cells = [str(int(r[c])) if c == "n_flagged" else _score_cell(r[c]) for c in cols]
            print(f"| {r['case']} | " + " | ".join(cells) + " |")
        o = result.options
        what = {"fixed": f"threshold {o['threshold']}", "quantile": f"share {o['share']}",
                "calibrated": "calibrated"}[o["method"]]
        if train:
            what += f", set on {_cases(len(train))} for recall {o['target_recall']:g}"
        _note(args, f"errors: {_cases(len(table))} flagged ({o['measure']}, {o['method']}: {what}) -> "
                    f"{out / 'maps'}, {out / 'flagged.csv'}")
    return _report_failed(result.failed, out / "failed.csv" if result.failed else None)


def _option_names(text):
    """The workflow's message with the command's option names."""
    options = (("threshold", "--threshold"), ("share", "--share"), ("target recall", "--target-recall"))
    for word, option in options:
        text = text.replace(f"a {word}", f"a {option}").replace(f"{word} must", f"{option} must")
    return text
