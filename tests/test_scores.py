"""Evaluation scores (core.scores): segmentation_scores against scikit-learn and hand cases,
instance_ap against pycocotools (test-only dependency) and hand cases."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from napari_metaseg.core import instance_ap, segmentation_scores


# ============================================================================================
# segmentation_scores
# ============================================================================================
def _sklearn_row(pred, gt, classes, ignore=255, background=0):
    """IoU, Dice per class and their means over the classes present, from scikit-learn."""
    keep = gt != ignore
    p, g = pred[keep], gt[keep]
    iou = jaccard_score(g, p, labels=classes, average=None, zero_division=0)  # absent: NaN below
    dice = f1_score(g, p, labels=classes, average=None, zero_division=0)
    present = [c for c in classes if (c in g or c in p)]
    out = {f"iou_{c}": (iou[i] if c in present else np.nan) for i, c in enumerate(classes)}
    out.update({f"dice_{c}": (dice[i] if c in present else np.nan) for i, c in enumerate(classes)})
    fg = [c for c in present if c != background]
    out["mean_iou"] = np.mean([out[f"iou_{c}"] for c in fg]) if fg else np.nan
    out["mean_dice"] = np.mean([out[f"dice_{c}"] for c in fg]) if fg else np.nan
    out["pixel_accuracy"] = accuracy_score(g, p) if g.size else np.nan
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q=st.integers(2, 5), ignore_share=st.floats(0, 0.3))
def test_image_scores_match_sklearn(seed, q, ignore_share):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, q, (9, 11))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, q, gt.shape))
    gt[rng.random(gt.shape) < ignore_share] = 255
    got = segmentation_scores(pred, gt, n_classes=q).iloc[0]
    want = _sklearn_row(pred, gt, list(range(q)))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, nan_ok=True, abs=1e-12), k


def test_absent_classes_are_skipped_not_counted():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 0]])
    s = segmentation_scores(pred, gt, n_classes=4).iloc[0]
    # class 1: IoU 1/2, Dice 2/3; classes 2 and 3 absent from both: NaN and not averaged
    assert s["iou_1"] == 0.5 and s["dice_1"] == pytest.approx(2 / 3)
    assert np.isnan(s["iou_2"]) and np.isnan(s["dice_3"])
    assert s["mean_iou"] == 0.5 and s["mean_dice"] == pytest.approx(2 / 3)
    # a class predicted but absent from GT counts (IoU 0)
    s = segmentation_scores(np.array([[0, 2, 1, 1]]), gt).iloc[0]
    assert s["iou_2"] == 0.0 and s["mean_iou"] == pytest.approx((1.0 + 0.0) / 2)


def test_ignore_label_and_empty_prediction():
    gt = np.array([[1, 1, 255, 255], [0, 0, 0, 0]])
    pred = np.array([[1, 0, 1, 1], [0, 0, 0, 1]])
    s = segmentation_scores(pred, gt).iloc[0]
    # the two ignored pixels predicted 1 are left out: class 1 has P = {(0,0), (1,3)}, G = {(0,0), (0,1)}
    assert s["n_pixels"] == 6
    assert s["iou_1"] == pytest.approx(1 / 3)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    empty = segmentation_scores(np.zeros_like(gt), gt).iloc[0]  # nothing predicted but background
    assert empty["iou_1"] == 0.0 and empty["dice_1"] == 0.0 and empty["mean_iou"] == 0.0
    nothing = segmentation_scores(np.zeros((3, 3), int), np.zeros((3, 3), int)).iloc[0]
    assert np.isnan(nothing["mean_iou"]) and nothing["iou_0"] == 1.0  # background only: no object class
    everything_ignored = segmentation_scores(np.ones((2, 2), int), np.full((2, 2), 255)).iloc[0]
    assert everything_ignored["n_pixels"] == 0 and np.isnan(everything_ignored["pixel_accuracy"])


def test_background_none_averages_every_class():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    s = segmentation_scores(pred, gt, background=None).iloc[0]
    assert s["mean_iou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_per_slice_rows_equal_scores_of_each_slice():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 3, (5, 6, 4))
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 3, gt.shape))
    for axis in (0, 1, -1):
        per = segmentation_scores(pred, gt, per="slice", slice_axis=axis, n_classes=3)
        assert per["slice"].tolist() == list(range(gt.shape[axis]))
        for k in range(gt.shape[axis]):
            one = segmentation_scores(np.take(pred, k, axis=axis), np.take(gt, k, axis=axis), n_classes=3)
            row = per.iloc[k].drop("slice")
            pd.testing.assert_series_equal(row, one.iloc[0], check_names=False, check_dtype=False)


def test_groups_score_unions_of_classes():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 5, (20, 20))
    pred = np.where(rng.random(gt.shape) < 0.5, gt, rng.integers(0, 5, gt.shape))
    groups = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    s = segmentation_scores(pred, gt, groups=groups).iloc[0]
    for name, members in groups.items():
        p, g = np.isin(pred, members), np.isin(gt, members)
        assert s[f"iou_{name}"] == pytest.approx((p & g).sum() / (p | g).sum())
        assert s[f"dice_{name}"] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
    absent = segmentation_scores(pred % 2, gt % 2, groups={"X": [7]}).iloc[0]
    assert np.isnan(absent["iou_X"])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), axis=st.integers(-3, 2),
       dtype=st.sampled_from(["uint8", "int16", "int64"]), fortran=st.booleans(),
       ignore=st.sampled_from([None, 255, 2]))
def test_one_pass_counts_equal_a_slow_count_per_slice(seed, axis, dtype, fortran, ignore):
    """The one-pass kernel (any dtype, C or Fortran order, any slice axis) counts exactly what a
    slow per-slice, per-pixel count does."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 6, size=3))
    gt = rng.integers(0, 4, size=shape).astype(dtype)
    pred = rng.integers(0, 4, size=shape).astype(dtype)
    if ignore == 255 and dtype != "int16":
        gt[rng.random(shape) < 0.2] = 255
    if fortran:
        gt, pred = np.asfortranarray(gt), np.asfortranarray(pred)
    got = segmentation_scores(pred, gt, per="slice", slice_axis=axis, ignore_index=ignore, n_classes=None
                              if ignore != 2 else 4, background=None)
    ax = axis % 3
    for k in range(shape[ax]):
        g = np.take(gt, k, axis=ax).ravel().astype(np.int64)
        p = np.take(pred, k, axis=ax).ravel().astype(np.int64)
        kept = np.ones(g.shape, bool) if ignore is None else g != ignore
        for c in range(4):
            inter = np.sum((g == c) & (p == c) & kept)
            union = np.sum(((g == c) | (p == c)) & kept)
            col = f"iou_{c}"
            if col not in got.columns:
                assert union == 0
                continue
            value = got.loc[got["slice"] == k, col].iloc[0]
            if union == 0:
                assert np.isnan(value)
            else:
                assert value == pytest.approx(inter / union)
        assert got.loc[got["slice"] == k, "n_pixels"].iloc[0] == kept.sum()


def test_large_class_ids_are_renumbered_not_allocated():
    gt = np.array([[0, 100000, 100000]])
    pred = np.array([[0, 100000, 0]])
    s = segmentation_scores(pred, gt, ignore_index=None).iloc[0]
    assert s["iou_100000"] == 0.5 and "iou_5" not in s.index


@pytest.mark.parametrize("kwargs, match", [
    ({"per": "volume"}, "per must be"),
    ({"per": "slice"}, "needs 3D"),
    ({"groups": {"A": []}}, "empty"),
    ({"groups": {"A": [1.5]}}, "integers"),
    ({"n_classes": 1}, "class id 1"),
])
def test_errors_name_the_problem(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        segmentation_scores(np.array([[0, 1]]), np.array([[0, 1]]), **kwargs)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="must match"):
        segmentation_scores(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="non-integer"):
        segmentation_scores(np.full((2, 2), 0.5), np.zeros((2, 2), int))


# ============================================================================================
# instance_ap
# ============================================================================================
def _random_instances(rng, shape=(40, 48), n=8):
    lab = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
        h, w = rng.integers(3, 12), rng.integers(3, 12)
        lab[y:y + h, x:x + w] = i
    return lab


def _jitter(rng, gt, n_extra=3):
    """Predictions: GT instances shifted/resized a little, some dropped, some made up."""
    pred = np.zeros_like(gt)
    nid = 1
    for i in np.unique(gt[gt > 0]):
        if rng.random() < 0.2:
            continue
        ys, xs = np.nonzero(gt == i)
        dy, dx = rng.integers(-2, 3), rng.integers(-2, 3)
        ys = np.clip(ys + dy, 0, gt.shape[0] - 1)
        xs = np.clip(xs + dx, 0, gt.shape[1] - 1)
        pred[ys, xs] = nid
        nid += 1
    for _ in range(n_extra):
        y, x = rng.integers(0, gt.shape[0] - 4), rng.integers(0, gt.shape[1] - 4)
        pred[y:y + 4, x:x + 4] = nid
        nid += 1
    return pred


def _coco_ap(preds, gts, scores):
    coco = pytest.importorskip("pycocotools")  # noqa: F841 - test-only dependency
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    aid = 1
    for img_id, (p, g, s) in enumerate(zip(preds, gts, scores, strict=True), start=1):
        images.append({"id": img_id, "height": g.shape[0], "width": g.shape[1]})
        for i in np.unique(g[g > 0]):
            rle = mask_utils.encode(np.asfortranarray((g == i).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": aid, "image_id": img_id, "category_id": 1, "segmentation": rle,
                         "area": float((g == i).sum()), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
            aid += 1
        for i in np.unique(p[p > 0]):
            rle = mask_utils.encode(np.asfortranarray((p == i).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            dets.append({"image_id": img_id, "category_id": 1, "segmentation": rle,
                         "score": float(s[int(i)])})
    gt_coco = COCO()
    gt_coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "obj"}]}
    gt_coco.createIndex()
    dt_coco = gt_coco.loadRes(dets) if dets else COCO()
    ev = COCOeval(gt_coco, dt_coco, "segm")
    ev.params.maxDets = [1, 10, 100000]  # no cap
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, 0, 0, -1]  # thresholds x recall points, area all, no cap
    per = [float(np.mean(row)) if np.all(row > -1) else np.nan for row in prec]
    return per


@pytest.mark.parametrize("seed", range(6))
def test_instance_ap_matches_pycocotools(seed, capsys):
    rng = np.random.default_rng(seed)
    n_images = 1 + seed % 3
    gts = [_random_instances(rng) for _ in range(n_images)]
    preds = [_jitter(rng, g) for g in gts]
    # rounded scores make ties, which both must break by the order of the detections
    scores = [{int(i): float(np.round(rng.random(), 1)) for i in np.unique(p[p > 0])} for p in preds]
    want = _coco_ap(preds, gts, scores)
    capsys.readouterr()  # pycocotools prints its progress
    got = instance_ap(preds if n_images > 1 else preds[0], gts if n_images > 1 else gts[0],
                      scores if n_images > 1 else scores[0])
    assert list(got["per_threshold"].values()) == pytest.approx(want, abs=1e-12)
    assert got["AP"] == pytest.approx(np.mean(want), abs=1e-12)
    assert got["AP50"] == pytest.approx(want[0]) and got["AP75"] == pytest.approx(want[5])


def test_instance_ap_hand_cases():
    gt = np.zeros((4, 6), int)
    gt[:2, :2] = 1
    gt[2:, 3:] = 2
    # exact copy, any scores: AP 1 at every threshold
    assert instance_ap(gt, gt, {1: 0.3, 2: 0.9})["AP"] == 1.0
    # no detection: 0; no GT: NaN
    assert instance_ap(np.zeros_like(gt), gt, {})["AP"] == 0.0
    assert np.isnan(instance_ap(gt, np.zeros_like(gt), {1: 0.5, 2: 0.5})["AP"])
    # one false positive ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1
    pred = gt.copy()
    pred[3, 0] = 3
    r = instance_ap(pred, gt, {1: 0.8, 2: 0.7, 3: 0.9}, iou_thresholds=(0.5,))
    assert r["AP"] == pytest.approx((51 * (2 / 3) + 50 * (2 / 3)) / 101)  # monotone: 2/3 everywhere
    # scores as an array aligned to sorted ids
    assert instance_ap(pred, gt, [0.8, 0.7, 0.9], iou_thresholds=(0.5,))["AP"] == r["AP"]


def test_instance_ap_errors():
    gt = np.zeros((3, 3), int)
    gt[0, 0] = 1
    with pytest.raises(ValueError, match="no score"):
        instance_ap(gt, gt, {2: 0.5})
    with pytest.raises(ValueError, match="one score per instance"):
        instance_ap(gt, gt, [0.5, 0.2])
    with pytest.raises(ValueError, match="iou_thresholds"):
        instance_ap(gt, gt, {1: 0.5}, iou_thresholds=(1.5,))
    with pytest.raises(ValueError, match="NaN"):
        instance_ap(gt, gt, {1: float("nan")})
