"""OoD regions on the lesion brains: the tables of docs/ood.md.

Usage: ``python benchmarks/ood_realdata.py [--data ../shared/data] [--modes 3d slices]
[--kinds lasso logistic] [--json out.json]``

For every threshold 0.3 .. 0.7 and segmentation mode: candidate regions of the entropy
(``E >= t``, no candidates where the background class 0 is predicted) on ``brain_ood/sub-01L``
and ``sub-02L``; the region meta classifier (``workflows.train_regions``, target ``hit``)
fitted on sub-01L's regions and applied to sub-02L's; then the object-level counts on sub-02L
keeping every candidate ("entropy only") and keeping the regions with P(hit) >= 0.5 ("meta"),
and the pixel scores of E, D and V on sub-02L inside the candidate mask. Objects are the
annotated lesions (``gt == 255``): 3D components in 3D mode, their in-plane components per slice
in slices mode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_metaseg.core import dispersion_maps
from napari_metaseg.core.ood import OodCase, evaluate_ood
from napari_metaseg.core.progress import drain
from napari_metaseg.io.cases import Case, read_case
from napari_metaseg.workflows.ood import find_ood, ood_settings, train_regions

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SUBJECTS = ("sub-01L", "sub-02L")


def load(data: Path):
    out = {}
    for sub in SUBJECTS:
        d = data / "brain_ood" / sub
        probs, gt, _ = read_case(Case(sub, d / "softmax_rf.nii.gz", d / "gt.nii.gz"))
        out[sub] = (probs, gt == 255, dispersion_maps(probs))
    return out


def run(cases, mode, kind):
    """Object rows (all / meta per threshold) and pixel rows on sub-02L for one mode and kind."""
    test_probs, test_ood, test_maps = cases["sub-02L"]
    regions, region_auc, mask = {}, {}, None
    for t in THRESHOLDS:
        settings = ood_settings(threshold=t, mode=mode, exclude_classes=(0,))
        train = {}
        for sub in SUBJECTS:
            probs, ood, maps = cases[sub]
            train[sub] = drain(find_ood(probs, settings=settings, ood=ood, maps=maps))
        table = train["sub-01L"].table.assign(case="sub-01L")
        model = drain(train_regions(table, kind=kind, random_state=0, ood=settings))
        test = drain(find_ood(test_probs, settings=settings, classifier=model.classifier, ood=test_ood,
                              maps=test_maps))
        p = test.table["p_hit"].to_numpy(float)
        regions[t] = (test.region_ids, p)
        mask = test.mask
        from sklearn.metrics import roc_auc_score

        hit = test.table["hit"].to_numpy()
        region_auc[t] = float(roc_auc_score(hit, p)) if 0 < hit.sum() < hit.size else float("nan")
    ev = evaluate_ood([OodCase(test_maps, test_ood, regions, mask)], mode=mode)
    objects = ev.objects.assign(region_auroc=ev.objects["threshold"].map(region_auc))
    return objects, ev.pixel


def markdown(objects: pd.DataFrame) -> str:
    lines = ["| t | entropy only: candidates | TP | FP | FN | F1 | ID miss | meta: kept | TP | FP | FN "
             "| F1 | ID miss | region AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, g in objects.groupby("threshold"):
        a = g[g["keep"] == "all"].iloc[0]
        m = g[g["keep"] == "meta"].iloc[0]
        lines.append(f"| {t:g} | {a.n_regions} | {a.tp} | {a.fp} | {a.fn} | {a.f1:.3f} | "
                     f"{100 * a.id_miss_rate:.2f} % | {m.kept} | {m.tp} | {m.fp} | {m.fn} | {m.f1:.3f} | "
                     f"{100 * m.id_miss_rate:.2f} % | {m.region_auroc:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--modes", nargs="+", default=["3d", "slices"])
    ap.add_argument("--kinds", nargs="+", default=["lasso", "logistic"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = load(args.data)
    results = {}
    pixel = None
    for mode in args.modes:
        for kind in args.kinds:
            objects, pixel = run(cases, mode, kind)
            results[mode, kind] = objects
            print(f"\n### {mode}, {kind} (train sub-01L, test sub-02L)\n")
            print(markdown(objects))
            best_all = objects[objects["keep"] == "all"]["f1"].max()
            best_meta = objects[objects["keep"] == "meta"]["f1"].max()
            print(f"\nbest F1: entropy only {best_all:.3f}, meta {best_meta:.3f}")
    print("\n### pixel level on sub-02L (inside predicted class != 0)\n")
    print("| heatmap | AUROC | AUPRC | FPR95 |\n|---|---|---|---|")
    for r in pixel.itertuples():
        print(f"| {r.measure} | {r.auroc:.3f} | {r.auprc:.3f} | {r.fpr95:.3f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        doc = {f"{m}/{k}": v.to_dict(orient="records") for (m, k), v in results.items()}
        doc["pixel"] = pixel.to_dict(orient="records")
        args.json.write_text(json.dumps(doc, indent=1, default=float))
    return results, pixel


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
