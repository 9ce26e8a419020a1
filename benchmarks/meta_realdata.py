"""Meta models on the real brain data: the tables of docs/meta_models.md, "Real data".

Usage: ``python benchmarks/meta_realdata.py [--data ../shared/data] [--quick]``

Prints, as markdown, validation AUROC / R^2 of the entropy baseline and the meta models for

* train sub-01, validate sub-02 (slice-wise with and without the segmenter's 25 training slices
  of sub-01; with all segments; 3D);
* the review loop on the new subject: sub-02 cut in two halves, the meta models trained on
  sub-01 plus one corrected half and validated on the other half (and, for contrast, on sub-01
  alone against the same half).

``--quick`` evaluates the linear models only (no gradient boosting).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.meta_dataset import MetaDataset
from napari_metaseg.core.meta_model import evaluate
from napari_metaseg.io import read_nifti, read_nifti_probabilities

#: Axial slices of sub-01 whose pixels trained the random forest (data README).
RF_TRAINING_SLICES = frozenset(range(4, 149, 6))


def load(data: Path):
    tables = {}
    for sub in ("sub-01", "sub-02"):
        d = data / "brain" / sub
        probs, _ = read_nifti_probabilities(d / "softmax_rf.nii.gz")
        gt, _ = read_nifti(d / "gt.nii.gz")
        tables[sub, "slices"] = segment_metrics(probs, gt, mode="slices", slice_axis=-1)[1]
        labels, t = segment_metrics(probs, gt, mode="3d")
        com = ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, t["index"].to_numpy())
        tables[sub, "3d"] = t
        tables[sub, "3d_y"] = np.array([c[1] for c in com])
    return tables


def halves(tables, mode):
    t2 = tables["sub-02", mode]
    if mode == "3d":
        y = tables["sub-02", "3d_y"]
        first = y < np.median(y)
        return {"sub-02/posterior": t2[first], "sub-02/anterior": t2[~first]}
    first = (t2["slice"] < 77).to_numpy()
    return {"sub-02/inferior": t2[first], "sub-02/superior": t2[~first]}


def figures(ev, models):
    row = ev.table["val_mean"]
    out = [row["classification", "entropy", "AUROC"]]
    out += [row["classification", m, "AUROC"] for m in models]
    out += [row["regression", "entropy", "R2"]]
    out += [row["regression", m, "R2"] for m in models]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="linear models only")
    args = ap.parse_args(argv)
    if not (args.data / "brain").is_dir():
        raise SystemExit(f"no brain data under {args.data}")
    models = ("linear",) if args.quick else ("linear", "gbm")
    t0 = time.perf_counter()
    tables = load(args.data)
    cols = ["AUROC entropy"] + [f"AUROC {m}" for m in models] + ["R² entropy"] + [f"R² {m}" for m in models]
    print(f"tables in {time.perf_counter() - t0:.1f} s\n")

    print("## Train sub-01, validate sub-02\n")
    print("| mode | min_interior | sub-01 slices | " + " | ".join(cols) + " |")
    print("|---" * (3 + len(cols)) + "|")
    for mode, mi, unseen in (("slices", 1, False), ("slices", 1, True), ("slices", 0, False),
                             ("slices", 0, True), ("3d", 0, False)):
        t1 = tables["sub-01", mode]
        if unseen:
            t1 = t1[~t1["slice"].isin(RF_TRAINING_SLICES)]
        ds = MetaDataset(min_interior=mi).add("sub-01", t1).add("sub-02", tables["sub-02", mode])
        ev = evaluate(ds, validation_cases=["sub-02"], models=models)
        which = "unseen by the segmenter" if unseen else "all"
        vals = " | ".join(f"{100 * v:.2f}" for v in figures(ev, models))
        print(f"| {mode} | {mi} | {which} | {vals} |")

    print("\n## Review loop: sub-02 cut in two halves, one corrected and added to training\n")
    print("| mode | min_interior | validated on | trained on | " + " | ".join(cols) + " |")
    print("|---" * (4 + len(cols)) + "|")
    for mode, mi in (("3d", 0), ("slices", 1), ("slices", 0)):
        t1 = tables["sub-01", mode]
        if mode == "slices":
            t1 = t1[~t1["slice"].isin(RF_TRAINING_SLICES)]
        parts = halves(tables, mode)
        for held_out, va in parts.items():
            (corrected, tr2), = ((k, v) for k, v in parts.items() if k != held_out)
            for label, extra in (("sub-01", {}), (f"sub-01 + {corrected}", {corrected: tr2})):
                ds = MetaDataset(min_interior=mi).add("sub-01", t1)
                for k, v in extra.items():
                    ds.add(k, v)
                ds.add(held_out, va)
                ev = evaluate(ds, validation_cases=[held_out], models=models)
                print(f"| {mode} | {mi} | {held_out} | {label} | "
                      + " | ".join(f"{100 * v:.2f}" for v in figures(ev, models)) + " |")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
