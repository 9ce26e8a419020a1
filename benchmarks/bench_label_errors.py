"""Label-error detection against cleanlab, at object level, on real data.

For every dataset, errors are injected into the ground truth of held-out cases
(:func:`napari_metaseg.core.inject_label_errors`, all four kinds, objects of at least 10 voxels),
the meta classifier is trained on the *other* cases (clean labels), and both methods look for
the errors in the corrupted labels:

* **ours**: ``segment_metrics`` against the corrupted labels, then ``find_label_errors``
  (segment, gt_object and region proposals);
* **cleanlab**: ``cleanlab.segmentation.filter.find_label_issues`` (its pixel mask), the mask's
  pixels grouped into connected regions with the same connectivity as ours, each region scored
  by 1 - its mean pixel label quality (``cleanlab.segmentation.rank.get_label_quality_scores``).

Both proposal sets go through the same :func:`napari_metaseg.core.evaluate_label_errors`
(IoU_adj >= 0.25 matching, thresholds 0..1 step 0.05, AUPRC, per error kind), once with every
proposal (each method's default output) and once keeping proposals of >= 10 voxels. Times cover
finding the errors in the held-out cases (not training), median over the seeds.

Datasets (under ``--data``, default ``../shared/data`` beside the repository):

* ``brain/sub-*/{softmax_rf,gt}.nii.gz``: leave one subject out (train on the others), slice-wise
  along z (the classifier is 2D), error rate 5 % of the GT objects;
* ``nuclei2d/{softmax.npy,gt.tif}``: 128 x 128 tiles, train on the left half's tiles (the pixel
  classifier's training half), test on the right half's, error rate 20 %.

    pip install -e ".[benchmark]"
    python benchmarks/bench_label_errors.py                # 3 seeds per dataset (~10 min)
    python benchmarks/bench_label_errors.py --seeds 1      # quicker
    python benchmarks/bench_label_errors.py --json out.json

Target of issue 6: our object-level F1 and AUPRC above cleanlab's on every dataset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from napari_metaseg.core import (
    MetaClassifier,
    evaluate_label_errors,
    find_label_errors,
    inject_label_errors,
    label_segments,
    segment_metrics,
)

MIN_ERROR_SIZE = 10
PROPOSAL_SIZES = (1, 10)
#: Precision of the first k proposals (what a reviewer works through first), proposals >= 10 voxels.
TOP_K = (25, 50, 100)


# ============================================================================================
# Data
# ============================================================================================
def brain_datasets(root):
    from napari_metaseg.io.nifti import read_nifti, read_nifti_probabilities

    subjects = sorted(p for p in (root / "brain").glob("sub-*")
                      if (p / "softmax_rf.nii.gz").exists() and (p / "gt.nii.gz").exists())
    if len(subjects) < 2:
        return []
    cases = {}
    for s in subjects:
        probs, _ = read_nifti_probabilities(s / "softmax_rf.nii.gz")
        gt, _ = read_nifti(s / "gt.nii.gz")
        cases[s.name] = (np.ascontiguousarray(probs), np.ascontiguousarray(gt).astype(np.uint8))
    settings = {"mode": "slices", "slice_axis": 2}
    return [(f"brain {held} (train {', '.join(c for c in cases if c != held)})",
             {c: v for c, v in cases.items() if c != held}, {held: cases[held]}, settings, 0.05)
            for held in cases]


def nuclei_datasets(root):
    folder = root / "nuclei2d"
    if not (folder / "softmax.npy").exists() or not (folder / "gt.tif").exists():
        return []
    from skimage.io import imread

    probs = np.load(folder / "softmax.npy").astype(np.float32)
    gt = imread(folder / "gt.tif").astype(np.uint8)
    tile = 128
    train, test = {}, {}
    for r in range(gt.shape[0] // tile):
        for c in range(gt.shape[1] // tile):
            sl = np.s_[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
            target = train if (c + 0.5) * tile < gt.shape[1] / 2 else test
            target[f"r{r}c{c}"] = (np.ascontiguousarray(probs[sl]), np.ascontiguousarray(gt[sl]))
    return [("nuclei2d right-half tiles (train left half)", train, test, {"mode": "2d"}, 0.2)]


# ============================================================================================
# Methods
# ============================================================================================
def train_classifier(cases, settings):
    tables = []
    for name, (probs, gt) in cases.items():
        _, t = segment_metrics(probs, gt, **settings)
        t.insert(0, "case", name)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    rows = table[table["S_in"] >= 1]
    if (rows["iou_adj"] > 0).nunique() < 2:  # few segments (nuclei tiles): use them all
        rows = table
    y = (rows["iou_adj"] > 0).astype(int)
    return MetaClassifier(kind="lasso", random_state=0).fit(rows, y), len(rows), int((y == 0).sum())


def ours(name, probs, bad, clf, settings):
    seg, table = segment_metrics(probs, bad, **settings)
    table.insert(0, "case", name)
    return find_label_errors(table, clf, maps={name: (probs, bad, seg)}, return_voxels=True, **settings)


def _voxel_lists(lab, n):
    flat = lab.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n + 2))
    return [order[bounds[i]:bounds[i + 1]] for i in range(1, n + 1)]


def cleanlab_regions(name, probs, bad, settings):
    from cleanlab.segmentation.filter import find_label_issues
    from cleanlab.segmentation.rank import get_label_quality_scores

    if bad.ndim == 3:  # slices as images: (N, H, W) labels, (N, K, H, W) probabilities
        ax = settings["slice_axis"]
        labels = np.ascontiguousarray(np.moveaxis(bad, ax, 0))
        pp = np.ascontiguousarray(np.moveaxis(probs, (ax, -1), (0, 1)))
    else:
        labels = bad[None]
        pp = np.ascontiguousarray(np.moveaxis(probs, -1, 0)[None])
    mask = find_label_issues(labels, pp, verbose=False, n_jobs=1)
    _, pixel_scores = get_label_quality_scores(labels, pp, verbose=False)
    if bad.ndim == 3:
        mask = np.moveaxis(mask, 0, ax)
        pixel_scores = np.moveaxis(pixel_scores, 0, ax)
    else:
        mask, pixel_scores = mask[0], pixel_scores[0]
    lab, n = label_segments(mask.astype(np.uint8), **settings)
    # label_segments labels the unflagged pixels too; keep the flagged components
    keep = np.zeros(n + 1, bool)
    keep[lab[mask]] = True
    flat_scores = pixel_scores.ravel()
    regions = [v for v, k in zip(_voxel_lists(lab, n), keep[1:], strict=True) if k]
    return pd.DataFrame({"case": name, "kind": "cleanlab",
                         "score": [1.0 - float(flat_scores[v].mean()) for v in regions],
                         "size": [v.size for v in regions], "voxels": regions})


# ============================================================================================
# Running
# ============================================================================================
def run_dataset(title, train, test, settings, rate, seeds):
    t0 = time.perf_counter()
    clf, n_rows, n_zero = train_classifier(train, settings)
    print(f"\n## {title}\nmeta classifier: {n_rows} training segments ({n_zero} with IoU_adj = 0), "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    results = {m: {s: [] for s in PROPOSAL_SIZES} for m in ("ours", "cleanlab")}
    times = {"ours": [], "cleanlab": []}
    counts = []
    for seed in seeds:
        found = {"ours": [], "cleanlab": []}
        truths = []
        for j, (name, (probs, gt)) in enumerate(test.items()):
            bad, errors = inject_label_errors(gt, rate=rate, seed=1000 * seed + j,
                                              min_size=MIN_ERROR_SIZE, **settings)
            errors.insert(0, "case", name)
            truths.append(errors)
            for method, fn, extra in (("ours", ours, (clf,)), ("cleanlab", cleanlab_regions, ())):
                t1 = time.perf_counter()
                found[method].append(fn(name, probs, bad, *extra, settings))
                times[method].append(time.perf_counter() - t1)
        truth = pd.concat(truths, ignore_index=True)
        counts.append(truth["kind"].value_counts().to_dict())
        for method, parts in found.items():
            props = pd.concat(parts, ignore_index=True)
            for size in PROPOSAL_SIZES:
                kept = props[props["size"] >= size].sort_values("score", ascending=False, kind="stable")
                kept = kept.reset_index(drop=True)
                ev = evaluate_label_errors(kept, truth)
                hit = np.zeros(len(kept), bool)
                hit[ev.matches["proposal"].unique()] = True
                top = {f"p@{k}": float(hit[:k].mean()) if len(kept) >= k else float("nan") for k in TOP_K}
                results[method][size].append((len(kept), ev.summary().assign(**top)))
    return clf, results, times, counts


def summarise(results):
    """Mean over seeds of best F1 (with precision, recall) and AUPRC, per method, size, kind."""
    rows = []
    for method, by_size in results.items():
        for size, runs in by_size.items():
            frames = pd.concat([s.assign(n_proposals=n) for n, s in runs])
            mean = frames.groupby("kind", sort=False).mean(numeric_only=True)
            for kind, r in mean.iterrows():
                rows.append({"method": method, "min_size": size, "kind": kind,
                             "n_errors": r["n_errors"], "n_proposals": r["n_proposals"],
                             "best_f1": r["best_f1"], "precision": r["precision"],
                             "recall": r["recall"], "auprc": r["auprc"],
                             **{f"p@{k}": r[f"p@{k}"] for k in TOP_K}})
    return pd.DataFrame(rows)


def print_table(summary, times, n_test_cases):
    kinds = list(dict.fromkeys(summary["kind"]))
    for size in PROPOSAL_SIZES:
        sub = summary[summary["min_size"] == size]
        label = "every proposal" if size == 1 else f"proposals >= {size} voxels"
        print(f"\n{label}: best F1 / AUPRC (precision, recall at the best-F1 threshold)")
        print("| method | proposals | " + " | ".join(kinds) + " |")
        print("|---|---|" + "---|" * len(kinds))
        for method in ("ours", "cleanlab"):
            m = sub[sub["method"] == method].set_index("kind")
            cells = [f"**{m.loc[k, 'best_f1']:.3f} / {m.loc[k, 'auprc']:.3f}** "
                     f"({m.loc[k, 'precision']:.2f}, {m.loc[k, 'recall']:.2f})" if k == "all" else
                     f"{m.loc[k, 'best_f1']:.2f} / {m.loc[k, 'auprc']:.2f}" for k in kinds]
            print(f"| {method} | {m.loc['all', 'n_proposals']:.0f} | " + " | ".join(cells) + " |")
        if size == max(PROPOSAL_SIZES):
            alls = sub[sub["kind"] == "all"].set_index("method")
            parts = [f"{m} " + ", ".join(f"{alls.loc[m, f'p@{k}']:.2f}" for k in TOP_K)
                     for m in ("ours", "cleanlab")]
            print(f"precision of the first {', '.join(map(str, TOP_K))} proposals: " + "; ".join(parts))
    t_ours = statistics.median(times["ours"])
    t_cl = statistics.median(times["cleanlab"])
    print(f"\ntime per held-out case (median over seeds, {n_test_cases} case(s)): ours {t_ours:.2f} s, "
          f"cleanlab {t_cl:.2f} s, cleanlab / ours = {t_cl / t_ours:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the summary tables here")
    args = ap.parse_args(argv)
    try:
        import cleanlab
    except ImportError:
        sys.exit("cleanlab is not installed: pip install -e '.[benchmark]'")
    warnings.filterwarnings("ignore", category=UserWarning)
    datasets = brain_datasets(args.data) + nuclei_datasets(args.data)
    if not datasets:
        sys.exit(f"no datasets under {args.data}")
    print(f"cleanlab {cleanlab.__version__}; errors: all four kinds on GT objects >= "
          f"{MIN_ERROR_SIZE} voxels; {args.seeds} seed(s)")
    out, verdict = {}, []
    for title, train, test, settings, rate in datasets:
        _, results, times, counts = run_dataset(title, train, test, settings, rate, range(args.seeds))
        summary = summarise(results)
        print("injected errors per seed: " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for c in counts))
        print_table(summary, times, len(test))
        out[title] = {"summary": summary.to_dict("records"),
                      "seconds": {k: statistics.median(v) for k, v in times.items()}}
        default = summary[(summary["min_size"] == 1) & (summary["kind"] == "all")].set_index("method")
        ok = all(default.loc["ours", c] > default.loc["cleanlab", c] for c in ("best_f1", "auprc"))
        verdict.append((title, ok))
    print("\ntarget (every proposal: our F1 and AUPRC above cleanlab's):")
    for title, ok in verdict:
        print(f"  {'met' if ok else 'NOT met'}: {title}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
