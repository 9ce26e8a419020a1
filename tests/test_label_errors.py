"""Label-error triage: proposals, injected errors and their evaluation (issue 6, core part)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from napari_metaseg.core import segment_metrics
from napari_metaseg.core.label_errors import (
    evaluate_label_errors,
    find_label_errors,
    inject_label_errors,
)
from napari_metaseg.core.meta_model import MetaClassifier


def blob_case(seed, shape=(96, 96), n=14, q=3):
    """Discs of classes 1..q-1 and a blurred, noisy prediction with some false-positive blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = np.zeros(shape, np.uint8)
    for _ in range(n):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        r = rng.uniform(2.5, 5)
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(1, q)
    logits = np.eye(q)[gt] * 4.0
    for _ in range(n // 2):
        cy, cx = rng.integers(4, shape[0] - 4), rng.integers(4, shape[1] - 4)
        r = rng.uniform(1.5, 3.5)
        logits[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, rng.integers(1, q)] += rng.uniform(3, 6)
    logits = ndimage.gaussian_filter(logits, sigma=(1.5, 1.5, 0)) * 2
    logits += ndimage.gaussian_filter(rng.normal(size=logits.shape), sigma=(2, 2, 0)) * 3
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p.astype(np.float32), gt


@pytest.fixture(scope="session")
def classifier():
    tables = []
    for s in range(6):
        p, gt = blob_case(s)
        _, t = segment_metrics(p, gt)
        t.insert(0, "case", f"train{s}")
        tables.append(t)
    return MetaClassifier(kind="logistic", random_state=0).fit(pd.concat(tables, ignore_index=True))


def hand_case():
    """Prediction: A (class 1) and B (class 2) and E (class 1) and F (class 1); labels: A, C
    (class 1, predicted background), D (class 2 where E is predicted, i.e. wrong class) and the
    left half of F (its right half is labelled background); B is unlabelled."""
    pred = np.zeros((20, 20), np.int64)
    pred[2:6, 2:6] = 1   # A
    pred[10:14, 10:14] = 2  # B
    pred[14:18, 2:6] = 1  # E
    pred[8:12, 2:8] = 1  # F
    gt = np.zeros((20, 20), np.uint8)
    gt[2:6, 2:6] = 1
    gt[2:5, 12:16] = 1  # C
    gt[14:18, 2:6] = 2  # D
    gt[8:12, 2:5] = 1  # F's left half
    probs = np.full((20, 20, 3), 0.05, np.float32)
    np.put_along_axis(probs, pred[..., None], 0.9, axis=-1)
    return probs, gt, pred


def test_find_hand_made_exact(classifier):
    probs, gt, _ = hand_case()
    seg, table = segment_metrics(probs, gt)
    table.insert(0, "case", "hand")
    found = find_label_errors(table, classifier, maps={"hand": (probs, gt, seg)})
    assert list(found.columns) == ["case", "kind", "class", "predicted_class", "label_class", "index",
                                   "gt_object", "score", "size", "bbox", "centroid"]
    assert sorted(found["kind"].tolist()) == ["gt_object", "gt_object", "region", "segment", "segment"]
    segs = found[found["kind"] == "segment"]
    assert sorted(segs["index"].tolist()) == sorted([int(seg[10, 10]), int(seg[14, 2])])
    b = segs[segs["index"] == seg[10, 10]].iloc[0]
    assert (b["class"], b["predicted_class"], b["label_class"], b["size"], b["bbox"], b["centroid"]) == (
        2, 2, 0, 16, (10, 10, 14, 14), (11.5, 11.5))
    e = segs[segs["index"] == seg[14, 2]].iloc[0]
    assert (e["class"], e["predicted_class"], e["label_class"]) == (1, 1, 2)
    # score = P(IoU_adj > 0) x mean doubt x (1 - 0.5^size); the label there has probability 0.05
    p1 = classifier.predict_proba(table)[:, 1]
    ev16, ev12 = 1 - 0.5**16, 1 - 0.5**12
    for _, r in segs.iterrows():
        want = p1[(table["index"] == r["index"]).to_numpy()][0] * 0.95 * ev16
        assert r["score"] == pytest.approx(want, rel=1e-6)
    objs = found[found["kind"] == "gt_object"].sort_values("class")
    assert objs["class"].tolist() == [1, 2] and objs["predicted_class"].tolist() == [0, 1]
    assert objs["label_class"].tolist() == [1, 2]
    assert objs["bbox"].tolist() == [(2, 12, 5, 16), (14, 2, 18, 6)]
    assert objs["size"].tolist() == [12, 16]
    np.testing.assert_allclose(objs["score"], [0.95 * ev12, 0.95 * ev16], rtol=1e-6)
    # the right half of F: predicted 1, labelled background, inside a segment with IoU_adj 0.5
    reg = found[found["kind"] == "region"].iloc[0]
    assert (reg["class"], reg["predicted_class"], reg["label_class"], reg["size"], reg["bbox"],
            reg["centroid"]) == (0, 1, 0, 12, (8, 5, 12, 8), (9.5, 6.0))
    assert pd.isna(reg["index"]) and pd.isna(reg["gt_object"])
    # ... scored by its doubt, the trust in segment F and its size
    p_f = p1[(table["index"] == seg[8, 6]).to_numpy()][0]
    assert reg["score"] == pytest.approx(0.95 * p_f * ev12, rel=1e-6)
    assert found["score"].is_monotonic_decreasing
    # the same without seg (relabelled from probs) and without maps
    again = find_label_errors(table, classifier, maps={"hand": (probs, gt)})
    pd.testing.assert_frame_equal(again, found)
    bare = find_label_errors(table, classifier)
    assert set(bare["kind"]) == {"segment"} and bare["bbox"].isna().all()
    zero = table["iou_adj"].to_numpy() == 0
    np.testing.assert_allclose(bare["score"].sort_values(), np.sort(p1[zero]) * ev16)
    # kinds and min_size select
    # regions alone cover every disagreement: B, C, D (= E) and F's right half
    only = find_label_errors(table, classifier, maps={"hand": (probs, gt)}, kinds=("region",))
    assert set(only["kind"]) == {"region"}
    assert sorted(zip(only["class"], only["predicted_class"], only["size"], strict=True)) == [
        (0, 1, 12), (0, 2, 16), (1, 0, 12), (2, 1, 16)]
    big = find_label_errors(table, classifier, maps={"hand": (probs, gt)}, min_size=13)
    assert sorted(big["size"].tolist()) == [16, 16, 16]
    with pytest.raises(ValueError, match="kinds"):
        find_label_errors(table, classifier, kinds=("segments",))
    # voxels: exactly the proposal's pixels
    vox = find_label_errors(table, classifier, maps={"hand": (probs, gt, seg)}, return_voxels=True)
    r = vox[vox["kind"] == "region"].iloc[0]
    want = np.zeros((20, 20), bool)
    want[8:12, 5:8] = True
    np.testing.assert_array_equal(np.sort(r["voxels"]), np.flatnonzero(want))
    assert bare["size"].tolist() == [16, 16]


def test_find_threshold_and_training_cases(classifier):
    probs, gt, _ = hand_case()
    seg, table = segment_metrics(probs, gt)
    table.insert(0, "case", "train3")
    with pytest.raises(ValueError, match="fitted on case"):
        find_label_errors(table, classifier)
    found = find_label_errors(table, classifier, maps={"train3": (probs, gt, seg)},
                              allow_training_cases=True)
    cut = float(found["score"].median())
    kept = find_label_errors(table, classifier, maps={"train3": (probs, gt, seg)},
                             allow_training_cases=True, threshold=cut)
    pd.testing.assert_frame_equal(kept, found[found["score"] >= cut].reset_index(drop=True))
    with pytest.raises(ValueError, match="iou_adj"):
        find_label_errors(table.drop(columns="iou_adj"), classifier, allow_training_cases=True)
    with pytest.raises(TypeError, match="MetaClassifier"):
        find_label_errors(table, object(), allow_training_cases=True)


def test_find_slices_mode(classifier):
    p, gt = blob_case(7, shape=(40, 40))
    p3 = np.stack([p] * 3, axis=0)
    gt3 = np.stack([gt] * 3, axis=0)
    gt3[1][gt3[1] == gt3[1].max()] = 0  # drop one class's labels in the middle slice
    seg, table = segment_metrics(p3, gt3, mode="slices", slice_axis=0)
    # the classifier was fitted on 2D tables: the same feature columns plus `slice`
    found = find_label_errors(table, classifier, maps=(p3, gt3, seg), slice_axis=0)
    assert "slice" in found.columns and (found["kind"] == "segment").any()
    assert found.loc[found["kind"] == "segment", "slice"].eq(1).any()


def test_inject_deterministic_and_pure():
    _, gt = blob_case(3)
    before = gt.copy()
    a, ea = inject_label_errors(gt, rate=0.5, seed=11)
    b, eb = inject_label_errors(gt, rate=0.5, seed=11)
    c, _ = inject_label_errors(gt, rate=0.5, seed=12)
    np.testing.assert_array_equal(gt, before)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    pd.testing.assert_frame_equal(ea.drop(columns="voxels"), eb.drop(columns="voxels"))
    changed = np.zeros(gt.size, bool)
    for v in ea["voxels"]:
        assert not changed[v].any()  # errors never share a voxel
        changed[v] = True
    np.testing.assert_array_equal(changed, (a != gt).ravel())
    assert set(ea["kind"]) <= {"drop", "swap_class", "add_spurious", "shift"}
    drops = ea[ea["kind"] == "drop"]
    for v in drops["voxels"]:
        assert (a.ravel()[v] == 0).all()


def test_inject_kinds_and_validation():
    gt = np.zeros((30, 30), np.uint8)
    gt[2:6, 2:6] = 1
    gt[10:14, 10:14] = 1
    gt[2:5, 12:16] = 2
    bad, err = inject_label_errors(gt, kinds=("swap_class",), rate=1.0, seed=0)
    assert err["kind"].tolist() == ["swap_class"] * 3
    assert (err["class"] != err["original_class"]).all()
    bad, err = inject_label_errors(gt, kinds=("add_spurious",), rate=1.0, seed=0)
    assert (err["size"] == err["original_class"].map({1: 16, 2: 12})).all()
    assert (bad[gt > 0] == gt[gt > 0]).all()
    with pytest.raises(ValueError, match="kinds"):
        inject_label_errors(gt, kinds=("blur",), rate=0.5, seed=0)
    with pytest.raises(ValueError, match="rate"):
        inject_label_errors(gt, rate=1.5, seed=0)


def _vox(shape, *slices):
    m = np.zeros(shape, bool)
    for s in slices:
        m[s] = True
    return np.flatnonzero(m)


def test_evaluate_hand_made_exact():
    sh = (10, 10)
    truth = pd.DataFrame({
        "kind": ["drop", "swap_class", "shift"],
        "voxels": [_vox(sh, np.s_[0:2, 0:4]), _vox(sh, np.s_[5:7, 5:9]), _vox(sh, np.s_[8:10, 0:2])],
    })
    found = pd.DataFrame({
        "score": [0.9, 0.8, 0.7, 0.6, 0.3],
        "voxels": [_vox(sh, np.s_[0:2, 0:4]),   # p0: exactly the dropped object
                   _vox(sh, np.s_[5, 5:9]),     # p1: half of the swapped one ...
                   _vox(sh, np.s_[3, :]),       # p2: false alarm, no overlap
                   _vox(sh, np.s_[1:7, 0:4]),   # p3: false alarm, IoU_adj 4 / 24 < 0.25
                   _vox(sh, np.s_[6, 5:9])],    # p4: ... and its other half (IoU_adj 1)
    })
    ev = evaluate_label_errors(found, truth)
    assert ev.matches[["proposal", "error"]].values.tolist() == [[0, 0], [1, 1], [4, 1]]
    np.testing.assert_allclose(ev.matches["iou_adj"], 1.0)
    c = ev.curve.set_index(["kind", "threshold"])
    assert tuple(c.loc[("all", 0.0), ["n_proposals", "n_true_proposals", "n_found"]]) == (5, 3, 2)
    assert c.loc[("all", 0.0), "precision"] == pytest.approx(3 / 5)
    assert c.loc[("all", 0.0), "recall"] == pytest.approx(2 / 3)
    assert c.loc[("all", 0.5), "precision"] == pytest.approx(2 / 4)
    assert c.loc[("all", 0.85), "recall"] == pytest.approx(1 / 3)
    assert c.loc[("all", 0.85), "f1"] == pytest.approx(0.5)
    assert np.isnan(c.loc[("all", 0.95), "precision"])
    assert ev.auprc["all"] == pytest.approx(2 / 3)
    assert ev.auprc["drop"] == pytest.approx(1.0)
    assert ev.auprc["swap_class"] == pytest.approx(1.0)
    assert ev.auprc["shift"] == 0.0
    # per kind, proposals matching other kinds are left out: drop sees p0, p2, p3
    assert c.loc[("drop", 0.0), "n_proposals"] == 3
    assert c.loc[("shift", 0.0), "recall"] == 0.0
    assert set(ev.summary()["kind"]) == {"all", "drop", "swap_class", "shift"}


def test_evaluate_without_any_match_keeps_integer_positions():
    """Nothing matches: precision and recall 0, and the (empty) matches still index arrays."""
    sh = (10, 10)
    truth = pd.DataFrame({"kind": ["drop"], "voxels": [_vox(sh, np.s_[0:2, 0:4])]})
    found = pd.DataFrame({"score": [0.9, 0.4], "voxels": [_vox(sh, np.s_[5, :]), _vox(sh, np.s_[8, :])]})
    ev = evaluate_label_errors(found, truth)
    assert ev.matches.empty and ev.matches["proposal"].dtype == np.int64
    hit = np.zeros(len(found), bool)
    hit[ev.matches["proposal"].unique()] = True  # the benchmark's use; floats raised IndexError
    assert not hit.any()
    row = ev.curve.set_index(["kind", "threshold"]).loc[("all", 0.0)]
    assert row["precision"] == 0.0 and row["recall"] == 0.0 and ev.auprc["all"] == 0.0


def test_evaluate_error_over_slices_counts_once():
    sh = (3, 6, 6)
    truth = pd.DataFrame({"case": ["a"], "kind": ["drop"], "voxels": [_vox(sh, np.s_[:, 1:4, 1:4])]})
    found = pd.DataFrame({"case": ["a"] * 3, "score": [0.9, 0.8, 0.7],
                          "voxels": [_vox(sh, np.s_[k, 1:4, 1:4]) for k in range(3)]})
    ev = evaluate_label_errors(found, truth)
    row = ev.curve.set_index(["kind", "threshold"]).loc[("all", 0.0)]
    assert (row["n_true_proposals"], row["n_found"], row["n_errors"]) == (3, 1, 1)
    assert row["precision"] == 1.0 and row["recall"] == 1.0
    with pytest.raises(ValueError, match="voxels"):
        evaluate_label_errors(found.drop(columns="voxels"), truth)


def _synthetic_run(classifier, kinds, rate):
    founds, truths = [], []
    for s in range(100, 106):
        p, gt = blob_case(s)
        bad, err = inject_label_errors(gt, kinds=kinds, rate=rate, seed=s)
        seg, t = segment_metrics(p, bad)
        t.insert(0, "case", f"c{s}")
        founds.append(find_label_errors(t, classifier, maps={f"c{s}": (p, bad, seg)}, return_voxels=True))
        err.insert(0, "case", f"c{s}")
        truths.append(err)
    found = pd.concat(founds, ignore_index=True)
    truth = pd.concat(truths, ignore_index=True)
    return found, truth, evaluate_label_errors(found, truth)


def test_end_to_end_dropped_objects_are_found(classifier):
    """Drop 30 % of the GT objects of 6 held-out synthetic cases; measured: 24 drops, all found
    at threshold 0.75 with precision 1.0, AUPRC 1.0 (precision 0.14 at threshold 0: the
    boundary disagreements of a blurred prediction are proposed too, with low scores)."""
    _, _, ev = _synthetic_run(classifier, ("drop",), 0.3)
    row = ev.curve.set_index(["kind", "threshold"]).loc[("drop", 0.75)]
    assert row["n_errors"] >= 20
    assert row["recall"] >= 0.9
    assert row["precision"] >= 0.9
    assert ev.auprc["drop"] >= 0.95


def test_end_to_end_every_kind_is_found(classifier):
    """All four kinds at rate 0.4 (32 errors, 8 per kind); measured: AUPRC 1.0 for each kind,
    F1 1.0 at threshold 0.85. Shifted labels are found by the region proposals (a shifted label
    still overlaps its prediction, so no whole segment or object has IoU 0)."""
    found, truth, ev = _synthetic_run(classifier, ("drop", "swap_class", "add_spurious", "shift"), 0.4)
    assert set(truth["kind"]) == {"drop", "swap_class", "add_spurious", "shift"}
    for kind in ("all", "drop", "swap_class", "add_spurious", "shift"):
        assert ev.auprc[kind] >= 0.9, (kind, ev.auprc[kind])
    matched = found.loc[ev.matches["proposal"].unique(), "kind"]
    shift_rows = ev.matches.merge(truth[["kind"]], left_on="error", right_index=True)
    shift_props = found.loc[shift_rows.loc[shift_rows["kind"] == "shift", "proposal"], "kind"]
    assert "region" in set(shift_props) and {"segment", "gt_object", "region"} <= set(matched)


def _brute_pairs(found, truth, match_iou):
    """IoU_adj of every (proposal, error) pair by the definition, with Python sets."""
    out = []
    for a in range(len(found)):
        p = set(np.asarray(found["voxels"].iat[a]).tolist())
        others = set().union(*(set(np.asarray(found["voxels"].iat[o]).tolist())
                               for o in range(len(found))
                               if o != a and found["case"].iat[o] == found["case"].iat[a]))
        for b in range(len(truth)):
            if found["case"].iat[a] != truth["case"].iat[b]:
                continue
            e = set(np.asarray(truth["voxels"].iat[b]).tolist())
            inter = len(p & e)
            if inter and inter / len(p | (e - others)) >= match_iou:
                out.append((a, b, inter / len(p | (e - others))))
    return sorted(out)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_pair_matching_equals_the_definition(seed):
    rng = np.random.default_rng(seed)

    def sets(n, kind):
        rows = []
        for _ in range(n):
            start = int(rng.integers(0, 40))
            vox = np.unique(rng.integers(start, start + 12, size=int(rng.integers(1, 10))))
            rows.append({"case": ["a", "b"][int(rng.integers(2))], kind[0]: kind[1](), "voxels": vox})
        return pd.DataFrame(rows)

    found = sets(int(rng.integers(0, 7)), ("score", lambda: float(rng.random())))
    truth = sets(int(rng.integers(1, 5)), ("kind", lambda: "drop"))
    if not len(found):
        found = pd.DataFrame({"case": [], "score": [], "voxels": []})
    ev = evaluate_label_errors(found, truth)
    got = sorted(zip(ev.matches["proposal"], ev.matches["error"], ev.matches["iou_adj"], strict=True))
    want = _brute_pairs(found, truth, 0.25)
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in want]
    np.testing.assert_allclose([x for *_, x in got], [x for *_, x in want])


def test_region_geometry_any_id_order():
    from napari_metaseg.core.label_errors import _regions

    lab = np.zeros((6, 6), np.int32)
    lab[0:2, 0:2] = 1
    lab[3:5, 1:4] = 2
    lab[5, 5] = 3
    bboxes, centroids, vox = _regions(lab, [3, 1, 2], voxels=True)
    assert bboxes == [(5, 5, 6, 6), (0, 0, 2, 2), (3, 1, 5, 4)]
    assert centroids == [(5.0, 5.0), (0.5, 0.5), (3.5, 2.0)]
    assert [v.tolist() for v in vox] == [[35], [0, 1, 6, 7], [19, 20, 21, 25, 26, 27]]
