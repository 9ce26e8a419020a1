"""The per-slice quality strip widget on its own: geometry, clicks, colours, tooltips."""

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_metaseg.core.colors import quality_rgba

pytestmark = pytest.mark.gui


@pytest.fixture
def strip(qtbot):
    from napari_metaseg._widgets.quality_strip import QualityStrip

    w = QualityStrip()
    qtbot.addWidget(w)
    w.resize(400, 90)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_every_slice_is_reachable_by_its_bar(strip):
    slices = np.array([40, 3, 7, 8, 9, 120])  # unsorted, with gaps
    strip.set_rows(slices, np.linspace(0, 1, 6))
    assert strip.span == (3, 120)
    for s in slices:
        assert strip.slice_at(strip.x_of(s)) == s
    # a gap maps to the nearest shown slice
    assert strip.slice_at(strip.x_of(80)) in (40, 120)
    assert strip.slice_at(1) is None  # the axis labels


def test_click_emits_the_slice(strip, qtbot):
    strip.set_rows(np.arange(10, 30), np.full(20, 0.5))
    with qtbot.waitSignal(strip.slice_clicked) as sig:
        qtbot.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(int(strip.x_of(17)), 40))
    assert sig.args == [17]


def test_bars_have_the_overlay_colours(strip):
    values = np.array([0.05, 0.5, 0.95, np.nan])
    strip.set_rows(np.arange(4), values)
    img = strip.grab().toImage()
    expected = quality_rgba(values, alpha=1.0)[:, :3] * 255
    r = strip._plot_rect()
    y = int(r.bottom() - 2)  # bottom of every bar (a not-rated bar is short but present)
    for i in range(4):
        c = img.pixelColor(int(strip.x_of(i)), y)
        np.testing.assert_allclose([c.red(), c.green(), c.blue()], expected[i], atol=2)


def test_true_values_and_current_slice_are_drawn(strip):
    strip.set_rows(np.arange(5), np.full(5, 0.2), true=np.array([0.9, np.nan, 0.9, 0.9, 0.9]))
    img = strip.grab().toImage()
    r = strip._plot_rect()
    y = int(r.bottom() - 0.9 * r.height())
    dot = img.pixelColor(int(strip.x_of(0)), y)
    assert min(dot.red(), dot.green(), dot.blue()) > 200  # a white dot at the true value
    none = img.pixelColor(int(strip.x_of(1)), y)
    assert max(none.red(), none.green(), none.blue()) < 60  # no dot where the truth is unknown
    strip.set_current(3)
    img = strip.grab().toImage()
    line = img.pixelColor(int(strip.x_of(3)), int(r.top() + 3))
    assert min(line.red(), line.green(), line.blue()) > 200


def test_tooltip_names_slice_values_and_failure(strip):
    strip.set_rows([4, 5], [0.4, np.nan], true=[0.55, np.nan], fail_below=0.7)
    assert strip.describe(4) == "slice 4: predicted quality 0.40, true mean IoU 0.55 (below 0.7)"
    assert strip.describe(5) == "slice 5: predicted quality not rated"


def test_mismatched_rows_are_refused(strip):
    with pytest.raises(ValueError, match="3 predicted values for 2 slices"):
        strip.set_rows([1, 2], [0.1, 0.2, 0.3])
    strip.clear()
    assert strip.span is None and strip.slice_at(100) is None
