"""Token heatmaps: tokens laid out in rows, each on a background coloured by its activation.

Tokens are untrusted text: they are painted with QPainter.drawText (never parsed as HTML),
with newlines, tabs and other control characters shown as visible symbols so a row's layout
never breaks. A row may carry a second series (a simulation), painted as a bar under each token
(overlay) or as a second line (side by side).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from PySide6 import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

RowRole = Qt.ItemDataRole.UserRole + 1
"""A `HeatmapRow` for record rows; None for header rows."""

_SYMBOLS = {"\n": "↵", "\t": "⇥", "\r": "␍"}
PADDING = 1
LINE_GAP = 2


def visible_token(token: str) -> str:
    """The token as it is drawn: whitespace controls as symbols, nothing invisible."""
    if token == "":
        return "∅"
    out = []
    for ch in token:
        if ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def plain_tooltip(text: str) -> str:
    """A tooltip that shows `text` literally: Qt would render "<b>" in a tooltip as HTML."""
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


@dataclass
class HeatmapRow:
    """One sequence to draw: tokens, real activations, optionally simulated values."""

    tokens: Sequence[str]
    activations: Sequence[float]
    scale: float
    """The activation drawn at full colour (max over everything shown together)."""
    simulated: Sequence[float] | None = None
    simulated_scale: float = 10.0
    caption: str = ""
    """A short label drawn before the tokens (e.g. a per-sequence score)."""


class Palette:
    """Heat colours that work on light and dark backgrounds."""

    def __init__(self, widget_palette: QtGui.QPalette) -> None:
        base = widget_palette.color(QtGui.QPalette.ColorRole.Base)
        self.dark = base.lightnessF() < 0.5
        self.base = base
        self.text = widget_palette.color(QtGui.QPalette.ColorRole.Text)
        self.hot = QtGui.QColor(34, 139, 34) if not self.dark else QtGui.QColor(60, 200, 90)
        self.simulated = QtGui.QColor(30, 100, 220) if not self.dark else QtGui.QColor(90, 150, 255)

    def heat(self, value: float, scale: float, hot: QtGui.QColor | None = None) -> QtGui.QColor:
        """Colour of `value` on a 0..scale ramp from the base colour to `hot`."""
        t = 0.0 if scale <= 0 or value != value else max(0.0, min(1.0, value / scale))
        target = hot or self.hot
        return QtGui.QColor.fromRgbF(
            self.base.redF() + (target.redF() - self.base.redF()) * t,
            self.base.greenF() + (target.greenF() - self.base.greenF()) * t,
            self.base.blueF() + (target.blueF() - self.base.blueF()) * t,
        )

    def text_on(self, background: QtGui.QColor) -> QtGui.QColor:
        """Readable text colour on `background`."""
        return QtGui.QColor("black") if background.lightnessF() > 0.55 else QtGui.QColor("white")


def layout_row(
    row: HeatmapRow, metrics: QtGui.QFontMetrics, width: int, side_by_side: bool
) -> tuple[list[QtCore.QRect], int]:
    """Rectangles of each token (wrapped to `width`), and the height of the whole row."""
    line_height = metrics.height() + 2 * PADDING
    if row.simulated is not None and side_by_side:
        line_height = 2 * line_height
    elif row.simulated is not None:
        line_height += 4  # room for the simulation bar
    x = metrics.horizontalAdvance(row.caption) + 8 if row.caption else 0
    y = 0
    rects = []
    for token in row.tokens:
        w = metrics.horizontalAdvance(visible_token(token)) + 2 * PADDING
        if x > 0 and x + w > width:
            x = 0
            y += line_height + LINE_GAP
        rects.append(QtCore.QRect(x, y, w, line_height))
        x += w
    return rects, y + line_height + LINE_GAP * 2


def paint_row(
    painter: QtGui.QPainter,
    rect: QtCore.QRect,
    row: HeatmapRow,
    palette: Palette,
    font: QtGui.QFont,
    side_by_side: bool,
) -> None:
    """Draw a row of tokens inside `rect`."""
    metrics = QtGui.QFontMetrics(font)
    rects, _ = layout_row(row, metrics, rect.width(), side_by_side)
    painter.save()
    painter.setFont(font)
    if row.caption:
        painter.setPen(palette.text)
        caption_rect = QtCore.QRect(
            rect.left(), rect.top(), rect.width(), metrics.height() + 2 * PADDING
        )
        painter.drawText(
            caption_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, row.caption
        )
    for i, token in enumerate(row.tokens):
        box = rects[i].translated(rect.topLeft())
        real = row.activations[i] if i < len(row.activations) else 0.0
        text_box = QtCore.QRect(box)
        if row.simulated is not None:
            simulated = row.simulated[i] if i < len(row.simulated) else 0.0
            if side_by_side:
                top, bottom = (
                    box.adjusted(0, 0, 0, -box.height() // 2),
                    box.adjusted(0, box.height() // 2, 0, 0),
                )
                painter.fillRect(top, palette.heat(real, row.scale))
                painter.fillRect(
                    bottom, palette.heat(simulated, row.simulated_scale, palette.simulated)
                )
                text_box = top
                _draw_text(
                    painter,
                    bottom,
                    token,
                    palette.heat(simulated, row.simulated_scale, palette.simulated),
                    palette,
                )
            else:
                bar = box.adjusted(0, box.height() - 4, 0, 0)
                text_box = box.adjusted(0, 0, 0, -4)
                painter.fillRect(text_box, palette.heat(real, row.scale))
                painter.fillRect(
                    bar, palette.heat(simulated, row.simulated_scale, palette.simulated)
                )
        else:
            painter.fillRect(box, palette.heat(real, row.scale))
        _draw_text(painter, text_box, token, palette.heat(real, row.scale), palette)
    painter.restore()


def _draw_text(
    painter: QtGui.QPainter,
    box: QtCore.QRect,
    token: str,
    background: QtGui.QColor,
    palette: Palette,
) -> None:
    painter.setPen(palette.text_on(background))
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, visible_token(token))


def token_at(
    row: HeatmapRow,
    metrics: QtGui.QFontMetrics,
    width: int,
    side_by_side: bool,
    point: QtCore.QPoint,
) -> int | None:
    """Index of the token under `point` (relative to the row's top-left), if any."""
    rects, _ = layout_row(row, metrics, width, side_by_side)
    for i, box in enumerate(rects):
        if box.contains(point):
            return i
    return None


class RowsModel(QtCore.QAbstractListModel):
    """A flat list model over `self._rows`; subclasses say what each row shows in `row_data`."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: Sequence[object] = ()

    def rowCount(
        self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex()
    ) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def data(
        self,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> object:
        return self.row_data(index.row(), role) if index.isValid() else None

    def row_data(self, row: int, role: int) -> object:
        """What row `row` shows for `role` (None: nothing)."""
        raise NotImplementedError


class HeatmapDelegate(QtWidgets.QStyledItemDelegate):
    """Paints `HeatmapRow` items; header items (no row) are painted as bold section titles."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.side_by_side = False

    def _font(self, option: QtWidgets.QStyleOptionViewItem) -> QtGui.QFont:
        return QtGui.QFont(option.font)

    def paint(
        self,
        painter: QtGui.QPainter,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> None:
        row = index.data(RowRole)
        if row is None:
            painter.save()
            font = QtGui.QFont(option.font)
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(option.palette.color(QtGui.QPalette.ColorRole.Text))
            painter.drawText(
                option.rect.adjusted(4, 0, -4, 0),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                str(index.data(Qt.ItemDataRole.DisplayRole) or ""),
            )
            painter.restore()
            return
        if option.state & QtWidgets.QStyle.StateFlag.State_Selected:
            painter.fillRect(
                option.rect, option.palette.color(QtGui.QPalette.ColorRole.AlternateBase)
            )
        paint_row(
            painter,
            option.rect.adjusted(4, 2, -4, -2),
            row,
            Palette(option.palette),
            self._font(option),
            self.side_by_side,
        )

    def sizeHint(
        self,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> QtCore.QSize:
        row = index.data(RowRole)
        view = self.parent()
        width = (
            view.viewport().width() - 2 if isinstance(view, QtWidgets.QAbstractItemView) else 600
        )
        if row is None:
            return QtCore.QSize(width, QtGui.QFontMetrics(option.font).height() + 12)
        _, height = layout_row(
            row, QtGui.QFontMetrics(self._font(option)), max(width - 8, 100), self.side_by_side
        )
        return QtCore.QSize(width, height + 4)

    def helpEvent(
        self,
        event: QtGui.QHelpEvent,
        view: QtWidgets.QAbstractItemView,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> bool:
        row = index.data(RowRole)
        if row is None or event.type() != QtCore.QEvent.Type.ToolTip:
            return super().helpEvent(event, view, option, index)
        inner = option.rect.adjusted(4, 2, -4, -2)
        i = token_at(
            row,
            QtGui.QFontMetrics(self._font(option)),
            inner.width(),
            self.side_by_side,
            event.pos() - inner.topLeft(),
        )
        if i is None:
            QtWidgets.QToolTip.hideText()
            return True
        text = f"{visible_token(row.tokens[i])!r}  activation {row.activations[i]:.3f}"
        if row.simulated is not None and i < len(row.simulated):
            text += f"  simulated {row.simulated[i]:.2f}"
        QtWidgets.QToolTip.showText(event.globalPos(), plain_tooltip(text), view)
        return True
