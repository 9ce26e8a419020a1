"""Label errors on the real data (../shared/data): injected errors are found far above chance.

The thresholds sit below our measured figures (seed 0) and above cleanlab's on the same cases
(measured by benchmarks/bench_label_errors.py, which needs cleanlab; not installed for tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core import (
    MetaClassifier,
    evaluate_label_errors,
    find_label_errors,
    inject_label_errors,
    segment_metrics,
)

pytestmark = pytest.mark.realdata


def _classifier(cases, settings):
    tables = []
    for name, (probs, gt) in cases.items():
        _, t = segment_metrics(probs, gt, **settings)
        t.insert(0, "case", name)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    rows = table[table["S_in"] >= 1]
    if (rows["iou_adj"] > 0).nunique() < 2:
        rows = table
    return MetaClassifier(kind="lasso", random_state=0).fit(rows)


def _run(train, test, settings, rate):
    clf = _classifier(train, settings)
    found, truth = [], []
    for j, (name, (probs, gt)) in enumerate(test.items()):
        bad, errors = inject_label_errors(gt, rate=rate, seed=j, min_size=10, **settings)
        errors.insert(0, "case", name)
        truth.append(errors)
        seg, table = segment_metrics(probs, bad, **settings)
        table.insert(0, "case", name)
        found.append(find_label_errors(table, clf, maps={name: (probs, bad, seg)}, return_voxels=True,
                                       **settings))
    found = pd.concat(found, ignore_index=True)
    assert found["score"].between(0, 1).all()
    summary = evaluate_label_errors(found, pd.concat(truth, ignore_index=True)).summary()
    return found, summary.set_index("kind")


def test_brain_sub02_errors_found(shared_data):
    """Measured (seed 0): 160 errors, best F1 0.58, AUPRC 0.79; cleanlab 0.46 / 0.46."""
    from napari_metaseg.io import read_nifti, read_nifti_probabilities

    cases = {}
    for sub in ("sub-01", "sub-02"):
        d = shared_data / "brain" / sub
        probs, _ = read_nifti_probabilities(d / "softmax_rf.nii.gz")
        gt, _ = read_nifti(d / "gt.nii.gz")
        cases[sub] = (np.ascontiguousarray(probs), np.ascontiguousarray(gt).astype(np.uint8))
    settings = {"mode": "slices", "slice_axis": 2}
    found, summary = _run({"sub-01": cases["sub-01"]}, {"sub-02": cases["sub-02"]}, settings, 0.05)
    assert summary.loc["all", "n_errors"] >= 100
    assert summary.loc["all", "auprc"] > 0.7
    assert summary.loc["all", "best_f1"] > 0.5
    assert {"segment", "gt_object", "region"} <= set(found["kind"])


def test_nuclei_right_half_errors_found(shared_data):
    """Measured (seed 0, 8 right-half tiles): 12 errors, best F1 0.94, AUPRC 0.995."""
    from skimage.io import imread

    probs = np.load(shared_data / "nuclei2d" / "softmax.npy").astype(np.float32)
    gt = imread(shared_data / "nuclei2d" / "gt.tif").astype(np.uint8)
    tiles = {}
    for r in range(4):
        for c in range(4):
            sl = np.s_[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128]
            tiles[f"r{r}c{c}"] = (np.ascontiguousarray(probs[sl]), np.ascontiguousarray(gt[sl]))
    train = {k: v for k, v in tiles.items() if int(k[3]) < 2}
    test = {k: v for k, v in tiles.items() if int(k[3]) >= 2}
    _, summary = _run(train, test, {"mode": "2d"}, 0.2)
    assert summary.loc["all", "n_errors"] >= 10
    assert summary.loc["all", "auprc"] > 0.9
    assert summary.loc["all", "best_f1"] > 0.85
