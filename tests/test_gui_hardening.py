"""The panels against wrong inputs and full disks: a message that says what the layer looks like,
and a Save CSV that leaves the previous file whole."""

import errno
import os

import numpy as np
import pandas as pd
import pytest
from _gui_helpers import wait_for_worker

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]



def _panel(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "nuclei2d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    return viewer, widget


def test_an_image_is_not_offered_as_probabilities(make_napari_viewer):
    """The panel offers only layers that look like probability maps (the message of
    ``probability_class_axis`` for the others is held by tests/test_hostile_files.py)."""
    viewer, widget = _panel(make_napari_viewer)
    t1 = np.random.default_rng(0).integers(-50, 1200, size=(12, 64, 64)).astype(np.int16)
    viewer.add_image(t1, name="t1")
    choices = list(widget.form.probabilities.choices)
    assert "t1" not in choices and "nuclei softmax" in choices


def test_save_csv_on_a_full_disk_keeps_the_previous_file(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    _, widget = _panel(make_napari_viewer)
    with qtbot.waitSignal(widget.finished, timeout=120_000):
        widget.run_button.click()
    wait_for_worker(qtbot, widget)
    out = tmp_path / "segments.csv"
    widget.save_csv(out)
    good = out.read_bytes()
    assert len(good.splitlines()) == len(widget.shown_table()) + 1
    real = pd.DataFrame.to_csv

    def half_then_enospc(frame, dest, **kw):
        data = real(frame, None, **kw).encode()
        with open(dest, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_enospc)
    with pytest.raises(OSError) as info:
        widget.save_csv(out)
    assert info.value.errno == errno.ENOSPC
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
