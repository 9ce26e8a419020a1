"""Segment figures of the engine on ../shared/data: counts, share of IoU_adj = 0, correlations.

For each dataset and mode: number of segments, share with IoU_adj = 0 (all, and among segments
with a non-empty interior, the paper's training set), and the Pearson correlation of the mean
entropy ``E`` and the probability margin ``D`` with IoU_adj (the paper reports about -0.70 for E
and -0.85 for D on Cityscapes), plus the wall time of ``segment_metrics``.

Run: ``python benchmarks/realdata_figures.py [--data ../shared/data]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_metaseg.core import segment_metrics
from napari_metaseg.io import read_nifti, read_nifti_probabilities

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cases(data):
    for sub in ("sub-01", "sub-02"):
        d = data / "brain" / sub
        probs, _ = read_nifti_probabilities(d / "softmax_rf.nii.gz")
        gt, _ = read_nifti(d / "gt.nii.gz")
        yield f"brain {sub}", "3d", probs, gt
        yield f"brain {sub}", "slices", probs, gt
    import tifffile

    probs = np.load(data / "nuclei2d" / "softmax.npy")
    gt = tifffile.imread(data / "nuclei2d" / "gt.tif")
    yield "nuclei2d", "2d", probs, gt
    yield "nuclei2d right half", "2d", probs[:, 256:], gt[:, 256:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    args = parser.parse_args(argv)
    if not (args.data / "README.md").exists():
        raise SystemExit(f"no data at {args.data}")
    print("| data | mode | segments | share IoU_adj=0 | share IoU_adj=0 (S_in>0) | "
          "r(E, IoU_adj) | r(D, IoU_adj) | r(E) (S_in>0) | r(D) (S_in>0) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, mode, probs, gt in cases(args.data):
        segment_metrics(probs[:4, :4], gt[:4, :4], mode=mode, slice_axis=-1)
        t0 = time.perf_counter()
        _, t = segment_metrics(probs, gt, mode=mode, slice_axis=-1)
        dt = time.perf_counter() - t0
        inner = t[t["S_in"] > 0]
        print(f"| {name} | {mode} | {len(t)} | {(t['iou_adj'] == 0).mean():.4f} | "
              f"{(inner['iou_adj'] == 0).mean():.4f} | {t['E'].corr(t['iou_adj']):.3f} | "
              f"{t['D'].corr(t['iou_adj']):.3f} | {inner['E'].corr(inner['iou_adj']):.3f} | "
              f"{inner['D'].corr(inner['iou_adj']):.3f} | {dt:.3f} |")


if __name__ == "__main__":
    main()
