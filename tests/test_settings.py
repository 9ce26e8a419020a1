"""Settings persistence: round trip, and a broken file is kept, never silently overwritten."""

import json

import pytest

from napari_metaseg._widgets import _settings


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path))


def test_round_trip_and_merge(tmp_path):
    _settings.update_settings("meta", {"last_model_path": "/data/model.json"})
    _settings.update_settings("analysis", {"mode": "slices"})
    _settings.update_settings("analysis", {"min_interior": 3})
    assert _settings.section("meta") == {"last_model_path": "/data/model.json"}
    assert _settings.section("analysis") == {"mode": "slices", "min_interior": 3}
    assert json.loads((tmp_path / "settings.json").read_text())["meta"]["last_model_path"]


def test_corrupt_file_is_kept_aside_with_a_warning(tmp_path):
    (tmp_path / "settings.json").write_text('{"meta": {"last_model_path": "/data/m.json"')
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert _settings.load_settings() == {}
    assert '"/data/m.json"' in (tmp_path / "settings.json.corrupt").read_text()
