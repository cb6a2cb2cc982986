"""Every pane fits at 1024×700: readable top tokens by weight (never only "…"), at least four
explanation rows, a one-line score summary; docks that don't fit become tabs; the layout
restores."""

from __future__ import annotations

import asyncio
import struct

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.refs import NeuronRef
from neuron_desk.qt.docks import TokenList
from neuron_desk.qt.mainwindow import MainWindow
from tests.qt.conftest import WindowFactory, run_until
from tests.qt.test_sparse import sample_window  # noqa: F401 - a fixture


def small(window: MainWindow, loop: asyncio.AbstractEventLoop, ref: NeuronRef) -> None:
    window.resize(1024, 700)
    window.arrange_docks()
    window.browser.go_to(ref)
    run_until(loop, lambda: window.browser.current == ref and window.browser.data is not None)
    QtWidgets.QApplication.processEvents()


def readable(table: TokenList) -> bool:
    """Every token shown in full: its column is wider than its text."""
    metrics = table.fontMetrics()
    width = table.columnWidth(0)
    texts = [table.text(r) for r in range(table.rowCount()) if table.text(r)]
    return bool(texts) and all(metrics.horizontalAdvance(t) + 8 <= width for t in texts)


def test_1024x700_shows_four_explanation_rows_and_readable_weight_tokens(
    sample_window: MainWindow,  # noqa: F811
    loop: asyncio.AbstractEventLoop,
) -> None:
    window = sample_window  # the bundled sample: real weight-based top tokens
    small(window, loop, NeuronRef("smollm2-135m", 3, 24))
    assert window.size() == QtCore.QSize(1024, 700)
    table = window.explanations.table
    row_height = table.verticalHeader().defaultSectionSize()
    assert table.viewport().height() >= 4 * row_height
    dock = window.tokens_dock
    dock.raise_()
    tabs = dock.widget()
    assert isinstance(tabs, QtWidgets.QTabWidget)
    tabs.setCurrentIndex(1)  # By weight
    QtWidgets.QApplication.processEvents()
    for name, tokens in dock.lists.items():
        assert tokens.isVisible(), name
        assert readable(tokens), (name, tokens.columnWidth(0))
        assert tokens.columnWidth(1) >= tokens.fontMetrics().horizontalAdvance("−0.000")
    # The score summary is one line.
    details = window.explanations.details
    assert details.text().startswith("score") or details.text()
    assert details.height() <= 2 * details.fontMetrics().height() + 6


def test_docks_that_dont_fit_become_tabs_and_the_layout_restores(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, settings: QtCore.QSettings
) -> None:
    window = make_window()
    small(window, loop, NeuronRef("mirror", 0, 2))
    assert window.related_dock in window.tabifiedDockWidgets(window.tokens_dock)
    window.close()  # keeps geometry, docks and splitter
    again = make_window()
    assert again.restore_state()
    assert again.related_dock in again.tabifiedDockWidgets(again.tokens_dock)
    again.resize(1600, 1000)  # room again: one above the other
    again.arrange_docks()
    assert again.related_dock not in again.tabifiedDockWidgets(again.tokens_dock)
    assert again.related_dock.isVisible() and again.tokens_dock.isVisible()


def test_a_window_kept_on_a_screen_of_another_width_is_fitted_to_this_one(
    make_window: WindowFactory, settings: QtCore.QSettings
) -> None:
    """Qt refuses a geometry saved on a screen 20% narrower or wider (a laptop's, shown now
    on a monitor); the window is fitted to the screen instead of Qt's default 640×480, and
    its docks and splitter are still restored."""
    window = make_window()
    window.resize(1024, 700)
    window.arrange_docks()
    window.close()
    saved = bytes(settings.value("geometry"))  # type: ignore[arg-type]
    screen_width = 46  # magic, version, frame and normal rects, screen, maximized, full screen
    other = struct.pack(">i", 4 * struct.unpack(">i", saved[screen_width : screen_width + 4])[0] + 1)
    settings.setValue(
        "geometry", QtCore.QByteArray(saved[:screen_width] + other + saved[screen_width + 4 :])
    )
    again = make_window()
    again.resize(640, 480)  # what a window starts as when nothing sets its size
    assert not again.restoreGeometry(settings.value("geometry"))  # type: ignore[arg-type]
    assert again.restore_state()  # the docks and the splitter
    assert again.width() >= 1200 and again.height() >= 800  # fitted (`fit_to_screen`)
    assert again.related_dock.isVisible() and again.tokens_dock.isVisible()


def test_a_narrow_search_dock_wraps_its_lines(
    sample_window: MainWindow,  # noqa: F811
) -> None:
    """At 1024×700 the search dock is narrow: its message (and each result) wraps to the
    dock's width, nothing is cut off behind a horizontal scroll bar."""
    window = sample_window
    window.resize(1024, 700)
    window.search("no explanation says this")
    QtWidgets.QApplication.processEvents()
    dock = window.search_dock
    assert dock.isVisible()
    results = dock.results
    results.setFixedWidth(160)
    QtWidgets.QApplication.processEvents()
    item = results.item(0)
    assert item is not None and item.text().startswith("No stored explanation mentions that")
    line = results.fontMetrics().height()
    rect = results.visualItemRect(item)
    assert rect.height() >= 3 * line  # wrapped over several lines
    assert rect.width() <= results.viewport().width()
    assert not results.horizontalScrollBar().isVisible()


def test_the_search_dock_says_how_to_search_until_there_is_a_search(
    sample_window: MainWindow,  # noqa: F811
) -> None:
    """Restored open at start, the dock was blank; it says what it is for, and again once a
    search is cleared (a line that is not a result: it cannot be picked)."""
    window = sample_window
    results = window.search_dock.results
    for searched in (None, "no explanation says this", ""):
        if searched is not None:
            window.search(searched)
        texts = [results.item(i).text() for i in range(results.count())]
        if searched:
            assert texts[0].startswith("No stored explanation mentions that")
        else:
            assert texts == [window.search_dock.HINT]
            assert "Ctrl+F" in texts[0]
        item = results.item(0)
        assert not item.flags() & QtCore.Qt.ItemFlag.ItemIsSelectable


def test_test_your_own_text_fits_at_1024x700(
    sample_window: MainWindow,  # noqa: F811
) -> None:
    """Below the panes at 1024×700, the text probe's dock made the window taller than the
    screen (its status bar out of sight); there it is a tab beside the top tokens, and
    below the panes where the window is tall enough."""
    window = sample_window
    window.resize(1024, 700)
    window.arrange_docks()
    QtWidgets.QApplication.processEvents()
    window.open_text_probe()
    QtWidgets.QApplication.processEvents()
    assert window.probe_dock.isVisible()
    assert window.probe_dock in window.tabifiedDockWidgets(window.tokens_dock)
    assert window.size() == QtCore.QSize(1024, 700)
    window.resize(1400, 1000)
    window.open_text_probe()
    QtWidgets.QApplication.processEvents()
    assert window.probe_dock not in window.tabifiedDockWidgets(window.tokens_dock)
    assert window.dockWidgetArea(window.probe_dock) == QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
    assert window.probe_dock.isVisible() and window.height() == 1000


def test_a_text_probe_kept_open_below_the_panes_is_a_tab_in_a_short_window(
    make_window: WindowFactory,
) -> None:
    """Kept open below the panes of a tall window, the text probe's dock is restored beside
    the top tokens in a short one (below them, the window would be taller than 700 px)."""
    window = make_window()
    window.resize(1400, 1000)
    window.open_text_probe()
    QtWidgets.QApplication.processEvents()
    assert window.dockWidgetArea(window.probe_dock) == QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
    window.close()  # keeps geometry and docks
    again = make_window()
    assert again.restore_state()  # offscreen, the kept geometry comes back shorter than 900
    assert again.height() < 900
    QtWidgets.QApplication.processEvents()
    assert again.probe_dock.isVisible()
    assert again.probe_dock in again.tabifiedDockWidgets(again.tokens_dock)
    again.resize(1024, 700)
    QtWidgets.QApplication.processEvents()
    assert again.size() == QtCore.QSize(1024, 700)


def test_a_long_title_wraps_instead_of_widening_the_window(
    sample_window: MainWindow,  # noqa: F811
    loop: asyncio.AbstractEventLoop,
) -> None:
    """"SmolLM2-135M-Instruct TopK SAE (bundled sample) · SAE at model.layers.9 · latent
    3616" is wider than the panes at 1024×700: on one line it made the window wider than
    the screen; it wraps."""
    window = sample_window
    latent = window.desk.available_neurons("smollm2-135m-sae")[0]
    small(window, loop, latent)
    title = window.title
    assert title.text().startswith("SmolLM2-135M-Instruct TopK SAE (bundled sample) · ")
    assert title.fontMetrics().horizontalAdvance(title.text()) > title.width()  # too long
    assert window.size() == QtCore.QSize(1024, 700)
    assert title.height() >= 2 * title.fontMetrics().height()  # on two lines


def test_welcome_buttons_too_long_for_1024x700_end_in_an_ellipsis(
    sample_window: MainWindow,  # noqa: F811
) -> None:
    """The SAE's interesting latents ("0:1681  ' charged' (2/26), ' charge' (2/26), ' weight'
    (2/26) — high kurtosis #…") are wider than their buttons at 1024×700: they were cut off
    mid-letter; they end in "…", and say it all to a screen reader and once widened."""
    window = sample_window
    window.resize(1024, 700)
    window.show_welcome()
    box = window.picker.dataset_box
    box.setCurrentIndex(box.findData("smollm2-135m-sae"))
    QtWidgets.QApplication.processEvents()
    buttons = window.welcome.neuron_buttons
    dataset = window.desk.dataset("smollm2-135m-sae")
    assert [b.whole_text().split()[0] for b in buttons] == [
        f"{item.layer}:{item.neuron}" for item in dataset.interesting[: len(buttons)]
    ]
    cut = [b for b in buttons if b.text() != b.whole_text()]
    assert cut, "at 1024×700 some are too long"
    for button in buttons:
        metrics = button.fontMetrics()
        assert metrics.horizontalAdvance(button.text()) < button.width() - 16  # its padding
        assert button.accessibleName() == button.whole_text()
    for button in cut:
        assert button.text().endswith("…")
        assert button.whole_text().startswith(button.text()[:-1])
    window.resize(1900, 700)
    QtWidgets.QApplication.processEvents()
    assert all(b.text() == b.whole_text() for b in buttons)


def test_a_narrow_token_list_wraps_why_it_is_empty(qapp: QtWidgets.QApplication) -> None:
    """An empty list says why on as many lines as its width needs (elided on one line, the
    middle of the reason was cut out at 1024×700)."""
    table = TokenList("mean activation")
    table.resize(220, 300)
    reason = (
        "SmolLM2-135M-Instruct TopK SAE (bundled sample) has no top tokens by activation for "
        "0:967"
    )
    table.set_pairs([], reason)
    table.show()
    QtWidgets.QApplication.processEvents()
    image = table.viewport().grab().toImage()
    background = image.pixelColor(image.width() - 3, image.height() - 3).lightness()
    inked = [
        y for y in range(image.height())
        if any(abs(image.pixelColor(x, y).lightness() - background) > 80 for x in range(image.width()))
    ]  # fmt: skip
    line = table.fontMetrics().height()
    assert inked and inked[-1] - inked[0] >= 2 * line  # three lines or more
    assert table.text(0) == reason  # what a screen reader and a copy get: the whole reason
    table.close()


def test_a_narrow_explanations_table_leaves_the_explanation_room(qtbot) -> None:  # type: ignore[no-untyped-def]
    """In a window narrower than 1024 pixels the explanations table is ~520 wide: the columns
    after the explanation narrow so that it keeps half (it was left 35 pixels); wide, they keep
    their 100."""
    from neuron_desk.qt.explanationpane import ExplanationPane

    pane = ExplanationPane()
    qtbot.addWidget(pane)
    pane.show()
    header = pane.table.horizontalHeader()
    for width, detail in ((520, None), (1600, 100)):
        pane.resize(width, 600)
        QtWidgets.QApplication.processEvents()
        room = pane.table.viewport().width() - header.sectionSize(0)
        assert header.sectionSize(1) >= 0.4 * room, width
        shown = [c for c in range(2, header.count()) if not header.isSectionHidden(c)]
        titles = [str(pane.proxy.headerData(c, QtCore.Qt.Orientation.Horizontal)) for c in shown]
        metrics = header.fontMetrics()
        assert shown and all(  # every title readable
            header.sectionSize(c) >= max(56, metrics.horizontalAdvance(t) + 8)
            for c, t in zip(shown, titles, strict=True)
        )
        if detail is not None:
            assert all(header.sectionSize(c) == detail for c in shown)
    assert not pane.table.horizontalScrollBar().isVisible()
    # The score column fits its title or its widest value, not both side by side.
    metrics = pane.fontMetrics()
    score = header.sectionSize(0)
    assert score >= header.sectionSizeHint(0)
    assert score >= max(metrics.horizontalAdvance(t) for t in ("−0.00", "n/a")) + 8
    assert score < metrics.horizontalAdvance("score  −0.00") + 8 - 20
