"""Quality at every scale on the developer brain data: the tables of docs/quality.md.

Usage: ``python benchmarks/quality_realdata.py [--data ../shared/data] [--json out.json]``

RandomForest softmax, train on ``brain/sub-01`` (the subject the RandomForest was trained on),
test on ``brain/sub-02`` (unseen, stronger noise and bias field):

1. evaluation scores of both subjects (``workflows.scores``);
2. image-level quality per axial slice (``workflows.image_rows`` / ``train_quality`` /
   ``evaluate_quality_rows``): DeVries & Taylor's five figures of the regressor (each model kind),
   the mean max-probability, the size-and-segment-count baseline and the mean max-probability of
   the predicted foreground (1 - ``V_mean``), for mean Dice at 0.7 and mean IoU at 0.7 (DeVries &
   Taylor's threshold) and 0.6, each AUROC with its 95 % bootstrap interval; the paired bootstrap
   comparison of the LASSO's AUROC with each baseline's; and the seeds' spread of the LASSO's AUROC;
3. voxel error detection (``workflows.error_detection``): AUROC / AUPRC per measure on sub-02, and
   the recall each flagging rule holds on sub-02 when chosen on sub-01 for a target recall, over all
   voxels and over the predicted foreground.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_metaseg.core.image_quality import compare_auroc, evaluate_quality
from napari_metaseg.core.progress import drain
from napari_metaseg.io.cases import Case
from napari_metaseg.workflows import error_detection, evaluate_quality_rows, image_rows, scores, train_quality

SUBJECTS = ("sub-01", "sub-02")
KINDS = ("lasso", "linear", "gbm")
TARGETS = (("mean_dice", 0.7), ("mean_iou", 0.7), ("mean_iou", 0.6))


def markdown(table: pd.DataFrame, digits=3) -> str:
    """A DataFrame as a Markdown table (floats to ``digits`` decimals)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def cases(data: Path):
    return {s: Case(s, data / "brain" / s / "softmax_rf.nii.gz", data / "brain" / s / "gt.nii.gz")
            for s in SUBJECTS}


def image_level(c):
    rows = {s: drain(image_rows([case], {"by": "slice"})).table for s, case in c.items()}
    out, spread, compared = [], {}, []
    for target, fail in TARGETS:
        for kind in KINDS:
            model = drain(train_quality(rows["sub-01"], {"by": "slice"}, target=target, kind=kind,
                                        fail_below=fail))
            ev = evaluate_quality_rows(rows["sub-02"], model)
            test = ev.rows[np.isfinite(ev.rows[target])]
            extra = evaluate_quality(test[target], {"foreground max-probability": 1 - test["V_mean"]},
                                     fail_below=fail, ci=0.95)
            fig = pd.concat([ev.figures, extra])
            for name, r in fig.iterrows():
                if kind != "lasso" and name != "regressor":
                    continue  # the baselines do not depend on the kind
                label = f"regressor ({kind})" if name == "regressor" else name
                out.append({"target": target, "fail_below": fail, "predictor": label, **r.to_dict()})
            if kind == "lasso" and not ev.comparisons.empty:
                both = {"regressor": test["quality_pred"], "foreground max-probability": 1 - test["V_mean"]}
                fg = compare_auroc(test[target], both, against="regressor", fail_below=fail)
                for name, r in pd.concat([ev.comparisons, fg]).iterrows():
                    compared.append({"target": target, "fail_below": fail, "LASSO regressor vs": name,
                                     **r[["difference", "low", "high", "share_not_above"]].to_dict()})
        if fail != 0.7:
            continue
        aurocs = []
        for seed in range(10):
            model = drain(train_quality(rows["sub-01"], {"by": "slice"}, target=target, kind="lasso",
                                        fail_below=fail, random_state=seed))
            figures = evaluate_quality_rows(rows["sub-02"], model, n_boot=100).figures
            aurocs.append(float(figures.loc["regressor", "auroc"]))
        spread[target] = aurocs
    case_level = []
    for target in ("mean_dice", "mean_iou"):
        model = drain(train_quality(rows["sub-01"], {"by": "slice"}, target=target, kind="lasso"))
        ev = evaluate_quality_rows(rows["sub-02"], model, n_boot=100)
        t = ev.rows[np.isfinite(ev.rows[target])]
        case_level.append({"target": target, "true slice mean": float(t[target].mean()),
                           "predicted slice mean": float(t["quality_pred"].mean())})
    return pd.DataFrame(out), spread, pd.DataFrame(case_level), pd.DataFrame(compared)


def voxel_level(c):
    out = {}
    for mask in ("all", "foreground"):
        out[mask] = drain(error_detection([c["sub-01"]], [c["sub-02"]], {}, target_recalls=(0.5, 0.8, 0.9),
                                          mask=mask))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    c = cases(args.data)
    t0 = time.perf_counter()
    sc = drain(scores(list(c.values()), {}, per_slice=False))
    print("## Scores per case\n")
    cols = ["case", "dice_1", "dice_2", "dice_3", "pixel_accuracy", "mean_iou", "mean_dice"]
    print(markdown(sc.cases[cols], 4))
    figs, spread, case_level, compared = image_level(c)
    print("\n## Image level (axial slices; train sub-01, test sub-02)\n")
    print(markdown(figs))
    print("\nPaired bootstrap (2000 stratified resamples of sub-02's slices), AUROC difference:\n")
    print(markdown(compared))
    for target, a in spread.items():
        print(f"\nLASSO AUROC over seeds 0-9, {target}: min {min(a):.3f}, max {max(a):.3f}")
    print("\n" + markdown(case_level))
    vox = voxel_level(c)
    for mask, res in vox.items():
        print(f"\n## Voxel level, mask {mask}\n")
        print(markdown(res.scores))
        print()
        print(markdown(res.flags))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "scores": sc.cases.to_dict(orient="records"), "image_level": figs.to_dict(orient="records"),
            "lasso_auroc_seeds": spread, "compared": compared.to_dict(orient="records"),
            "case_level": case_level.to_dict(orient="records"),
            "voxel_scores": {m: r.scores.to_dict(orient="records") for m, r in vox.items()},
            "voxel_flags": {m: r.flags.to_dict(orient="records") for m, r in vox.items()}}, indent=1,
            default=float))


if __name__ == "__main__":
    main()
