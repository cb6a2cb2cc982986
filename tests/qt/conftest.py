"""GUI test fixtures: offscreen Qt, the Qt-driven asyncio loop, isolated settings, a desk over
the dataset mirror on 127.0.0.1 (store and mirror come from tests/conftest.py), and main
windows over such a desk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6 import QtCore, QtWidgets

from neuron_desk.core.paths import Paths
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import ProfileConfig
from neuron_desk.qt.asyncbridge import new_event_loop
from neuron_desk.qt.mainwindow import MainWindow
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Mirror
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle


@pytest.fixture(scope="session")
def _session_loop(qapp: QtWidgets.QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """One qasync loop for the whole session (qasync loops are not meant to be recreated)."""
    event_loop = new_event_loop(qapp)
    asyncio.set_event_loop(event_loop)
    yield event_loop
    event_loop.run_until_complete(event_loop.shutdown_asyncgens())
    event_loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def loop(_session_loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.AbstractEventLoop]:
    """The Qt-driven loop; an exception nobody handled during the test fails it."""
    errors: list[dict[str, Any]] = []
    _session_loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield _session_loop
    _session_loop.set_exception_handler(None)
    assert errors == [], errors


def run_until(
    loop: asyncio.AbstractEventLoop, condition: Callable[[], bool], timeout: float = 10.0
) -> None:
    """Run the Qt-driven loop until `condition()` holds."""

    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    loop.run_until_complete(asyncio.wait_for(wait(), timeout))


@pytest.fixture
def settings(tmp_path: Path) -> QtCore.QSettings:
    return QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)


DeskFactory = Callable[..., Desk]


@pytest.fixture
def make_desk(
    loop: asyncio.AbstractEventLoop, store: Store, mirror: Mirror, tmp_path: Path
) -> Iterator[DeskFactory]:
    """Desks over the test store with the mirror registered (no bundled sample), their
    profiles from `tmp_path` unless given; closed (clients, backends) after the test."""
    desks: list[Desk] = []

    def make(profiles: ProfileConfig | None = None) -> Desk:
        registry = Registry(store, bundled=[])
        registry.add(mirror_dataset(mirror.base_url))
        service = NeuronService(registry, store, http_backoff_s=0.01, timeout_s=5.0)
        desk = Desk(
            store,
            registry,
            service,
            paths=Paths.at(tmp_path),
            profiles=profiles or ProfileConfig(path=tmp_path / "profiles.json"),
        )
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        loop.run_until_complete(desk.aclose())


WindowFactory = Callable[..., MainWindow]


@pytest.fixture
def make_window(
    qtbot: Any,
    loop: asyncio.AbstractEventLoop,
    make_desk: DeskFactory,
    settings: QtCore.QSettings,
) -> Iterator[WindowFactory]:
    windows: list[MainWindow] = []

    def make(profiles: ProfileConfig | None = None) -> MainWindow:
        window = MainWindow(make_desk(profiles), settings)
        index = window.picker.dataset_box.findData("mirror")
        window.picker.dataset_box.setCurrentIndex(index)
        # Not qtbot.addWidget: pytest-qt would delete the window before this fixture has
        # cancelled its tasks; the teardown below closes it in the right order.
        window.resize(1200, 800)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        loop.run_until_complete(window.tasks.close())
        window.close()
        window.deleteLater()
    QtWidgets.QApplication.processEvents()
    QtWidgets.QApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, FakeServer]]:
    """The fake OpenAI-compatible server on 127.0.0.1, simulating a neuron of the letter e."""
    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e")
    with FakeServer(fake) as server:
        yield fake, server
