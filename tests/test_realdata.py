"""End to end on ../shared/data, checked against the figures its generator measured independently.

``metrics.json`` holds, per dataset, slice-wise segment counts, the share of IoU_adj = 0 and mean
IoU / IoU_adj per class, computed by the data generator with scikit-image labelling and set
operations; our engine must reproduce them (they are rounded to 4 decimals there).
"""

import json

import numpy as np
import pytest

from napari_metaseg.core import segment_metrics
from napari_metaseg.io import read_nifti, read_nifti_probabilities

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def brain(shared_data):
    out = {}
    for sub in ("sub-01", "sub-02"):
        d = shared_data / "brain" / sub
        probs, affine = read_nifti_probabilities(d / "softmax_rf.nii.gz")
        gt, gt_affine = read_nifti(d / "gt.nii.gz")
        np.testing.assert_allclose(affine, gt_affine)
        out[sub] = probs, gt
    return out


@pytest.fixture(scope="module")
def figures(shared_data):
    return json.loads((shared_data / "metrics.json").read_text())


def _check_against(table, ref):
    assert len(table) == ref["all"]["n_segments"]
    assert (table["iou_adj"] == 0).mean() == pytest.approx(ref["all"]["share_iou_adj_0"], abs=6e-5)
    assert table["iou_adj"].mean() == pytest.approx(ref["all"]["mean_iou_adj"], abs=6e-5)
    big = table[table["S"] >= 10]
    assert len(big) == ref["all"]["n_segments_ge10px"]
    for cls, r in ref["per_class"].items():
        t = table[table["class"] == int(cls)]
        assert len(t) == r["n_segments"]
        assert t["iou"].mean() == pytest.approx(r["mean_iou"], abs=6e-5)
        assert t["iou_adj"].mean() == pytest.approx(r["mean_iou_adj"], abs=6e-5)
        assert (t["iou_adj"] == 0).mean() == pytest.approx(r["share_iou_adj_0"], abs=6e-5)
        assert t["S"].median() == r["median_size_px"]


@pytest.mark.parametrize("sub", ["sub-01", "sub-02"])
def test_brain_slicewise_matches_generator_figures(brain, figures, sub):
    probs, gt = brain[sub]
    seg, table = segment_metrics(probs, gt, mode="slices", slice_axis=-1)
    _check_against(table, figures["brain"][sub]["rf"]["segments_2d"])
    # every segment lies in the slice the table says
    z = np.nonzero(seg)[2]
    first = np.zeros(len(table) + 1, np.int64)
    first[seg[np.nonzero(seg)]] = z
    np.testing.assert_array_equal(first[1:], table["slice"].to_numpy())
    assert np.isfinite(table.drop(columns=["iou", "iou_adj"]).to_numpy(np.float64)).all()


@pytest.mark.parametrize("sub", ["sub-01", "sub-02"])
def test_brain_3d_is_consistent(brain, sub):
    probs, gt = brain[sub]
    _, t3 = segment_metrics(probs, gt, mode="3d")
    _, t2 = segment_metrics(probs, gt, mode="slices", slice_axis=-1)
    # 3D components are unions of slice-wise ones: never more of them, same voxel totals
    assert len(t3) < len(t2)
    assert t3["S"].sum() == t2["S"].sum() == gt.size
    for c in range(4):
        assert t3.loc[t3["class"] == c, "S"].sum() == t2.loc[t2["class"] == c, "S"].sum()
    # in 3D more neighbours are checked, so the interior can only shrink
    assert t3["S_in"].sum() <= t2["S_in"].sum()
    assert (t3["iou_adj"] >= t3["iou"] - 1e-12).all()
    assert t3["iou_adj"].between(0, 1).all()
    # the uncertainty metrics are informative on a real classifier: higher entropy, lower quality
    assert t3["E"].corr(t3["iou_adj"]) < -0.3
    assert t2["E"].corr(t2["iou_adj"]) < -0.3


@pytest.mark.parametrize("part", ["whole", "right_half_only"])
def test_nuclei_matches_generator_figures(shared_data, figures, part):
    tifffile = pytest.importorskip("tifffile")
    probs = np.load(shared_data / "nuclei2d" / "softmax.npy")
    gt = tifffile.imread(shared_data / "nuclei2d" / "gt.tif")
    ref = figures["nuclei2d"]
    if part != "whole":
        probs, gt, ref = probs[:, 256:], gt[:, 256:], ref[part]
    _, table = segment_metrics(probs, gt)
    _check_against(table, ref["segments_3d"])
