"""`ood` resumed with every case done against a fresh run, and the size of the evaluation parts.

Cases: ``../shared/data/brain_ood/sub-01L`` and ``sub-02L`` (197 x 233 x 189 x 4 ``softmax_rf``,
the lesion annotation gt == 255), ``exclude_classes=(0,)`` (candidates and evaluated voxels off
the predicted background: about 1.9 million voxels per case), serially in this process after
the engine's warm-up. ``--repeat`` pairs of a fresh run (into a new folder) and a resumed run
(into the folder of the first fresh run, every case done: fingerprints checked, parts read back,
combined table and evaluation rebuilt), the two of a pair back to back; prints the medians and
the median of the per-pair ratios. Also: the parts file of each case (bytes) against the bytes
the pooled voxels of the evaluation took in memory before (an OoD flag and three float32
heatmap values per evaluated voxel), and the pixel evaluation from the parts (merge by value +
scores) against the pooled voxels' (``pixel_scores`` on the concatenated arrays), same figures
asserted.

Run: ``python benchmarks/bench_ood_resume.py [--repeat 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brain_ood"
SUBJECTS = ("sub-01L", "sub-02L")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    folders = [DATA / s for s in SUBJECTS]
    if not all(f.is_dir() for f in folders):
        print(f"skipped: {DATA} not found")
        return None
    import pandas as pd

    from napari_metaseg.core import dispersion_maps
    from napari_metaseg.core.ood import PixelCounts, pixel_scores
    from napari_metaseg.io.cases import find_cases, read_case
    from napari_metaseg.workflows import drain, ood_cases, warm_up_engine
    from napari_metaseg.workflows.ood import case_parts_path

    drain(warm_up_engine(ood=True))
    cases = find_cases(folders)
    settings = {"exclude_classes": [0], "command": "ood"}
    tmp = Path(tempfile.mkdtemp(prefix="bench_ood_resume_"))
    resumed_dir = tmp / "run0"
    fresh_t, resumed_t = [], []
    for i in range(args.repeat):
        t, run = _timed(lambda i=i: drain(ood_cases(cases, tmp / f"run{i}", settings)))
        assert run.computed == len(cases)
        fresh_t.append(t)
        t, run = _timed(lambda: drain(ood_cases(cases, resumed_dir, settings)))
        assert run.computed == 0 and run.skipped == len(cases)
        resumed_t.append(t)
        a, b = (pd.read_csv(resumed_dir / "ood_pixels.csv"), pd.read_csv(tmp / f"run{i}" / "ood_pixels.csv"))
        pd.testing.assert_frame_equal(a, b)
    ratios = [r / f for r, f in zip(resumed_t, fresh_t, strict=True)]
    print(f"{len(cases)} cases, {args.repeat} pairs, median:")
    print(f"  fresh run   {statistics.median(fresh_t):.3f} s")
    print(f"  resumed run {statistics.median(resumed_t):.3f} s (every case done)")
    print(f"  resumed / fresh = {statistics.median(ratios):.3f} (median of pairs)")

    sizes, pooled_bytes, parts, labels, values = {}, {}, [], [], {m: [] for m in ("E", "D", "V")}
    for c in cases:
        sizes[c.name] = case_parts_path(resumed_dir, c.name).stat().st_size
        probs, gt, _ = read_case(c)
        mask = probs.argmax(-1) != 0
        maps = dispersion_maps(probs)
        n = int(mask.sum())
        pooled_bytes[c.name] = n * (1 + 3 * 4)
        labels.append((gt == 255)[mask])
        for m in values:
            values[m].append(maps[m][mask])
        parts.append(PixelCounts.from_voxels({m: maps[m] for m in values}, gt == 255, mask=mask))
        print(f"  {c.name}: parts file {sizes[c.name]} bytes; pooled voxels {n} x 13 bytes = "
              f"{pooled_bytes[c.name]} bytes ({pooled_bytes[c.name] / sizes[c.name]:.0f} x); distinct values "
              + ", ".join(f"{m} {parts[-1].measures[m][0].size}" for m in values))
    y = np.concatenate(labels)
    pooled = {m: np.concatenate(v) for m, v in values.items()}
    eval_pooled, eval_parts = [], []
    for _ in range(args.repeat):
        t, a = _timed(lambda: pixel_scores(pooled, y))
        eval_pooled.append(t)
        t, b = _timed(lambda: pixel_scores(PixelCounts.merge(parts)))
        eval_parts.append(t)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    print(f"  pixel evaluation: pooled voxels {statistics.median(eval_pooled) * 1e3:.1f} ms, parts "
          f"{statistics.median(eval_parts) * 1e3:.2f} ms (ratio parts / pooled "
          f"{statistics.median(eval_parts) / statistics.median(eval_pooled):.4f}); figures identical")
    result = {"fresh_s": fresh_t, "resumed_s": resumed_t, "resumed_over_fresh": statistics.median(ratios),
              "parts_bytes": sizes, "pooled_voxel_bytes": pooled_bytes,
              "eval_pooled_s": eval_pooled, "eval_parts_s": eval_parts}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
