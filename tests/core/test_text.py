"""core.text: terminal escaping and redaction, as properties."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from neuron_desk.core.text import for_terminal, has_unsafe, redact


@given(st.text())
def test_terminal_text_has_nothing_a_terminal_acts_on(text: str) -> None:
    safe = for_terminal(text)
    assert not has_unsafe(safe)
    safe.encode("utf-8")
    assert for_terminal(safe) == safe


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_escaping_keeps_json_output_valid_and_equal(text: str) -> None:
    printed = for_terminal(json.dumps({"t": text}, ensure_ascii=False))
    assert json.loads(printed) == {"t": text}


@given(st.text(), st.text(alphabet=st.characters(blacklist_characters="*"), min_size=4))
def test_redaction_leaves_no_secret(text: str, secret: str) -> None:
    assert secret not in redact(text + secret + text, [secret])
