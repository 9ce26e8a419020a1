"""The quality colours stay apart for colour-blind reviewers (simulated with colorspacious)."""

from __future__ import annotations

import numpy as np
import pytest
from _cvd import seen as _seen

from napari_metaseg.core.colors import NOT_RATED, QUALITY_STOPS, quality_rgba

pytest.importorskip("colorspacious")

#: Simulations: none, and full deuteranopia, protanopia, tritanopia (Machado et al. via colorspacious).
VISION = (None, "deuteranomaly", "protanomaly", "tritanomaly")
#: CAM02-UCS distances: about 2-3 units is a just noticeable difference; these are clear steps.
MIN_WORST_BEST = 40.0
MIN_TO_NOT_RATED = 25.0


@pytest.mark.parametrize("vision", VISION)
def test_worst_best_and_not_rated_stay_apart(vision):
    worst, best, not_rated = quality_rgba([0.0, 1.0, np.nan])[:, :3]
    w, b, n = _seen(np.stack([worst, best, not_rated]), vision)
    assert np.linalg.norm(w - b) >= MIN_WORST_BEST
    assert np.linalg.norm(w - n) >= MIN_TO_NOT_RATED
    assert np.linalg.norm(b - n) >= MIN_TO_NOT_RATED


@pytest.mark.parametrize("vision", VISION)
def test_not_rated_differs_from_every_rated_colour(vision):
    ramp = _seen(quality_rgba(np.linspace(0, 1, 201))[:, :3], vision)
    grey = _seen(np.array(NOT_RATED), vision)
    assert np.linalg.norm(ramp - grey, axis=1).min() >= 20.0


@pytest.mark.parametrize("vision", VISION)
def test_quality_steps_of_a_quarter_are_visible(vision):
    """Segments a quarter of the range apart (e.g. IoU_adj 0.25 vs 0.5) are told apart."""
    ramp = _seen(quality_rgba(np.linspace(0, 1, 5))[:, :3], vision)
    assert np.linalg.norm(np.diff(ramp, axis=0), axis=1).min() >= 8.0


def test_the_ramp_hits_its_stops_and_clips():
    n = len(QUALITY_STOPS) - 1
    rgba = quality_rgba(np.linspace(0, 1, n + 1), alpha=0.5)
    np.testing.assert_allclose(rgba[:, :3], QUALITY_STOPS, atol=1e-6)
    assert np.all(rgba[:, 3] == 0.5)
    np.testing.assert_array_equal(quality_rgba([-3.0, 7.0]), quality_rgba([0.0, 1.0]))
    np.testing.assert_allclose(quality_rgba([np.nan])[0, :3], NOT_RATED, atol=1e-6)
    # halfway between two stops is their mean
    mid = quality_rgba([0.5 / n])[0, :3]
    np.testing.assert_allclose(mid, QUALITY_STOPS[:2].mean(axis=0), atol=1e-6)
