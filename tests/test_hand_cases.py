"""Tiny cases whose expected numbers were worked out by hand (reasoning in the comments).

Every case runs against the slow reference (``tests/reference.py``) and against the engine
(``napari_metaseg.core``), so a disagreement points at whichever side misreads the definitions.
Rows are looked up by a pixel position inside the segment, never by segment id, so the cases do
not depend on how an implementation numbers its segments (numbering has its own test).

Notation: h(a, b, ...) = -sum p ln p; for q classes E = h / ln q. Probabilities are chosen as
exact binary fractions (0.25, 0.375, ...) so that every row sums to exactly 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

try:
    from reference import ref_dispersion_maps, ref_segment_metrics
except ImportError:  # tests/ made a package
    from tests.reference import ref_dispersion_maps, ref_segment_metrics

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def h(*ps: float) -> float:
    """Entropy in nats with 0 ln 0 = 0, written out for the hand computations."""
    return -sum(p * math.log(p) for p in ps if p > 0)


def _engine():
    from napari_metaseg import core

    if not hasattr(core, "segment_metrics"):
        pytest.skip("engine napari_metaseg.core is not written yet")
    return core


@pytest.fixture(params=["reference", "engine"])
def metrics(request):
    if request.param == "reference":
        return ref_segment_metrics
    return _engine().segment_metrics


@pytest.fixture(params=["reference", "engine"])
def maps_fn(request):
    if request.param == "reference":
        return lambda probs, samples=None: ref_dispersion_maps(probs, samples)

    core = _engine()

    def run(probs, samples=None):
        measures = ("E", "D", "V") if samples is None else ("E", "D", "V", "MI", "VAR")
        out = core.dispersion_maps(probs, measures=measures, samples=samples)
        for name, m in out.items():
            assert m.dtype == np.float32, f"{name} is {m.dtype}, expected float32"
            assert m.shape == probs.shape[:-1]
        return out

    return run


def two_class_probs(p1: np.ndarray) -> np.ndarray:
    """(p0, p1) with p0 = 1 - p1, channels last."""
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1.0 - p1, p1], axis=-1)


def check_rows(seg, table, expected: dict, n_segments: int) -> None:
    """``expected`` maps a pixel position to {column: value} for the segment holding it."""
    seg = np.asarray(seg)
    assert len(table) == n_segments, f"{len(table)} segments, expected {n_segments}"
    assert np.unique(seg).size == n_segments
    numeric = table.drop(columns=[c for c in ("iou", "iou_adj") if c in table.columns])
    assert np.isfinite(numeric.to_numpy(dtype=np.float64)).all(), "NaN/inf outside the IoU columns"
    for pos, values in expected.items():
        rows = table.loc[table["index"] == seg[pos]]
        assert len(rows) == 1, f"no single row for the segment at {pos}"
        row = rows.iloc[0]
        for col, want in values.items():
            got = float(row[col])
            if math.isnan(want):
                assert math.isnan(got), f"segment at {pos}, column {col}: got {got}, expected NaN"
            else:
                assert got == pytest.approx(want, rel=1e-6, abs=1e-6), (
                    f"segment at {pos}, column {col}: got {got}, expected {want}"
                )


def heat(prefix: str, mean, mean_in, mean_bd, s_rel, s_rel_in) -> dict:
    """The five columns of one heatmap from its three hand-computed means and the two ratios."""
    return {
        prefix: mean,
        f"{prefix}_in": mean_in,
        f"{prefix}_bd": mean_bd,
        f"{prefix}_rel": mean * s_rel,
        f"{prefix}_rel_in": mean_in * s_rel_in,
    }


# --------------------------------------------------------------------------------------------
# A segment that fills the whole image: no boundary at all.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 3), (2, 2, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("gt_class", [0, 1], ids=["gt-same-class", "class-absent-from-gt"])
def test_whole_image_segment(metrics, shape, gt_class):
    # Every pixel (0.75, 0.25) -> class 0, one segment of N = 9 (2D) / 8 (3D) pixels.
    # Every in-image neighbour of every pixel is in the segment, so all pixels are interior:
    # S_in = N, S_bd = 0, and the ratios use S_bd = 1: S_rel = S_rel_in = N.
    # Per pixel: E = h(.75,.25)/ln 2 = 0.8112781..., D = 1 - .75 + .25 = .5, V = 1 - .75 = .25.
    # H = H_in = pixel value, H_bd = 0 (empty boundary), H_rel = H_rel_in = N * value.
    # GT all class 0: K' = whole image, IoU = IoU_adj = N / N = 1.
    # GT all class 1: class 0 is absent from GT, K' empty -> IoU = IoU_adj = 0.
    n = int(np.prod(shape))
    probs = two_class_probs(np.full(shape, 0.25))
    gt = np.full(shape, gt_class, dtype=np.uint8)
    seg, table = metrics(probs, gt)
    e = h(0.75, 0.25) / LN2
    expected = {"class": 0, "S": n, "S_in": n, "S_bd": 0, "S_rel": n, "S_rel_in": n}
    expected |= heat("E", e, e, 0.0, n, n)
    expected |= heat("D", 0.5, 0.5, 0.0, n, n)
    expected |= heat("V", 0.25, 0.25, 0.0, n, n)
    expected |= {"cprob0": 0.75, "cprob1": 0.25}
    iou = 1.0 if gt_class == 0 else 0.0
    expected |= {"iou": iou, "iou_adj": iou}
    check_rows(seg, table, {(0,) * len(shape): expected}, n_segments=1)
    np.testing.assert_array_equal(np.asarray(seg), 1)


# --------------------------------------------------------------------------------------------
# 2D: one-pixel segment inside a border-touching segment.
# --------------------------------------------------------------------------------------------
def test_one_pixel_segment_2d(metrics):
    # pred (class)          p1 per pixel            GT
    #   0 0 0 0             .25 .25 .25 0           0 0 0 0
    #   0 1 0 0             .25 .75 .25 0           0 0 0 0
    #   0 0 0 0             .25 .25 .25 0           0 0 1 0
    #   0 0 0 0              0   0   0  0           0 0 0 0
    # Segment A (class 0, 15 px): its boundary is the 8 neighbours of (1,1), i.e. rows/cols 0..2
    # minus the centre. The other 7 pixels (column 3 rows 0..2 and row 3) are interior although
    # they touch the image border: S_in = 7, S_bd = 8, S_rel = 15/8, S_rel_in = 7/8.
    # Boundary pixels are (.75, .25): E = e := h(.75,.25)/ln2, D = .5, V = .25; interior pixels
    # are one-hot (1, 0): E = D = V = 0. So H = 8 b / 15, H_in = 0, H_bd = b, H_rel = b,
    # H_rel_in = 0 for b in (e, .5, .25). cprob1 = 8 * .25 / 15 = 2/15, cprob0 = 13/15.
    # GT class 0 = all but (2,2): one 8-connected component K' of 15 px containing (1,1).
    # k ∩ K' = 15 - 1 = 14 ((2,2) is GT 1), k ∪ K' = 16 -> IoU = 14/16; no other class-0 segment,
    # so IoU_adj = IoU.
    # Segment B (class 1, the single pixel (1,1)): S = 1, S_in = 0, S_bd = 1, S_rel = 1,
    # S_rel_in = 0, H = H_bd = H_rel = pixel value, H_in = H_rel_in = 0. cprob = (.25, .75).
    # GT at (1,1) is 0, the class-1 GT pixel (2,2) only touches it diagonally -> no overlap,
    # IoU = IoU_adj = 0.
    p1 = np.zeros((4, 4))
    p1[:3, :3] = 0.25
    p1[1, 1] = 0.75
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[2, 2] = 1
    seg, table = metrics(two_class_probs(p1), gt)
    e = h(0.75, 0.25) / LN2
    a = {"class": 0, "S": 15, "S_in": 7, "S_bd": 8, "S_rel": 15 / 8, "S_rel_in": 7 / 8}
    a |= heat("E", 8 * e / 15, 0.0, e, 15 / 8, 7 / 8)
    a |= heat("D", 8 * 0.5 / 15, 0.0, 0.5, 15 / 8, 7 / 8)
    a |= heat("V", 8 * 0.25 / 15, 0.0, 0.25, 15 / 8, 7 / 8)
    a |= {"cprob0": 13 / 15, "cprob1": 2 / 15, "iou": 14 / 16, "iou_adj": 14 / 16}
    b = {"class": 1, "S": 1, "S_in": 0, "S_bd": 1, "S_rel": 1, "S_rel_in": 0}
    b |= heat("E", e, 0.0, e, 1, 0)
    b |= heat("D", 0.5, 0.0, 0.5, 1, 0)
    b |= heat("V", 0.25, 0.0, 0.25, 1, 0)
    b |= {"cprob0": 0.25, "cprob1": 0.75, "iou": 0.0, "iou_adj": 0.0}
    check_rows(seg, table, {(0, 3): a, (1, 1): b}, n_segments=2)


# --------------------------------------------------------------------------------------------
# A GT object split by a predicted segment of another class: IoU_adj > IoU.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [None, 2], ids=["2d", "3d"])
def test_split_gt_object_iou_adj(metrics, depth):
    # pred (3 rows x 5 cols)   p1 per column             GT: everything class 1
    #   1 1 0 1 1              .75 .625 .375 .625 1
    # (3D: the same pattern repeated twice along a third axis; every count doubles, every mean
    # and ratio stays the same, and the interior argument holds with 26-neighbours as well.)
    # Left segment L (class 1, cols 0-1): column 0 only touches columns 0-1 -> interior even on
    # the image border; column 1 touches column 2 -> boundary. S = 6, S_in = 3, S_bd = 3,
    # S_rel = 2, S_rel_in = 1. Column values: col 0 (.25,.75): V .25, D .5, E e0 = h(.25,.75)/ln2;
    # col 1 (.375,.625): V .375, D .75, E e1 = h(.375,.625)/ln2.
    # Middle segment M (class 0, col 2, 3 px): every pixel touches columns 1 and 3 -> empty
    # interior: S_in = 0, S_bd = 3, S_rel = 1, S_rel_in = 0; (.625,.375): V .375, D .75, E e1.
    # Right segment R (class 1, cols 3-4): col 4 interior (one-hot (0,1): all heatmaps 0),
    # col 3 boundary (.375,.625).
    # IoU: the only GT component of class 1 is the whole image, K' = 15 px.
    # L: |L ∩ K'| = 6, |L ∪ K'| = 15 -> IoU = 0.4. Q = R (6 px), K' \ Q = cols 0-2 (9 px),
    # |L ∪ (K' \ Q)| = 9 -> IoU_adj = 6/9 = 2/3 > IoU. R is the mirror image: same numbers.
    # M: class 0 does not occur in the GT -> IoU = IoU_adj = 0.
    p1_row = np.array([0.75, 0.625, 0.375, 0.625, 1.0])
    shape = (3, 5) if depth is None else (3, 5, depth)
    p1 = np.broadcast_to(p1_row.reshape((1, 5) + (1,) * (len(shape) - 2)), shape)
    gt = np.ones(shape, dtype=np.uint8)
    seg, table = metrics(two_class_probs(p1), gt)
    f = 1 if depth is None else depth
    e0 = h(0.25, 0.75) / LN2
    e1 = h(0.375, 0.625) / LN2
    left = {"class": 1, "S": 6 * f, "S_in": 3 * f, "S_bd": 3 * f, "S_rel": 2, "S_rel_in": 1}
    left |= heat("E", (e0 + e1) / 2, e0, e1, 2, 1)
    left |= heat("D", 0.625, 0.5, 0.75, 2, 1)
    left |= heat("V", 0.3125, 0.25, 0.375, 2, 1)
    left |= {"cprob0": 0.3125, "cprob1": 0.6875, "iou": 0.4, "iou_adj": 2 / 3}
    mid = {"class": 0, "S": 3 * f, "S_in": 0, "S_bd": 3 * f, "S_rel": 1, "S_rel_in": 0}
    mid |= heat("E", e1, 0.0, e1, 1, 0)
    mid |= heat("D", 0.75, 0.0, 0.75, 1, 0)
    mid |= heat("V", 0.375, 0.0, 0.375, 1, 0)
    mid |= {"cprob0": 0.625, "cprob1": 0.375, "iou": 0.0, "iou_adj": 0.0}
    right = {"class": 1, "S": 6 * f, "S_in": 3 * f, "S_bd": 3 * f, "S_rel": 2, "S_rel_in": 1}
    right |= heat("E", e1 / 2, 0.0, e1, 2, 1)
    right |= heat("D", 0.375, 0.0, 0.75, 2, 1)
    right |= heat("V", 0.1875, 0.0, 0.375, 2, 1)
    right |= {"cprob0": 0.1875, "cprob1": 0.8125, "iou": 0.4, "iou_adj": 2 / 3}
    z = () if depth is None else (0,)
    check_rows(seg, table, {(0, 0, *z): left, (1, 2, *z): mid, (2, 4, *z): right}, n_segments=3)


def test_split_case_slices_vs_3d(metrics):
    # The 3x5x2 volume above, labelled slice by slice along the last axis: each of the two
    # slices is the 2D case (3 segments), so 6 segments instead of 3 in 3d mode; every per-slice
    # segment has the 2D numbers (L: S = 6, S_in = 3, IoU 0.4, IoU_adj 2/3; GT components are
    # per slice too, so K' = the 15 px of that slice).
    p1 = np.broadcast_to(np.array([0.75, 0.625, 0.375, 0.625, 1.0]).reshape(1, 5, 1), (3, 5, 2))
    gt = np.ones((3, 5, 2), dtype=np.uint8)
    _, t3 = metrics(two_class_probs(p1), gt, mode="3d")
    segs, ts = metrics(two_class_probs(p1), gt, mode="slices", slice_axis=-1)
    assert len(t3) == 3
    assert len(ts) == 6
    for z in (0, 1):
        left = {"slice": z, "class": 1, "S": 6, "S_in": 3, "S_bd": 3, "iou": 0.4, "iou_adj": 2 / 3}
        mid = {"slice": z, "class": 0, "S": 3, "S_in": 0, "S_bd": 3, "iou": 0.0, "iou_adj": 0.0}
        right = {"slice": z, "class": 1, "S": 6, "S_in": 3, "S_bd": 3, "iou": 0.4, "iou_adj": 2 / 3}
        check_rows(segs, ts, {(0, 0, z): left, (0, 2, z): mid, (0, 4, z): right}, n_segments=6)


# --------------------------------------------------------------------------------------------
# 3D: one-voxel segment, border-touching interior, and 3d vs slices modes.
# --------------------------------------------------------------------------------------------
def _cube_case():
    # Volume 3 x 3 x 4 (axes x, y, z). Class 1 only at the centre voxel (1,1,1) with
    # p = (.25,.75); voxels with z = 3 are one-hot (1, 0); all other voxels (.75,.25).
    # GT: class 0 everywhere except (1,1,1) and (1,1,2), which are class 1.
    p1 = np.full((3, 3, 4), 0.25)
    p1[:, :, 3] = 0.0
    p1[1, 1, 1] = 0.75
    gt = np.zeros((3, 3, 4), dtype=np.uint8)
    gt[1, 1, 1] = gt[1, 1, 2] = 1
    return two_class_probs(p1), gt


def test_cube_3d_mode(metrics):
    # 3d mode, 26-connectivity: A = the 35 class-0 voxels (one segment), B = the centre voxel.
    # A's boundary = the 26 neighbours of the centre = every voxel with z in 0..2 except the
    # centre. The 9 voxels with z = 3 are interior (their neighbours have z in 2..3 and are all
    # class 0; the image border does not make them boundary). S = 35, S_in = 9, S_bd = 26,
    # S_rel = 35/26, S_rel_in = 9/26.
    # Boundary voxels (.75,.25): E = e, D = .5, V = .25; interior voxels one-hot: all 0.
    # -> H = 26 b / 35, H_in = 0, H_bd = b, H_rel = b, H_rel_in = 0.
    # cprob1 = 26 * .25 / 35 = 6.5/35, cprob0 = 28.5/35.
    # IoU of A: class-0 GT = 34 voxels (all but (1,1,1), (1,1,2)), one 26-connected component.
    # |A ∩ K'| = 34 ((1,1,2) is in A but GT 1), |A ∪ K'| = 35 -> 34/35; no other class-0
    # segment -> IoU_adj = 34/35.
    # B: S = 1, S_in = 0, S_bd = 1. Class-1 GT component {(1,1,1), (1,1,2)} (26-connected), so
    # |B ∩ K'| = 1, |B ∪ K'| = 2 -> IoU = IoU_adj = 0.5.
    probs, gt = _cube_case()
    seg, table = metrics(probs, gt, mode="3d")
    e = h(0.75, 0.25) / LN2
    r, ri = 35 / 26, 9 / 26
    a = {"class": 0, "S": 35, "S_in": 9, "S_bd": 26, "S_rel": r, "S_rel_in": ri}
    a |= heat("E", 26 * e / 35, 0.0, e, r, ri)
    a |= heat("D", 26 * 0.5 / 35, 0.0, 0.5, r, ri)
    a |= heat("V", 26 * 0.25 / 35, 0.0, 0.25, r, ri)
    a |= {"cprob0": 28.5 / 35, "cprob1": 6.5 / 35, "iou": 34 / 35, "iou_adj": 34 / 35}
    b = {"class": 1, "S": 1, "S_in": 0, "S_bd": 1, "S_rel": 1, "S_rel_in": 0}
    b |= heat("E", e, 0.0, e, 1, 0)
    b |= heat("D", 0.5, 0.0, 0.5, 1, 0)
    b |= heat("V", 0.25, 0.0, 0.25, 1, 0)
    b |= {"cprob0": 0.25, "cprob1": 0.75, "iou": 0.5, "iou_adj": 0.5}
    check_rows(seg, table, {(0, 0, 0): a, (1, 1, 1): b}, n_segments=2)
    # "auto" on a 3D map means "3d".
    seg_auto, table_auto = metrics(probs, gt)
    check_rows(seg_auto, table_auto, {(0, 0, 0): a, (1, 1, 1): b}, n_segments=2)


def test_cube_slices_last_axis(metrics):
    # slices along z (axis -1): 4 slices of 3 x 3, 8-connectivity and in-plane neighbours only.
    # z = 0: whole slice class 0 (9 px) -> no in-plane boundary: S_in = 9, S_bd = 0, ratios use 1
    #   (S_rel = S_rel_in = 9). V = .25 everywhere: V = V_in = .25, V_bd = 0,
    #   V_rel = V_rel_in = 9 * .25 = 2.25. (In 3d mode these voxels were boundary.)
    #   GT slice 0 all class 0 -> IoU = IoU_adj = 1.
    # z = 1: ring of 8 class-0 px around the centre: all boundary, S_in = 0, S_bd = 8,
    #   S_rel = 1, S_rel_in = 0, V = V_bd = V_rel = .25, V_in = V_rel_in = 0. GT class 0 of that
    #   slice = the same ring -> IoU 1. Centre (class 1): GT components are per slice, so K' is
    #   only (1,1) of slice 1 (not (1,1,2) of slice 2) -> IoU = IoU_adj = 1.
    # z = 2: 9 px class 0; GT class 0 in that slice is the 8-px ring (centre is GT 1) -> 8/9.
    # z = 3: 9 px one-hot: V = 0 everywhere; S_rel = 9; IoU 1.
    # 5 segments (3d mode: 2).
    probs, gt = _cube_case()
    seg, table = metrics(probs, gt, mode="slices", slice_axis=-1)
    full = {"S": 9, "S_in": 9, "S_bd": 0, "S_rel": 9, "S_rel_in": 9}
    expected = {
        (0, 0, 0): {
            "slice": 0,
            "class": 0,
            **full,
            **heat("V", 0.25, 0.25, 0.0, 9, 9),
            "iou": 1.0,
            "iou_adj": 1.0,
        },
        (0, 0, 1): {
            "slice": 1,
            "class": 0,
            "S": 8,
            "S_in": 0,
            "S_bd": 8,
            "S_rel": 1,
            "S_rel_in": 0,
            **heat("V", 0.25, 0.0, 0.25, 1, 0),
            "iou": 1.0,
            "iou_adj": 1.0,
        },
        (1, 1, 1): {
            "slice": 1,
            "class": 1,
            "S": 1,
            "S_in": 0,
            "S_bd": 1,
            "S_rel": 1,
            "S_rel_in": 0,
            **heat("V", 0.25, 0.0, 0.25, 1, 0),
            "iou": 1.0,
            "iou_adj": 1.0,
        },
        (0, 0, 2): {
            "slice": 2,
            "class": 0,
            **full,
            **heat("V", 0.25, 0.25, 0.0, 9, 9),
            "iou": 8 / 9,
            "iou_adj": 8 / 9,
        },
        (0, 0, 3): {
            "slice": 3,
            "class": 0,
            **full,
            **heat("V", 0.0, 0.0, 0.0, 9, 9),
            "cprob0": 1.0,
            "iou": 1.0,
            "iou_adj": 1.0,
        },
    }
    check_rows(seg, table, expected, n_segments=5)


def test_cube_slices_first_axis(metrics):
    # slices along x (axis 0): 3 slices of 3 x 4 (axes y, z).
    # x = 0 and x = 2: all class 0, one whole-slice segment of 12 px each: S_in = 12, S_bd = 0,
    #   S_rel = S_rel_in = 12. V: 9 px with z < 3 have .25, 3 px with z = 3 have 0 ->
    #   V = V_in = 9 * .25 / 12 = .1875, V_bd = 0, V_rel = V_rel_in = 12 * .1875 = 2.25.
    #   GT of these slices is all 0 -> IoU 1.
    # x = 1: centre (y,z) = (1,1) is class 1; the ring segment has 11 px: boundary = the 8
    #   in-plane neighbours of (1,1) (y 0..2, z 0..2), interior = the 3 px with z = 3:
    #   S_in = 3, S_bd = 8, S_rel = 11/8, S_rel_in = 3/8. V: boundary .25, interior 0 ->
    #   V = 2/11, V_in = 0, V_bd = .25, V_rel = .25, V_rel_in = 0.
    #   GT of slice x = 1: class 1 at (1,1), (1,2) (one component), class 0 elsewhere (10 px,
    #   one component). Ring: |k ∩ K'| = 10 ((1,2) is GT 1), |k ∪ K'| = 11 -> 10/11.
    #   Centre: K' = {(1,1), (1,2)} -> 1/2.
    # 4 segments (slices along z: 5, 3d: 2).
    probs, gt = _cube_case()
    seg, table = metrics(probs, gt, mode="slices", slice_axis=0)
    whole = {
        "class": 0,
        "S": 12,
        "S_in": 12,
        "S_bd": 0,
        "S_rel": 12,
        "S_rel_in": 12,
        **heat("V", 0.1875, 0.1875, 0.0, 12, 12),
        "iou": 1.0,
        "iou_adj": 1.0,
    }
    expected = {
        (0, 0, 0): {"slice": 0, **whole},
        (2, 0, 0): {"slice": 2, **whole},
        (1, 0, 0): {
            "slice": 1,
            "class": 0,
            "S": 11,
            "S_in": 3,
            "S_bd": 8,
            "S_rel": 11 / 8,
            "S_rel_in": 3 / 8,
            **heat("V", 2 / 11, 0.0, 0.25, 11 / 8, 3 / 8),
            "iou": 10 / 11,
            "iou_adj": 10 / 11,
        },
        (1, 1, 1): {
            "slice": 1,
            "class": 1,
            "S": 1,
            "S_in": 0,
            "S_bd": 1,
            "iou": 0.5,
            "iou_adj": 0.5,
        },
    }
    check_rows(seg, table, expected, n_segments=4)


# --------------------------------------------------------------------------------------------
# Ignore label.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [255, 9])
def test_ignore_label(metrics, ignore_index):
    # q = 3, 2 x 7:
    #   pred  0 0 1 1 2 2 0        gt  0 I 1 I I I 1
    #         0 0 1 1 2 2 0            1 I I I I I I       (I = ignore_index)
    # A (class 0, cols 0-1): non-ignored pixels (0,0) [GT 0] and (1,0) [GT 1]. The only class-0
    #   GT pixel is (0,0): K' = {(0,0)}. |A ∩ K'| = 1; union without ignored pixels =
    #   {(0,0), (1,0)} = 2 -> IoU = 0.5 (it would be 1/4 if ignored pixels counted). Q = D
    #   (the other class-0 segment) does not meet K' -> IoU_adj = 0.5.
    # B (class 1, cols 2-3): only (0,2) is not ignored and it is GT 1. Class-1 GT pixels (1,0),
    #   (0,2), (0,6) are pairwise non-adjacent (ignored pixels never join GT components), so
    #   K' = {(0,2)}: IoU = IoU_adj = 1/1 = 1.
    # C (class 2, cols 4-5): every pixel ignored -> IoU = IoU_adj = NaN.
    # D (class 0, col 6): (0,6) is GT 1, (1,6) ignored; no class-0 GT -> K' empty -> 0 and 0.
    I = ignore_index  # noqa: E741
    pred = np.array([[0, 0, 1, 1, 2, 2, 0]] * 2)
    probs = np.full((2, 7, 3), 0.25)
    np.put_along_axis(probs, pred[..., None], 0.5, axis=-1)
    gt = np.array([[0, I, 1, I, I, I, 1], [1, I, I, I, I, I, I]], dtype=np.uint8)
    seg, table = metrics(probs, gt, ignore_index=ignore_index)
    nan = float("nan")
    expected = {
        (0, 0): {"class": 0, "S": 4, "iou": 0.5, "iou_adj": 0.5},
        (0, 2): {"class": 1, "S": 4, "iou": 1.0, "iou_adj": 1.0},
        (0, 4): {"class": 2, "S": 4, "iou": nan, "iou_adj": nan},
        (0, 6): {"class": 0, "S": 2, "iou": 0.0, "iou_adj": 0.0},
    }
    check_rows(seg, table, expected, n_segments=4)


def test_no_gt_no_iou_columns(metrics):
    probs = two_class_probs(np.full((3, 3), 0.25))
    _, table = metrics(probs)
    assert "iou" not in table.columns
    assert "iou_adj" not in table.columns


def test_column_order(metrics):
    # The contract's column order, with slices, GT and a custom measure list.
    probs, gt = _cube_case()
    _, table = metrics(probs, gt, mode="slices", slice_axis=-1, measures=("V", "E"))
    assert list(table.columns) == [
        "index", "slice", "class", "S", "S_in", "S_bd", "S_rel", "S_rel_in",
        "V", "V_in", "V_bd", "V_rel", "V_rel_in",
        "E", "E_in", "E_bd", "E_rel", "E_rel_in",
        "cprob0", "cprob1", "iou", "iou_adj",
    ]  # fmt: skip
    _, table = metrics(probs[0], mode="2d")
    assert list(table.columns) == [
        "index", "class", "S", "S_in", "S_bd", "S_rel", "S_rel_in",
        "E", "E_in", "E_bd", "E_rel", "E_rel_in",
        "D", "D_in", "D_bd", "D_rel", "D_rel_in",
        "V", "V_in", "V_bd", "V_rel", "V_rel_in",
        "cprob0", "cprob1",
    ]  # fmt: skip


def test_numbering_raster_order(metrics):
    # Not part of the written contract, but the expected convention (scikit-image label order):
    # ids follow the C order of each segment's first pixel; in slices mode slice by slice.
    p1 = np.array([0.75, 0.625, 0.375, 0.625, 1.0]).reshape(1, 5, 1)
    probs = two_class_probs(np.broadcast_to(p1, (3, 5, 2)))
    seg, _ = metrics(probs[:, :, 0], mode="2d")
    np.testing.assert_array_equal(np.asarray(seg)[0], [1, 1, 2, 3, 3])
    seg, _ = metrics(probs, mode="slices", slice_axis=-1)
    np.testing.assert_array_equal(np.asarray(seg)[0], [[1, 4], [1, 4], [2, 5], [3, 6], [3, 6]])
    probs, _ = _cube_case()
    seg, _ = metrics(probs, mode="slices", slice_axis=-1)
    np.testing.assert_array_equal(np.asarray(seg)[1, 1], [1, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(seg)[0, 0], [1, 2, 4, 5])


# --------------------------------------------------------------------------------------------
# Pixel heatmaps.
# --------------------------------------------------------------------------------------------
def test_dispersion_maps_by_hand(maps_fn):
    # q = 3, four pixels in a 1 x 4 image:
    #  (1, 0, 0):        E = 0, D = 1 - 1 + 0 = 0, V = 0
    #  (.5, .25, .25):   E = (.5 ln 2 + 2 * .25 ln 4) / ln 3 = 1.5 ln 2 / ln 3, D = 1 - .5 + .25
    #                    = .75, V = .5
    #  (1/3, 1/3, 1/3):  E = ln 3 / ln 3 = 1, D = 1 - 1/3 + 1/3 = 1, V = 2/3
    #  (.5, .5, 0):      tie: p1 = p2 = .5, E = ln 2 / ln 3, D = 1, V = .5
    probs = np.array([[[1, 0, 0], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]]])
    out = maps_fn(probs)
    np.testing.assert_allclose(out["E"], [[0, 1.5 * LN2 / LN3, 1, LN2 / LN3]], atol=1e-6)
    np.testing.assert_allclose(out["D"], [[0, 0.75, 1, 1]], atol=1e-6)
    np.testing.assert_allclose(out["V"], [[0, 0.5, 2 / 3, 0.5]], atol=1e-6)


def test_sample_maps_by_hand(maps_fn):
    # q = 3, T = 2 samples, 1 x 3 image:
    #  pixel 0: (1,0,0) and (0,1,0): mean (.5,.5,0), H(mean) = ln 2, each sample has H = 0
    #           -> MI = ln 2 / ln 3; variances per class (1,0)->.25, (0,1)->.25, (0,0)->0,
    #           VAR = .5 / 3 = 1/6. On the mean: E = ln2/ln3, D = 1, V = .5.
    #  pixel 1: both samples (.5,.25,.25): MI = 0, VAR = 0.
    #  pixel 2: (.5,.5,0) and (.5,0,.5): mean (.5,.25,.25), H(mean) = 1.5 ln 2, each sample
    #           H = ln 2 -> MI = .5 ln 2 / ln 3; variances 0, .0625, .0625 -> VAR = 1/24.
    samples = np.array(
        [
            [[[1, 0, 0], [0.5, 0.25, 0.25], [0.5, 0.5, 0]]],
            [[[0, 1, 0], [0.5, 0.25, 0.25], [0.5, 0, 0.5]]],
        ]
    )
    probs = samples.mean(axis=0)
    out = maps_fn(probs, samples)
    np.testing.assert_allclose(out["MI"], [[LN2 / LN3, 0, 0.5 * LN2 / LN3]], atol=1e-6)
    np.testing.assert_allclose(out["VAR"], [[1 / 6, 0, 1 / 24]], atol=1e-6)
    np.testing.assert_allclose(out["E"], [[LN2 / LN3, 1.5 * LN2 / LN3, 1.5 * LN2 / LN3]], atol=1e-6)
    np.testing.assert_allclose(out["D"], [[1, 0.75, 0.75]], atol=1e-6)
    np.testing.assert_allclose(out["V"], [[0.5, 0.5, 0.5]], atol=1e-6)
