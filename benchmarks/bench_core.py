"""Speed and memory of the core engine, as ratios against baselines measured in the same run.

Cases (issue 2): a 1024 x 2048 x 19 float32 softmax with smooth structure (street-scene sized),
and a 240 x 240 x 155 x 4 volume in 3D and slice-wise mode (BraTS sized), each with ground truth.

For every case it prints wall time per stage and in total (median of ``--repeat`` runs after a
warm-up), the ratio of the total against

* the memory floor: ``probs.sum()`` over the same array (one read of the probabilities), and
* the straightforward implementation in ``tests/reference.py`` (run once: it is slow),

and the peak extra memory of ``segment_metrics`` (resident set high-water mark above the
resident set before the call, measured in a fresh process) relative to the probabilities' size,
plus the first call in a fresh process (numba's on-disk cache makes it warm).

Run: ``python benchmarks/bench_core.py`` (``--quick`` for a smaller, faster run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def smooth_logits(shape, q, *, cell, sharpness, seed):
    """Smooth random logits: bilinear upsampling of coarse Gaussian noise."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = tuple(max(2, s // cell) for s in shape)
    logits = rng.standard_normal((*coarse, q)).astype(np.float32) * sharpness
    factors = [s / c for s, c in zip(shape, coarse, strict=True)] + [1]
    logits = zoom(logits, factors, order=1, prefilter=False)
    return np.ascontiguousarray(logits[tuple(slice(0, s) for s in shape)])


def smooth_softmax(shape, q, *, cell=24, sharpness=6.0, seed=0):
    """Softmax of smooth random logits: blobby class regions with soft, uncertain borders.

    Returns the probabilities and a ground truth that disagrees with their argmax in
    structured places (the argmax of the logits plus a second, finer smooth field), the way a
    network's errors cluster at object borders and in ambiguous regions.
    """
    logits = smooth_logits(shape, q, cell=cell, sharpness=sharpness, seed=seed)
    disturbed = logits + smooth_logits(shape, q, cell=max(4, cell // 3), sharpness=sharpness * 0.4,
                                       seed=seed + 100)
    gt = disturbed.argmax(-1).astype(np.uint8)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits, dtype=np.float32)
    p /= p.sum(-1, keepdims=True)
    return p, gt


def make_case(name, seed=0):
    if name == "image":
        return smooth_softmax((1024, 2048), 19, cell=48, seed=seed)
    if name == "image-quick":
        return smooth_softmax((256, 512), 19, cell=48, seed=seed)
    if name == "volume":
        return smooth_softmax((240, 240, 155), 4, cell=20, seed=seed)
    return smooth_softmax((60, 60, 40), 4, cell=20, seed=seed)


CASES = {
    "image 1024x2048x19, 2d": ("image", "2d"),
    "volume 240x240x155x4, 3d": ("volume", "3d"),
    "volume 240x240x155x4, slices": ("volume", "slices"),
}
QUICK = {
    "image 256x512x19, 2d": ("image-quick", "2d"),
    "volume 60x60x40x4, 3d": ("volume-quick", "3d"),
    "volume 60x60x40x4, slices": ("volume-quick", "slices"),
}


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_stages(probs, gt, mode, repeat):
    from napari_metaseg.core import as_probabilities, dispersion_maps, label_segments, segment_metrics

    pred = probs.argmax(-1).astype(np.uint8)
    kw = {"mode": mode, "slice_axis": -1}
    segment_metrics(probs, gt, **kw)  # warm-up (JIT cache load)
    stages = {
        "validate": lambda: as_probabilities(probs),
        "heatmaps E,D,V (maps)": lambda: dispersion_maps(probs),
        "label segments": lambda: label_segments(pred, **kw),
        "segment_metrics (total)": lambda: segment_metrics(probs, **kw),
        "segment_metrics with GT (+ IoU, IoU_adj)": lambda: segment_metrics(probs, gt, **kw),
    }
    out = {name: _median_time(fn, repeat) for name, fn in stages.items()}
    out["floor probs.sum()"] = _median_time(lambda: probs.sum(), max(repeat, 5))
    return out


def time_reference(probs, gt, mode):
    sys.path.insert(0, str(ROOT / "tests"))
    from reference import ref_segment_metrics

    t0 = time.perf_counter()
    ref_segment_metrics(probs, gt, mode=mode, slice_axis=-1)
    return time.perf_counter() - t0


_MEMORY_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {bench_dir!r})
from bench_core import make_case
from napari_metaseg.core import segment_metrics

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
probs, gt = make_case({case!r})
t0 = time.perf_counter()
small_p, small_g = probs[:8, :8].copy(), gt[:8, :8].copy()
segment_metrics(small_p, small_g, mode={mode!r}, slice_axis=-1)
first_small = time.perf_counter() - t0
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss("VmRSS")
t0 = time.perf_counter()
segment_metrics(probs, gt, mode={mode!r}, slice_axis=-1)
first_full = time.perf_counter() - t0
peak = rss("VmHWM")
print(json.dumps({{"extra": peak - before, "nbytes": probs.nbytes, "first_small": first_small,
                  "first_full": first_full}}))
"""


def measure_memory(case, mode):
    code = _MEMORY_CHILD.format(bench_dir=str(Path(__file__).parent), case=case, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_START_CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
from napari_metaseg.core import segment_metrics
rng = np.random.default_rng(0)
for shape, mode in (((16, 16, 3), "2d"), ((8, 8, 8, 3), "3d"), ((8, 8, 8, 3), "slices")):
    p = rng.random(shape).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    segment_metrics(p, p.argmax(-1), mode=mode)
print(time.perf_counter() - t0)
"""


def measure_startup():
    """Seconds from import to the first results in all modes: cold (empty JIT cache) and warm."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [subprocess.run([sys.executable, "-c", _START_CHILD], capture_output=True, text=True,
                               check=True, env=env) for _ in range(2)]
    return [float(r.stdout.strip().splitlines()[-1]) for r in runs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the slow baseline")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import numba

    cases = QUICK if args.quick else CASES
    print(f"numba threads: {numba.get_num_threads()}, numpy {np.__version__}, numba {numba.__version__}")
    results = {}
    for label, (case, mode) in cases.items():
        probs, gt = make_case(case)
        stages = time_stages(probs, gt, mode, args.repeat)
        ref = None if args.no_reference else time_reference(probs, gt, mode)
        mem = measure_memory(case, mode)
        _, table = __import__("napari_metaseg.core", fromlist=["x"]).segment_metrics(
            probs, gt, mode=mode, slice_axis=-1)
        results[label] = {"stages": stages, "reference": ref, "memory": mem, "segments": len(table)}

        total = stages["segment_metrics (total)"]
        with_gt = stages["segment_metrics with GT (+ IoU, IoU_adj)"]
        floor = stages["floor probs.sum()"]
        print(f"\n## {label}: {len(table)} segments, probabilities {probs.nbytes / 2**20:.0f} MiB")
        print("| stage | median s | x floor |")
        print("|---|---|---|")
        for name, t in stages.items():
            print(f"| {name} | {t:.4f} | {t / floor:.1f} |")
        print(f"| straightforward implementation (tests/reference.py, 1 run) | "
              f"{'-' if ref is None else f'{ref:.2f}'} | "
              f"{'-' if ref is None else f'{ref / floor:.0f}'} |")
        if ref is not None:
            print(f"speed-up against the straightforward implementation (both with GT): "
                  f"{ref / with_gt:.0f} x")
        print(f"total / floor: {total / floor:.1f} x (with GT: {with_gt / floor:.1f} x)")
        print(f"peak extra memory of segment_metrics: {mem['extra'] / 2**20:.0f} MiB = "
              f"{mem['extra'] / mem['nbytes']:.2f} x the probabilities")
        print(f"fresh process: first call on 8x8 input {mem['first_small']:.2f} s (JIT cache load), "
              f"then full input {mem['first_full']:.3f} s")
    cold, warm = measure_startup()
    results["startup"] = {"cold": cold, "warm": warm}
    print(f"\nnew process, import to first results in 2d, 3d and slices mode: {cold:.1f} s with an "
          f"empty JIT cache (compiling), {warm:.2f} s with the cache it left (numba cache=True)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
