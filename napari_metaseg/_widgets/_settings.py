"""Settings that persist between sessions: a small JSON file in the user's config directory.

``NAPARI_METASEG_CONFIG_DIR`` overrides the directory (tests use it). A settings file that cannot
be parsed is kept as ``settings.json.corrupt`` (never silently overwritten) and the defaults are
used; writes go through :func:`napari_metaseg.core.atomic.atomic_write_text` (a new temporary
file with an unpredictable name, fsync and an atomic rename).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ..core.atomic import atomic_write_text

FILENAME = "settings.json"


def config_dir():
    env = os.environ.get("NAPARI_METASEG_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-metaseg", appauthor=False))


def settings_path():
    return config_dir() / FILENAME


def load_settings():
    """All stored settings as a dict (empty when none are stored)."""
    path = settings_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        return data
    except (OSError, ValueError) as exc:
        backup = path.with_name(FILENAME + ".corrupt")
        try:
            path.replace(backup)
        except OSError:
            backup = path
        warnings.warn(f"napari-metaseg settings {path} unreadable ({exc}); kept as {backup}",
                      RuntimeWarning, stacklevel=2)
        return {}


def update_settings(section, values):
    """Merge ``values`` into ``section`` of the stored settings and write them back."""
    data = load_settings()
    sect = dict(data.get(section, {}))
    sect.update(values)
    data[section] = sect
    path = settings_path()
    try:
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))
    except OSError as exc:
        warnings.warn(f"cannot write napari-metaseg settings to {path}: {exc}", RuntimeWarning,
                      stacklevel=2)
    return data


def section(name):
    return dict(load_settings().get(name, {}))
