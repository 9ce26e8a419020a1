"""Results do not depend on how many threads compute them."""

import numba
import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core import segment_metrics


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("mode", ["3d", "slices"])
def test_tables_are_bit_identical_for_any_thread_count(mode):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 36, 30, 3)).astype(np.float32)
    from scipy.ndimage import uniform_filter

    logits = uniform_filter(logits, size=(5, 5, 5, 1)) * 6
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    gt = uniform_filter(rng.random((40, 36, 30)), 4).argsort(axis=None).reshape(40, 36, 30) % 3
    before = numba.get_num_threads()
    tables = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            tables.append(segment_metrics(probs, gt, mode=mode)[1])
    finally:
        numba.set_num_threads(before)
    assert len(tables[0]) > 20
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_writable_and_read_only_inputs_give_identical_tables():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(3, 0.4), size=(60, 50)).astype(np.float32)
    gt = probs.argmax(-1)
    gt[::5] = 2
    frozen = probs.copy()
    frozen.flags.writeable = False
    a = segment_metrics(probs, gt)[1]
    b = segment_metrics(frozen, gt)[1]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
