"""Generate & score, score your own explanation, and cancel, in the real window against the
fake OpenAI-compatible server on 127.0.0.1 (a neuron that fires on the letter e)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PySide6 import QtCore

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from neuron_desk.llm.profiles import Profile, ProfileConfig
from neuron_desk.qt.mainwindow import MainWindow
from neuron_desk.qt.operations import Operations
from neuron_desk.qt.runconfirm import ASK_UNPRICED_KEY
from tests.qt.conftest import WindowFactory, run_until


def explanations(store: Store, layer: int, neuron: int, source: str):  # type: ignore[no-untyped-def]
    return Explanations(store).of(NeuronRef("mirror", layer, neuron), source=source)


def cell(view, row: int, column: int) -> str:  # type: ignore[no-untyped-def]
    return str(view.model().index(row, column).data())


def profiles_for(base_url: str, tmp_path: Path) -> ProfileConfig:
    config = ProfileConfig(path=tmp_path / "profiles.json")
    config.put(
        Profile(
            name="fake",
            base_url=base_url,
            explainer_model="fake-model",
            simulator_model="fake-model",
            max_concurrency=4,
        )
    )
    config.default = "fake"
    return config


def open_neuron(window: MainWindow, loop: asyncio.AbstractEventLoop, neuron: int = 2) -> None:
    # The fake model has no price: these tests don't want the "send this run?" question.
    window.settings.setValue(ASK_UNPRICED_KEY, False)
    browser = window.browser
    browser.go_to(NeuronRef("mirror", 0, neuron))
    run_until(
        loop, lambda: browser.data is not None and browser.current == NeuronRef("mirror", 0, neuron)
    )


def test_generate_and_score(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    open_neuron(window, loop)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.generate(2)
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert outcomes == ["done"], window.explanations.details.text()
    rows = explanations(store, 0, 2, source="generated")
    assert [r.explanation for r in rows] == ["words with the letter e"] * 2
    assert rows[0].score is not None and rows[0].score > 0.9
    assert rows[0].provenance["endpoint"] == fake[1].base_url
    table = window.explanations.table
    sources = [cell(table, r, 3) for r in range(table.model().rowCount())]
    assert sources.count("generated") == 2 and "published" in sources
    # The best (a generated one, ~0.99) is selected and its scoring details are shown.
    assert window.explanations.simulations.rowCount() == 10
    assert (
        "score 0.9" in window.explanations.details.text()
        or "score 1.0" in window.explanations.details.text()
    )
    # The estimate line, which said what would be sent before the probe, now says what was.
    said = window.explanations.estimate.text()
    assert said.startswith("sent: ") and "request(s)" in said and "prompt + " in said
    assert "simulator: prompt-logprobs" in said and "not probed" not in said
    assert "to send" not in said


def test_score_your_own_explanation(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    open_neuron(window, loop, 3)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.explanations.own.setText("the letter e")
    window.explanations.score_button.click()
    run_until(loop, lambda: outcomes != [], timeout=30)
    (row,) = explanations(store, 0, 3, source="user")
    assert row.explanation == "the letter e" and row.score is not None and row.score > 0.9
    texts = [
        cell(window.explanations.table, r, 1)
        for r in range(window.explanations.table.model().rowCount())
    ]
    assert "the letter e" in texts


def start_slow_run(make_window, loop, store, fake, tmp_path):  # type: ignore[no-untyped-def]
    """A window generating for neuron 0:4 against a server that answers in 0.5 s, mid-request."""
    server_fake, server = fake
    server_fake.latency = 0.5
    window = make_window(profiles_for(server.base_url, tmp_path))
    open_neuron(window, loop, 4)
    window.generate(1)
    run_until(loop, lambda: server_fake.active > 0, timeout=10)
    return server_fake, window


def test_cancel_mid_run_leaves_nothing_running(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server_fake, window = start_slow_run(make_window, loop, store, fake, tmp_path)
    window.cancel_run()
    assert not window.ops.running(Operations.RUN_TASK)
    assert window.explanations.generate_button.isEnabled()
    loop.run_until_complete(asyncio.sleep(0.8))
    assert server_fake.active == 0
    sent = len(server_fake.requests)
    loop.run_until_complete(asyncio.sleep(0.6))
    assert len(server_fake.requests) == sent  # nothing more was sent after the cancel


def test_switching_neurons_cancels_the_run(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server_fake, window = start_slow_run(make_window, loop, store, fake, tmp_path)
    open_neuron(window, loop, 5)
    loop.run_until_complete(asyncio.sleep(0.8))
    assert server_fake.active == 0
    assert explanations(store, 0, 4, source="generated") == []


def test_settings_test_connection_and_offline(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    dialog = window.open_settings()
    profiles = dialog.profiles  # type: ignore[attr-defined]
    profiles.list.setCurrentRow(profiles.list.count() - 1)  # "+ new profile"
    profiles.name.setText("second")
    profiles.base_url.setText(fake[1].base_url)
    profiles.simulator.setText("fake-model")
    profiles.key_source.setText("sk-this-is-not-a-key-source")
    profiles.save()
    assert "never contain the key itself" in profiles.result.text()
    assert "sk-this" not in profiles.result.text()
    profiles.key_source.setText("none")
    profiles.save()
    assert "Saved to" in profiles.result.text()
    assert "sk-this" not in (tmp_path / "profiles.json").read_text()
    profiles.test_connection()
    run_until(loop, lambda: profiles.result.text().startswith(("Connected", "Failed")), timeout=20)
    assert profiles.result.text().startswith("Connected"), profiles.result.text()
    assert "prompt-logprobs" in profiles.result.text()
    dialog.data.offline.setChecked(True)  # type: ignore[attr-defined]
    assert window.desk.offline
    dialog.reject()
    run_until(
        loop,
        lambda: (
            "second"
            in [
                window.explanations.profile.itemText(i)
                for i in range(window.explanations.profile.count())
            ]
        ),
    )


def test_explained_neurons_table(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stored = Explanations(store)
    stored.add(NeuronRef("mirror", 0, 1), "weak idea", 0.10, "generated", {"run": "batch-x"})
    stored.add(NeuronRef("mirror", 0, 3), "good idea", 0.80, "generated", {"run": "batch-x"})
    stored.add(NeuronRef("mirror", 0, 3), "better idea", 0.90, "user", {})
    stored.add(NeuronRef("mirror", 1, 0), "unscored", None, "generated", {})
    window = make_window(profiles_for(fake[1].base_url, tmp_path))
    window.results_dock.show()
    table = window.results_dock.table
    assert table.model().rowCount() == 3
    assert [cell(table, r, 2) for r in range(3)] == ["0.90", "0.10", "n/a"]
    assert cell(table, 0, 3) == "better idea"
    table.sortByColumn(2, QtCore.Qt.SortOrder.AscendingOrder)
    assert cell(table, 0, 2) == "n/a"
    table.activated.emit(table.model().index(2, 0))  # the 0.90 row, now last
    browser = window.browser
    run_until(
        loop, lambda: browser.current == NeuronRef("mirror", 0, 3) and browser.data is not None
    )


def test_a_profile_budget_stops_the_run(
    make_window: WindowFactory, loop, store: Store, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    config = ProfileConfig(path=tmp_path / "profiles.json")
    config.put(
        Profile(
            name="capped",
            base_url=fake[1].base_url,
            explainer_model="fake-model",
            simulator_model="fake-model",
            budget_tokens=3000,
        )
    )
    config.default = "capped"
    config.save()
    assert (
        json.loads((tmp_path / "profiles.json").read_text())["profiles"][0]["budget_tokens"] == 3000
    )
    window = make_window(ProfileConfig.load(tmp_path / "profiles.json"))
    open_neuron(window, loop, 1)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.generate(1)
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert "budget" in outcomes[0]
    assert "budget" in window.statusBar().currentMessage()
    assert window.explanations.generate_button.isEnabled()
    assert explanations(store, 0, 1, source="generated") == []


def test_second_opinions_sit_beside_the_simulation_score(
    make_window: WindowFactory, loop, store: Store, tmp_path: Path
) -> None:
    ref = NeuronRef("mirror", 0, 3)
    table = Explanations(store)
    table.add(ref, "words with the letter e", 0.9, "user", {"method": "all_at_once_chat_generation"})
    metrics = {"scorer": "detection", "balanced_accuracy": 0.8, "precision": 0.75, "recall": 0.9,
               "f1": 0.82, "auc": None, "auc_source": "none", "n_excerpts": 20, "n_answered": 20}  # fmt: skip
    table.add(ref, "words with the letter e", None, "user", {"scorer": "detection", "metrics": metrics})
    table.add(
        ref, "vowels", 0.4, "user",
        {"method": "all_at_once_chat_generation_written_digits",
         "value_sources": {"distribution": 0, "written_digit": 64, "missing": 0}},
    )  # fmt: skip
    window = make_window(profiles_for("http://127.0.0.1:9/v1", tmp_path))
    open_neuron(window, loop, 3)
    view = window.explanations.table
    rows = {cell(view, r, 1): r for r in range(view.model().rowCount())}
    assert set(rows) == {"words with the letter e (0:3)", "words with the letter e", "vowels"}
    mine = rows["words with the letter e"]  # one row: the opinion is folded into it
    assert cell(view, mine, 2) == "detection 0.80" and cell(view, mine, 0) == "0.90"
    view.selectRow(mine)
    assert "second opinions: detection 0.80" in window.explanations.details.text()
    digits = rows["vowels"]
    assert cell(view, digits, 4) == "written digits (no logprobs)"
    view.selectRow(digits)
    details = window.explanations.details.text()
    assert "not comparable with logprob scores" in details and "64 written" in details


def test_the_opinions_column_shows_only_with_opinions(
    make_window: WindowFactory, loop, store: Store, tmp_path: Path
) -> None:
    window = make_window(profiles_for("http://127.0.0.1:9/v1", tmp_path))
    open_neuron(window, loop, 3)
    assert window.explanations.table.isColumnHidden(2)
    Explanations(store).add(
        NeuronRef("mirror", 0, 4), "x", None, "user",
        {"scorer": "fuzzing", "metrics": {"scorer": "fuzzing", "balanced_accuracy": 0.6}},
    )  # fmt: skip
    open_neuron(window, loop, 4)
    assert not window.explanations.table.isColumnHidden(2)
