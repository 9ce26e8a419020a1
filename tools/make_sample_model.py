"""Make ``sample_data/brain3d_meta_model.json.gz``: meta models for reviewing the brain sample.

The brain sample is subject sub-02; a model that reviews it must be trained on another case.
This trains, on subject **sub-01** resampled exactly as the sample (``tools/make_brain_sample.py``:
crop, 2 x 2 x 2 block mean / majority, uint8 softmax), with the segments of the review panel's
default mode (slice-wise along z): a LASSO meta classifier (IoU_adj = 0 vs > 0; the label-error
search uses it), a linear meta regressor (IoU_adj) and the image-level regressor (mean IoU of a
slice; the quality strip and the Triage tab rank by it), the defaults of ``workflows.train`` for
slice-wise segments. No training data is written beside it (a refit uses the new cases only).
Deterministic.

Run from the repository root:
``python tools/make_sample_model.py ../shared/data/brain/sub-01``.
"""

import importlib.util
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package from this checkout


def _brain_sample_module():
    spec = importlib.util.spec_from_file_location("make_brain_sample", HERE / "make_brain_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def resampled_case(src):
    """(probs float32 classes last, gt uint8) of a subject, made as the brain sample is."""
    mbs = _brain_sample_module()
    src = Path(src)
    sm = nib.load(src / "softmax_rf.nii.gz").get_fdata(dtype=np.float32)[mbs.CROP]
    sm = sm / sm.sum(axis=-1, keepdims=True)
    probs = np.round(mbs.blocks(sm).mean(axis=3) * 255).astype(np.uint8)  # as stored in the sample
    gt = np.asanyarray(nib.load(src / "gt.nii.gz").dataobj)[mbs.CROP]
    counts = np.stack([(mbs.blocks(gt) == c).sum(axis=3) for c in range(4)], axis=-1)
    gt = counts.argmax(axis=-1).astype(np.uint8)
    from napari_metaseg.core import as_probabilities

    return as_probabilities(probs, scale=1 / 255), gt


def main(src, dst="sample_data/brain3d_meta_model.json.gz", case="sub-01"):
    from napari_metaseg.core import MetaClassifier, MetaRegressor, save_models, segment_metrics
    from napari_metaseg.workflows.quality import fit_image_model, predicted_classes, with_image_scores

    t0 = time.perf_counter()
    probs, gt = resampled_case(src)
    seg, table = segment_metrics(probs, gt, mode="slices", slice_axis=-1)
    table.insert(0, "case", case)
    clf = MetaClassifier(kind="lasso", random_state=0).fit(table)
    reg = MetaRegressor(kind="linear", random_state=0).fit(table)
    # recorded so that the CLI segments other volumes the same way (slice-wise along z)
    segmentation = {"mode": "slices", "slice_axis": -1, "ignore_index": 255}
    scored = with_image_scores(table, predicted_classes(seg, table), gt, segmentation=segmentation)
    image, note = fit_image_model(scored, segmentation)
    print(f"image-level regressor: {note}")
    path = save_models(dst, classifier=clf, regressor=reg, segmentation=segmentation,
                       image_quality={"regressor": image.regressor, "by": image.by, "target": image.target,
                                      "background": image.background, "fail_below": image.fail_below})
    p = clf.predict_proba(table)[:, 1]
    y = (table["iou_adj"].to_numpy() > 0).astype(int)
    from sklearn.metrics import roc_auc_score

    print(f"{len(table)} segments ({int((y == 0).sum())} with IoU_adj = 0); training AUROC "
          f"{roc_auc_score(y, p):.3f}; {Path(path).stat().st_size / 1024:.1f} KiB; "
          f"{time.perf_counter() - t0:.1f} s")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:])
