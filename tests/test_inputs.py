"""Input validation of ``as_probabilities`` / ``segment_metrics``: bad inputs raise a ValueError
whose message names the problem; tolerable inputs (logits, quantised or slightly-off sums,
uint8, channels first, samples, other float dtypes) are converted as documented; no input is
ever modified in place."""

from __future__ import annotations

import warnings

import numpy as np
import pytest


def _engine():
    from napari_metaseg import core

    if not hasattr(core, "as_probabilities"):
        pytest.skip("engine napari_metaseg.core is not written yet")
    return core


@pytest.fixture
def core():
    return _engine()


def _valid(shape=(5, 6), q=3, seed=0, low=0.0):
    """Valid float64 probabilities (rows sum to 1) with every value in [low, 1]."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(q), size=shape)
    return low + (1.0 - q * low) * p


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _metrics(core):
    """segment_metrics as a one-argument function of the probabilities."""
    return lambda probs, **kw: core.segment_metrics(probs, **kw)


@pytest.fixture(params=["as_probabilities", "segment_metrics"])
def accept(request, core):
    """Each public entry point that takes a probability map."""
    if request.param == "as_probabilities":
        return core.as_probabilities
    return _metrics(core)


# --------------------------------------------------------------------------------------------
# rejected inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6,), (2, 3, 4, 5, 2)], ids=["1d", "5d"])
def test_wrong_number_of_dimensions(accept, shape):
    x = np.full(shape, 1.0 / shape[-1])
    with pytest.raises(ValueError, match=r"(?i)dimension|ndim|\bD\b"):
        accept(x)


def test_single_class(accept):
    with pytest.raises(ValueError, match=r"(?i)class"):
        accept(np.ones((4, 4, 1)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf(accept, bad):
    x = _valid()
    x[2, 3, 1] = bad
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        accept(x)


@pytest.mark.parametrize("row", [(0.6, 0.45, -0.05), (0.501, 0.5, -0.001)])
def test_negative_probability(accept, row):
    # Every row still sums to 1, so this is a broken probability map, not logits.
    x = _valid()
    x[1, 2] = row
    assert abs(x.sum(-1) - 1).max() < 1e-12
    with pytest.raises(ValueError, match=r"(?i)negative"):
        accept(x)


@pytest.mark.parametrize("shape", [(0, 4, 2), (0, 0, 2), (3, 0, 5, 2)])
def test_empty(accept, shape):
    with pytest.raises(ValueError, match=r"(?i)empty|size 0|zero"):
        accept(np.zeros(shape))


def test_gt_shape_mismatch(core):
    with pytest.raises(ValueError, match=r"(?i)shape"):
        core.segment_metrics(_valid((4, 4), q=2), np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"(?i)shape"):
        core.segment_metrics(_valid((4, 4), q=2), np.zeros((4, 4, 1), dtype=np.uint8))


def test_gt_float_non_integer(core):
    gt = np.zeros((4, 4))
    gt[1, 1] = 0.5
    with pytest.raises(ValueError, match=r"(?i)integer"):
        core.segment_metrics(_valid((4, 4), q=2), gt)


def test_gt_float_with_integer_values_is_accepted(core):
    # NIfTI readers hand out GT as float; integral floats are the same labels.
    probs = _valid((6, 5), q=3, seed=3)
    gt = np.random.default_rng(3).integers(0, 3, size=(6, 5)).astype(np.uint8)
    gt[0, 0] = 255
    _, t_int = core.segment_metrics(probs, gt)
    _, t_float = core.segment_metrics(probs, gt.astype(np.float64))
    np.testing.assert_allclose(
        t_int.to_numpy(dtype=np.float64), t_float.to_numpy(dtype=np.float64), equal_nan=True
    )


@pytest.mark.parametrize("bad_id", [2, 7, 254])
def test_gt_class_id_out_of_range(core, bad_id):
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[0, 0] = 255  # the ignore label is fine
    gt[3, 3] = bad_id
    with pytest.raises(ValueError, match=r"(?i)class|ids?\b"):
        core.segment_metrics(_valid((4, 4), q=2), gt)


def test_ignore_index_is_allowed_and_configurable(core):
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[0, 0] = 255
    core.segment_metrics(_valid((4, 4), q=2), gt)  # default ignore_index = 255
    gt[0, 0] = 9
    core.segment_metrics(_valid((4, 4), q=2), gt, ignore_index=9)
    with pytest.raises(ValueError, match=r"(?i)class|ids?\b"):
        core.segment_metrics(_valid((4, 4), q=2), gt)  # 9 is no class and not ignored


# --------------------------------------------------------------------------------------------
# converted inputs
# --------------------------------------------------------------------------------------------
def test_logits_are_softmaxed_with_warning(core):
    x = 3.0 * np.random.default_rng(1).standard_normal((5, 6, 3))
    with pytest.warns(UserWarning, match=r"(?i)logit"):
        p = core.as_probabilities(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, _softmax(x), rtol=1e-5, atol=1e-6)


def test_logits_channels_first(core):
    x = 3.0 * np.random.default_rng(2).standard_normal((3, 5, 6))
    with pytest.warns(UserWarning, match=r"(?i)logit"):
        p = core.as_probabilities(x, class_axis=0)
    np.testing.assert_allclose(p, np.moveaxis(_softmax(x, axis=0), 0, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factor", [0.985, 0.995, 1.005, 1.015, 1.0199])
def test_small_sum_errors_renormalised_silently(core, factor):
    x = _valid(low=0.01) * factor  # values stay inside [0, 1]
    assert x.max() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        p = core.as_probabilities(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, x / x.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.05])
def test_large_sum_errors_warn_and_renormalise(core, factor):
    x = _valid(q=4, low=0.02) * factor
    assert 0.0 <= x.min()
    assert x.max() <= 1.0
    with pytest.warns(UserWarning, match=r"(?i)sum"):
        p = core.as_probabilities(x)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, x / x.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_uint8_with_default_scale(core):
    u = np.round(_valid((7, 5), q=3, seed=4) * 255).astype(np.uint8)
    sums = u.sum(-1, dtype=np.int64)
    assert (sums != 255).any()  # quantisation really left some rows off
    assert np.abs(sums / 255 - 1).max() <= 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        p = core.as_probabilities(u)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, u / sums[..., None], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(core.as_probabilities(u, scale=1 / 255), p, rtol=1e-6, atol=1e-7)


def test_channels_first_equals_channels_last(core):
    x = _valid((5, 6), q=3, seed=5)
    first = np.ascontiguousarray(np.moveaxis(x, -1, 0))
    np.testing.assert_array_equal(core.as_probabilities(first, class_axis=0), core.as_probabilities(x))
    seg_a, t_a = core.segment_metrics(first, class_axis=0)
    seg_b, t_b = core.segment_metrics(x)
    np.testing.assert_array_equal(np.asarray(seg_a), np.asarray(seg_b))
    np.testing.assert_allclose(t_a.to_numpy(dtype=np.float64), t_b.to_numpy(dtype=np.float64))


def test_channels_first_3d(core):
    x = _valid((4, 5, 6), q=4, seed=6)
    first = np.moveaxis(x, -1, 0)
    np.testing.assert_allclose(core.as_probabilities(first, class_axis=0), x, rtol=1e-6, atol=1e-7)


def test_sample_axis_averages_samples(core):
    samples = np.stack([_valid((5, 6), q=3, seed=s) for s in range(4)])  # (T, y, x, q)
    p = core.as_probabilities(samples, sample_axis=0)
    assert p.shape == (5, 6, 3)
    np.testing.assert_allclose(p, samples.mean(0), rtol=1e-5, atol=1e-6)
    # samples last-but-one, classes first
    moved = np.ascontiguousarray(np.moveaxis(samples, (0, 3), (2, 0)))  # (q, y, T, x)
    p2 = core.as_probabilities(moved, class_axis=0, sample_axis=2)
    np.testing.assert_allclose(p2, samples.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes_give_float32(core, dtype):
    x = _valid((4, 4), q=2, seed=7).astype(dtype)
    p = core.as_probabilities(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    tol = 2e-3 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(p, x.astype(np.float64), atol=tol)
    maps = core.dispersion_maps(x)
    assert all(m.dtype == np.float32 for m in maps.values())


def test_as_probabilities_result_cannot_write_into_the_input(core):
    # CONVENTIONS.md: functions do not mutate inputs. Returning the caller's valid float32 array
    # without a copy is fine only if writing into the result cannot change the input.
    x = _valid((6, 5), q=3, seed=9).astype(np.float32)
    p = core.as_probabilities(x)
    assert p is not x
    assert not np.shares_memory(p, x) or not p.flags.writeable


# --------------------------------------------------------------------------------------------
# nothing is modified in place
# --------------------------------------------------------------------------------------------
def _inputs_for_inplace():
    rng = np.random.default_rng(8)
    return {
        "valid": _valid((6, 5), q=3, seed=8),
        "float32": _valid((6, 5), q=3, seed=9).astype(np.float32),
        "slightly-off": _valid((6, 5), q=3, seed=10, low=0.01) * 1.01,
        "far-off": _valid((6, 5), q=3, seed=11, low=0.01) * 0.9,
        "logits": 3.0 * rng.standard_normal((6, 5, 3)),
        "uint8": np.round(_valid((6, 5), q=3, seed=12) * 255).astype(np.uint8),
        "3d": _valid((4, 3, 5), q=2, seed=13),
    }


@pytest.mark.parametrize("kind", list(_inputs_for_inplace()))
def test_inputs_not_modified(core, kind):
    x = _inputs_for_inplace()[kind]
    gt = np.random.default_rng(14).integers(0, x.shape[-1], size=x.shape[:-1]).astype(np.uint8)
    gt.flat[0] = 255
    x0, gt0 = x.copy(), gt.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # logits / sum warnings are not the point
        p = core.as_probabilities(x)
        np.testing.assert_array_equal(x, x0)
        core.dispersion_maps(x)
        np.testing.assert_array_equal(x, x0)
        pred = np.argmax(p, axis=-1)
        pred0 = pred.copy()
        core.label_segments(pred)
        np.testing.assert_array_equal(pred, pred0)
        core.segment_metrics(x, gt)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(gt, gt0)
        first = np.ascontiguousarray(np.moveaxis(x, -1, 0))
        first0 = first.copy()
        core.segment_metrics(first, gt, class_axis=0)
        np.testing.assert_array_equal(first, first0)
        np.testing.assert_array_equal(gt, gt0)
    samples = np.stack([_valid(x.shape[:-1], q=x.shape[-1], seed=s) for s in range(3)])
    samples0 = samples.copy()
    mean = samples.mean(0)
    mean0 = mean.copy()
    core.as_probabilities(samples, sample_axis=0)
    core.dispersion_maps(mean, measures=("E", "MI", "VAR"), samples=samples)
    np.testing.assert_array_equal(samples, samples0)
    np.testing.assert_array_equal(mean, mean0)
