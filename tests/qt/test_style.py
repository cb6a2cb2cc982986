"""Frames drawn from copies of themselves (`neuron_desk.qt.style`) look exactly as the style
draws them: every pixel, at every size, focused or not, enabled or not, light or dark."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.qt.style import SlicedFrames, slice_frames

Make = Callable[[], QtWidgets.QWidget]


def _render(widget: QtWidgets.QWidget) -> QtGui.QImage:
    """The widget alone (its own frame or panel, not its children) over magenta."""
    image = QtGui.QImage(widget.size(), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QtGui.QColor(255, 0, 255))
    painter = QtGui.QPainter(image)
    widget.render(painter, QtCore.QPoint(0, 0), QtGui.QRegion(), QtWidgets.QWidget.RenderFlag(0))
    painter.end()
    return image


def _dark() -> QtGui.QPalette:
    palette = QtGui.QPalette(QtGui.QColor(40, 40, 44))
    palette.setColor(QtGui.QPalette.ColorRole.Base, QtGui.QColor(20, 20, 24))
    return palette


WIDGETS: list[tuple[str, Make]] = [
    ("list", QtWidgets.QListView),
    ("table", QtWidgets.QTableView),
    ("tabs", QtWidgets.QTabWidget),
    ("line edit", lambda: QtWidgets.QLineEdit("a line of text")),
]
SIZES = [(60, 40), (1642, 358), (300, 22), (14, 14), (260, 782)]


@pytest.mark.parametrize(("name", "make"), WIDGETS)
def test_sliced_frames_are_the_styles_pixels(
    qapp: QtWidgets.QApplication, name: str, make: Make
) -> None:
    for dark in (False, True):
        for enabled in (True, False):
            for width, height in SIZES:
                widget = make()
                widget.resize(width, height)
                if dark:
                    widget.setPalette(_dark())
                widget.setEnabled(enabled)
                widget.show()
                QtWidgets.QApplication.processEvents()
                styled = _render(widget)
                slice_frames(widget)
                assert isinstance(widget.style(), SlicedFrames)
                sliced = _render(widget)
                assert sliced == styled, (name, dark, enabled, width, height)
                widget.close()


def test_a_focused_line_edit_is_drawn_as_the_style_draws_it(qapp: QtWidgets.QApplication) -> None:
    edit = QtWidgets.QLineEdit()
    edit.setReadOnly(True)  # no blinking cursor between the two renderings
    edit.resize(400, 24)
    edit.show()
    edit.activateWindow()
    edit.setFocus()
    QtWidgets.QApplication.processEvents()
    assert edit.hasFocus()
    styled = _render(edit)
    slice_frames(edit)
    assert _render(edit) == styled
    edit.close()


def test_one_copy_serves_every_size(qapp: QtWidgets.QApplication) -> None:
    """A frame's copy is made once and drawn at any size (a line edit's once per height)."""
    style = SlicedFrames(QtWidgets.QStyleFactory.create(QtWidgets.QApplication.style().name()))
    view = QtWidgets.QListView()
    view.setStyle(style)
    view.show()
    for width in range(100, 1700, 160):
        view.resize(width, width // 3)
        _render(view)
    assert len(style._copies) == 1
    view.close()
