"""Where neuron-desk keeps its files: NEURON_DESK_HOME, else the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "neuron-desk"


def data_dir() -> Path:
    """The directory of the store and other per-user data."""
    home = os.environ.get("NEURON_DESK_HOME")
    return Path(home) if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def store_path() -> Path:
    """The user's SQLite store."""
    return data_dir() / "store.sqlite3"
