"""Speed of the OoD candidate regions, as a ratio to ``segment_metrics`` on the same volume.

The volume is ``../shared/data/brain_ood/sub-02L`` (197 x 233 x 189 x 4 ``softmax_rf``, read by
the plugin's reader: float32 probabilities). For each mode (3D, slice-wise along z) and entropy
threshold it times ``ood_regions`` (validation, E/D/V heatmaps, threshold, connected regions,
the region features) and ``segment_metrics`` (without ground truth) on the same probabilities,
``--repeat`` pairs after a warm-up, the two calls of a pair back to back (alternating which goes
first), and prints the medians, the median of the per-pair ratios and the ratio of the fastest
runs (issue 16's target: <= 1.0). On a shared machine the pairs keep a load change from
counting against one side only.

It also times three ways to label the candidate mask (``E >= t``) with the same connectivity:
the union-find over the candidate voxels only (``core.ood``, what ``ood_regions`` uses), the
run-based labeller of ``core.segments`` on the whole mask as ``uint8`` (``label_segments``,
keeping the components of value 1; it labels the background's components too) and
``scipy.ndimage.label``.

Run: ``python benchmarks/bench_ood.py [--repeat 7] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT.parent / "shared" / "data" / "brain_ood" / "sub-02L"


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not CASE.is_dir():
        print(f"skipped: {CASE} not found")
        return None
    from scipy import ndimage as ndi

    from napari_metaseg.core import dispersion_maps, label_segments, segment_metrics
    from napari_metaseg.core.ood import _label_candidates, ood_regions
    from napari_metaseg.io.cases import Case, read_case

    probs, _, _ = read_case(Case("sub-02L", CASE / "softmax_rf.nii.gz", None))
    probs = np.ascontiguousarray(probs)
    print(f"volume {probs.shape[:-1]} x {probs.shape[-1]} classes, float32; {args.repeat} repeats, median")
    rows = []
    print("\n| mode | threshold | regions | ood_regions (s) | segment_metrics (s) | ratio (median of pairs) "
          "| ratio of fastest |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("3d", "slices"):
        segment_metrics(probs, mode=mode)  # warm-up (numba cache, page faults)
        for t in args.thresholds:
            _, table = ood_regions(probs, threshold=t, mode=mode)
            ood_t, seg_t = [], []
            for k in range(args.repeat):
                def ood(t=t, mode=mode):
                    return _timed(lambda: ood_regions(probs, threshold=t, mode=mode))

                def seg(mode=mode):
                    return _timed(lambda: segment_metrics(probs, mode=mode))

                if k % 2:
                    seg_t.append(seg())
                    ood_t.append(ood())
                else:
                    ood_t.append(ood())
                    seg_t.append(seg())
            a, b = statistics.median(ood_t), statistics.median(seg_t)
            pair = statistics.median(x / y for x, y in zip(ood_t, seg_t, strict=True))
            fastest = min(ood_t) / min(seg_t)
            rows.append({"mode": mode, "threshold": t, "regions": len(table), "ood_regions_s": a,
                         "segment_metrics_s": b, "ratio": pair, "ratio_fastest": fastest})
            print(f"| {mode} | {t:g} | {len(table)} | {a:.3f} | {b:.3f} | {pair:.2f} | {fastest:.2f} |")
    print("\nlabelling the candidate mask (E >= t)\n")
    print("| mode | threshold | candidates | candidates only (s) | label_segments (s) | scipy (s) |")
    print("|---|---|---|---|---|---|")
    e = dispersion_maps(probs, measures=("E",))["E"]
    labelling = []
    for mode in ("3d", "slices"):
        structure = np.ones((3, 3, 3), bool)
        if mode == "slices":
            structure[:, :, 0] = structure[:, :, 2] = False
        for t in args.thresholds:
            cand = e >= np.float32(t)
            _label_candidates(cand, mode, 2)
            label_segments(cand.view(np.uint8), mode=mode)

            def runs_based(cand=cand, mode=mode):
                seg, _ = label_segments(cand.view(np.uint8), mode=mode)
                ids = np.unique(seg[cand])  # the components of value 1, renumbered
                lut = np.zeros(seg.max() + 1, np.int32)
                lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
                return lut[seg]

            ours, runs, scipy_t = [], [], []
            for _ in range(args.repeat):
                ours.append(_timed(lambda cand=cand, mode=mode: _label_candidates(cand, mode, 2)))
                runs.append(_timed(runs_based))
                scipy_t.append(_timed(lambda cand=cand, s=structure: ndi.label(cand, s, output=np.int32)))
            a, b, c = (statistics.median(x) for x in (ours, runs, scipy_t))
            labelling.append({"mode": mode, "threshold": t, "candidates": int(cand.sum()),
                              "candidates_only_s": a, "label_segments_s": b, "scipy_s": c})
            print(f"| {mode} | {t:g} | {int(cand.sum())} | {a:.3f} | {b:.3f} | {c:.3f} |")
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst ratio ood_regions / segment_metrics (median of pairs): {worst:.2f} (target <= 1.0)")
    if args.json:
        args.json.write_text(json.dumps({"regions": rows, "labelling": labelling}, indent=1))
    return rows, labelling


if __name__ == "__main__":
    main()
