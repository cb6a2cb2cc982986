"""Token heatmaps: an excerpt laid out as text, each token on a background coloured by its
activation (as the original viewer does).

Tokens are laid out contiguously: a token's own leading space is the only space between words
and subword pieces touch. Lines wrap at token boundaries (a token longer than a line breaks
inside), and a token holding a newline shows "↵" and ends its line. A row is laid out once per
width and font (`RowLayout`, cached on the row), so painting only fills boxes and draws text.

Tokens are untrusted text: they are painted with QPainter.drawText (never parsed as HTML),
with control, bidi-override and zero-width characters shown as visible escapes (as the
tooltips do), so a row's layout never breaks and no text is reordered or hidden. A row may
carry a second series (a simulation): painted as a bar under each token (overlay), or as a
second, aligned column (side by side: real | simulated).
"""

from __future__ import annotations

import html
import itertools
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

from PySide6 import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

RowRole = Qt.ItemDataRole.UserRole + 1
"""A `HeatmapRow` for record rows; None for header rows."""

_SYMBOLS = {"\n": "↵", "\t": "⇥", "\r": "␍"}
PADDING = 1
"""Vertical padding of a token's box (there is no horizontal padding: tokens touch)."""
LINE_GAP = 2
BAR = 4
"""Height of the simulation bar under each token (overlay)."""
COLUMN_GAP = 12
"""Space between the real and the simulated column (side by side)."""


def _invisible(ch: str) -> bool:
    """Characters that would be drawn as nothing or reorder text: controls, format characters
    (bidi overrides and isolates, zero-width space/joiners, BOM, soft hyphen) and separators."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def visible_text(text: str) -> str:
    """`text` with newline/tab shown as symbols and invisible or reordering characters as
    escapes ("\\u202e"), as a tooltip's repr shows them."""
    if text.isprintable():  # no control, format, separator or unassigned character at all
        return text
    out = []
    for ch in text:
        if ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif _invisible(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


@lru_cache(maxsize=1 << 16)
def visible_token(token: str) -> str:
    """The token as it is drawn: whitespace controls as symbols, nothing invisible (kept for
    the tokens met: a vocabulary repeats)."""
    return visible_text(token) if token != "" else "∅"


def plain_tooltip(text: str) -> str:
    """A tooltip that shows `text` literally: Qt would render "<b>" in a tooltip as HTML."""
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


@dataclass(frozen=True)
class Fragment:
    """A token's text (or a piece of it, for a token longer than a line) and its box."""

    token: int
    text: str
    rect: QtCore.QRect
    """Relative to the row's top-left; in the left (real) column when side by side."""


Box = tuple[int, str, int, int, int]
"""A fragment as the layout keeps it: (token, text, x, y, width); its height is the row's
`text_height` (plain tuples: a row of 64 tokens is laid out in a tight loop)."""


_LAYOUT_SERIALS: Iterator[int] = itertools.count()


@dataclass(frozen=True)
class RowLayout:
    """Where each token of a row goes at one width."""

    boxes: list[Box]
    height: int
    text_height: int
    """Height of a token's text box (a line is this plus the bar, when overlaid)."""
    ascent: int
    column_offset: int
    """x of the simulated column (side by side), else 0."""
    column_width: int
    """Of the first width laid out so: a narrower or wider one that puts every box in the
    same place shares this layout, and so the row's picture (`layout_row`)."""
    extent: int
    """Width of what is drawn (its picture's width), at most the row's."""
    serial: int = field(default_factory=lambda: next(_LAYOUT_SERIALS))

    @property
    def fragments(self) -> list[Fragment]:
        """The boxes as fragments with their rectangles."""
        h = self.text_height
        return [Fragment(i, text, QtCore.QRect(x, y, w, h)) for i, text, x, y, w in self.boxes]


_SERIALS = itertools.count()


@dataclass(eq=False)
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
    _layouts: dict[tuple[int, bool, str], RowLayout] = field(
        default_factory=dict, repr=False, compare=False
    )
    _colours: dict[tuple[int, int, float], list[tuple[QtGui.QColor, QtGui.QColor]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Each token's (background, text) colours per palette and scale, made once."""
    serial: int = field(default_factory=lambda: next(_SERIALS), repr=False, compare=False)
    """Names the row in the pixmap cache (an `id` may be reused by a later row)."""
    _chars: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    """(characters, newlines), for height estimates."""

    def text(self) -> str:
        """The excerpt as plain text (what Copy puts on the clipboard)."""
        return "".join(self.tokens)

    def value(self, i: int) -> float:
        """The real activation of token `i` (0 if missing)."""
        return self.activations[i] if i < len(self.activations) else 0.0

    def simulated_value(self, i: int) -> float:
        """The simulated activation of token `i` (0 if missing or not simulated)."""
        sim = self.simulated
        return sim[i] if sim is not None and i < len(sim) else 0.0


class Palette:
    """Heat colours that work on light and dark backgrounds."""

    LEVELS = 1024
    """Steps of the tokens' colour ramp (`token_colours`)."""

    _made: ClassVar[dict[int, Palette]] = {}

    @classmethod
    def of(cls, widget_palette: QtGui.QPalette) -> Palette:
        """The heat palette of a widget palette (made once per palette)."""
        key = widget_palette.cacheKey()
        made = cls._made.get(key)
        if made is None:
            if len(cls._made) > 64:
                cls._made.clear()
            made = cls._made[key] = cls(widget_palette)
        return made

    def __init__(self, widget_palette: QtGui.QPalette) -> None:
        base = widget_palette.color(QtGui.QPalette.ColorRole.Base)
        self.dark = base.lightnessF() < 0.5
        self.base = base
        self.text = widget_palette.color(QtGui.QPalette.ColorRole.Text)
        self.hot = QtGui.QColor(34, 139, 34) if not self.dark else QtGui.QColor(60, 200, 90)
        self.simulated = QtGui.QColor(30, 100, 220) if not self.dark else QtGui.QColor(90, 150, 255)
        self._black, self._white = QtGui.QColor(self._BLACK), QtGui.QColor(self._WHITE)
        """The two text colours of the ramps' steps (shared: texts are grouped by colour)."""
        self._steps: list[tuple[QtGui.QColor, QtGui.QColor] | None] = [None] * self.LEVELS
        self._simulated_steps: list[tuple[QtGui.QColor, QtGui.QColor] | None] = (
            [None] * self.LEVELS
        )

    def heat(self, value: float, scale: float, hot: QtGui.QColor | None = None) -> QtGui.QColor:
        """Colour of `value` on a 0..scale ramp from the base colour to `hot`."""
        t = 0.0 if scale <= 0 or value != value else max(0.0, min(1.0, value / scale))
        target = hot or self.hot
        return QtGui.QColor.fromRgbF(
            self.base.redF() + (target.redF() - self.base.redF()) * t,
            self.base.greenF() + (target.greenF() - self.base.greenF()) * t,
            self.base.blueF() + (target.blueF() - self.base.blueF()) * t,
        )

    _BLACK, _WHITE = QtGui.QColor("black"), QtGui.QColor("white")

    def text_on(self, background: QtGui.QColor) -> QtGui.QColor:
        """Readable text colour on `background` (one of two colours: a row's texts are
        drawn in two groups)."""
        return QtGui.QColor(self._BLACK if background.lightnessF() > 0.55 else self._WHITE)

    def zero(self) -> tuple[QtGui.QColor, QtGui.QColor] | None:
        """The (background, text) pair of a zero activation (its background is the base
        colour), once a row has used it."""
        return self._steps[0]

    def simulated_zero(self) -> tuple[QtGui.QColor, QtGui.QColor] | None:
        """The pair of a zero simulated value, once a row has used it."""
        return self._simulated_steps[0]

    def token_colours(self, row: HeatmapRow) -> list[tuple[QtGui.QColor, QtGui.QColor]]:
        """(background, text) of each token of `row`, kept on the row for this palette."""
        return self._colours_of(row, row.activations, row.scale, self.hot, self._steps)

    def simulated_colours(self, row: HeatmapRow) -> list[tuple[QtGui.QColor, QtGui.QColor]]:
        """(background, text) of each token's simulated value (none simulated: zero)."""
        values = row.simulated if row.simulated is not None else ()
        return self._colours_of(
            row, values, row.simulated_scale, self.simulated, self._simulated_steps
        )

    def _colours_of(
        self,
        row: HeatmapRow,
        values: Sequence[float],
        scale: float,
        hot: QtGui.QColor,
        steps: list[tuple[QtGui.QColor, QtGui.QColor] | None],
    ) -> list[tuple[QtGui.QColor, QtGui.QColor]]:
        """A colour pair per token on the ramp to `hot`, in `LEVELS` steps (a step is under
        one unit of 8-bit colour), each step's pair made once; kept on the row."""
        key = (self.base.rgba(), hot.rgba(), scale)
        colours = row._colours.get(key)
        if colours is not None:
            return colours
        if len(row._colours) > 4:
            row._colours.clear()
        top = self.LEVELS - 1
        n = len(row.tokens)
        step = top / scale if scale > 0 else 0.0
        levels = [
            0 if v != v or v <= 0 or step == 0 else top if v >= scale else int(v * step + 0.5)
            for v in values[:n]
        ]
        levels += [0] * (n - len(levels))
        colours = []
        for level in levels:
            pair = steps[level]
            if pair is None:
                background = self.heat(level / top, 1.0, hot)
                text = self._black if background.lightnessF() > 0.55 else self._white
                pair = steps[level] = (background, text)
            colours.append(pair)
        row._colours[key] = colours
        return colours


_LAST_FONT: tuple[QtGui.QFont, str] | None = None


def font_key(font: QtGui.QFont) -> str:
    """`font.key()`, remembered for the last font asked: a switch asks for one font's key
    some hundred times, and `key()` builds its string anew each time (~6 µs)."""
    global _LAST_FONT
    last = _LAST_FONT
    if last is not None and (font is last[0] or font == last[0]):
        return last[1]
    key = font.key()
    _LAST_FONT = (QtGui.QFont(font), key)  # a copy: the caller may change its font later
    return key


_WIDTHS: dict[str, dict[str, int]] = {}
"""Drawn width of each token text met, per font (`QFont.key()`): a vocabulary repeats."""


def _split_to_fit(text: str, metrics: QtGui.QFontMetrics, first: int, width: int) -> list[str]:
    """Pieces of a token too long for a line: the first fits in `first`, the rest in `width`."""
    pieces, start, room = [], 0, first
    while start < len(text):
        end = start + 1
        while end < len(text) and metrics.horizontalAdvance(text[start : end + 1]) <= room:
            end += 1
        pieces.append(text[start:end])
        start, room = end, width
    return pieces


def layout_row(
    row: HeatmapRow, font: QtGui.QFont, width: int, side_by_side: bool
) -> RowLayout:
    """Where each token goes when the row is `width` wide (cached per width and font)."""
    key = (width, side_by_side and row.simulated is not None, font_key(font))
    cached = row._layouts.get(key)
    if cached is None:
        if len(row._layouts) > 8:  # a few widths (resizing) are enough to keep
            row._layouts.clear()
        widths = _WIDTHS.setdefault(key[2], {})
        if len(widths) > 200_000:
            widths.clear()
        cached = _layout(row, QtGui.QFontMetrics(font), widths, width, key[1])
        for other_key, other in row._layouts.items():  # a resize mostly moves no box
            if other_key[1:] == key[1:] and other.boxes == cached.boxes and (
                other.height == cached.height and other.column_offset == cached.column_offset
            ):
                cached = other
                break
        row._layouts[key] = cached
    return cached


def is_laid_out(row: HeatmapRow, font: QtGui.QFont, width: int, side_by_side: bool) -> bool:
    """Whether the row's layout at this width is made already."""
    return (width, side_by_side and row.simulated is not None, font_key(font)) in row._layouts


_AVERAGE: dict[str, tuple[float, int]] = {}
"""Per font: (average character advance, line height) for estimates."""


def estimated_height(row: HeatmapRow, font: QtGui.QFont, width: int, side_by_side: bool) -> int:
    """The row's height at `width` without laying it out: its characters × the font's average
    advance over the column width, plus a line per newline (off-screen rows; corrected when
    laid out)."""
    key = font_key(font)
    average = _AVERAGE.get(key)
    if average is None:
        metrics = QtGui.QFontMetrics(font)
        average = _AVERAGE[key] = (
            max(1.0, metrics.horizontalAdvance("x" * 26 + " " * 6) / 32),
            metrics.height() + 2 * PADDING,
        )
    advance, text_height = average
    two = side_by_side and row.simulated is not None
    column_width = max(40, (width - COLUMN_GAP) // 2 if two else width)
    if row._chars is None:
        text = "".join(row.tokens)
        row._chars = (len(text) + len(row.caption), text.count("\n"))
    chars, newlines = row._chars
    lines = max(1, -(-int(chars * advance) // column_width)) + newlines
    line_height = text_height + (BAR if row.simulated is not None and not two else 0)
    return lines * (line_height + LINE_GAP) + LINE_GAP


def _layout(
    row: HeatmapRow,
    metrics: QtGui.QFontMetrics,
    widths: dict[str, int],
    width: int,
    side_by_side: bool,
) -> RowLayout:
    columns = 2 if side_by_side else 1
    column_width = max(40, (width - COLUMN_GAP * (columns - 1)) // columns)
    text_height = metrics.height() + 2 * PADDING
    line_height = text_height + (BAR if row.simulated is not None and not side_by_side else 0)
    step = line_height + LINE_GAP
    x = metrics.horizontalAdvance(row.caption) + 8 if row.caption else 0
    y = 0
    boxes: list[Box] = []
    append, width_of, shown = boxes.append, widths.get, visible_token
    for i, token in enumerate(row.tokens):
        text = shown(token)
        w = width_of(text)
        if w is None:
            w = widths[text] = metrics.horizontalAdvance(text)
        if x + w > column_width:
            if x > 0:  # wrap at the token boundary
                x, y = 0, y + step
            if w > column_width:  # longer than a line: break inside the token
                for n, piece in enumerate(_split_to_fit(text, metrics, column_width, column_width)):
                    if n > 0:
                        x, y = 0, y + step
                    pw = metrics.horizontalAdvance(piece)
                    append((i, piece, x, y, pw))
                    x += pw
                w = -1
        if w >= 0:
            append((i, text, x, y, w))
            x += w
        if "\n" in token:  # newlines are visible ("↵") and end the line
            x, y = 0, y + step
    extent = max([b[2] + b[4] for b in boxes], default=0)
    if row.caption:
        extent = max(extent, metrics.horizontalAdvance(row.caption))
    last_line_empty = x == 0 and boxes and y > boxes[-1][3]
    height = (y if last_line_empty else y + step) + LINE_GAP
    return RowLayout(
        boxes,
        max(height, line_height + 2 * LINE_GAP),
        text_height,
        metrics.ascent(),
        column_width + COLUMN_GAP if side_by_side else 0,
        column_width,
        column_width + COLUMN_GAP + extent if side_by_side else extent,
    )


_STATIC: dict[str, dict[str, QtGui.QStaticText]] = {}
"""Each token text met, prepared for drawing (glyphs shaped once), per font (`QFont.key()`)."""


def static_texts(font: QtGui.QFont) -> dict[str, QtGui.QStaticText]:
    texts = _STATIC.setdefault(font_key(font), {})
    if len(texts) > 100_000:
        texts.clear()
    return texts


def static_text(texts: dict[str, QtGui.QStaticText], text: str) -> QtGui.QStaticText:
    static = texts.get(text)
    if static is None:
        static = texts[text] = QtGui.QStaticText(text)
        static.setTextFormat(Qt.TextFormat.PlainText)  # tokens are never markup
    return static


Colours = list[tuple[QtGui.QColor, QtGui.QColor]]


def _fill_runs(
    painter: QtGui.QPainter,
    boxes: list[Box],
    colours: Colours,
    dx: int,
    dy: int,
    height: int,
    skip: object = None,
) -> None:
    """Each box's background; touching boxes of one colour on a line are one rectangle.
    Runs of the colour pair `skip` (the ramp's zero, the base colour, where the base is
    painted under the row already) are left as they are."""
    run: tuple[QtGui.QColor, QtGui.QColor] | None = None
    left = top = right = 0
    fill = painter.fillRect
    for i, _text, x, y, w in boxes:
        pair = colours[i]
        if pair is run and y == top and x == right:
            right += w
            continue
        if run is not None and run is not skip:
            fill(dx + left, dy + top, right - left, height, run[0])
        run, left, top, right = pair, x, y, x + w
    if run is not None and run is not skip:
        fill(dx + left, dy + top, right - left, height, run[0])


def _draw_texts(
    painter: QtGui.QPainter,
    boxes: list[Box],
    colours: Colours,
    dx: int,
    dy: int,
    texts: dict[str, QtGui.QStaticText],
) -> None:
    """Each box's text at its top-left, grouped by text colour (few pen changes)."""
    by_colour: dict[int, tuple[QtGui.QColor, list[Box]]] = {}
    for box in boxes:
        text_colour = colours[box[0]][1]
        group = by_colour.get(id(text_colour))
        if group is None:
            group = by_colour[id(text_colour)] = (text_colour, [])
        group[1].append(box)
    draw = painter.drawStaticText
    for text_colour, group_boxes in by_colour.values():
        painter.setPen(text_colour)
        for _i, text, x, y, _w in group_boxes:
            draw(dx + x, dy + y, static_text(texts, text))


def paint_row(
    painter: QtGui.QPainter,
    rect: QtCore.QRect,
    row: HeatmapRow,
    palette: Palette,
    font: QtGui.QFont,
    side_by_side: bool,
    on_base: bool = False,
) -> None:
    """Draw a row of tokens inside `rect` (from its cached layout at this width): the
    boxes as runs of one colour, then the texts (prepared once per text and font). With
    `on_base` (what is under `rect` is the palette's base colour already), boxes of the
    ramp's zero, which is that colour, are not filled again."""
    layout = layout_row(row, font, rect.width(), side_by_side)
    painter.save()
    painter.setFont(font)
    dx, dy = rect.left(), rect.top()
    h = layout.text_height
    boxes = layout.boxes
    if painter.hasClipping():
        clip = painter.clipBoundingRect().toAlignedRect()
        below = BAR if row.simulated is not None else 0
        wider = layout.column_offset  # a box's twin in the simulated column, side by side
        boxes = [
            b for b in boxes
            if clip.intersects(QtCore.QRect(dx + b[2], dy + b[3], b[4] + wider, h + below))
        ]  # fmt: skip
    if row.caption:
        painter.setPen(palette.text)
        painter.drawText(dx, dy + PADDING + layout.ascent, row.caption)
    texts = static_texts(font)
    colours = palette.token_colours(row)
    _fill_runs(painter, boxes, colours, dx, dy, h, palette.zero() if on_base else None)
    _draw_texts(painter, boxes, colours, dx, dy + PADDING, texts)
    if row.simulated is not None:
        simulated = palette.simulated_colours(row)
        skip = palette.simulated_zero() if on_base else None
        if not layout.column_offset:  # overlay: a bar under each token
            _fill_runs(painter, boxes, simulated, dx, dy + h, BAR, skip)
        else:  # side by side: the same boxes in the right column
            right = dx + layout.column_offset
            _fill_runs(painter, boxes, simulated, right, dy, h, skip)
            _draw_texts(painter, boxes, simulated, right, dy + PADDING, texts)
            painter.setPen(palette.text)
            x = right - COLUMN_GAP // 2
            painter.drawLine(x, dy, x, dy + layout.height - LINE_GAP)
    painter.restore()


def token_at(
    row: HeatmapRow, font: QtGui.QFont, width: int, side_by_side: bool, point: QtCore.QPoint
) -> int | None:
    """Index of the token under `point` (relative to the row's top-left), if any."""
    layout = layout_row(row, font, width, side_by_side)
    if layout.column_offset and point.x() >= layout.column_offset:
        point = point - QtCore.QPoint(layout.column_offset, 0)
    px, py = point.x(), point.y()
    bottom = layout.text_height + (BAR if row.simulated is not None else 0)
    for i, _text, x, y, w in layout.boxes:
        if x <= px < x + w and y <= py < y + bottom:
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

    MARGIN = QtCore.QMargins(4, 2, 4, 2)
    PAINTED_ONCE_KEPT = 4096
    """Rows (at a layout) remembered as painted once, without a picture yet (`_picture`)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.side_by_side = False
        self._pass: list[int] | None = None
        """During a view's layout pass: [y reached, y up to which rows are laid out]."""
        self._painted_once: set[str] = set()
        """Picture keys of the rows painted once, straight (the next paint makes the picture)."""
        self.exact_to: float = float("inf")
        """After a pass: the y of the first row whose height is only estimated."""
        self._estimated: set[int] = set()
        """Rows (serials) whose height the view has from an estimate."""
        self._row_font = QtGui.QFont()
        self._line: tuple[QtGui.QFont | None, int] = (None, 0)
        self._sides = self.MARGIN.left() + self.MARGIN.right()
        self._above_below = self.MARGIN.top() + self.MARGIN.bottom()
        self._header_font: tuple[
            QtGui.QFont | None, QtGui.QFont, int, dict[str, QtGui.QStaticText]
        ] = (None, QtGui.QFont(), 0, {})
        """(the rows' font it is made from, the bold titles' font, its line height, the
        titles prepared in it)."""

    def begin_pass(self, exact_until: int) -> None:
        """A layout pass of the view starts: rows starting above `exact_until` (list
        coordinates) are laid out, the ones below get an estimated height."""
        self._pass = [0, exact_until]
        self.exact_to = float("inf")
        self._estimated.clear()

    def end_pass(self) -> None:
        self._pass = None

    def _line_height(self, font: QtGui.QFont) -> int:
        """The height of a line of `font` (the rows' font), measured once."""
        if self._line[0] is not font:
            self._line = (font, QtGui.QFontMetrics(font).height())
        return self._line[1]

    def _font(self, option: QtWidgets.QStyleOptionViewItem) -> QtGui.QFont:
        """The rows' font (the view's): one copy kept while it stays the same, so its key is
        found at once (callers draw with it and never change it)."""
        if option.font != self._row_font:
            self._row_font = QtGui.QFont(option.font)
        return self._row_font

    def _inner(self, option: QtWidgets.QStyleOptionViewItem) -> QtCore.QRect:
        return option.rect.marginsRemoved(self.MARGIN)

    def paint(
        self,
        painter: QtGui.QPainter,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> None:
        row = index.data(RowRole)
        if row is None:
            self._paint_header(painter, option, str(index.data(Qt.ItemDataRole.DisplayRole) or ""))
            return
        if row.serial in self._estimated:  # shown before its turn: lay the list out again
            self._estimated.discard(row.serial)
            view = self.parent()
            if isinstance(view, HeatmapView):
                view.scheduleDelayedItemsLayout()
        selected = bool(option.state & QtWidgets.QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(option.rect, option.palette.color(QtGui.QPalette.ColorRole.Highlight))
        inner = self._inner(option)
        picture = self._picture(painter, option, inner, row)
        if picture is not None:
            painter.drawPixmap(inner.topLeft(), picture)
        else:  # its first paint at this layout: drawn where it is shown
            paint_row(
                painter, inner, row, Palette.of(option.palette), self._font(option),
                self.side_by_side, on_base=not selected,
            )  # fmt: skip

    def _paint_header(
        self, painter: QtGui.QPainter, option: QtWidgets.QStyleOptionViewItem, title: str
    ) -> None:
        """A section's title in bold, left and centred in its height (its text prepared once
        per font, as the tokens are: laid out anew at each paint, the titles took a sixth of
        a list's repaint)."""
        font = self._font(option)
        if self._header_font[0] is not font:
            bold = QtGui.QFont(font)
            bold.setBold(True)
            self._header_font = (font, bold, QtGui.QFontMetrics(bold).height(), static_texts(bold))
        _, bold, height, texts = self._header_font
        rect = option.rect
        painter.save()
        painter.setFont(bold)
        painter.setPen(option.palette.color(QtGui.QPalette.ColorRole.Text))
        painter.drawStaticText(
            rect.left() + 4,
            rect.top() + (rect.height() - height) // 2,
            static_text(texts, title),
        )
        painter.restore()

    def _picture(
        self,
        painter: QtGui.QPainter,
        option: QtWidgets.QStyleOptionViewItem,
        inner: QtCore.QRect,
        row: HeatmapRow,
    ) -> QtGui.QPixmap | None:
        """The row painted at this size, kept in `QPixmapCache`: scrolling and repainting
        only copy pixels. A picture is as wide as what it shows and kept per layout, so a
        resize that moves none of a row's boxes (most rows, most steps) draws nothing again.

        None at a row's first paint at a layout (a neuron just shown, a new width): it is
        drawn straight where it is shown, and its picture is made when it is painted again
        (hovered, selected, scrolled back, repainted). Most rows of a switch are painted
        once; drawing each into a picture of its own first, then copying that, cost about a
        millisecond of a GPT-2 XL neuron's switch."""
        font = self._font(option)
        palette = Palette.of(option.palette)
        ratio = painter.device().devicePixelRatio() if painter.device() is not None else 1.0
        layout = layout_row(row, font, inner.width(), self.side_by_side)
        size = QtCore.QSize(max(1, min(layout.extent, inner.width())), inner.height())
        key = (
            f"heatmap:{row.serial}:{layout.serial}:{size.width()}x{size.height()}:"
            f"{option.palette.cacheKey()}:{font_key(font)}:{ratio}"
        )
        picture = QtGui.QPixmap()
        if not QtGui.QPixmapCache.find(key, picture):
            if key not in self._painted_once:
                if len(self._painted_once) > self.PAINTED_ONCE_KEPT:
                    self._painted_once.clear()
                self._painted_once.add(key)
                return None
            self._painted_once.discard(key)
            picture = QtGui.QPixmap(size * ratio)
            picture.setDevicePixelRatio(ratio)
            picture.fill(Qt.GlobalColor.transparent)
            onto = QtGui.QPainter(picture)
            try:
                paint_row(
                    onto, QtCore.QRect(QtCore.QPoint(0, 0), inner.size()), row, palette, font,
                    self.side_by_side,
                )
            finally:
                onto.end()
            QtGui.QPixmapCache.insert(key, picture)
        return picture

    def sizeHint(
        self,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> QtCore.QSize:
        row = index.data(RowRole)
        view = self.parent()
        # The width the row is painted at (the viewport's), so it is laid out once per width.
        width = view.viewport().width() if isinstance(view, QtWidgets.QAbstractItemView) else 600
        during = self._pass
        font = self._font(option)
        if row is None:
            header = self._line_height(font) + 12
            if during is not None:
                during[0] += header
            return QtCore.QSize(width, header)
        inner = max(width - self._sides, 100)
        margins = self._above_below
        # In a pass, rows down to its limit are laid out. Outside one (the view asking a
        # row's rect, or its first row's size for the scroll step as the width changes), a
        # row laid out before is laid out at this width too: estimated, it was painted a
        # frame at the wrong height, then again.
        if (
            (during is not None and during[0] < during[1])
            or is_laid_out(row, font, inner, self.side_by_side)
            or (during is None and row._layouts)
        ):
            height = layout_row(row, font, inner, self.side_by_side).height + margins
        else:
            height = estimated_height(row, font, inner, self.side_by_side) + margins
            if during is not None:
                self.exact_to = min(self.exact_to, during[0])
            self._estimated.add(row.serial)
        if during is not None:
            during[0] += height
        return QtCore.QSize(width, height)

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
        inner = self._inner(option)
        i = token_at(
            row, self._font(option), inner.width(), self.side_by_side,
            event.pos() - inner.topLeft(),
        )
        if i is None:
            QtWidgets.QToolTip.hideText()
            return True
        text = f"{row.tokens[i]!r}  activation {row.value(i):.3f}"
        if row.simulated is not None and i < len(row.simulated):
            text += f"  simulated {row.simulated[i]:.2f}"
        QtWidgets.QToolTip.showText(event.globalPos(), plain_tooltip(text), view)
        return True


class HeatmapView(QtWidgets.QListView):
    """A list of excerpts: select them (click, Shift/Ctrl+click) and copy them as plain text
    (Ctrl+C or the context menu); "with values" copies one token and its activation a line."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.delegate = HeatmapDelegate(self)
        self.setItemDelegate(self.delegate)
        self.setVerticalScrollMode(QtWidgets.QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Always there: a scroll bar coming or going would change the width and so every
        # row's layout (and the list scrolls on almost every neuron anyway).
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(False)
        self.setMouseTracking(True)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        copy = QtGui.QAction("Copy text", self)
        copy.setShortcut(QtGui.QKeySequence.StandardKey.Copy)  # shown; keyPressEvent handles it
        copy.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        copy.triggered.connect(self.copy)
        with_values = QtGui.QAction("Copy tokens with values", self)
        with_values.triggered.connect(lambda: self.copy(with_values=True))
        self.addActions([copy, with_values])
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        # Painted rows are kept as pixmaps: a full-screen list of wide rows needs more room
        # than Qt's default 10 MB.
        QtGui.QPixmapCache.setCacheLimit(max(QtGui.QPixmapCache.cacheLimit(), 32 * 1024))

    AHEAD = 0.25
    """Rows laid out below the visible ones, in viewport heights (scrolling into them costs no
    layout); the rest get estimated heights until they come near."""

    def doItemsLayout(self) -> None:
        """Lay out the rows down to the visible ones and `AHEAD` more; estimate the others."""
        height = self.viewport().height()
        self.delegate.begin_pass(self.verticalOffset() + int(height * (1 + self.AHEAD)))
        try:
            super().doItemsLayout()
        finally:
            self.delegate.end_pass()

    def reset(self) -> None:
        """New rows: a shown list lays them out at once, so the paint that follows draws them
        (left to Qt's delayed layout, that paint came first and showed the list empty for a
        frame, and a second paint drew the rows)."""
        super().reset()
        if self.isVisible():
            self.executeDelayedItemsLayout()

    def _scrolled(self, value: int) -> None:
        if value + self.viewport().height() > self.delegate.exact_to:
            self.doItemsLayout()  # before the paint: the rows coming into view, laid out

    def selected_rows(self) -> list[HeatmapRow]:
        """The selected excerpts, top to bottom."""
        indexes = sorted(self.selectionModel().selectedIndexes(), key=lambda i: i.row())
        rows = [i.data(RowRole) for i in indexes]
        return [r for r in rows if isinstance(r, HeatmapRow)]

    def selected_text(self, with_values: bool = False) -> str:
        """The selected excerpts as plain text (one blank line between excerpts)."""
        if with_values:
            return "\n\n".join(
                "\n".join(f"{t!r}\t{r.value(i):.4g}" for i, t in enumerate(r.tokens))
                for r in self.selected_rows()
            )
        return "\n\n".join(r.text() for r in self.selected_rows())

    def copy(self, with_values: bool = False) -> str:
        """Put the selected excerpts on the clipboard; the text copied."""
        text = self.selected_text(with_values)
        if text:
            QtWidgets.QApplication.clipboard().setText(text)
        return text

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.matches(QtGui.QKeySequence.StandardKey.Copy):
            self.copy()
            event.accept()
            return
        super().keyPressEvent(event)

    def relayout(self) -> None:
        """Row heights depend on the width and the mode: ask the delegate again."""
        self.scheduleDelayedItemsLayout()
        self.viewport().update()
