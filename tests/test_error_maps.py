"""Voxel error maps (core.error_maps): detection scores against brute-force definitions, the three
flagging rules, the calibration."""

import numpy as np
import pytest

from napari_metaseg.core import dispersion_maps
from napari_metaseg.core.error_maps import (
    ErrorCalibration,
    calibrate_errors,
    error_detection_scores,
    flag_errors,
    flagged_scores,
)


def _case(seed, shape=(24, 30), q=3, noise=0.6):
    """Probabilities and a GT that disagrees with the argmax mostly where the probabilities are flat."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*shape, q)) * rng.uniform(0.2, 3.0, shape)[..., None]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    pred = p.argmax(-1)
    doubt = 1 - p.max(-1)
    flip = rng.random(shape) < noise * doubt
    gt = np.where(flip, (pred + rng.integers(1, q, shape)) % q, pred)
    return p, gt


def _auroc_pairs(err, h):
    pos, neg = h[err], h[~err]
    return np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))


def test_scores_match_brute_force():
    p, gt = _case(0)
    gt[:2] = 255
    mask = np.zeros(gt.shape, bool)
    mask[:, 3:] = True
    s = error_detection_scores(p, gt, mask=mask, thresholds=(0.2, 0.6)).set_index("measure")
    maps = dispersion_maps(p)
    valid = mask & (gt != 255)
    err = (p.argmax(-1) != gt)[valid]
    for m in ("E", "D", "V"):
        h = maps[m][valid].astype(np.float64)
        assert s.loc[m, "auroc"] == pytest.approx(_auroc_pairs(err, h), abs=1e-12)
        for t in (0.2, 0.6):
            f = h >= t
            assert s.loc[m, f"recall_{t:g}"] == pytest.approx((f & err).sum() / err.sum())
            assert s.loc[m, f"precision_{t:g}"] == pytest.approx((f & err).sum() / f.sum())
        # average precision: sum over distinct scores of precision times the recall gained there
        ap = sum(((h >= v) & err).sum() / (h >= v).sum() * (err & (h == v)).sum() / err.sum()
                 for v in np.unique(h))
        assert s.loc[m, "auprc"] == pytest.approx(ap, abs=1e-12)
    assert s.loc["E", "n_voxels"] == valid.sum() and s.loc["E", "n_errors"] == err.sum()


def test_scores_without_errors_are_nan_and_gt_is_required():
    p, _ = _case(1)
    s = error_detection_scores(p, p.argmax(-1), measures=("E",))
    assert np.isnan(s.loc[0, "auroc"]) and np.isnan(s.loc[0, "recall_0.5"]) and s.loc[0, "n_errors"] == 0
    with pytest.raises(ValueError, match="ground truth"):
        error_detection_scores(p, None)
    with pytest.raises(ValueError, match="measure"):
        error_detection_scores(p, p.argmax(-1), measures=("X",))


def test_fixed_and_quantile_rules():
    p, _ = _case(2)
    v = dispersion_maps(p)["V"]
    assert np.array_equal(flag_errors(p, measure="V", threshold=0.4), v >= 0.4)
    assert np.array_equal(flag_errors(p, measure="V"), v >= 0.5)  # default threshold
    mask = np.zeros(v.shape, bool)
    mask[5:15] = True
    f = flag_errors(p, measure="V", method="quantile", share=0.1, mask=mask)
    k = int(np.ceil(0.1 * mask.sum()))
    cut = np.sort(v[mask])[::-1][k - 1]
    assert np.array_equal(f, mask & (v >= cut)) and f.sum() >= k and not f[~mask].any()


def test_calibration_counts_isotonic_rates_and_thresholds():
    cases = [_case(s) for s in range(3)]
    cal = calibrate_errors([c[0] for c in cases], [c[1] for c in cases], measure="E", n_bins=50)
    e = np.concatenate([dispersion_maps(c[0])["E"].ravel() for c in cases])
    err = np.concatenate([(c[0].argmax(-1) != c[1]).ravel() for c in cases])
    b = np.minimum((e * 50).astype(int), 49)
    assert np.array_equal(cal.voxels_, np.bincount(b, minlength=50))
    assert np.array_equal(cal.errors_, np.bincount(b[err], minlength=50))
    assert np.all(np.diff(cal.error_rate_) >= -1e-15) and cal.n_cases_ == 3
    # the threshold for a recall finds at least that recall on the training voxels, one bin
    # higher does not
    for r in (0.5, 0.8, 0.95):
        t = cal.threshold_for_recall(r)
        assert (err & (b >= round(t * 50))).sum() / err.sum() >= r
        assert (err & (b >= round(t * 50) + 1)).sum() / err.sum() < r
        assert cal.share_for_recall(r) == pytest.approx((b >= round(t * 50)).mean())
    combined = ErrorCalibration.combine([calibrate_errors(c[0], c[1], measure="E", n_bins=50)
                                         for c in cases])
    assert np.array_equal(combined.voxels_, cal.voxels_)
    assert np.allclose(combined.error_rate_, cal.error_rate_)
    again = ErrorCalibration.from_dict(cal.to_dict())
    assert np.array_equal(again.error_rate_, cal.error_rate_) and again.measure == "E"


def test_calibrated_rule_reaches_its_expected_recall():
    cases = [_case(s) for s in range(4)]
    cal = calibrate_errors([c[0] for c in cases], [c[1] for c in cases], measure="V", n_bins=100)
    p = cases[0][0]
    for r in (0.5, 0.9):
        f = flag_errors(p, method="calibrated", calibration=cal, target_recall=r)
        pe = cal.error_probability(dispersion_maps(p)["V"])
        # flagged voxels hold at least r of the expected errors, and are the most uncertain ones
        assert pe[f].sum() >= r * pe.sum() - 1e-9
        assert f.any() and (pe[f].min() >= pe[~f].max() if (~f).any() else True)
    # on the training data at large, every rule chosen for a recall reaches it within bin accuracy
    ps, gts = [c[0] for c in cases], [c[1] for c in cases]
    for method in ("fixed", "quantile", "calibrated"):
        flags = [flag_errors(x, method=method, calibration=cal, target_recall=0.8) for x in ps]
        hits = sum(((x.argmax(-1) != g) & f).sum() for x, g, f in zip(ps, gts, flags, strict=True))
        n = sum((x.argmax(-1) != g).sum() for x, g in zip(ps, gts, strict=True))
        assert hits / n >= 0.7, method


def test_flagged_scores_and_rule_errors():
    p, gt = _case(5)
    f = flag_errors(p, measure="D", threshold=0.3)
    err = p.argmax(-1) != gt
    s = flagged_scores(f, p, gt)
    assert s["recall"] == pytest.approx((f & err).sum() / err.sum())
    assert s["precision"] == pytest.approx((f & err).sum() / f.sum())
    assert s["share_flagged"] == pytest.approx(f.mean())
    with pytest.raises(ValueError, match="needs calibration"):
        flag_errors(p, method="calibrated")
    with pytest.raises(ValueError, match="needs share"):
        flag_errors(p, method="quantile")
    with pytest.raises(ValueError, match="method must be"):
        flag_errors(p, method="otsu")
    with pytest.raises(ValueError, match="target recall"):
        flag_errors(p, method="calibrated", calibration=calibrate_errors(p, gt), target_recall=1.5)
    with pytest.raises(ValueError, match="not fitted"):
        ErrorCalibration().threshold_for_recall(0.5)
    with pytest.raises(ValueError, match="no misclassified"):
        calibrate_errors(p, p.argmax(-1))
