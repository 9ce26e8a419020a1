"""The engine compiles each numba kernel for as few type signatures as designed.

Every signature is a compilation on a new installation (seconds each for the big kernels), so
the cold start grows silently when an input dtype, a read-only flag or a literal reaches a kernel
unconverted. The calls run in a fresh interpreter (this process's kernels carry whatever other
tests compiled); its dispatchers are then inspected.
"""

import json
import subprocess
import sys

import pytest

#: Most signatures each core kernel may have after the calls below. Kernels only called from
#: other kernels ("callee") have none when their callers were loaded from numba's cache; those
#: inlined into their callers (``inline="always"``) are never compiled on their own.
EXPECTED = {
    "heatmaps._split_floats": 0,  # inlined
    "heatmaps._plogp": 0,  # inlined
    "heatmaps._class_major_measures": 0,  # inlined
    "segments._find": 0,  # inlined
    "inputs._row_stats": 1,
    "inputs._renormalise": 1,
    "inputs._softmax": 1,
    "inputs._count_bad_ids": 1,
    "heatmaps.padded_stride": 1,  # callee
    "heatmaps._measure_scratch": 1,  # callee
    "heatmaps._maps_kernel": 1,
    "heatmaps._sample_maps_kernel": 1,
    "segments._count_runs": 1,
    "segments._fill_runs": 1,
    "segments._union_rows": 1,  # callee
    "segments._union_planes": 1,
    "segments._number_runs": 1,
    "segments._paint_runs": 1,
    "segments._paint_runs_strided": 1,
    "segments._segment_info": 1,
    "segments._last_to_first": 1,
    "metrics._and_row": 1,  # callee
    "metrics._gather_row": 2,  # callee: segment ids (int32) and MC-sample maps (float32)
    "metrics._accumulate": 1,
    "metrics._overlaps": 1,
    # local IoU_adj (core/iou_local.py): only for iou_adj="local", never by the calls here
    "iou_local._local_union": 2,  # uint8 class ids, and int32 for any other
    "label_errors._pred_doubt_kernel": 2,  # float32 probabilities, and float64 for any other float
    "label_errors._pair_codes": 1,
    "label_errors._label_sums": 1,
    "label_errors._label_counts": 1,
    "scores._id_range": 2,  # uint8 maps (the readers'), and int64 for any other
    "scores._confusion_rows": 2,
    "meta_solvers._cd_quadratic": 1,
    "meta_fitted._ensemble_raw": 1,
    # OoD regions (core/ood.py): run by the OoD job (the warm-up's ood=True)
    "ood._candidate_runs": 1,  # callee of _label_sparse
    "ood._label_sparse": 1,
    "ood._gather_rows": 2,  # float32 probabilities, and float64
    "ood._region_sums": 1,
    "ood._pair_hits": 1,
}
#: Kernels the calls below need not reach: callees (see above) and other jobs' kernels.
NOT_ALWAYS_RUN = {"heatmaps.padded_stride", "heatmaps._measure_scratch", "segments._union_rows",
                  "metrics._and_row", "metrics._gather_row", "iou_local._local_union",
                  "ood._candidate_runs"}

_CHILD = r"""
import importlib, json, pkgutil, warnings
import numpy as np
from numba.core.registry import CPUDispatcher
import napari_metaseg.core as core
from napari_metaseg.core.progress import drain
from napari_metaseg.workflows import warm_up_engine

def counts():
    out = {}
    for info in pkgutil.iter_modules(core.__path__, prefix="napari_metaseg.core."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                out[info.name.rsplit(".", 1)[1] + "." + name] = len(obj.signatures)
    return out

warnings.simplefilter("ignore")
drain(warm_up_engine(label_errors=True, ood=True))
after_warm_up = counts()

# what the readers give, again: the warm-up must have compiled all of it already
rng = np.random.default_rng(0)
def case(spatial, q=4, dtype=np.float32):
    p = rng.dirichlet(np.full(q, 0.3), size=spatial).astype(dtype)
    g = p.argmax(-1).astype(np.uint8)
    g[(0,) * len(spatial)] = 255  # ignored
    return p, g
for spatial, mode in (((20, 24), "2d"), ((9, 10, 11), "3d"), ((9, 10, 11), "slices")):
    p, g = case(spatial)
    core.segment_metrics(p, g, mode=mode, slice_axis=-1)
    core.dispersion_maps(p, measures=("E",))
    core.label_segments(p.argmax(-1), mode=mode, slice_axis=-1)
    from napari_metaseg.workflows.ood import find_ood, ood_settings
    drain(find_ood(p, settings=ood_settings(mode=mode, threshold=0.3), ood=g == 1))
readers_again = counts()

# everything else a user may pass: other dtypes, read-only and non-contiguous arrays, other axes
p, g = case((9, 10, 11))
frozen = p.copy(); frozen.flags.writeable = False
for probs in (p, frozen, p.astype(np.float64), p.astype(np.float16), np.moveaxis(p, -1, 0),
              np.round(p * 255).astype(np.uint8), np.log(p + 1e-3) * 3):
    cax = 0 if probs.shape[0] == 4 else -1
    for gt in (g, g.astype(np.int16), g.astype(np.int32), g.astype(np.int64), g.astype(np.float32), None):
        for mode, axis in (("3d", -1), ("slices", 0), ("slices", 1), ("slices", 2)):
            core.segment_metrics(probs, gt, class_axis=cax, mode=mode, slice_axis=axis)
    core.dispersion_maps(probs, class_axis=cax)
    core.as_probabilities(probs, class_axis=cax)
core.segment_metrics(p, np.minimum(g, 3), ignore_index=None)
core.segment_metrics(np.stack([p, p[::-1]]), sample_axis=0, measures=("E", "MI", "VAR"))
core.dispersion_maps(p, samples=np.stack([p, p]), measures=("E", "MI", "VAR"))
for pred in (g, g.astype(np.int64), g.astype(np.int32), g > 1, frozen.argmax(-1)):
    for mode, axis in (("3d", -1), ("slices", 0), ("slices", 2)):
        core.label_segments(pred, mode=mode, slice_axis=axis)
from napari_metaseg.core.meta_dataset import synthetic_metrics_table
tab = synthetic_metrics_table(120, n_classes=4, random_state=1)
clf = core.MetaClassifier(kind="logistic").fit(tab)
gbm = core.MetaClassifier(kind="gbm", random_state=0).fit(tab)
core.MetaClassifier(kind="lasso").fit(tab)
bad = g.copy(); bad[:3, :3] = 3
for probs in (p, p.astype(np.float64), frozen):
    for gt in (bad, bad.astype(np.int64), bad.astype(np.int32)):
        seg, table = core.segment_metrics(probs, gt)
        for model in (clf, gbm):
            core.find_label_errors(table, model, maps=(probs, gt, seg), return_voxels=True)
        _, table = core.segment_metrics(probs, gt, mode="slices", slice_axis=0)
        core.find_label_errors(table, clf, maps=(probs, gt), slice_axis=0)
print(json.dumps({"after_warm_up": after_warm_up, "readers_again": readers_again, "all": counts()}))
"""


@pytest.fixture(scope="module")
def signature_counts():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=900,
                         check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_kernel_has_more_signatures_than_designed(signature_counts):
    counts = signature_counts["all"]
    unknown = sorted(set(counts) - set(EXPECTED))
    assert not unknown, f"new kernels {unknown}: add each to EXPECTED with its designed signature count"
    over = {k: (n, EXPECTED[k]) for k, n in counts.items() if n > EXPECTED[k]}
    assert not over, (
        "kernels compiled for more type signatures than designed (found, expected): "
        f"{over}; convert the inputs to the kernel's dtypes (and read-only) before calling it")
    # the calls reach every kernel that is called from Python
    missed = sorted(k for k, n in counts.items() if n == 0 and EXPECTED[k] and k not in NOT_ALWAYS_RUN)
    assert not missed, f"kernels the standard calls never ran (is the test still complete?): {missed}"


def test_warm_up_compiles_what_the_readers_need(signature_counts):
    """After the warm-up job, calls with the readers' dtypes compile nothing new."""
    before, again = signature_counts["after_warm_up"], signature_counts["readers_again"]
    grown = {k: (before[k], n) for k, n in again.items() if n != before[k]}
    assert not grown, f"kernels compiled after the warm-up (before, after): {grown}"
    assert sum(before.values()) >= 15, before
