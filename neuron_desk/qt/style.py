"""Frames drawn from a picture of themselves: the same pixels as the style's, for a fraction of
the cost.

Fusion draws a scroll area's frame, a tab widget's pane and a line edit's panel as antialiased
(rounded) rectangles: ~0.4 ms for a 1600×350 list's frame and ~0.6 ms for a 1500-pixel-wide
line edit on a slow machine, about a third of repainting the whole window, most of it stroking
edges that are the same all along. `SlicedFrames` asks the style once for a small copy of the
primitive (its corners at their size, one pixel of each edge) and draws any size from it: the
corners as they are, the edges and the middle stretched from their one pixel. The copy is
kept per primitive, state, palette, frame width and (for a line edit, whose panel shades from
top to bottom) height. The main window's widgets opt in (`slice_frames`); dialogs keep the
style as it is.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

Style = QtWidgets.QStyle
SLICED = {
    Style.PrimitiveElement.PE_Frame: False,
    Style.PrimitiveElement.PE_FrameTabWidget: False,
    Style.PrimitiveElement.PE_PanelLineEdit: True,
}
"""The primitives drawn from a copy: whether only their width stretches (their look changes
from top to bottom, so the copy is as tall as the widget)."""
CORNER = 6
"""Pixels of each corner kept as they are (the styles' rounded corners fit in 3)."""
MAX_KEPT = 64
_TRANSLATE = QtGui.QTransform.TransformationType.TxTranslate.value


class SlicedFrames(QtWidgets.QProxyStyle):
    """A proxy of the application's style that draws `SLICED` primitives from small copies."""

    def __init__(self, base: QtWidgets.QStyle) -> None:
        super().__init__(base)
        self._copies: dict[tuple[object, ...], tuple[QtGui.QPixmap, bool]] = {}
        """Per key: the copy, and whether its middle is clear (a frame's inside)."""

    def drawPrimitive(
        self,
        element: QtWidgets.QStyle.PrimitiveElement,
        option: QtWidgets.QStyleOption,
        painter: QtGui.QPainter,
        widget: QtWidgets.QWidget | None = None,
    ) -> None:
        wide_only = SLICED.get(element)
        rect = option.rect
        small = 2 * CORNER + 1
        if (
            wide_only is None
            or rect.width() <= small
            or (not wide_only and rect.height() <= small)
            or painter.transform().type().value > _TRANSLATE
        ):
            super().drawPrimitive(element, option, painter, widget)
            return
        ratio = painter.device().devicePixelRatio() if painter.device() is not None else 1.0
        if ratio != int(ratio):  # slices of whole device pixels only
            super().drawPrimitive(element, option, painter, widget)
            return
        height = rect.height() if wide_only else small
        copy, clear = self._copy(element, option, widget, height, ratio)
        _draw_sliced(painter, rect, copy, wide_only, clear)

    def _copy(
        self,
        element: QtWidgets.QStyle.PrimitiveElement,
        option: QtWidgets.QStyleOption,
        widget: QtWidgets.QWidget | None,
        height: int,
        ratio: float,
    ) -> tuple[QtGui.QPixmap, bool]:
        """The primitive drawn by the style at (2 × CORNER + 1) × `height`, and whether its
        middle pixel is fully transparent."""
        frame = option if isinstance(option, QtWidgets.QStyleOptionFrame) else None
        key = (
            element, int(option.state.value), option.palette.cacheKey(), option.direction,
            height, ratio, type(widget).__name__,
            (frame.lineWidth, frame.midLineWidth, int(frame.features.value),
             int(frame.frameShape.value)) if frame is not None else None,
        )  # fmt: skip
        kept = self._copies.get(key)
        if kept is None:
            if len(self._copies) >= MAX_KEPT:
                self._copies.clear()
            size = QtCore.QSize(2 * CORNER + 1, height)
            copy = QtGui.QPixmap(size * ratio)
            copy.setDevicePixelRatio(ratio)
            copy.fill(QtCore.Qt.GlobalColor.transparent)
            whole = QtCore.QRect(option.rect)
            option.rect = QtCore.QRect(QtCore.QPoint(0, 0), size)  # the caller's, lent
            onto = QtGui.QPainter(copy)
            try:
                super().drawPrimitive(element, option, onto, widget)
            finally:
                onto.end()
                option.rect = whole
            middle = int((CORNER + 0.5) * ratio)
            clear = copy.toImage().pixelColor(middle, middle).alpha() == 0
            kept = self._copies[key] = (copy, clear)
        return kept


def _draw_sliced(
    painter: QtGui.QPainter, rect: QtCore.QRect, copy: QtGui.QPixmap, wide_only: bool,
    clear_middle: bool,
) -> None:
    """`copy` over `rect`: corners as they are, the one-pixel middle row and column stretched
    (only the column when `wide_only`: `copy` is as tall as `rect`); the middle left out
    when it is clear."""
    c = CORNER
    ratio = copy.devicePixelRatio()
    x0, y0, w, h = rect.x(), rect.y(), rect.width(), rect.height()
    # (where, where in the copy, how wide or tall there, how wide or tall in the copy)
    columns = ((x0, 0, c, c), (x0 + c, c, w - 2 * c, 1), (x0 + w - c, c + 1, c, c))
    rows: tuple[tuple[int, int, int, int], ...] = (
        ((y0, 0, h, h),)
        if wide_only
        else ((y0, 0, c, c), (y0 + c, c, h - 2 * c, 1), (y0 + h - c, c + 1, c, c))
    )
    hints = painter.renderHints()
    # stretched without smoothing (a one-pixel slice stays its colour) or antialiasing
    painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
    try:
        for x, sx, tw, sw in columns:
            for y, sy, th, sh in rows:
                if sx == c and sy == c and not wide_only and clear_middle:
                    continue  # a frame's inside: nothing to draw (stretched, it cost the most)
                source = QtCore.QRect(
                    int(sx * ratio), int(sy * ratio), int(sw * ratio), int(sh * ratio)
                )
                painter.drawPixmap(QtCore.QRect(x, y, tw, th), copy, source)
    finally:
        painter.setRenderHints(hints)


def slice_frames(*widgets: QtWidgets.QWidget) -> None:
    """Draw these widgets' frames (and a line edit's panel) from copies (`SlicedFrames`)."""
    style = _shared()
    for widget in widgets:
        widget.setStyle(style)


_STYLES: dict[str, SlicedFrames] = {}


def _shared() -> SlicedFrames:
    """One proxy of the application's style (by name), made when first needed."""
    name = QtWidgets.QApplication.style().name()
    style = _STYLES.get(name)
    if style is None:
        style = _STYLES[name] = SlicedFrames(QtWidgets.QStyleFactory.create(name))
    return style
