"""The installed app starts on the bundled sample, paints a neuron and quits cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6 import QtCore, QtGui


def test_app_starts_on_the_bundled_sample_and_quits(tmp_path: Path) -> None:
    env = {**os.environ, "NEURON_DESK_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [sys.executable, "-m", "neuron_desk", "--screenshot", str(shot)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    image = QtGui.QImage(str(shot))
    assert not image.isNull() and image.width() >= 1000
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    last = settings.value("last_neuron")
    assert last is not None and last[0] == "smollm2-135m"  # the default dataset, offline
    assert (tmp_path / "store.sqlite3").is_file()
