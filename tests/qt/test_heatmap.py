"""Excerpts read as text: tokens touch, wrap at token boundaries, show newlines, align in two
columns side by side, are laid out once per width, can be copied, and show invisible
characters visibly."""

from __future__ import annotations

import itertools

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.qt.heatmap import (
    BAR,
    HeatmapRow,
    HeatmapView,
    Palette,
    RowRole,
    RowsModel,
    layout_row,
    paint_row,
    visible_text,
    visible_token,
)

FONT = QtGui.QFont("DejaVu Sans", 10)


def row_of(tokens: list[str], values: list[float] | None = None, **kw) -> HeatmapRow:  # type: ignore[no-untyped-def]
    return HeatmapRow(tokens, values or [1.0] * len(tokens), 1.0, **kw)


def test_subword_pieces_touch(qapp) -> None:  # type: ignore[no-untyped-def]
    layout = layout_row(row_of(["Sté", "ph", "ane", " W", "irt", "el"]), FONT, 800, False)
    rects = [f.rect for f in layout.fragments]
    assert len({r.top() for r in rects}) == 1  # one line
    for a, b in itertools.pairwise(rects):
        assert a.right() + 1 == b.left()  # no gap, no overlap
    metrics = QtGui.QFontMetrics(FONT)
    # The only space between "Stéphane" and "Wirtel" is the token's own leading space.
    assert rects[3].width() == metrics.horizontalAdvance(" W")


def test_painted_boxes_leave_no_gap(qapp) -> None:  # type: ignore[no-untyped-def]
    image = QtGui.QImage(400, 40, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("white"))
    palette = Palette(QtGui.QPalette())
    row = row_of(["Sté", "ph", "ane"])
    painter = QtGui.QPainter(image)
    paint_row(painter, image.rect(), row, palette, FONT, False)
    painter.end()
    end = layout_row(row, FONT, 400, False).fragments[-1].rect.right()
    hot = palette.heat(1.0, 1.0)
    assert all(image.pixelColor(x, 0) == hot for x in range(0, end + 1))
    assert image.pixelColor(end + 2, 0) != hot


def test_wraps_at_token_boundaries_and_breaks_only_overlong_tokens(qapp) -> None:  # type: ignore[no-untyped-def]
    tokens = [" the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog"]
    layout = layout_row(row_of(tokens), FONT, 120, False)
    assert [f.text for f in layout.fragments] == tokens  # no token split
    lines = sorted({f.rect.top() for f in layout.fragments})
    assert len(lines) > 1
    for top in lines[1:]:
        first = min(
            (f for f in layout.fragments if f.rect.top() == top), key=lambda f: f.rect.left()
        )
        assert first.rect.left() == 0
    assert all(f.rect.right() < 120 for f in layout.fragments)
    long = layout_row(row_of(["x" * 200]), FONT, 100, False)
    assert len(long.fragments) > 1 and "".join(f.text for f in long.fragments) == "x" * 200
    assert all(f.rect.width() <= 100 for f in long.fragments)


def test_newlines_are_visible_and_end_the_line(qapp) -> None:  # type: ignore[no-untyped-def]
    layout = layout_row(row_of(["Hello", ".", "\n", "World"]), FONT, 800, False)
    texts = [f.text for f in layout.fragments]
    assert texts == ["Hello", ".", "↵", "World"]
    world = layout.fragments[3].rect
    assert world.left() == 0 and world.top() > layout.fragments[2].rect.top()


def test_side_by_side_is_two_aligned_columns(qapp) -> None:  # type: ignore[no-untyped-def]
    row = row_of(["a", "b", "c"], [0.0, 1.0, 0.0], simulated=[10.0, 0.0, 0.0], simulated_scale=10.0)
    layout = layout_row(row, FONT, 400, True)
    assert layout.column_offset >= 200 - 12  # the simulated column starts half-way
    image = QtGui.QImage(400, 40, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("white"))
    palette = Palette(QtGui.QPalette())
    painter = QtGui.QPainter(image)
    paint_row(painter, image.rect(), row, palette, FONT, True)
    painter.end()
    a = layout.fragments[0].rect
    blue = palette.heat(10.0, 10.0, palette.simulated)
    # The same token, at the same place in the right column, carries the simulated colour.
    assert image.pixelColor(a.left() + layout.column_offset, 0) == blue
    assert image.pixelColor(a.left(), 0) != blue
    # Overlay: the bar under the token.
    overlay = layout_row(row, FONT, 400, False)
    image.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(image)
    paint_row(painter, image.rect(), row, palette, FONT, False)
    painter.end()
    box = overlay.fragments[0].rect
    assert image.pixelColor(box.left(), box.bottom() + BAR // 2 + 1) == blue
    assert overlay.column_offset == 0


def test_layout_is_cached_per_width(qapp) -> None:  # type: ignore[no-untyped-def]
    row = row_of(["aaaa", "bbbb"])
    assert layout_row(row, FONT, 300, False) is layout_row(row, FONT, 300, False)
    # A width that moves no box shares the layout (and so the row's picture) ...
    assert layout_row(row, FONT, 200, False) is layout_row(row, FONT, 300, False)
    # ... one that wraps the row otherwise does not.
    narrow = QtGui.QFontMetrics(FONT).horizontalAdvance("aaaa") + 2
    assert layout_row(row, FONT, narrow, False) is not layout_row(row, FONT, 300, False)
    assert len({b[3] for b in layout_row(row, FONT, narrow, False).boxes}) == 2  # two lines


def test_invisible_and_bidi_characters_are_shown(qapp) -> None:  # type: ignore[no-untyped-def]
    assert visible_text("\u202eevil\u202c txt") == "\\u202eevil\\u202c txt"
    assert visible_token("a\u200bb\ufeff") == "a\\u200bb\\ufeff"
    assert visible_token("\u2066x\u2069") == "\\u2066x\\u2069"
    assert visible_token("café ü") == "café ü"


class _Rows(RowsModel):
    def __init__(self, rows: list[HeatmapRow]) -> None:
        super().__init__()
        self._rows = rows

    def row_data(self, row: int, role: int) -> object:
        return self._rows[row] if role == RowRole else None


def test_excerpts_are_selected_and_copied_as_plain_text(qtbot) -> None:  # type: ignore[no-untyped-def]
    view = HeatmapView()
    qtbot.addWidget(view)
    model = _Rows([row_of(["Sté", "ph", "ane", "\n", "<b>"]), row_of([" second"])])
    view.setModel(model)
    view.resize(400, 300)
    view.show()
    view.selectAll()
    QtWidgets.QApplication.clipboard().clear()
    view.setFocus()
    qtbot.keySequence(view, QtGui.QKeySequence.StandardKey.Copy)
    assert QtWidgets.QApplication.clipboard().text() == "Stéphane\n<b>\n\n second"
    view.selectionModel().select(
        model.index(1, 0), QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect
    )
    assert view.copy() == " second"
    assert view.selected_text(with_values=True) == "' second'\t1"


def test_a_view_lays_each_row_out_once_through_paints_scrolls_and_a_section_expanding(
    qtbot, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Size hints, paints and scrolling reuse one layout per row and width; expanding a section
    lays out only those of its new rows that are (nearly) in view."""
    import neuron_desk.qt.heatmap as heatmap
    from neuron_desk.qt.datasetpane import DatasetPane
    from tests.synthetic import neuron_record

    laid_out: list[tuple[int, int]] = []
    real = heatmap._layout

    def counting(row, metrics, widths, width, side_by_side):  # type: ignore[no-untyped-def]
        laid_out.append((id(row), width))
        return real(row, metrics, widths, width, side_by_side)

    monkeypatch.setattr(heatmap, "_layout", counting)
    pane = DatasetPane()
    qtbot.addWidget(pane)
    pane.resize(900, 700)
    pane.show()
    pane.show_record(neuron_record(seed=3, n_top=20))
    pane.view.doItemsLayout()
    pane.repaint()
    first = list(laid_out)
    assert first and len(first) == len(set(first))  # each (row, width) once
    bar = pane.view.verticalScrollBar()
    for value in range(0, bar.maximum() + 1, 30):
        bar.setValue(value)
        pane.view.viewport().repaint()
    assert laid_out == first  # scrolling over the same rows: no layout
    pane.model.toggle(0)  # Top activations: 4 → 20 records
    pane.view.doItemsLayout()
    pane.repaint()
    added = laid_out[len(first) :]
    # Only rows that came in, and of those only the ones down to the visible end (and a little
    # more): the others wait with an estimated height.
    assert 0 < len(added) < 16 and len(set(added)) == len(added)
    assert len(laid_out) == len(set(laid_out))


def test_heat_colours_are_made_once_per_row(qapp) -> None:  # type: ignore[no-untyped-def]
    palette = Palette.of(QtWidgets.QApplication.palette())
    row = row_of(["a", "b", "c"], [0.0, 0.5, 1.0])
    colours = palette.token_colours(row)
    assert palette.token_colours(row) is colours
    assert colours[0][0] != colours[2][0]  # the ramp
    assert Palette.of(QtWidgets.QApplication.palette()) is palette


def _counting_layouts(monkeypatch) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    import neuron_desk.qt.heatmap as heatmap

    laid_out: list[tuple[int, int]] = []
    real = heatmap._layout

    def counting(row, metrics, widths, width, side_by_side):  # type: ignore[no-untyped-def]
        laid_out.append((id(row), width))
        return real(row, metrics, widths, width, side_by_side)

    monkeypatch.setattr(heatmap, "_layout", counting)
    return laid_out


def _long_rows(n: int) -> list[HeatmapRow]:
    words = [" the", " quick", " brown", " fox", "\n", " jumps", " over", " lazy", " dogs"]
    return [row_of([words[(i + j) % len(words)] for j in range(40 + i % 30)]) for i in range(n)]


def _visible_rows(view: HeatmapView) -> list[int]:
    area = view.viewport().rect()
    return [
        r for r in range(view.model().rowCount())
        if view.visualRect(view.model().index(r, 0)).intersects(area)
    ]


def test_off_screen_rows_are_not_laid_out_and_visible_ones_have_their_true_height(
    qtbot, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """200 rows in a 500×300 view: only the visible rows (and a viewport's worth below) are
    laid out; scrolling lays out the rows coming into view, before they are painted, with the
    height the view gives them equal to their layout's."""
    from neuron_desk.qt.heatmap import layout_row

    laid_out = _counting_layouts(monkeypatch)
    view = HeatmapView()
    qtbot.addWidget(view)
    rows = _long_rows(200)
    view.setModel(_Rows(rows))
    view.resize(500, 300)
    view.show()
    view.doItemsLayout()
    view.viewport().repaint()
    visible = _visible_rows(view)
    assert 1 <= len(visible) < 20
    assert len(laid_out) <= 3 * len(visible) + 2  # not 200
    assert len(set(laid_out)) == len(laid_out)

    def true_heights() -> None:
        inner = view.viewport().width() - 8
        for r in _visible_rows(view):
            layout = layout_row(rows[r], view.font(), inner, False)
            assert view.visualRect(view.model().index(r, 0)).height() == layout.height + 4

    true_heights()
    bar = view.verticalScrollBar()
    for value in range(0, bar.maximum() + 1, 250):
        bar.setValue(value)
        view.viewport().repaint()
        true_heights()
    bar.setValue(bar.maximum())
    view.viewport().repaint()
    QtWidgets.QApplication.processEvents()
    view.viewport().repaint()
    true_heights()
    assert len(set(laid_out)) == len(laid_out)  # still each (row, width) once


def test_a_resize_lays_out_only_the_visible_rows(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    laid_out = _counting_layouts(monkeypatch)
    view = HeatmapView()
    qtbot.addWidget(view)
    view.setModel(_Rows(_long_rows(200)))
    view.resize(500, 300)
    view.show()
    view.doItemsLayout()
    view.viewport().repaint()
    for width in (480, 460, 440):
        laid_out.clear()
        view.resize(width, 300)
        QtWidgets.QApplication.processEvents()
        view.viewport().repaint()
        assert laid_out, "the new width needs layouts"
        assert len(laid_out) <= 3 * len(_visible_rows(view)) + 2


def _counting_paints(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The serials of the rows `paint_row` draws from now on, in order."""
    import neuron_desk.qt.heatmap as heatmap

    painted: list[int] = []
    real = heatmap.paint_row

    def counting(painter, rect, row, palette, font, side_by_side, on_base=False):  # type: ignore[no-untyped-def]
        painted.append(row.serial)
        return real(painter, rect, row, palette, font, side_by_side, on_base)

    monkeypatch.setattr(heatmap, "paint_row", counting)
    return painted


def test_painted_rows_are_kept_as_pixmaps_until_the_width_changes(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    painted = _counting_paints(monkeypatch)
    view = HeatmapView()
    qtbot.addWidget(view)
    view.setModel(_Rows(_long_rows(30)))
    view.resize(500, 300)
    view.show()
    QtWidgets.QApplication.processEvents()  # exposed: paints reach the delegate
    view.doItemsLayout()
    painted.clear()
    view.viewport().repaint()  # drawn straight, or into pictures if shown once already
    first = list(painted)
    assert first and len(set(first)) == len(first)
    view.viewport().repaint()
    painted.clear()
    view.viewport().repaint()
    assert painted == []  # every row copied from its picture
    view.verticalScrollBar().setValue(20)
    view.viewport().repaint()
    assert set(painted) <= set(range(max(first) + 1, max(first) + 4))  # few new
    assert len(painted) <= 3  # the rest copied from the pictures
    # A new width paints again exactly the rows it wraps otherwise (the others' pictures are
    # as wide as what they show, and kept per layout).
    for width in (420, 416, 200):
        before_width = view.viewport().width() - 8
        shown_rows = [view.model()._rows[r] for r in _visible_rows(view)]  # type: ignore[attr-defined]
        old = {r.serial: layout_row(r, view.font(), before_width, False) for r in shown_rows}
        view.viewport().repaint()  # the pictures of the rows drawn straight before
        painted.clear()
        view.resize(width, 300)
        QtWidgets.QApplication.processEvents()
        view.viewport().repaint()
        inner = view.viewport().width() - 8
        moved = {
            r.serial for r in shown_rows
            if r.serial in old and layout_row(r, view.font(), inner, False) is not old[r.serial]
        }  # fmt: skip
        visible = {view.model()._rows[r].serial for r in _visible_rows(view)}  # type: ignore[attr-defined]
        assert set(painted) == (moved & visible) | (visible - set(old)), width
    assert painted  # 200 wraps some rows otherwise


def test_new_rows_are_drawn_by_the_first_paint_after_them(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A shown list lays new rows out when they arrive, so the paint right after draws them:
    left to Qt's delayed layout, that paint showed the list empty for a frame (a neuron switch
    flickered) and a second paint drew the rows."""
    from neuron_desk.qt.datasetpane import DatasetPane
    from tests.synthetic import neuron_record

    painted = _counting_paints(monkeypatch)
    pane = DatasetPane()
    qtbot.addWidget(pane)
    pane.resize(900, 700)
    pane.show()
    QtWidgets.QApplication.processEvents()  # exposed: paints reach the delegate
    for seed in (3, 4):
        painted.clear()
        pane.show_record(neuron_record(seed=seed, n_top=20))
        pane.repaint()  # no events in between: what the next frame shows
        assert len(painted) >= 3, f"seed {seed}: {len(painted)} rows in the first paint"
    hidden = HeatmapView()
    qtbot.addWidget(hidden)
    hidden.setModel(_Rows(_long_rows(5)))
    hidden.model().beginResetModel()
    hidden.model().endResetModel()  # not shown: the layout waits until it is
    assert hidden.delegate.exact_to == float("inf")


def test_a_row_is_drawn_straight_at_its_first_paint_and_kept_from_its_second(
    qtbot, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """A neuron's rows are mostly painted once: the first paint draws a row where it is
    shown (no picture of its own to make and copy), the second makes its picture, later
    ones copy it; the three look the same, selected or not."""
    painted = _counting_paints(monkeypatch)
    view = HeatmapView()
    qtbot.addWidget(view)
    row = HeatmapRow(
        ["Hello", " world", ",\n", " a", " <b>", "\tx"], [0.0, 1.0, 5.0, 0.0, 2.5, 0.0], 5.0,
        simulated=[0.0, 3.0, 0.0, 9.0, 0.0, 1.0],
    )
    view.setModel(_Rows([row]))
    view.resize(400, 200)
    index = view.model().index(0, 0)
    for selected, side_by_side in itertools.product((False, True), (False, True)):
        view.delegate.side_by_side = side_by_side
        option = QtWidgets.QStyleOptionViewItem()
        option.initFrom(view)
        option.font = view.font()
        option.rect = QtCore.QRect(0, 0, 380, view.delegate.sizeHint(option, index).height())
        if selected:
            option.state |= QtWidgets.QStyle.StateFlag.State_Selected
        QtGui.QPixmapCache.clear()
        view.delegate._painted_once.clear()
        images = []
        for _ in range(3):
            image = QtGui.QImage(option.rect.size(), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
            image.fill(view.palette().color(QtGui.QPalette.ColorRole.Base))  # the viewport's
            painter = QtGui.QPainter(image)
            painted.clear()
            view.delegate.paint(painter, option, index)
            painter.end()
            images.append((image, len(painted)))
        case = f"selected {selected}, side by side {side_by_side}"
        assert [count for _, count in images] == [1, 1, 0], case  # straight, picture, copy
        straight, picture, copied = (image for image, _ in images)
        assert straight == picture == copied, case
        hot = layout_row(row, view.font(), option.rect.width() - 8, side_by_side).boxes[2]
        base = view.palette().color(QtGui.QPalette.ColorRole.Base).rgb()
        assert straight.pixel(4 + hot[2] + 1, 2 + 2) != base  # the hot token's box is filled
