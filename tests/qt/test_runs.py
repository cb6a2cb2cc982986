"""Runs ask before sending anything billable, start clean, and the connection test is
bounded and says what is wrong — in the real window against the fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.refs import NeuronRef
from neuron_desk.llm.profiles import Profile, ProfileConfig
from neuron_desk.qt.operations import PROBE_TIMEOUT_S, Operations, probe_failure
from neuron_desk.qt.runconfirm import ASK_BELOW_USD_KEY, ASK_UNPRICED_KEY, RunConfirmation
from neuron_desk.qt.settingsdialog import SettingsDialog
from tests.qt.conftest import WindowFactory, run_until
from tests.qt.test_scoring import profiles_for


def shown(window, loop, neuron: int) -> None:  # type: ignore[no-untyped-def]
    ref = NeuronRef("mirror", 0, neuron)
    window.browser.go_to(ref)
    run_until(loop, lambda: window.browser.data is not None and window.browser.current == ref)


def asked(window) -> RunConfirmation | None:  # type: ignore[no-untyped-def]
    dialog = window.confirmation
    return dialog if dialog is not None and dialog.isVisible() else None


def test_generate_asks_first_and_cancel_sends_nothing(
    make_window: WindowFactory, loop, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    shown(window, loop, 2)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.explanations.generate_button.click()
    run_until(loop, lambda: asked(window) is not None, timeout=20)
    dialog = asked(window)
    assert dialog is not None
    text = dialog.text.text()
    assert "request(s)" in text and "Prompt tokens" in text and "Cost" in text
    assert "requests" in window.explanations.estimate.text()  # the estimate is shown too
    dialog.cancel_button.click()
    run_until(loop, lambda: outcomes == ["declined"])
    loop.run_until_complete(asyncio.sleep(0.3))
    assert fake[0].requests == []  # nothing was sent
    assert window.explanations.generate_button.isEnabled()


def test_score_it_asks_and_send_runs(
    make_window: WindowFactory, loop, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    shown(window, loop, 3)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.explanations.own.setText("the letter e")
    window.explanations.score_button.click()
    run_until(loop, lambda: asked(window) is not None, timeout=20)
    assert fake[0].requests == []
    dialog = asked(window)
    assert dialog is not None
    dialog.dont_ask.setChecked(True)  # no price known: don't ask again for unpriced runs
    dialog.send_button.click()
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert outcomes == ["done"] and fake[0].requests
    assert window.settings.value(ASK_UNPRICED_KEY) in (False, "false")
    # Next time it runs without asking.
    before = len(fake[0].requests)
    outcomes.clear()
    window.explanations.own.setText("the letter e, again")
    window.explanations.score_button.click()
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert outcomes == ["done"] and len(fake[0].requests) > before
    assert window.confirmation is None


def test_below_the_threshold_a_priced_run_does_not_ask(tmp_path: Path, qapp) -> None:  # type: ignore[no-untyped-def]
    from neuron_desk.qt.runconfirm import needs_confirmation
    from neuron_desk.runs.estimate import RunEstimate

    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    profile = Profile(name="p", base_url="https://api.example.com/v1")
    cheap = RunEstimate(requests=3, prompt_tokens=100, cost=0.004)
    assert needs_confirmation(cheap, profile, settings)  # default: always ask
    settings.setValue(ASK_BELOW_USD_KEY, 0.01)
    assert not needs_confirmation(cheap, profile, settings)
    assert needs_confirmation(RunEstimate(requests=3, cost=0.02), profile, settings)
    assert not needs_confirmation(RunEstimate(requests=3, cached_requests=3), profile, settings)
    local = Profile(name="local", base_url="local")
    assert not needs_confirmation(RunEstimate(requests=3, cost=None), local, settings)


def test_switching_neurons_clears_the_run(
    make_window: WindowFactory, loop, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fake[0].latency = 0.5
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    window.settings.setValue(ASK_UNPRICED_KEY, False)
    shown(window, loop, 4)
    window.generate(1)
    run_until(loop, lambda: fake[0].active > 0, timeout=20)
    assert window.statusBar().currentMessage() == "Explaining and scoring…"
    assert window.explanations.estimate.text()
    shown(window, loop, 5)
    loop.run_until_complete(asyncio.sleep(1.0))
    assert window.statusBar().currentMessage() == ""
    assert window.explanations.estimate.text() == ""
    assert not window.explanations.estimate.isVisible()
    assert window.explanations.generate_button.isEnabled()


def test_a_new_run_clears_the_last_error(
    make_window: WindowFactory, loop, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    window.settings.setValue(ASK_UNPRICED_KEY, False)
    shown(window, loop, 2)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    fake[0].reject_text = "letter"  # the run fails with the server's 400
    window.generate(1)
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert "rejected" in window.explanations.details.text()
    fake[0].reject_text = None
    fake[0].latency = 0.3
    window.generate(1)
    assert "rejected" not in window.explanations.details.text()  # cleared at once
    run_until(loop, lambda: len(outcomes) == 2, timeout=30)
    assert "rejected" not in window.explanations.details.text()


def _blackhole() -> socket.socket:
    """A port that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _probe(ops: Operations, loop, profile: Profile, timeout: float = PROBE_TIMEOUT_S):  # type: ignore[no-untyped-def]
    result: list[str] = []
    operation = ops.probe(profile, timeout)
    operation.success(result.append).failure(lambda e: result.append(probe_failure(profile, e)))
    loop.run_until_complete(operation.run())
    return result[0]


def test_connection_test_is_bounded_against_a_blackhole(make_desk, loop) -> None:  # type: ignore[no-untyped-def]
    assert PROBE_TIMEOUT_S <= 15
    with _blackhole() as sock:
        port = sock.getsockname()[1]
        profile = Profile(name="hole", base_url=f"http://127.0.0.1:{port}/v1", explainer_model="m")
        ops = Operations(make_desk())
        start = time.monotonic()
        message = _probe(ops, loop, profile, timeout=3.0)
        elapsed = time.monotonic() - start
    assert elapsed < 4.5, elapsed
    assert message.startswith("Unreachable") and str(port) in message


def test_connection_test_says_what_is_wrong(make_desk, loop, fake) -> None:  # type: ignore[no-untyped-def]
    ops = Operations(make_desk())
    base = fake[1].base_url
    os.environ.pop("NEURON_DESK_TEST_NO_KEY", None)
    no_key = Profile(
        name="k", base_url=base, api_key="env:NEURON_DESK_TEST_NO_KEY", explainer_model="fake-model"
    )
    assert _probe(ops, loop, no_key).startswith("No API key set")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    unreachable = Profile(name="u", base_url=f"http://127.0.0.1:{closed}/v1", explainer_model="m")
    assert _probe(ops, loop, unreachable).startswith("Unreachable")
    fake[0].fail_next = [401] * 4
    ok = Profile(name="f", base_url=base, explainer_model="fake-model")
    assert "refused (HTTP 401)" in _probe(ops, loop, ok)
    fake[0].fail_next = []
    fake[0].models = ["fake-model"]
    other = Profile(name="o", base_url=base, explainer_model="no-such-model")
    assert _probe(ops, loop, other).startswith("No such model")
    assert _probe(ops, loop, ok).startswith("Connected")


def test_test_button_is_never_left_disabled(
    make_window: WindowFactory, loop, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with _blackhole() as sock:
        config = ProfileConfig(path=tmp_path / "profiles.json")
        config.put(
            Profile(
                name="hole",
                base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
                explainer_model="m",
            )
        )
        window = make_window(config)
        dialog = window.open_settings()
        assert isinstance(dialog, SettingsDialog)
        page = dialog.profiles
        names = [page.list.item(i).text() for i in range(page.list.count())]
        page.list.setCurrentRow(names.index("hole"))
        page.test_button.click()
        assert not page.test_button.isEnabled()
        page.list.setCurrentRow(names.index("openai"))  # another profile: testable at once
        assert page.test_button.isEnabled()
        loop.run_until_complete(asyncio.sleep(0.1))
        assert not window.ops.running(Operations.PROBE_TASK)
        dialog.close()
        QtWidgets.QApplication.processEvents()
