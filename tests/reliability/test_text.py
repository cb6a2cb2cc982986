"""Untrusted text on the terminal: control characters, escape sequences, bidi overrides and lone
surrogates from files or models are printed escaped, and never break a command."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from neuron_desk.cli import main
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from tests.reliability.test_border import record_json

HOSTILE = " evil\x1b[31mred\x1b]0;pwned\x07\x00nul\rover \u202eevil\u202c txt\u200b"
RAW = ["\x1b", "\x07", "\x00", "\r", "\u202e", "\u200b"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _store_hostile(home: Path) -> None:
    store = Store.open(home / "store.sqlite3")
    ref = NeuronRef("gpt2-xl", 5, 131)
    Explanations(store).add(ref, HOSTILE, 0.5, "user", {})
    value = record_json(5, 131)
    value["most_positive_activation_records"][0]["tokens"][0] = "\x1b]0;title\x07"
    store.put_file(ref, "activations", json.dumps(value), "import")
    store.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "gpt2-xl", "5", "131", "--offline", "--excerpts", "3"],
        ["show", "gpt2-xl", "5", "131", "--offline", "--json"],
        ["search", "evil"],
        ["search", "evil", "--json"],
    ],
)
def test_show_and_search_print_untrusted_text_escaped(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    _store_hostile(home)
    code = main(argv)
    out, _ = capsys.readouterr()
    assert code == 0
    assert "\\u001b" in out and "\\u202e" in out
    assert not [c for c in RAW if c in out]
    if "--json" in argv:
        json.loads(out)  # still valid JSON: the escapes are JSON's own


def test_a_stored_lone_surrogate_never_breaks_show(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store.open(home / "store.sqlite3")
    store.close()
    value = record_json(5, 131)
    value["most_positive_activation_records"][0]["tokens"][0] = "\ud800x"
    text = json.dumps(value)  # the lone surrogate written as the escape \ud800
    db = sqlite3.connect(home / "store.sqlite3")  # as an older neuron-desk stored it
    db.execute(
        "INSERT INTO files (dataset, kind, layer, neuron, body, origin, fetched_at) "
        "VALUES ('gpt2-xl', 'activations', 5, 131, ?, 'import', 0)",
        (zlib.compress(text.encode()),),
    )
    db.commit()
    db.close()
    code = main(["show", "gpt2-xl", "5", "131", "--offline", "--excerpts", "100"])
    out, err = capsys.readouterr()
    assert code == 0, err
    out.encode("utf-8")  # what a terminal's UTF-8 stdout does: a lone surrogate raised here
    assert "lone surrogate" in err and err.count("lone surrogate") == 1
