"""The border's two paths give one verdict: the fast path (orjson straight into the model,
checks folded into construction) accepts only what the careful path (the codec's typed
reading, then the consistency checks) accepts, with an equal value; whatever it cannot vouch
for is decided, and named, by the careful path. Malformed variants are made by hypothesis."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError
from neuron_desk.core.model import (
    ActivationScale,
    NeuronConnections,
    NeuronId,
    NeuronSimulationResults,
    RelatedNeurons,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import validation
from neuron_desk.data.registry import ALL_KINDS, Dataset, Kind
from tests.synthetic import neuron_record

DATASET = Dataset(
    name="d", title="D", model="m", n_layers=4, n_neurons=16, kinds=ALL_KINDS, tokenizer="gpt2",
    folder="/nonexistent",
)
REF = NeuronRef("d", 3, 7)


def careful(kind: Kind, text: str) -> Any:
    """The careful path alone: what the border decided before the fast path existed."""
    value = codec.from_jsonable(codec.parse_json(text, "x"), kind.model_class, "x")
    validation._check(value, type(value).__name__)
    validation._check_identity(value, DATASET, REF)
    return value


def verdict(function: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "accepted", function(*args)
    except CodecError:
        return "refused", None


def examples() -> dict[Kind, Any]:
    simulation = SequenceSimulation(
        ["a", "b"], [0.5, 1.0], ActivationScale.NEURON_ACTIVATIONS, [[0.0, 1.0], [0.0, 1.0]],
        [[0.5, 0.5], [0.2, 0.8]],
    )
    scored = ScoredSimulation([ScoredSequenceSimulation(simulation, [0.1, 0.9], 0.3)], 0.3)
    weights = TokensAndWeights(["x", "y"], [0.5, None])
    return {
        Kind.ACTIVATIONS: neuron_record(seed=1, n_top=4, n_random=3),
        Kind.EXPLANATIONS: NeuronSimulationResults(NeuronId(3, 7), [ScoredExplanation("e", scored)]),
        Kind.RELATED_NEURONS: RelatedNeurons(
            c_fc=NeuronConnections(["1_2"], ["0_3"], [0.4], [-0.2]), c_proj=None
        ),
        Kind.TOKENS_BY_ACTIVATION: TokenLookupTableSummaryOfNeuron(["a", "b"], [2.0, None]),
        Kind.TOKENS_BY_WEIGHT: WeightBasedSummaryOfNeuron(weights, weights, weights, weights),
    }


EXAMPLES = examples()
EXAMPLES[Kind.ACTIVATIONS].neuron_id = NeuronId(3, 7)


@pytest.mark.parametrize("kind", list(Kind))
def test_a_good_file_takes_the_fast_path_with_the_careful_paths_value(kind: Kind) -> None:
    text = codec.dumps(EXAMPLES[kind])
    fast = validation._fast_value(kind, orjson.loads(text))
    assert fast is not None
    assert fast == careful(kind, text)
    assert validation.accept(kind, text, dataset=DATASET, ref=REF, source="x").value == fast


REPLACEMENTS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3), st.just([]), st.just({}), st.just([1.5, "x"]), st.just([[1.0]]),
    st.just({"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 7}),
    st.just("NeuronRecord"), st.just("ActivationRecord"), st.just(2**70),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            out += _paths(item, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(list(Kind)))
def test_a_malformed_variant_gets_the_same_verdict_and_value(data: st.DataObject, kind: Kind) -> None:
    tree = json.loads(codec.dumps(EXAMPLES[kind]))
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    action = data.draw(st.sampled_from(["replace", "delete", "add field"]))
    variant = copy.deepcopy(tree)
    parent = variant
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = data.draw(REPLACEMENTS)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last]["extra"] = 1
    else:
        parent[last] = [parent[last], parent[last]] if not isinstance(parent[last], list) else parent[last] + parent[last][:1]
    text = json.dumps(variant)
    before = verdict(careful, kind, text)
    now = verdict(
        lambda: validation.accept(kind, text, dataset=DATASET, ref=REF, source="x").value
    )
    assert now[0] == before[0], (path, action, text[:300])
    if now[0] == "accepted":
        assert now[1] == before[1]


def test_integers_where_floats_go_are_read_as_floats_by_both_paths() -> None:
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    tree["most_positive_activation_records"][0]["activations"][0] = 3
    value = validation.accept(Kind.ACTIVATIONS, json.dumps(tree), dataset=DATASET, ref=REF, source="x").value
    first = value.most_positive_activation_records[0].activations[0]
    assert first == 3.0 and type(first) is float


def test_a_boolean_among_activations_is_refused_naming_the_field() -> None:
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    tree["most_positive_activation_records"][1]["activations"][2] = True
    with pytest.raises(CodecError, match=r"most_positive_activation_records\[1\]\.activations\[2\]"):
        validation.accept(Kind.ACTIVATIONS, json.dumps(tree), dataset=DATASET, ref=REF, source="x")


BREAKS = st.sampled_from(
    ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", " ", "\t", "\u2028", "\x85", "x"]
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(BREAKS, max_size=4),
    inside=st.one_of(st.none(), BREAKS),
    position=st.integers(0, 10**6),
    after=st.sampled_from(["", "\n", "\n\n", "\r\n", "\n{}", "\ngarbage\n", "\v{}"]),
)
def test_the_explanations_first_line_is_cut_as_splitlines_cuts_it(
    before: list[str], inside: str | None, position: int, after: str
) -> None:
    """The quick cut at "\\n" (an ASCII text, orjson accepting the line) decides as the cut of
    `str.splitlines` did, whatever breaks lie before, inside or after the JSON line."""
    line = codec.dumps(EXAMPLES[Kind.EXPLANATIONS])
    if inside is not None:
        at = position % (len(line) + 1)
        line = line[:at] + inside + line[at:]
    text = "".join(before) + line + after
    lines = [piece for piece in text.splitlines() if piece.strip()]
    before_verdict = (
        verdict(careful, Kind.EXPLANATIONS, lines[0]) if lines else ("refused", None)
    )
    now = verdict(
        lambda: validation.accept(
            Kind.EXPLANATIONS, text, dataset=DATASET, ref=REF, source="x"
        ).value
    )
    assert now[0] == before_verdict[0], repr(text[:200])
    if now[0] == "accepted":
        assert now[1] == before_verdict[1]


def test_a_list_of_records_is_checked_as_a_whole_and_each_refusal_named() -> None:
    """The records of a list are checked together (tokens, activations): a long token, an
    integer among activations, a record of another shape are decided as one at a time."""
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    records = tree["random_sample"]
    long_total = copy.deepcopy(tree)  # every token short, all of them together long
    for record in long_total["random_sample"]:
        record["tokens"] = ["t" * 30_000] * len(record["tokens"])
    value = validation._fast_value(Kind.ACTIVATIONS, long_total)
    assert value is not None and value == careful(Kind.ACTIVATIONS, json.dumps(long_total))
    one_long = copy.deepcopy(tree)
    one_long["random_sample"][2]["tokens"][1] = "t" * (validation.MAX_STRING_CHARS + 1)
    assert validation._fast_value(Kind.ACTIVATIONS, one_long) is None
    with pytest.raises(CodecError, match=r"random_sample\[2\]\.tokens\[1\]"):
        validation.accept(Kind.ACTIVATIONS, json.dumps(one_long), dataset=DATASET, ref=REF, source="x")
    integers = copy.deepcopy(tree)
    integers["random_sample"][1]["activations"] = [1] * len(records[1]["activations"])
    value = validation.accept(Kind.ACTIVATIONS, json.dumps(integers), dataset=DATASET, ref=REF, source="x").value
    assert all(type(v) is float for v in value.random_sample[1].activations)
    assert value == careful(Kind.ACTIVATIONS, json.dumps(integers))
    unequal = copy.deepcopy(tree)
    unequal["random_sample"][0]["activations"].append(0.5)
    with pytest.raises(CodecError, match=r"random_sample\[0\]"):
        validation.accept(Kind.ACTIVATIONS, json.dumps(unequal), dataset=DATASET, ref=REF, source="x")
