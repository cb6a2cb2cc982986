"""Docks: top tokens (by activation and by weight), related neurons (upstream, downstream),
search results, and the explained neurons of a dataset."""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import ExplanationRow
from neuron_desk.data.registry import Dataset
from neuron_desk.data.service import Fetched, NeuronData
from neuron_desk.qt.browser import NOT_EXPLAINED, related_connections
from neuron_desk.qt.heatmap import (
    Palette,
    plain_tooltip,
    static_text,
    static_texts,
    visible_text,
    visible_token,
)
from neuron_desk.qt.models import ExplainedNeuronsModel, ScoreSortProxy, format_score

Qt = QtCore.Qt
MARGIN = 4
"""Space left and right of a cell's text in a table (about the style's item margin)."""


def _why_empty(value: object, what: str, dataset_title: str) -> str:
    if isinstance(value, NeuronDeskError):
        return str(value)
    if value is None:
        return f"{dataset_title} has no {what}"
    return f"no {what}"


def _short_title(name: str) -> str:
    """ "input_positive" → "input +" (short headers leave room for the tokens)."""
    return name.replace("_", " ").replace("positive", "+").replace("negative", "−")


class TokenPairsModel(QtCore.QAbstractTableModel):
    """(token, value) rows, filled with one reset; or one row saying why there are none."""

    def __init__(self, title: str, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._titles = (title, "value")
        self._rows: list[tuple[str, str, str, QtGui.QColor | None, QtGui.QColor | None]] = []
        """(token, shown token, shown value, background, text colour) per row."""
        self.message: str | None = None
        """Why there are no pairs (shown in the one row), or None."""

    def set_pairs(
        self, pairs: list[tuple[str, float]], empty: str, palette: QtGui.QPalette
    ) -> None:
        """Show the pairs, coloured by strength; none: one row with `empty`."""
        self.beginResetModel()
        self.message = None if pairs else empty
        if pairs:
            scale = max(abs(v) for _, v in pairs) or 1.0
            heat = Palette.of(palette)
            self._rows = []
            for token, value in pairs:
                colour = heat.heat(abs(value), scale)
                self._rows.append(
                    (token, visible_token(token), f"{value:.3g}", colour, heat.text_on(colour))
                )  # plain text, never HTML
        else:
            dim = palette.color(QtGui.QPalette.ColorRole.PlaceholderText)
            self._rows = [(empty, empty, "", None, dim)]
        self.endResetModel()

    def rowCount(
        self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex()
    ) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(
        self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex()
    ) -> int:
        return 0 if parent.isValid() else 2

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self._titles[section] if 0 <= section < 2 else None
        return None

    def cell(self, row: int, column: int) -> tuple[str, QtGui.QColor | None, QtGui.QColor | None]:
        """What a cell shows: (text, background, text colour; None: the view's own)."""
        _token, shown, value, background, foreground = self._rows[row]
        return (shown, background, foreground) if column == 0 else (value, None, None)

    def data(
        self,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> object:
        # Asked for roles by tooltips, copying and accessibility; `TokenList` paints from `cell`.
        row = index.row()
        if not 0 <= row < len(self._rows) or role not in _PAIR_ROLES:
            return None
        token, shown, value, background, foreground = self._rows[row]
        if role == _DISPLAY:
            return shown if index.column() == 0 else value
        if index.column() != 0:
            return None
        if role == _BACKGROUND:
            return background
        if role == _FOREGROUND:
            return foreground
        # The tooltip, made when asked (a hover), not at every fill.
        return plain_tooltip(token if self.message is not None else repr(token))


_DISPLAY = Qt.ItemDataRole.DisplayRole.value
_BACKGROUND = Qt.ItemDataRole.BackgroundRole.value
_FOREGROUND = Qt.ItemDataRole.ForegroundRole.value
_PAIR_ROLES = frozenset((_DISPLAY, _BACKGROUND, _FOREGROUND, Qt.ItemDataRole.ToolTipRole.value))
"""The roles a token list answers (as the plain ints Qt passes)."""


class CellTexts:
    """A token list's cell texts for one font: prepared once per text (`QStaticText`), their
    widths measured once, elided in the middle only when one does not fit."""

    def __init__(self) -> None:
        self.font = QtGui.QFont()
        self._texts: dict[str, QtGui.QStaticText] = {}
        self._widths: dict[str, int] = {}
        self.metrics = QtGui.QFontMetrics(self.font)

    def prepare(self, font: QtGui.QFont) -> None:
        """Draw in `font` from now on."""
        if font != self.font:
            self.font = QtGui.QFont(font)
            self._texts = static_texts(font)
            self._widths = {}
            self.metrics = QtGui.QFontMetrics(font)

    def fitted(self, text: str, room: int) -> QtGui.QStaticText:
        """`text` prepared for drawing, elided in the middle if wider than `room`."""
        wide = self._widths.get(text)
        if wide is None:
            wide = self._widths[text] = self.metrics.horizontalAdvance(text)
        if wide > room:  # rare: a long token in a narrow dock
            text = self.metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, room)
        return static_text(self._texts, text)


_HIGHLIGHT = QtGui.QPalette.ColorRole.Highlight
_HIGHLIGHTED_TEXT = QtGui.QPalette.ColorRole.HighlightedText
_TEXT = QtGui.QPalette.ColorRole.Text


class TokenList(QtWidgets.QTableView):
    """Tokens with a strength each, the strength shown as a coloured cell."""

    def __init__(self, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.pairs = TokenPairsModel(title, self)
        self.setModel(self.pairs)
        self._cells = CellTexts()
        self.verticalHeader().hide()
        rows = self.verticalHeader()
        rows.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 6)  # compact, scales with DPI
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        # A fixed value column (not sized to its contents at every fill): "−0.000" fits, a
        # longer value ("1.23e+03") widens it (`_fit_values`).
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Fixed)
        self._value_width = self.fontMetrics().horizontalAdvance("−0.000") + 2 * MARGIN + 4
        header.setMinimumSectionSize(self._value_width)
        header.resizeSection(1, self._value_width)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # never only "…"
        self.setWordWrap(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAccessibleName(title)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        """Every row in view in one pass (the rows are of one height): its colour, its texts
        (prepared once, `CellTexts`), the selection, the grid and the focused cell. Qt's own
        pass went through the style and a delegate for each cell, asking the model for ten
        roles each: most of what a switch spent on the list."""
        pairs = self.pairs
        count = pairs.rowCount()
        if not count:
            return
        painter = QtGui.QPainter(self.viewport())
        try:
            self._paint_rows(painter, event.rect(), count)
        finally:
            painter.end()

    def _paint_rows(self, painter: QtGui.QPainter, area: QtCore.QRect, count: int) -> None:
        pairs = self.pairs
        palette = self.palette()
        cells = self._cells
        cells.prepare(self.font())
        height = self.rowHeight(0)
        first = max(0, self.rowAt(area.top()))
        last = self.rowAt(area.bottom())
        last = count - 1 if last < 0 else last
        left0, width0 = self.columnViewportPosition(0), self.columnWidth(0)
        left1, width1 = self.columnViewportPosition(1), self.columnWidth(1)
        spanned = pairs.message is not None
        chosen = {(i.row(), i.column()) for i in self.selectionModel().selectedIndexes()}
        text_colour = palette.color(_TEXT)
        highlight, highlighted_text = palette.color(_HIGHLIGHT), palette.color(_HIGHLIGHTED_TEXT)
        y = self.rowViewportPosition(first)
        text_top = (height - cells.metrics.height()) // 2
        if spanned:  # why there are no tokens, wrapped to the list's width
            shown, _background, foreground = pairs.cell(0, 0)
            painter.setPen(foreground if foreground is not None else text_colour)
            room = QtCore.QRect(
                left0 + MARGIN, y + text_top, width0 + width1 - 2 * MARGIN,
                self.viewport().height() - y - text_top,
            )  # fmt: skip
            painter.drawText(room, Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignTop, shown)
            return
        for row in range(first, last + 1):
            shown, background, foreground = pairs.cell(row, 0)
            if (row, 0) in chosen:
                painter.fillRect(left0, y, width0, height, highlight)
                painter.setPen(highlighted_text)
            else:
                if background is not None:
                    painter.fillRect(left0, y, width0, height, background)
                painter.setPen(foreground if foreground is not None else text_colour)
            painter.drawStaticText(
                left0 + MARGIN, y + text_top, cells.fitted(shown, width0 - 2 * MARGIN)
            )
            if (row, 1) in chosen:
                painter.fillRect(left1, y, width1, height, highlight)
                painter.setPen(highlighted_text)
            else:
                painter.setPen(text_colour)
            value = pairs.cell(row, 1)[0]
            painter.drawStaticText(
                left1 + MARGIN, y + text_top, cells.fitted(value, width1 - 2 * MARGIN)
            )
            y += height
        if self.showGrid():
            self._paint_grid(painter, first, y, left1)
        current = self.currentIndex()
        if self.hasFocus() and current.isValid():
            focus = QtWidgets.QStyleOptionFocusRect()
            focus.initFrom(self)
            focus.rect = self.visualRect(current)
            self.style().drawPrimitive(
                QtWidgets.QStyle.PrimitiveElement.PE_FrameFocusRect, focus, painter, self
            )

    def _paint_grid(
        self, painter: QtGui.QPainter, first: int, bottom: int, divider: int
    ) -> None:
        """The grid lines under the rows `first` to where they end (`bottom`), as the table's
        style colours them."""
        option = QtWidgets.QStyleOptionViewItem()
        option.initFrom(self)
        hint = self.style().styleHint(
            QtWidgets.QStyle.StyleHint.SH_Table_GridLineColor, option, self
        )
        grid = QtGui.QColor.fromRgba(hint & 0xFFFFFFFF)  # an ARGB the style gives as a signed int
        painter.setPen(grid)
        right = self.columnViewportPosition(1) + self.columnWidth(1) - 1
        height = self.rowHeight(0)
        y = self.rowViewportPosition(first) + height - 1
        while y < bottom:
            painter.drawLine(0, y, right, y)
            y += height
        top = self.rowViewportPosition(first)
        painter.drawLine(divider - 1, top, divider - 1, bottom - 1)
        painter.drawLine(right, top, right, bottom - 1)

    def rowCount(self) -> int:
        """Rows shown (one, with the reason, when there are no pairs)."""
        return self.pairs.rowCount()

    def text(self, row: int, column: int = 0) -> str:
        """The text a cell shows."""
        return str(self.pairs.index(row, column).data() or "")

    def tooltip(self, row: int) -> str:
        """A row's tooltip (the token as Python writes it, escaped)."""
        return str(self.pairs.index(row, 0).data(Qt.ItemDataRole.ToolTipRole) or "")

    def set_pairs(self, pairs: list[tuple[str, float]], empty: str) -> None:
        """Fill with (token, value) pairs, or one row saying why there are none."""
        self.pairs.set_pairs(pairs, empty, self.palette())
        if pairs:
            self.clearSpans()
        else:
            self.setSpan(0, 0, 1, 2)
        self._fit_values([f"{value:.3g}" for _, value in pairs])

    def _fit_values(self, texts: list[str]) -> None:
        """Widen the value column for a value longer than "−0.000" (measured only then)."""
        long = [t for t in texts if len(t) > 6]
        metrics = self.fontMetrics()
        widths = [metrics.horizontalAdvance(t) + 2 * MARGIN + 4 for t in long]
        width = max([self._value_width, *widths])
        if self.columnWidth(1) != width:
            self.horizontalHeader().resizeSection(1, width)


class WeightLists(QtWidgets.QWidget):
    """The four weight-based lists: a 2×2 grid when wide, one column when narrow (so every
    token keeps room for its text and value)."""

    WIDE = 560

    def __init__(self, lists: list[TokenList]) -> None:
        super().__init__()
        self.lists = lists
        self.grid = QtWidgets.QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.columns = 0
        self._arrange(1)

    def _arrange(self, columns: int) -> None:
        if columns == self.columns:
            return
        self.columns = columns
        for widget in self.lists:
            self.grid.removeWidget(widget)
        for i, widget in enumerate(self.lists):
            self.grid.addWidget(widget, i // columns, i % columns)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        self._arrange(2 if event.size().width() >= self.WIDE else 1)
        super().resizeEvent(event)


class TopTokensDock(QtWidgets.QDockWidget):
    """Tokens with the highest mean activation, and the strongest input/output weights.

    Only what can be seen is filled: the shown tab, when the dock is visible; the other tab
    (and a hidden dock) fill when shown, from the neuron kept until then."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Top tokens", parent)
        self.setObjectName("TopTokensDock")
        self.tabs = QtWidgets.QTabWidget(self)
        self.by_activation = TokenList("mean activation")
        self.lists = {
            name: TokenList(_short_title(name))
            for name in ("input_positive", "input_negative", "output_positive", "output_negative")
        }
        self.tabs.addTab(self.by_activation, "By activation")
        self.tabs.addTab(WeightLists(list(self.lists.values())), "By weight")
        self.setWidget(self.tabs)
        self._data: NeuronData | None = None
        self._message = ""
        self._filled: set[int] = set()
        """The tabs showing `_data` (or `_message`) already."""
        self.tabs.currentChanged.connect(lambda _: self._fill_shown())
        self.visibilityChanged.connect(lambda _: self._fill_shown())

    def show_neuron(self, data: NeuronData) -> None:
        """Fill from a neuron's token files, or say why a list is empty (the shown tab now,
        the other when it is shown)."""
        self._data, self._filled = data, set()
        self._fill_shown()

    def clear(self, message: str) -> None:
        """Empty every list with a message."""
        self._data, self._message, self._filled = None, message, set()
        self._fill_shown()

    def filled_tabs(self) -> set[int]:
        """The tabs that show the current neuron (or message)."""
        return set(self._filled)

    def _fill_shown(self) -> None:
        tab = self.tabs.currentIndex()
        if tab in self._filled or (not self.isVisible() and self._data is not None):
            return
        self._filled.add(tab)
        if tab == 0:
            self._fill_by_activation()
        else:
            self._fill_by_weight()

    def _fill_by_activation(self) -> None:
        data = self._data
        if data is None:
            self.by_activation.set_pairs([], self._message)
            return
        by_activation = data.tokens_by_activation
        self.by_activation.set_pairs(
            by_activation.value.pairs()[:50] if isinstance(by_activation, Fetched) else [],
            _why_empty(by_activation, "activation-based top tokens", data.dataset.title),
        )

    def _fill_by_weight(self) -> None:
        data = self._data
        for name, widget in self.lists.items():
            if data is None:
                widget.set_pairs([], self._message)
                continue
            weights = data.tokens_by_weight
            pairs = (
                getattr(weights.value, name).pairs()[:50] if isinstance(weights, Fetched) else []
            )
            widget.set_pairs(pairs, _why_empty(weights, "weight-based tokens", data.dataset.title))


class RelatedNeuronsDock(QtWidgets.QDockWidget):
    """Upstream and downstream neurons by weight; their explanations load lazily; click to go."""

    def __init__(
        self,
        navigate: Callable[[NeuronRef], object],
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__("Related neurons", parent)
        self.setObjectName("RelatedNeuronsDock")
        self._navigate = navigate
        self.tree = QtWidgets.QTreeWidget(self)
        self.tree.setHeaderLabels(["neuron", "weight", "explanation", "score"])
        self.tree.setAccessibleName("Related neurons")
        self.tree.setUniformRowHeights(True)  # one line each: no row measured
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemClicked.connect(self._activated)
        # Why the list is empty, in words that wrap to the dock's width (a tree row elides).
        self.message = QtWidgets.QLabel(self)
        self.message.setTextFormat(Qt.TextFormat.PlainText)  # error texts quote file contents
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.message.setMargin(2 * MARGIN)
        self.message.setForegroundRole(QtGui.QPalette.ColorRole.PlaceholderText)  # as a list's
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setAccessibleName("Why no related neurons are listed")
        self._pages = QtWidgets.QStackedWidget(self)
        self._pages.addWidget(self.tree)
        self._pages.addWidget(self.message)
        self.setWidget(self._pages)
        self._items: dict[NeuronRef, list[QtWidgets.QTreeWidgetItem]] = {}
        self._without_data: set[NeuronRef] = set()
        self._units = "neurons"

    NO_DATA = "no data here"

    def show_neuron(
        self, data: NeuronData, with_data: set[NeuronRef] | None = None
    ) -> list[NeuronRef]:
        """Fill from a neuron's related-neurons file; returns the neurons listed. With
        `with_data` (a sparse dataset), neurons outside it are marked: opening one offers
        the nearest neurons with data."""
        self.tree.clear()
        self._items.clear()
        self._without_data = set()
        related = data.related
        units = self._units = data.dataset.units
        labels = [data.dataset.unit, "weight", "explanation", "score"]
        if self.tree.headerItem().text(0) != labels[0]:
            self.tree.setHeaderLabels(labels)
        self.tree.setAccessibleName(f"Related {units}")
        if not isinstance(related, Fetched):
            self.setWindowTitle(f"Related {units}")
            self._message(_why_empty(related, f"weight-based related {units}", data.dataset.title))
            return []
        self._pages.setCurrentWidget(self.tree)
        # Every item is made and marked before it joins the tree (no change signal each).
        mark = self._marker() if with_data is not None else None
        groups = []
        first_column = [labels[0]]  # the first column's texts, for its width
        for title, connections in (
            ("Upstream", related.value.c_fc),
            ("Downstream", related.value.c_proj),
        ):
            group = QtWidgets.QTreeWidgetItem([title])
            first_column.append(title)
            children = []
            if connections is None:
                children.append(QtWidgets.QTreeWidgetItem(["none in this direction"]))
                first_column.append("none in this direction")
            for sign, ref, weight in related_connections(connections, data.ref.dataset):
                marked = with_data is not None and ref not in with_data
                name = f"{ref.short} ∅" if marked else ref.short
                item = QtWidgets.QTreeWidgetItem([name, f"{sign}{abs(weight):.3f}", "…", ""])
                item.setData(0, Qt.ItemDataRole.UserRole, ref)
                if marked and mark is not None:
                    mark(item)
                    self._without_data.add(ref)
                children.append(item)
                first_column.append(name)
                self._items.setdefault(ref, []).append(item)
            group.addChildren(children)
            groups.append(group)
        self.tree.addTopLevelItems(groups)
        if with_data is not None:
            have = sum(1 for ref in self._items if ref not in self._without_data)
            self.setWindowTitle(f"Related {units} ({have} of {len(self._items)} with data)")
        else:
            self.setWindowTitle(f"Related {units}")
        self.tree.expandAll()
        self._fit_first_column(first_column)
        return list(self._items)

    def _fit_first_column(self, texts: list[str]) -> None:
        """The first column as wide as its widest text (the texts it shows, measured here, not
        by asking every item's size hint through the style)."""
        metrics = self.tree.fontMetrics()
        indent = self.tree.indentation()
        width = max(metrics.horizontalAdvance(t) for t in texts) + 2 * MARGIN + 2 * indent
        self.tree.setColumnWidth(0, width)

    def _marker(self) -> Callable[[QtWidgets.QTreeWidgetItem], None]:
        """Marks an item as a neuron without data: dimmed, "∅" and a tooltip saying so (the
        colour and the tooltip made once per neuron shown, not per item)."""
        dim = QtGui.QBrush(self.palette().color(QtGui.QPalette.ColorRole.PlaceholderText))
        tooltip = plain_tooltip(
            "No activation records here (not in the bundled sample, or not stored while "
            f"offline); opening it offers the nearest {self._units} with data"
        )

        def mark(item: QtWidgets.QTreeWidgetItem) -> None:  # its name says "∅" already
            for column in range(4):
                item.setForeground(column, dim)
            item.setToolTip(0, tooltip)

        return mark

    def without_data(self) -> set[NeuronRef]:
        """The listed neurons marked as having no data."""
        return set(self._without_data)

    def set_explanation(self, ref: NeuronRef, text: str, score: float | None) -> None:
        """Fill in a related neuron's explanation once it has loaded."""
        if ref in self._without_data and text == NOT_EXPLAINED:
            text = self.NO_DATA
        for item in self._items.get(ref, []):
            item.setText(2, visible_text(text.strip()))  # plain text; invisible characters shown
            item.setText(3, "" if score is None else f"{score:.2f}")

    def clear(self, message: str) -> None:
        """Empty the tree but for a one-line message ("loading…")."""
        self.tree.clear()
        self._items.clear()
        item = QtWidgets.QTreeWidgetItem([message])
        self.tree.addTopLevelItem(item)
        item.setFirstColumnSpanned(True)
        self._pages.setCurrentWidget(self.tree)  # a no-op unless a reason was shown

    def _message(self, message: str) -> None:
        self.message.setText(message)
        self.message.setAccessibleName(f"Why no related {self._units} are listed")
        self._pages.setCurrentWidget(self.message)

    def shown_message(self) -> str:
        """The message shown instead of the list ("" while the list is shown)."""
        return self.message.text() if self._pages.currentWidget() is self.message else ""

    def _activated(self, item: QtWidgets.QTreeWidgetItem) -> None:
        ref = item.data(0, Qt.ItemDataRole.UserRole)
        if isinstance(ref, NeuronRef):
            self._navigate(ref)


class SearchDock(QtWidgets.QDockWidget):
    """Stored explanations matching a search; click one to go to its neuron."""

    HINT = (  # what the dock says before a search
        "Type words in “Search explanations…” on the toolbar (Ctrl+F): the stored "
        "explanations that mention them are listed here, best first."
    )

    def __init__(
        self, navigate: Callable[[NeuronRef], object], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__("Search results", parent)
        self.setObjectName("SearchDock")
        self._navigate = navigate
        self.results = QtWidgets.QListWidget(self)
        self.results.setAccessibleName("Search results")
        # A narrow dock (1024×700 with three docks) wraps its lines instead of cutting them.
        self.results.setWordWrap(True)
        self.results.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results.itemActivated.connect(self._chosen)
        self.results.itemClicked.connect(self._chosen)
        self.setWidget(self.results)
        self._say(self.HINT)  # a dock restored open at start is not left blank

    def show_results(self, text: str, rows: list[ExplanationRow]) -> None:
        """List the rows found for `text` (or say that none were), and show the dock."""
        self.results.clear()
        for row in rows:
            item = QtWidgets.QListWidgetItem(  # plain text, never HTML
                f"{row.ref} [{format_score(row.score)}] {visible_text(row.explanation.strip())}"
            )
            item.setData(Qt.ItemDataRole.UserRole, row.ref)
            self.results.addItem(item)
        if text and not rows:
            self._say(
                "No stored explanation mentions that (only visited or fetched neurons are indexed)."
            )
        elif not text:
            self._say(self.HINT)
        self.show()
        self.raise_()

    def _say(self, message: str) -> None:
        """A line that is not a result: shown, not selectable."""
        item = QtWidgets.QListWidgetItem(message)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self.results.addItem(item)

    def _chosen(self, item: QtWidgets.QListWidgetItem) -> None:
        ref = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(ref, NeuronRef):
            self._navigate(ref)


class BatchResultsDock(QtWidgets.QDockWidget):
    """Every neuron of the dataset with a generated explanation, sortable by best score."""

    def __init__(
        self,
        navigate: Callable[[NeuronRef], object],
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__("Explained neurons", parent)
        self.setObjectName("BatchResultsDock")
        self._navigate = navigate
        self.model = ExplainedNeuronsModel(self)
        self.proxy = ScoreSortProxy(self.model, self)
        self.table = QtWidgets.QTableView(self)
        self.table.setModel(self.proxy)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(
            3, QtWidgets.QHeaderView.ResizeMode.Stretch
        )
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAccessibleName("Explained neurons by score")
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(self.model.SCORE_COLUMN, Qt.SortOrder.DescendingOrder)
        self.table.activated.connect(self._activated)
        self.table.doubleClicked.connect(self._activated)
        self.setWidget(self.table)

    def show_results(self, rows: list[ExplanationRow], dataset: Dataset | None = None) -> None:
        """Each explained neuron's (or latent's) best row, best first until re-sorted."""
        units = dataset.units if dataset is not None else "neurons"
        if dataset is not None:
            self.model.name_units(dataset)
        self.model.set_items(rows)
        self.table.sortByColumn(self.model.SCORE_COLUMN, Qt.SortOrder.DescendingOrder)
        self.table.setAccessibleName(f"Explained {units} by score")
        self.setWindowTitle(f"Explained {units} ({len(rows)})")

    def _activated(self, index: QtCore.QModelIndex) -> None:
        row = self.proxy.item_at(index.row())
        if isinstance(row, ExplanationRow):
            self._navigate(row.ref)
