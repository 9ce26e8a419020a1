"""Speed of the meta models on a large synthetic metrics table.

Fits and evaluates the meta models on ``--segments`` (default 100 000) segments with about 40
features (sizes, E/D/V/MI/VAR aggregates, 9 class probabilities) and prints median wall times
and their ratio to a plain ``LogisticRegression().fit`` on the same standardised data (run with
one BLAS/OpenMP thread, like the meta models; the default-thread time is shown too).

    python benchmarks/bench_meta.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench_meta.py --quick         # 20 000 segments, 1 repeat, no gbm evaluation

The acceptance target of the issue is checked at the end: a 10-split evaluation of the linear
models on 100 000 segments must take under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from napari_metaseg.core.meta_dataset import MetaDataset, feature_columns, synthetic_metrics_table
from napari_metaseg.core.meta_model import (
    MetaClassifier,
    MetaRegressor,
    evaluate,
    logistic_lasso_path,
    predict_table,
)

TARGET_EVAL_SECONDS = 30.0


def _time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _dataset(n_segments, n_cases, seed=0):
    per_case = int(np.ceil(n_segments / n_cases))
    ds = MetaDataset(min_interior=0)
    done = 0
    for i in range(n_cases):
        n = min(per_case, n_segments - done)
        if n <= 0:
            break
        ds.add(f"case{i:03d}", synthetic_metrics_table(n, n_classes=9, samples=True,
                                                      random_state=seed + i))
        done += n
    return ds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=100_000)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="repeats of each fit (median)")
    ap.add_argument("--eval-repeat", type=int, default=1, help="repeats of each evaluation")
    ap.add_argument("--threads", type=int, default=None,
                    help="limit BLAS/OpenMP threads (default: library defaults)")
    ap.add_argument("--quick", action="store_true",
                    help="20 000 segments, 1 repeat, skip the gbm evaluation")
    args = ap.parse_args(argv)
    if args.quick:
        args.segments, args.repeat, args.eval_repeat = 20_000, 1, 1

    ds = _dataset(args.segments, args.cases)
    table = ds.training_table()
    cols = feature_columns(table)
    print(f"napari-metaseg meta-model benchmark: {len(table)} segments x {len(cols)} features, "
          f"{len(ds.cases)} cases, share IoU_adj = 0: {(table['iou_adj'] == 0).mean():.3f}")
    print(f"python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
          f"numpy {np.__version__}, threads: {args.threads or 'default'}")

    Z = StandardScaler().fit_transform(table[cols].to_numpy(np.float64))
    y01 = (table["iou_adj"].to_numpy() > 0).astype(int)

    # compile the numba kernels outside the timings
    small = table.iloc[:500]
    MetaClassifier(kind="lasso", random_state=0).fit(small)
    MetaClassifier(kind="gbm", random_state=0).fit(small).predict_proba(small)

    fitted = {}

    def keep(name, est):
        def run():
            fitted[name] = est().fit(table)
        return run

    rows = []
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the reference fit is not ours
        # The meta models fit with one BLAS/OpenMP thread (see meta_model._single_threaded);
        # the ratio uses the reference under the same limit, and the library default is shown.
        with threadpool_limits(limits=1):
            base, _ = _time(lambda: LogisticRegression().fit(Z, y01), args.repeat)
        rows.append(("LogisticRegression().fit, 1 thread (reference)", base, args.repeat))
        med, _ = _time(lambda: LogisticRegression().fit(Z, y01), args.repeat)
        rows.append(("LogisticRegression().fit, default threads", med, args.repeat))
        cases = [
            ("MetaClassifier lasso fit (12-lambda selection + refit)",
             keep("lasso", lambda: MetaClassifier(kind="lasso", random_state=0))),
            ("LASSO path, 30 lambdas (logistic_lasso_path)",
             lambda: logistic_lasso_path(table, min_interior=0)),
            ("MetaClassifier logistic fit",
             keep("logistic", lambda: MetaClassifier(kind="logistic", random_state=0))),
            ("MetaRegressor linear fit",
             keep("linear", lambda: MetaRegressor(kind="linear", random_state=0))),
            ("MetaRegressor lasso fit",
             keep("rlasso", lambda: MetaRegressor(kind="lasso", random_state=0))),
            ("MetaClassifier gbm fit",
             keep("gbm", lambda: MetaClassifier(kind="gbm", random_state=0))),
            ("MetaRegressor gbm fit",
             keep("rgbm", lambda: MetaRegressor(kind="gbm", random_state=0))),
        ]
        for name, fn in cases:
            med, _ = _time(fn, args.repeat)
            rows.append((name, med, args.repeat))
        med, _ = _time(lambda: predict_table(table, fitted["gbm"], fitted["rgbm"]), args.repeat)
        rows.append(("predict_table with gbm classifier + regressor", med, args.repeat))
        med, _ = _time(lambda: predict_table(table, fitted["lasso"], fitted["linear"]),
                       args.repeat)
        rows.append(("predict_table with linear models", med, args.repeat))

        evals = [("evaluate, 10 grouped splits, linear models", ("linear",))]
        if not args.quick:
            evals.append(("evaluate, 10 grouped splits, linear + gbm", ("linear", "gbm")))
        eval_times = {}
        for name, models in evals:
            med, _ = _time(lambda m=models: evaluate(ds, n_splits=10, models=m), args.eval_repeat)
            rows.append((name, med, args.eval_repeat))
            eval_times[models] = med

    width = max(len(r[0]) for r in rows)
    print()
    print(f"| {'step':<{width}} | median s | x LogisticRegression().fit | runs |")
    print(f"|{'-' * (width + 2)}|---------:|---------------------------:|-----:|")
    for name, med, n in rows:
        print(f"| {name:<{width}} | {med:8.3f} | {med / base:26.1f} | {n:4d} |")
    t_lin = eval_times[("linear",)]
    scale = 100_000 / len(table)
    verdict = "OK" if t_lin * scale < TARGET_EVAL_SECONDS else "TOO SLOW"
    print()
    print(f"10-split evaluation of the linear models: {t_lin:.1f} s on {len(table)} segments "
          f"(target < {TARGET_EVAL_SECONDS:.0f} s on 100 000): {verdict}")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    raise SystemExit(main())
