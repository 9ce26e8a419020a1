import os
from pathlib import Path

import pytest

# The MetaSeg dock prepares the engine in a child process when it opens (see
# napari_metaseg/_widgets/warmup.py); tests that drive the dock expect runs to start at once, so
# it is off here, and tests/test_gui_workspace.py::test_the_dock_prepares_the_engine turns it on.
os.environ.setdefault("NAPARI_METASEG_WARM_UP", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """The real benchmark data beside the clone (``../shared/data``); skips where absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (only CI and developer machines have it)")
    return SHARED_DATA


@pytest.fixture
def private_dirs(tmp_path, monkeypatch):
    """Settings and review sidecars in the test's own folders, never the user's."""
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))
    return tmp_path
