"""Batch throughput of `napari-metaseg metrics`: serial against a local Dask cluster.

Cases (issue 7): 200 cases of 512 x 512 x 19 float32 softmax (smooth class regions, as
``bench_core.smooth_softmax``) with ground truth, stored as ``<case>_softmax.npy`` /
``<case>_gt.npy`` (20 MB each; 40 distinct arrays, each written to 5 case files). Each case is
what the CLI does per case: read both files, compute the metrics, write the Parquet table
(``napari_metaseg.workflows.metrics_task``).

Runs (same cases, same output settings):

* serial, numba on all cores (the CLI default without ``--workers``);
* a local Dask cluster of ``--workers`` single-threaded processes (``--workers 2``), wall time
  including the cluster start, and the steady rate between the first and the last result;
* serial with one numba thread on a subset (the per-case cost of one worker).

It prints cases/s, the ratio against serial, the peak resident memory of every process that
ran cases (``ru_maxrss``), the per-case cost of a real brain volume (197 x 233 x 189 x 4 uint8
NIfTI from ``../shared/data``, slice-wise and 3D, one thread and all cores), and from that an
estimate for a 1000-volume BraTS cohort on a 10-node cluster.

The files are flushed and read once before the runs, so every run reads from the page cache.

Run: ``python benchmarks/bench_cli.py`` (``--cases 40`` for a quicker run; the data go to a
temporary folder that is removed unless ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def generate(folder: Path, n_cases: int, size: int, q: int, n_unique: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_core import smooth_softmax

    folder.mkdir(parents=True, exist_ok=True)
    for u in range(min(n_unique, n_cases)):
        p, gt = smooth_softmax((size, size), q, cell=48, seed=u)
        for i in range(u, n_cases, n_unique):
            np.save(folder / f"case{i:04d}_softmax.npy", p)
            np.save(folder / f"case{i:04d}_gt.npy", gt)


def _peak_by_pid(results):
    peaks = {}
    for r in results:
        if r.get("pid") is not None:
            peaks[r["pid"]] = max(peaks.get(r["pid"], 0.0), r["peak_rss_mb"])
    return peaks


def _run(cases, out, settings, **kw):
    from napari_metaseg.batch import run_tasks
    from napari_metaseg.workflows import metrics_task

    t0 = time.perf_counter()
    stamps, results = [], []
    for r in run_tasks(metrics_task, cases, args=(out, settings), **kw):
        stamps.append(time.perf_counter() - t0)
        results.append(r)
    wall = time.perf_counter() - t0
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} cases failed, e.g. {failed[0]['case']}: {failed[0]['error']}")
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"wall": wall, "rate": len(cases) / wall, "steady": steady, "peaks": _peak_by_pid(results),
            "per_case": statistics.median(r["seconds"] for r in results)}


def brain_costs(tmp: Path):
    """Median seconds per case of a real brain volume: (mode, threads) -> seconds."""
    from napari_metaseg.batch import run_case
    from napari_metaseg.io.cases import Case
    from napari_metaseg.workflows import metrics_task

    sub = SHARED / "brain" / "sub-01"
    if (sub / "softmax_rf.nii.gz").is_file():
        case = Case("sub-01", sub / "softmax_rf.nii.gz", sub / "gt.nii.gz")
        label = "brain sub-01 197x233x189x4 uint8 NIfTI"
    else:
        sample = ROOT / "sample_data"
        case = Case("brain3d", sample / "brain3d_softmax.nii.gz", sample / "brain3d_gt.nii.gz")
        label = "brain3d sample (../shared/data absent)"
    out = {"peak": 0.0}
    ncpu = os.cpu_count() or 1
    for mode in ("slices", "3d"):
        settings = {"mode": mode, "slice_axis": -1, "ignore_index": 255, "class_axis": -1}
        for threads in (1, ncpu):
            times = []
            for _ in range(3):
                r = run_case(metrics_task, case, tmp / "brain", settings, threads=threads)
                if r["status"] != "done":
                    raise SystemExit(f"brain case failed: {r['error']}")
                times.append(r["seconds"])
                out["peak"] = max(out["peak"], r["peak_rss_mb"])
            out[(mode, threads)] = statistics.median(times[1:])  # first run warms the caches
    return label, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--unique", type=int, default=40, help="distinct arrays among the cases")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate:
        generate(Path(args.generate), args.cases, args.size, args.classes, args.unique)
        return

    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    try:
        data = tmp / "data"
        t0 = time.perf_counter()
        # generated in a child process, so that this process's peak memory is the serial run's
        subprocess.run([sys.executable, __file__, "--generate", str(data), "--cases", str(args.cases),
                        "--size", str(args.size), "--classes", str(args.classes),
                        "--unique", str(args.unique)], check=True)
        print(f"generated {args.cases} cases of {args.size}x{args.size}x{args.classes} float32 "
              f"in {time.perf_counter() - t0:.1f} s ({tmp})")
        # flush the freshly written files and read them once: every run then starts from the same
        # state (files in the page cache, no writeback competing with the first run)
        os.sync()
        for f in sorted(data.iterdir()):
            with f.open("rb") as fh:
                while fh.read(1 << 24):
                    pass
        from napari_metaseg.io.cases import find_cases

        cases = find_cases([data])
        settings = {"mode": "2d", "slice_axis": -1, "ignore_index": 255, "class_axis": -1}
        _run(cases[:2], tmp / "warm", settings)  # numba cache, imports
        ncpu = os.cpu_count() or 1
        serial = _run(cases, tmp / "serial", settings)
        dask = _run(cases, tmp / "dask", settings, workers=args.workers)
        n1 = max(2, len(cases) // 5)
        one = _run(cases[:n1], tmp / "one", settings, threads=1)
        label, brain = brain_costs(tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    mb = args.size * args.size * args.classes * 4 / 2**20
    print(f"\n{args.cases} cases of {args.size} x {args.size} x {args.classes} float32 ({mb:.0f} MB each) "
          f"+ GT, {ncpu} cores, metrics mode 2d, one Parquet file per case; load average before: "
          f"{load[0]:.1f} (other processes share the machine)")
    print("| run | cases | wall s | cases/s | x serial | median s per case | peak RSS per process MB |")
    print("|---|---:|---:|---:|---:|---:|---|")
    rows = [
        (f"serial, numba on {ncpu} cores", len(cases), serial),
        (f"local Dask, {args.workers} workers x 1 thread (incl. start)", len(cases), dask),
        ("serial, 1 numba thread", n1, one),
    ]
    for name, n, r in rows:
        peaks = ", ".join(f"{v:.0f}" for v in sorted(r["peaks"].values()))
        print(f"| {name} | {n} | {r['wall']:.1f} | {r['rate']:.2f} | {r['rate'] / serial['rate']:.2f} | "
              f"{r['per_case']:.3f} | {peaks} |")
    print(f"| local Dask steady rate (first to last result) | | | {dask['steady']:.2f} | "
          f"{dask['steady'] / serial['rate']:.2f} | | |")

    print(f"\nper-case cost of a real volume ({label}; read + metrics + Parquet; median of 2 after warm-up):")
    print("| mode | 1 thread s | all cores s |")
    print("|---|---:|---:|")
    for mode in ("slices", "3d"):
        print(f"| {mode} | {brain[(mode, 1)]:.2f} | {brain[(mode, ncpu)]:.2f} |")

    eff = dask["steady"] / (args.workers * one["rate"]) if one["rate"] else float("nan")
    t1 = brain[("slices", 1)]
    print(f"\nestimate, 1000 BraTS volumes (240x240x155x4, ~the size above) slice-wise, 10 nodes, one "
          f"single-threaded worker per core, scaling efficiency {eff:.2f} as measured here "
          f"({args.workers} workers vs 1-thread serial):")
    for cores in (2, 8, 32):
        total = 1000 * t1 / (10 * cores * eff)
        print(f"  {cores:>2} cores per node: 1000 x {t1:.2f} s / (10 x {cores} x {eff:.2f}) = {total:.0f} s "
              f"({total / 60:.1f} min)")
    peak = max(dask["peaks"].values())
    print(f"  memory: {peak:.0f} MB peak per worker here (2D cases); this process peaked at "
          f"{brain['peak']:.0f} MB after the brain volumes (an upper bound for one volume per worker), "
          f"i.e. about {64 * 1024 / brain['peak']:.0f} volume workers fit in 64 GB per node.")


if __name__ == "__main__":
    main()
