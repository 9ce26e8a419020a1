"""OoD regions (core.ood): hand-made cases, a property test of the region partition against an
independent slow implementation, hits and object counts by hand, pixel scores against
scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from napari_metaseg.core import dispersion_maps
from napari_metaseg.core.ood import (
    OodCase,
    evaluate_ood,
    object_counts,
    ood_objects,
    ood_region_columns,
    ood_regions,
    pixel_scores,
    region_hits,
    summarise_counts,
)

LN2 = math.log(2.0)
#: E, D, V of the two-class rows used by hand: (0.5, 0.5) and (0.25, 0.75)
E_HALF, D_HALF, V_HALF = 1.0, 1.0, 0.5
E_Q = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / LN2  # 0.8112781
D_Q, V_Q = 0.5, 0.25


def _row(table, region_ids, pos):
    """The table row of the region holding voxel ``pos`` (never by id)."""
    rid = int(region_ids[pos])
    assert rid > 0, f"{pos} is in no region"
    return table.set_index("index").loc[rid]


def _pop_var(values):
    m = sum(values) / len(values)
    return sum((x - m) ** 2 for x in values) / len(values)


# ============================================================================================
# Hand-made cases
# ============================================================================================
def _hand_2d():
    """5 x 6 image, two classes; background (1, 0) has E = 0.

    ::

        . . . . C .      A: 3 x 3 block at rows 1-3, columns 1-3, (0.5, 0.5) except its centre
        . A A A . .         (2, 2), which is (0.25, 0.75)
        . A Q A . B      C: (0, 4), (0.5, 0.5), touches A's corner (1, 3) diagonally
        . A A A . B      B: column 5, rows 2-3, (0.25, 0.75), on the image border
        . . . . . .
    """
    p = np.zeros((5, 6, 2), np.float32)
    p[..., 0] = 1.0
    p[1:4, 1:4] = (0.5, 0.5)
    p[2, 2] = (0.25, 0.75)
    p[0, 4] = (0.5, 0.5)
    p[2:4, 5] = (0.25, 0.75)
    return p


def test_hand_2d_regions_and_features():
    p = _hand_2d()
    ids, table = ood_regions(p, threshold=0.5)
    assert len(table) == 2
    assert table["index"].tolist() == [1, 2]
    # A and C are one region (8-connectivity), B another
    a = ids == ids[1, 1]
    expected_a = np.zeros((5, 6), bool)
    expected_a[1:4, 1:4] = True
    expected_a[0, 4] = True
    np.testing.assert_array_equal(a, expected_a)
    expected_b = np.zeros((5, 6), bool)
    expected_b[2:4, 5] = True
    np.testing.assert_array_equal(ids == ids[2, 5], expected_b)
    assert (ids[~(expected_a | expected_b)] == 0).all()

    ra = _row(table, ids, (1, 1))
    # only the centre (2, 2) has all 8 neighbours in the region
    assert (ra["S"], ra["S_in"], ra["S_bd"]) == (10, 1, 9)
    assert ra["S_rel"] == pytest.approx(10 / 9)
    assert ra["S_rel_in"] == pytest.approx(1 / 9)
    e_all = [E_HALF] * 9 + [E_Q]
    d_all = [D_HALF] * 9 + [D_Q]
    v_all = [V_HALF] * 9 + [V_Q]
    for m, vals, inner in (("E", e_all, E_Q), ("D", d_all, D_Q), ("V", v_all, V_Q)):
        assert ra[m] == pytest.approx(sum(vals) / 10, abs=1e-6)
        assert ra[f"{m}_var"] == pytest.approx(_pop_var(vals), abs=1e-6)
        assert ra[f"{m}_in"] == pytest.approx(inner, abs=1e-6)
        assert ra[f"{m}_in_var"] == pytest.approx(0.0, abs=1e-9)
        assert ra[f"{m}_bd"] == pytest.approx(vals[0], abs=1e-6)  # the 9 others are equal
        assert ra[f"{m}_bd_var"] == pytest.approx(0.0, abs=1e-9)
        assert ra[f"{m}_rel"] == pytest.approx(sum(vals) / 10 * 10 / 9, abs=1e-6)
        assert ra[f"{m}_rel_in"] == pytest.approx(inner / 9, abs=1e-6)
    assert ra["cprob1"] == pytest.approx((9 * 0.5 + 0.75) / 10)
    assert ra["cprob0"] == pytest.approx((9 * 0.5 + 0.25) / 10)
    # argmax of (0.5, 0.5) is class 0 (ties to the lower class), of (0.25, 0.75) class 1
    assert (ra["share0"], ra["share1"]) == pytest.approx((0.9, 0.1))

    rb = _row(table, ids, (3, 5))
    # on the image border, neighbours outside are ignored; column 4 is background: no interior
    assert (rb["S"], rb["S_in"], rb["S_bd"]) == (2, 0, 2)
    assert rb["E"] == pytest.approx(E_Q, abs=1e-6)
    assert (rb["E_in"], rb["E_in_var"], rb["S_rel_in"]) == (0.0, 0.0, 0.0)
    assert (rb["share0"], rb["share1"]) == (0.0, 1.0)
    assert list(table.columns) == ood_region_columns(2)


def test_hand_2d_threshold_measure_and_mask():
    p = _hand_2d()
    # E of Q is 0.811 < 0.9: only the (0.5, 0.5) pixels remain; A's ring and C, without the centre
    ids, table = ood_regions(p, threshold=0.9)
    assert len(table) == 1 and ids[2, 2] == 0 and table["S"].item() == 9
    # V: (0.5, 0.5) has 0.5, Q 0.25
    ids, table = ood_regions(p, threshold=0.3, measure="V")
    assert table["S"].tolist() == [9]
    mask = np.ones((5, 6), bool)
    mask[:, 5] = False
    ids, table = ood_regions(p, threshold=0.5, mask=mask)
    assert table["S"].tolist() == [10] and (ids[:, 5] == 0).all()
    ids, table = ood_regions(p, threshold=1.5)
    assert len(table) == 0 and not ids.any()
    assert list(table.columns) == ood_region_columns(2)


def test_hand_3d_connectivity_and_slices():
    p = np.zeros((5, 5, 5, 2), np.float32)
    p[..., 0] = 1.0
    p[1, 1, 1] = p[2, 2, 2] = (0.5, 0.5)  # touch at a corner: 26-connected only
    ids, table = ood_regions(p, mode="3d")
    assert table["S"].tolist() == [2]
    ids, table = ood_regions(p, mode="slices", slice_axis=-1)
    assert table["S"].tolist() == [1, 1] and table["slice"].tolist() == [1, 2]
    ids, table = ood_regions(p, mode="slices", slice_axis=0)
    assert table["slice"].tolist() == [1, 2]

    q = np.zeros((5, 5, 5, 2), np.float32)
    q[..., 0] = 1.0
    q[1:4, 1:4, 1:4] = (0.5, 0.5)  # a 3 x 3 x 3 cube: one interior voxel in 3D
    ids, table = ood_regions(q, mode="3d")
    assert (table["S"].item(), table["S_in"].item()) == (27, 1)
    # slice by slice along z: three 3 x 3 squares, each with its centre inside
    ids, table = ood_regions(q, mode="slices", slice_axis=2)
    assert table["S"].tolist() == [9, 9, 9] and table["S_in"].tolist() == [1, 1, 1]
    assert table["slice"].tolist() == [1, 2, 3]
    for k, z in enumerate((1, 2, 3), start=1):
        assert (ids[..., z][1:4, 1:4] == k).all()
    # the default is 2d for images, 3d for volumes
    assert len(ood_regions(p)[1]) == 1


def test_ood_regions_errors():
    p = _hand_2d()
    with pytest.raises(ValueError, match="measure"):
        ood_regions(p, measure="MI")
    with pytest.raises(ValueError, match="spatial shape"):
        ood_regions(p, mask=np.ones((5, 5), bool))
    with pytest.raises(TypeError, match="threshold"):
        ood_regions(p, threshold="0.5")
    with pytest.raises(ValueError, match="mode='3d'"):
        ood_regions(p, mode="3d")
    with pytest.raises(ValueError, match="maps"):
        ood_regions(p, maps={"E": np.zeros((5, 6))})


def test_precomputed_maps_give_the_same_table():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([0.6] * 3, size=(9, 8, 7)).astype(np.float32)
    maps = dispersion_maps(p)
    a_ids, a = ood_regions(p, threshold=0.6, mode="slices")
    b_ids, b = ood_regions(p, threshold=0.6, mode="slices", maps=maps)
    np.testing.assert_array_equal(a_ids, b_ids)
    pd.testing.assert_frame_equal(a, b)


# ============================================================================================
# Property test against a slow, independent implementation
# ============================================================================================
def _structure(ndim, mode, sax):
    if ndim == 2:
        return np.ones((3, 3), bool)
    s = np.ones((3, 3, 3), bool)
    if mode == "slices":
        s[:] = False
        idx = [slice(None)] * 3
        idx[sax] = 1
        s[tuple(idx)] = True
    return s


def _reference_table(probs, threshold, mode, sax, mask):
    """Regions by scipy.ndimage.label and features by explicit loops over each region's voxels."""
    maps = dispersion_maps(probs)
    q = probs.shape[-1]
    pred = probs.argmax(-1)
    cand = maps["E"] >= np.float32(threshold)
    if mask is not None:
        cand &= mask
    lab, n = ndi.label(cand, _structure(cand.ndim, mode, sax))
    shape = cand.shape
    offsets = [o for o in np.ndindex(*(3,) * cand.ndim) if any(x != 1 for x in o)]
    rows = []
    for k in range(1, n + 1):
        vox = [tuple(v) for v in np.argwhere(lab == k)]
        inside = []
        for v in vox:
            ok = True
            for o in offsets:
                d = [x - 1 for x in o]
                if mode == "slices" and d[sax] != 0:
                    continue
                w = tuple(a + b for a, b in zip(v, d, strict=True))
                if all(0 <= w[i] < shape[i] for i in range(len(w))) and lab[w] != k:
                    ok = False
            inside.append(ok)
        inside = np.array(inside)
        s, s_in = len(vox), int(inside.sum())
        s_bd = s - s_in
        den = s_bd if s_bd else 1
        row = {"first": vox[0], "S": s, "S_in": s_in, "S_bd": s_bd, "S_rel": s / den, "S_rel_in": s_in / den}
        if mode == "slices":
            row["slice"] = vox[0][sax]
        for m in ("E", "D", "V"):
            vals = np.array([float(maps[m][v]) for v in vox])
            parts = {"": vals, "_in": vals[inside], "_bd": vals[~inside]}
            for suf, x in parts.items():
                row[f"{m}{suf}"] = x.mean() if x.size else 0.0
                row[f"{m}{suf}_var"] = x.var() if x.size else 0.0
            row[f"{m}_rel"] = row[m] * s / den
            row[f"{m}_rel_in"] = row[f"{m}_in"] * s_in / den
        for c in range(q):
            row[f"cprob{c}"] = np.mean([float(probs[v][c]) for v in vox])
            row[f"share{c}"] = np.mean([pred[v] == c for v in vox])
        rows.append(row)
    return lab, rows


@st.composite
def _cases(draw):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 6 if ndim == 2 else 4)) for _ in range(ndim))
    q = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = "2d" if ndim == 2 else draw(st.sampled_from(["3d", "slices"]))
    sax = draw(st.integers(0, 2)) if mode == "slices" else None
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9]))
    use_mask = draw(st.booleans())
    return shape, q, seed, mode, sax, threshold, use_mask


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_region_partition_and_features_match_a_slow_reference(case):
    shape, q, seed, mode, sax, threshold, use_mask = case
    rng = np.random.default_rng(seed)
    # a few distinct rows so that equal values and ties occur
    palette = rng.dirichlet([0.7] * q, size=4)
    probs = palette[rng.integers(0, 4, size=shape)].astype(np.float32)
    mask = rng.random(shape) < 0.8 if use_mask else None
    ids, table = ood_regions(probs, threshold=threshold, mode=mode, slice_axis=-1 if sax is None else sax,
                             mask=mask)
    maps = dispersion_maps(probs)
    cand = maps["E"] >= np.float32(threshold)
    if mask is not None:
        cand &= mask
    # partition: the regions cover exactly the candidates, ids are 1..n and consecutive
    np.testing.assert_array_equal(ids > 0, cand)
    n = len(table)
    assert sorted(np.unique(ids[ids > 0]).tolist()) == list(range(1, n + 1))
    assert table["index"].tolist() == list(range(1, n + 1))
    structure = _structure(ids.ndim, mode, sax)
    for k in range(1, n + 1):
        # each region is connected ...
        assert ndi.label(ids == k, structure)[1] == 1
    # ... and maximal: no two neighbouring candidates carry different ids
    lab, rows = _reference_table(probs, threshold, mode, sax, mask)
    assert len(rows) == n
    pairs = set(zip(lab[cand].tolist(), ids[cand].tolist(), strict=True))
    assert len(pairs) == n  # one-to-one with scipy's components
    for row in rows:
        got = table.set_index("index").loc[int(ids[row["first"]])]
        for col, expected in row.items():
            if col == "first":
                continue
            assert got[col] == pytest.approx(expected, abs=1e-6), col


# ============================================================================================
# Hits, objects and counts
# ============================================================================================
def test_region_hits_by_hand():
    reg = np.array([[1, 1, 0, 2],
                    [0, 0, 0, 2],
                    [3, 0, 0, 0]])
    ood = np.array([[0, 0, 1, 0],     # next to region 1, not in it
                    [0, 0, 0, 1],     # in region 2
                    [1, 0, 0, 0]], bool)  # in region 3
    assert region_hits(reg, ood).tolist() == [0, 1, 1]
    assert region_hits(reg, ood, n_regions=4).tolist() == [0, 1, 1, 0]
    assert region_hits(np.zeros((2, 2), np.int32), np.ones((2, 2), bool)).tolist() == []
    with pytest.raises(ValueError, match="shape"):
        region_hits(reg, ood[:2])
    with pytest.raises(TypeError, match="integer"):
        region_hits(reg.astype(float), ood)


def test_objects_from_masks_and_ids():
    ood = np.zeros((3, 3, 3), bool)
    ood[0, 0, 0] = ood[1, 1, 1] = True   # corner touch: one 3D object, two in slices along z
    assert ood_objects(ood, mode="3d")[1] == 1
    assert ood_objects(ood, mode="slices", slice_axis=2)[1] == 2
    ids = np.zeros((3, 3), np.uint8)
    ids[0, 0], ids[2, 2] = 7, 7          # one instance id in two pieces stays one object
    ids[1, 1] = 3
    obj, n = ood_objects(ids)
    assert n == 2 and obj[0, 0] == obj[2, 2] != obj[1, 1]


def test_object_counts_by_hand():
    # regions 1..4; objects 1..3
    reg = np.array([[1, 1, 0, 2, 0, 0],
                    [0, 0, 0, 2, 0, 3],
                    [4, 0, 0, 0, 0, 0]])
    obj = np.array([[0, 1, 1, 0, 0, 0],     # object 1: touched by region 1
                    [0, 0, 0, 2, 0, 0],     # object 2: touched by region 2
                    [0, 0, 3, 0, 0, 0]])    # object 3: touched by none
    c = object_counts(reg, obj)
    # TP objects 1, 2; FN object 3; FP regions 3, 4 (touch no object)
    assert (c["tp"], c["fn"], c["fp"], c["n_objects"], c["n_regions"], c["kept"]) == (2, 1, 2, 3, 4, 4)
    # in-distribution voxels: 18 - 5 object voxels = 13; flagged: region voxels off objects
    # region 1: (0,0); region 2: (0,3); region 3: (1,5); region 4: (2,0) -> 4
    assert (c["id_voxels"], c["id_flagged"]) == (14, 4)
    s = summarise_counts(c)
    assert s["f1"] == pytest.approx(4 / (4 + 2 + 1))
    assert s["id_miss_rate"] == pytest.approx(4 / 14)
    # keep only region 2 and 3: TP object 2; FN objects 1, 3; FP region 3
    c = object_counts(reg, obj, keep=[False, True, True, False])
    assert (c["tp"], c["fn"], c["fp"], c["kept"], c["id_flagged"]) == (1, 2, 1, 2, 2)
    # the mask restricts where in-distribution voxels count
    mask = np.zeros(reg.shape, bool)
    mask[0] = True
    c = object_counts(reg, obj, mask=mask)
    assert (c["id_voxels"], c["id_flagged"]) == (4, 2)
    with pytest.raises(ValueError, match="keep"):
        object_counts(reg, obj, keep=[True])


def test_evaluate_ood_sums_cases_and_selects_by_probability():
    reg = np.array([[1, 0, 2, 0, 3]])
    obj = np.array([[0, 0, 1, 0, 1]], bool)   # two objects: columns 2 and 4
    p_hit = np.array([0.9, 0.6, 0.1])
    heat = np.array([[0.8, 0.1, 0.7, 0.2, 0.9]])
    case = OodCase({"E": heat}, obj, {0.5: (reg, p_hit)})
    ev = evaluate_ood([case, case])
    rows = ev.objects.set_index("keep")
    # all: per case TP 2, FP 1 (region 1) -> summed 4, 2, 0
    assert rows.loc["all", ["tp", "fp", "fn", "kept"]].tolist() == [4, 2, 0, 6]
    assert rows.loc["all", "f1"] == pytest.approx(8 / 10)
    # meta keeps regions 1 and 2: TP 1 (column 2), FP 1, FN 1 per case
    assert rows.loc["meta", ["tp", "fp", "fn", "kept"]].tolist() == [2, 2, 2, 4]
    assert rows.loc["meta", "f1"] == pytest.approx(4 / 8)
    assert rows.loc["all", "id_miss_rate"] == pytest.approx(2 / 6)   # column 0 of 3 per case
    pooled = pixel_scores({"E": np.concatenate([heat, heat], 1)}, np.concatenate([obj, obj], 1))
    pd.testing.assert_frame_equal(ev.pixel, pooled)
    assert "| 0.5 | meta |" in ev.to_markdown()
    # without a classifier only "all" rows
    ev = evaluate_ood([OodCase({}, obj, {0.5: (reg, None)})])
    assert ev.objects["keep"].tolist() == ["all"] and ev.pixel.empty


# ============================================================================================
# Pixel scores against scikit-learn
# ============================================================================================
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 400), st.sampled_from([3, 20, 1000]))
def test_pixel_scores_equal_scikit_learn(seed, n, levels):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[0], y[1] = True, False  # both sides present
    score = (rng.integers(0, levels, n) / levels + 0.3 * y).astype(np.float32)  # ties included
    got = pixel_scores({"E": score}, y).iloc[0]
    assert got["auroc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert got["auprc"] == pytest.approx(average_precision_score(y, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    assert got["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    assert (got["n_ood"], got["n_in"]) == (int(y.sum()), int((~y).sum()))


def test_pixel_scores_mask_and_degenerate_cases():
    rng = np.random.default_rng(3)
    y = rng.random((6, 7)) < 0.3
    s = rng.random((6, 7)).astype(np.float32)
    mask = rng.random((6, 7)) < 0.7
    got = pixel_scores({"E": s, "V": 1 - s}, y, mask=mask)
    assert got["measure"].tolist() == ["E", "V"]
    assert got["auroc"].iloc[0] == pytest.approx(roc_auc_score(y[mask], s[mask]))
    assert got["auroc"].iloc[1] == pytest.approx(roc_auc_score(y[mask], 1 - s[mask]))
    assert np.isnan(pixel_scores({"E": s}, np.zeros((6, 7), bool))["auroc"].item())
    empty = pixel_scores({"E": s}, y, mask=np.zeros((6, 7), bool)).iloc[0]
    assert np.isnan(empty["auroc"]) and (empty["n_ood"], empty["n_in"]) == (0, 0)
    with pytest.raises(ValueError, match="shape"):
        pixel_scores({"E": s[:2]}, y)
