"""Which meta-model kinds transfer to a new subject, per segmentation mode.

The table of docs/meta_models.md, "Default model kinds per segmentation mode".

Usage: ``python benchmarks/model_kinds_realdata.py [--data ../shared/data]``

Grouped cross-validation by subject on the developer brain data: the two subject groups are
{sub-01, sub-01L} and {sub-02, sub-02L} (a lesion brain is a degradation of the same subject, so
it stays with it; lesion voxels are ignored in the GT). Each fold trains on one group and
validates on the other. For each mode (3d, slices) and ``min_interior`` (0, 1) it prints the
validation AUROC (IoU_adj = 0 vs > 0) and R^2 (IoU_adj), means over 5 seeds of the LASSO strength
selection's folds, of the entropy baseline and of every named model pair in
:data:`napari_metaseg.names.MODEL_PAIRS`, per fold and their mean, and the defaults ``train`` uses
for that mode (:data:`napari_metaseg.names.DEFAULT_TRAINING`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.meta_dataset import MetaDataset
from napari_metaseg.core.meta_model import evaluate
from napari_metaseg.io import read_nifti, read_nifti_probabilities
from napari_metaseg.names import DEFAULT_TRAINING, MODEL_PAIRS

GROUPS = {"A": ("brain/sub-01", "brain_ood/sub-01L"), "B": ("brain/sub-02", "brain_ood/sub-02L")}
#: Seeds of the LASSO strength selection's folds; every figure is the mean over them.
SEEDS = range(5)


def load(data: Path, modes):
    tables = {}
    for group in GROUPS.values():
        for sub in group:
            probs, _ = read_nifti_probabilities(data / sub / "softmax_rf.nii.gz")
            gt, _ = read_nifti(data / sub / "gt.nii.gz")
            for mode in modes:
                tables[sub, mode] = segment_metrics(probs, gt, mode=mode, slice_axis=-1)[1]
    return tables


def fold_figures(tables, mode, min_interior, train, validate, pairs, random_state=0):
    ds = MetaDataset(min_interior=min_interior)
    for sub in (*GROUPS[train], *GROUPS[validate]):
        ds.add(sub, tables[sub, mode])
    ev = evaluate(ds, validation_cases=list(GROUPS[validate]), models=pairs, random_state=random_state)
    row = ev.table["val_mean"]
    labels = pairs
    auroc = [row["classification", "entropy", "AUROC"]] + [row["classification", m, "AUROC"] for m in labels]
    r2 = [row["regression", "entropy", "R2"]] + [row["regression", m, "R2"] for m in labels]
    usable = ds.training_table()
    n_val = int(usable["case"].isin(GROUPS[validate]).sum())
    return np.array(auroc), np.array(r2), n_val


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--modes", nargs="+", default=["3d", "slices"])
    args = ap.parse_args(argv)
    if not (args.data / "brain_ood").is_dir():
        raise SystemExit(f"no brain / brain_ood data under {args.data}")
    pairs = list(MODEL_PAIRS)
    t0 = time.perf_counter()
    tables = load(args.data, args.modes)
    print(f"tables in {time.perf_counter() - t0:.1f} s\n")
    head = ["entropy", *pairs]
    for mode in args.modes:
        for mi in (0, 1):
            print(f"## mode {mode}, min_interior {mi} (validation figures, %)\n")
            print("| fold | n val | " + " | ".join(f"AUROC {h}" for h in head) + " | "
                  + " | ".join(f"R² {h}" for h in head) + " |")
            print("|---" * (2 + 2 * len(head)) + "|")
            runs = []
            for train, val in (("A", "B"), ("B", "A")):
                try:  # the LASSO kinds' folds depend on the seed: the mean over SEEDS
                    figs = [fold_figures(tables, mode, mi, train, val, pairs, rs) for rs in SEEDS]
                except ValueError as exc:
                    print(f"| {train}->{val} | not evaluable: {exc} |")
                    continue
                auroc = np.mean([f[0] for f in figs], axis=0)
                r2 = np.mean([f[1] for f in figs], axis=0)
                n_val = figs[0][2]
                runs.append((auroc, r2))
                print(f"| {train}->{val} | {n_val} | " + " | ".join(f"{100 * v:.2f}" for v in auroc) + " | "
                      + " | ".join(f"{100 * v:.2f}" for v in r2) + " |")
            if not runs:
                print()
                continue
            mean_a = np.mean([a for a, _ in runs], axis=0)
            mean_r = np.mean([r for _, r in runs], axis=0)
            print("| mean | | " + " | ".join(f"{100 * v:.2f}" for v in mean_a) + " | "
                  + " | ".join(f"{100 * v:.2f}" for v in mean_r) + " |")
            best_a = head[1 + int(np.argmax(mean_a[1:]))]
            best_r = head[1 + int(np.argmax(mean_r[1:]))]
            print(f"\nbest mean AUROC: {best_a}; best mean R²: {best_r}; "
                  f"default for {mode} (classifier, regressor, min_interior): {DEFAULT_TRAINING.get(mode)}\n")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
