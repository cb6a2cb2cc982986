"""Every location neuron-desk reads or writes, in one value object.

`Paths.from_env()` reads NEURON_DESK_HOME (else the platform's user data dir) and tiktoken's own
cache variables; nothing here writes the environment.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "neuron-desk"


@dataclass(frozen=True)
class Paths:
    """The data directory and the files in it, and tiktoken's cache."""

    home: Path
    tiktoken_cache: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        """The locations for this environment (default: `os.environ`)."""
        env = os.environ if env is None else env
        home = env.get("NEURON_DESK_HOME")
        if not home:
            import platformdirs

            home = platformdirs.user_data_dir(APP_NAME, appauthor=False)
        return cls(Path(home), tiktoken_cache_dir(env))

    @classmethod
    def at(cls, home: Path | str) -> Paths:
        """Everything under `home` (tests, portable installs); tiktoken's cache as configured."""
        return cls(Path(home), tiktoken_cache_dir(os.environ))

    @property
    def store(self) -> Path:
        """The user's SQLite store."""
        return self.home / "store.sqlite3"

    @property
    def profiles(self) -> Path:
        """The LLM endpoint profiles (`llm_profiles.json`)."""
        return self.home / "llm_profiles.json"

    @property
    def settings(self) -> Path:
        """The app's window settings (Qt's INI format)."""
        return self.home / "settings.ini"

    @property
    def local_server_log(self) -> Path:
        """The managed local llama.cpp server's log."""
        return self.home / "local-llm-server.log"


def tiktoken_cache_dir(env: Mapping[str, str]) -> Path:
    """Where tiktoken reads its cache: its own variables, else its default temp folder."""
    configured = env.get("TIKTOKEN_CACHE_DIR") or env.get("DATA_GYM_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"
