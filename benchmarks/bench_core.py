"""Speed and memory of the core engine, as ratios against baselines measured in the same run.

Cases (issue 15's table):

* a 1024 x 2048 x 19 float32 softmax with smooth structure (street-scene sized, about 5 400
  segments) and a ground truth that disagrees with it in structured places, 2D;
* the brain volume ``../shared/data/brain/sub-02`` (197 x 233 x 189 x 4 ``softmax_rf`` and its
  ``gt``, read by the plugin's readers: float32 probabilities, uint8 labels) in 3D and slice-wise
  (axial slices, the last axis) mode; skipped with a note when the data folder is absent.

For every case it prints the median wall time of ``segment_metrics`` with ground truth over
``--repeat`` runs after a warm-up, its ratio to the memory floor (``probs.sum()`` over the same
array, one read of the probabilities, median in the same run), the time of each stage (from the
yields of ``iter_segment_metrics``: validation + argmax, labelling, the fused metrics pass, the
ground-truth labelling + overlaps), and the peak extra memory of one call (resident-set high-water
mark above the resident set before the call, in a fresh process) relative to the input's size.
For the image it also prints numpy's ``argmax`` over the class axis against the same floor, and
at the end the cold start (``bench_coldstart.py``: a new process with an empty numba cache, up to
its first 2D, slice-wise and 3D results) and the same with the cache it left.

Run: ``python benchmarks/bench_core.py`` (``--quick`` for small inputs; ``--reference`` adds the
straightforward implementation of ``tests/reference.py``, which is slow).
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
DATA = ROOT.parent / "shared" / "data"
BRAIN = DATA / "brain" / "sub-02"


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
    """``(probs, gt)`` of a named case."""
    if name == "image":
        return smooth_softmax((1024, 2048), 19, cell=27, seed=seed)
    if name == "image-quick":
        return smooth_softmax((256, 512), 19, cell=27, seed=seed)
    if name == "brain":
        from napari_metaseg.io import read_nifti, read_nifti_probabilities

        probs, _ = read_nifti_probabilities(BRAIN / "softmax_rf.nii.gz")
        gt, _ = read_nifti(BRAIN / "gt.nii.gz")
        return probs, gt
    if name == "brain-quick":
        probs, gt = make_case("brain")
        return np.ascontiguousarray(probs[::2, ::2, ::2]), np.ascontiguousarray(gt[::2, ::2, ::2])
    raise ValueError(f"unknown case {name!r}")


CASES = {
    "1024 x 2048 x 19 with GT, 2d": ("image", "2d"),
    "brain 197 x 233 x 189 x 4 with GT, 3d": ("brain", "3d"),
    "same, slice-wise": ("brain", "slices"),
}
QUICK = {
    "256 x 512 x 19 with GT, 2d": ("image-quick", "2d"),
    "brain / 2 with GT, 3d": ("brain-quick", "3d"),
    "same, slice-wise": ("brain-quick", "slices"),
}


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def stage_times(probs, gt, mode):
    """Seconds of each stage of one ``iter_segment_metrics`` run, keyed by the stage's name."""
    from napari_metaseg.core import iter_segment_metrics

    out = {}
    gen = iter_segment_metrics(probs, gt, mode=mode, slice_axis=-1)
    t0 = time.perf_counter()
    while True:
        try:
            _, stage = next(gen)
        except StopIteration:
            break
        t1 = time.perf_counter()
        out[stage] = t1 - t0
        t0 = t1
    return out


def time_case(probs, gt, mode, repeat):
    import numba

    from napari_metaseg.core import segment_metrics

    segment_metrics(probs, gt, mode=mode, slice_axis=-1)  # warm-up (JIT cache load)
    total = _median_time(lambda: segment_metrics(probs, gt, mode=mode, slice_axis=-1), repeat)
    runs = [stage_times(probs, gt, mode) for _ in range(repeat)]
    stages = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    floor = _median_time(lambda: probs.sum(), max(repeat, 7))
    one = None
    threads = numba.get_num_threads()
    if threads > 1:  # how the engine scales: compute-bound work gains from every core, the floor does not
        numba.set_num_threads(1)
        try:
            one = _median_time(lambda: segment_metrics(probs, gt, mode=mode, slice_axis=-1), repeat)
        finally:
            numba.set_num_threads(threads)
    return total, stages, floor, one


def time_heatmaps(probs, repeat):
    """Seconds of the heatmaps alone (E, D, V) and of D and V only (no logarithms)."""
    from napari_metaseg.core import dispersion_maps

    out = {}
    for measures in (("E", "D", "V"), ("D", "V")):
        dispersion_maps(probs, measures=measures)
        out[measures] = _median_time(lambda m=measures: dispersion_maps(probs, measures=m), repeat)
    return out


def time_reference(probs, gt, mode):
    sys.path.insert(0, str(ROOT / "tests"))
    from reference import ref_segment_metrics

    t0 = time.perf_counter()
    ref_segment_metrics(probs, gt, mode=mode, slice_axis=-1)
    return time.perf_counter() - t0


_MEMORY_CHILD = r"""
import json, sys
sys.path.insert(0, {bench_dir!r})
from bench_core import make_case
from napari_metaseg.core import segment_metrics

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
probs, gt = make_case({case!r})
segment_metrics(probs[:8, :8].copy(), gt[:8, :8].copy(), mode={mode!r}, slice_axis=-1)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss("VmRSS")
seg, table = segment_metrics(probs, gt, mode={mode!r}, slice_axis=-1)
peak = rss("VmHWM")
print(json.dumps({{"extra": peak - before, "nbytes": probs.nbytes + gt.nbytes}}))
"""


def measure_memory(case, mode):
    """Peak extra resident memory of one ``segment_metrics`` call in a fresh process, in bytes,
    and the input's size (probabilities + ground truth)."""
    code = _MEMORY_CHILD.format(bench_dir=str(Path(__file__).parent), case=case, mode=mode)
    # cwd: the benchmarks folder, so the package on PYTHONPATH (or installed) is the one measured
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reference", action="store_true", help="also time the slow implementation")
    parser.add_argument("--no-coldstart", action="store_true", help="skip the cold-start rows")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import numba

    import napari_metaseg

    cases = QUICK if args.quick else CASES
    print(f"engine {Path(napari_metaseg.__file__).parent}; numba threads: {numba.get_num_threads()}, "
          f"numpy {np.__version__}, numba {numba.__version__}")
    results = {}
    rows = []
    details = []
    argmax_row = None
    for label, (case, mode) in cases.items():
        if case.startswith("brain") and not BRAIN.exists():
            rows.append(f"| {label} | - | - | - | (no data at {BRAIN}) |")
            continue
        probs, gt = make_case(case)
        total, stages, floor, one = time_case(probs, gt, mode, args.repeat)
        mem = measure_memory(case, mode)
        from napari_metaseg.core import segment_metrics

        n = len(segment_metrics(probs, gt, mode=mode, slice_axis=-1)[1])
        ref = time_reference(probs, gt, mode) if args.reference else None
        results[label] = {"total": total, "stages": stages, "floor": floor, "memory": mem,
                          "segments": n, "reference": ref, "one_thread": one}
        rows.append(f"| {label}, {n} segments | {total:.3f} | {total / floor:.1f} | "
                    f"{mem['extra'] / mem['nbytes']:.2f} | {floor * 1000:.1f} ms floor |")
        details.append((label, stages, floor, total, ref, one))
        if case.startswith("image"):
            t_arg = _median_time(lambda p=probs: p.argmax(-1), args.repeat)
            shape = "x".join(map(str, probs.shape))
            argmax_row = f"| numpy argmax of the {shape} map | {t_arg:.3f} | {t_arg / floor:.1f} | | |"
            results["argmax"] = {"time": t_arg, "floor": floor}
            maps = time_heatmaps(probs, args.repeat)
            for measures, t in maps.items():
                argmax_row += (f"\n| heatmaps {', '.join(measures)} alone (`dispersion_maps`) of the "
                               f"{shape} map | {t:.3f} | {t / floor:.1f} | | |")
            results["heatmaps"] = {",".join(k): v for k, v in maps.items()}
    if not args.no_coldstart:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_coldstart import cold_and_warm

        cold, warm = cold_and_warm()
        results["coldstart"] = {"cold": cold, "warm": warm}
        rows.insert(0, f"| cold start: import + first 2D, slices and 3D call, fresh JIT cache | "
                       f"{cold['total']:.1f} | - | | warm cache: {warm['total']:.2f} s |")
    if argmax_row:
        rows.append(argmax_row)
    print("\n| work | time s | x floor (`probs.sum()`) | peak extra memory / input | note |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nwhere the time goes (median s per stage of iter_segment_metrics, x floor):")
    for label, stages, floor, total, ref, one in details:
        parts = ", ".join(f"{k} {v:.3f} ({v / floor:.1f})" for k, v in stages.items())
        print(f"- {label}: {parts}")
        if one is not None:
            print(f"  with 1 numba thread: {one:.3f} s ({one / floor:.1f} x floor); "
                  f"{numba.get_num_threads()} threads are {one / total:.2f} x as fast")
        if ref is not None:
            print(f"  straightforward implementation (tests/reference.py): {ref:.2f} s = "
                  f"{ref / total:.0f} x the engine")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
