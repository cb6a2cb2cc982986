"""Render the application icon's SVG source into hicolor PNGs (run after editing the SVG).

    python packaging/render_icons.py

Writes packaging/icons/hicolor/NxN/apps/io.github.neuron_desk.NeuronDesk.png for each size.
Uses Qt's SVG renderer (PySide6 is already a dependency), on the offscreen platform.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtSvg

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "resources" / "icons" / "neuron-desk.svg"
OUT = ROOT / "packaging" / "icons" / "hicolor"
APP_ID = "io.github.neuron_desk.NeuronDesk"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(size: int, renderer: QtSvg.QSvgRenderer) -> QtGui.QImage:
    """The icon as a size × size ARGB image."""
    image = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(image)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def main() -> int:
    _app = QtGui.QGuiApplication(sys.argv[:1])  # Qt wants one before painting
    renderer = QtSvg.QSvgRenderer(str(SOURCE))
    if not renderer.isValid():
        print(f"cannot read {SOURCE}", file=sys.stderr)
        return 1
    for size in SIZES:
        target = OUT / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not render(size, renderer).save(str(target), "PNG"):
            print(f"cannot write {target}", file=sys.stderr)
            return 1
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
