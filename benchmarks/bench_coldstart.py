"""Cold start of the engine: a new process with an empty numba cache, up to its first results.

The measured script is what a user's first run does: import ``napari_metaseg.core``, then one
``segment_metrics`` call with ground truth in 2D, slice-wise and 3D mode on tiny inputs with the
dtypes the readers produce (float32 probabilities, uint8 ground truth). It runs in a fresh
subprocess whose ``NUMBA_CACHE_DIR`` is a new, empty directory (cold: every kernel is compiled),
then once more in another process with the cache the first one left (warm: kernels are loaded).
Per stage it prints the seconds of the import and of each first call, and the process's CPU
time (user + system, all threads; compiling is single-threaded, so on a busy machine it is the
steadier figure).

``--root DIR`` (repeatable) runs the same script against the package found in ``DIR`` (put first
on ``PYTHONPATH``), e.g. a copy of an older tree, so before / after figures come from one run.

Run: ``python benchmarks/bench_coldstart.py [--repeat 1] [--root /path/to/old/tree]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: What a first run does; prints one JSON line of per-stage seconds.
CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from napari_metaseg.core import segment_metrics
stamps = {"import": time.perf_counter() - t0}
rng = np.random.default_rng(0)
for shape, mode in (((16, 16, 3), "2d"), ((8, 8, 8, 3), "slices"), ((8, 8, 8, 3), "3d")):
    p = rng.random(shape).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    gt = rng.integers(0, shape[-1], shape[:-1]).astype(np.uint8)
    t1 = time.perf_counter()
    segment_metrics(p, gt, mode=mode, slice_axis=-1)
    stamps[mode] = time.perf_counter() - t1
stamps["total"] = time.perf_counter() - t0
stamps["cpu"] = time.process_time()
print(json.dumps(stamps))
"""

#: The warm-up job of the front ends, where it exists (new trees only).
WARMUP_CHILD = r"""
import json, time
t0 = time.perf_counter()
from napari_metaseg.core.progress import drain
from napari_metaseg.workflows.warmup import warm_up_engine
drain(warm_up_engine())
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def run_child(code, *, cache_dir, root=None):
    """Run ``code`` in a new interpreter with ``NUMBA_CACHE_DIR=cache_dir``; its JSON line."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    # cwd: not the repository root, whose package would shadow ``root`` (``-c`` puts cwd first)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=False, cwd=cache_dir)
    if out.returncode:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_and_warm(code=CHILD, *, root=None):
    """``(cold, warm)`` stage timings of ``code``: empty cache, then the cache it left."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        cold = run_child(code, cache_dir=cache, root=root)
        warm = run_child(code, cache_dir=cache, root=root)
    return cold, warm


def _row(label, stamps):
    keys = ("import", "2d", "slices", "3d", "total", "cpu")
    return f"| {label} | " + " | ".join(f"{stamps[k]:.2f}" if k in stamps else "-" for k in keys) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, action="append", default=[],
                        help="also measure the package in this directory (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="cold runs per tree (each with a new cache)")
    parser.add_argument("--warmup-job", action="store_true",
                        help="also time workflows.warm_up_engine cold and warm (current tree)")
    args = parser.parse_args(argv)
    trees = [("this tree", None)] + [(str(r), r) for r in args.root]
    print("seconds from a new process to its first results (import, then the first segment_metrics "
          "with GT in 2d, slices, 3d)")
    print("| tree, cache | import | 2d | slices | 3d | total | process CPU s |")
    print("|---|---|---|---|---|---|---|")
    for label, root in trees:
        for i in range(args.repeat):
            cold, warm = cold_and_warm(root=root)
            suffix = f" #{i + 1}" if args.repeat > 1 else ""
            print(_row(f"{label}, empty cache{suffix}", cold), flush=True)
            print(_row(f"{label}, warm cache{suffix}", warm), flush=True)
    if args.warmup_job:
        cold, warm = cold_and_warm(WARMUP_CHILD)
        print(f"\nwarm_up_engine (import + drain): {cold['total']:.2f} s with an empty cache, "
              f"{warm['total']:.2f} s warm")


if __name__ == "__main__":
    main()
