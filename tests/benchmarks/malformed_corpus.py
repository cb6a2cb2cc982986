"""The malformed-file corpus: ≥ 2,000 variants of a GPT-2 XL-sized record, each one thing wrong,
sent through two entry paths (`import` from files, and a mirror over HTTP on 127.0.0.1).

Counts what the border let through: garbage accepted (stored), files stored under a neuron
other than their own, and crashes (anything but a refusal naming the file). Variants that only
need repair (lone surrogates, invalid UTF-8) must be accepted with the repair said once.

    python tests/benchmarks/malformed_corpus.py            # 2,040 variants x 2 paths
    python tests/benchmarks/malformed_corpus.py --per 10   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import gpt2_xl_sized_record

from neuron_desk.core import codec
from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.importer import import_paths
from neuron_desk.data.registry import Dataset, Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from tests.data.mirror import Faults, Mirror

Variant = tuple[str, bytes, bool]
"""(family, body, should be accepted)"""
LAYER, NEURON = 5, 131


def _records(v: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    pool = v["most_positive_activation_records"] + v["random_sample"]
    pool += [r for q in v["random_sample_by_quantile"] for r in q]
    chosen: dict[str, Any] = rng.choice(pool)
    return chosen


def _mutations() -> dict[str, tuple[Callable[[dict[str, Any], random.Random], Any], bool]]:
    def nonfinite(v: dict[str, Any], rng: random.Random) -> None:
        r = _records(v, rng)
        r["activations"][rng.randrange(len(r["activations"]))] = rng.choice(
            [math.nan, math.inf, -math.inf]
        )

    def drop_token(v: dict[str, Any], rng: random.Random) -> None:
        r = _records(v, rng)
        r["tokens"].pop(rng.randrange(len(r["tokens"])))

    def extra_activation(v: dict[str, Any], rng: random.Random) -> None:
        _records(v, rng)["activations"].append(rng.random())

    def unknown_class(v: dict[str, Any], rng: random.Random) -> None:
        target = rng.choice([v, v["neuron_id"], _records(v, rng)])
        target["dataclass_name"] = rng.choice(["Evil", "NeuronRecordX", "", "ActivationRecords"])

    def other_neuron(v: dict[str, Any], rng: random.Random) -> None:
        v["neuron_id"]["neuron_index"] = rng.choice([n for n in range(6400) if n != NEURON])

    def outside_shape(v: dict[str, Any], rng: random.Random) -> None:
        key = rng.choice(["layer_index", "neuron_index"])
        v["neuron_id"][key] = rng.choice([-1, 48, 6400, 10**6, 2**63])

    def wrong_type(v: dict[str, Any], rng: random.Random) -> None:
        r = _records(v, rng)
        i = rng.randrange(len(r["activations"]))
        r["activations"][i] = rng.choice(["1.0", None, True, [1.0], {"x": 1}])

    def token_type(v: dict[str, Any], rng: random.Random) -> None:
        r = _records(v, rng)
        r["tokens"][rng.randrange(len(r["tokens"]))] = rng.choice([1, None, ["a"], False])

    def missing_field(v: dict[str, Any], rng: random.Random) -> None:  # a required one
        choice = rng.randrange(3)
        if choice == 0:
            v["neuron_id"].pop(rng.choice(["layer_index", "neuron_index"]))
        elif choice == 1:
            _records(v, rng).pop(rng.choice(["tokens", "activations"]))
        else:
            v.pop("neuron_id")

    def unknown_field(v: dict[str, Any], rng: random.Random) -> None:
        target = rng.choice([v, _records(v, rng)])
        target[rng.choice(["evil", "k" * rng.randint(1, 100_000)])] = 1

    def huge_integer(v: dict[str, Any], rng: random.Random) -> str:
        r = _records(v, rng)
        r["activations"][rng.randrange(len(r["activations"]))] = 12345.678
        return "1" + "0" * rng.randint(309, 2000)

    def huge_string(v: dict[str, Any], rng: random.Random) -> None:
        r = _records(v, rng)
        r["tokens"][0] = "a" * rng.randint(100_001, 400_000)

    def nan_boundary(v: dict[str, Any], rng: random.Random) -> None:
        v["quantile_boundaries"][rng.randrange(len(v["quantile_boundaries"]))] = math.inf

    def lone_surrogate(v: dict[str, Any], rng: random.Random) -> None:  # repaired, accepted
        r = _records(v, rng)
        r["tokens"][rng.randrange(len(r["tokens"]))] = rng.choice(["\ud800", "x\udfff", "\udbff"])

    def control_text(v: dict[str, Any], rng: random.Random) -> None:  # valid data, accepted
        r = _records(v, rng)
        r["tokens"][rng.randrange(len(r["tokens"]))] = rng.choice(["\x1b[31m", "\u202e", "\x00"])

    return {
        "non-finite activation": (nonfinite, False),
        "tokens shorter than activations": (drop_token, False),
        "activations longer than tokens": (extra_activation, False),
        "unknown dataclass_name": (unknown_class, False),
        "another neuron's file": (other_neuron, False),
        "neuron outside the shape": (outside_shape, False),
        "activation of the wrong type": (wrong_type, False),
        "token of the wrong type": (token_type, False),
        "missing field": (missing_field, False),
        "unknown field (up to 100 KB name)": (unknown_field, False),
        "integer too large for a float": (huge_integer, False),
        "string over 100,000 characters": (huge_string, False),
        "infinite quantile boundary": (nan_boundary, False),
        "lone surrogate (repaired)": (lone_surrogate, True),
        "control characters (shown escaped)": (control_text, True),
    }


def _byte_mutations(base: bytes, rng: random.Random) -> list[Variant]:
    cut = rng.randrange(1, len(base) - 1)
    commas = [i for i in range(len(base)) if base.startswith(b"], ", i)]
    at = rng.choice(commas)
    return [
        ("truncated JSON", base[:cut], False),
        (
            "invalid UTF-8 (repaired)",
            base.replace(b'"tokens": ["', b'"tokens": ["\xff\xfe', 1),
            True,
        ),
        ("a comma between fields missing", base[: at + 1] + base[at + 2 :], False),
        ("not an object", b"[" + base + b"]", False),
        ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, False),
        ("empty file", b"", False),
    ]


def corpus(per_family: int, seed: int = 0) -> list[Variant]:
    rng = random.Random(seed)
    record = gpt2_xl_sized_record(LAYER, NEURON)
    base_text = codec.dumps(record)
    base = json.loads(base_text)
    out: list[Variant] = []
    for family, (mutate, ok) in _mutations().items():
        for _ in range(per_family):
            value = json.loads(base_text)
            huge = mutate(value, rng)
            text = json.dumps(value)
            if isinstance(huge, str):
                text = text.replace("12345.678", huge, 1)
            out.append((family, text.encode("utf-8", "surrogatepass"), ok))
    for _ in range(per_family):
        out += _byte_mutations(base_text.encode(), rng)
    assert base["neuron_id"]["neuron_index"] == NEURON
    return out


def dataset(**where: str) -> Dataset:
    return Dataset(
        name="corpus",
        title="Corpus",
        model="gpt2-xl",
        n_layers=48,
        n_neurons=6400,
        kinds=(Kind.ACTIVATIONS,),
        tokenizer="gpt2",
        **where,  # type: ignore[arg-type]
    )


def run_import(variants: list[Variant], folder: Path) -> Counter[str]:
    tally: Counter[str] = Counter()
    store = Store.open(folder / "import.sqlite3")
    ds = dataset()
    ref = NeuronRef("corpus", LAYER, NEURON)
    for i, (family, body, ok) in enumerate(variants):
        path = folder / f"v{i}/collated-activations/{LAYER}/{NEURON}.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(body)
        try:
            result = import_paths(store, ds, [path])
        except Exception as exc:  # a crash: anything but a refusal
            tally[f"crash ({family}): {type(exc).__name__}"] += 1
            continue
        stored = store.stored_neurons("corpus")
        tally["cases"] += 1
        if result.imported and not ok:
            tally[f"accepted garbage ({family})"] += 1
        if ok and not result.imported:
            tally[f"refused a valid file ({family})"] += 1
        if any(r != ref for r in stored):
            tally["wrong-neuron stores"] += 1
        if result.rejected and (
            str(path) not in result.rejected[0][1] or len(result.rejected[0][1]) > 600
        ):
            tally["refusal without file name or over 600 characters"] += 1
        store.clear_files("corpus")
        path.unlink()
    store.close()
    return tally


async def run_mirror(variants: list[Variant], folder: Path) -> Counter[str]:
    tally: Counter[str] = Counter()
    root = folder / "mirror"
    relative = f"collated-activations/{LAYER}/{NEURON}.json"
    (root / relative).parent.mkdir(parents=True)
    store = Store.open(folder / "mirror.sqlite3")
    with Mirror(root, Faults()) as mirror:
        registry = Registry(store, bundled=[])
        registry.add(dataset(base_url=mirror.base_url))
        service = NeuronService(registry, store, http_retries=0)
        ref = NeuronRef("corpus", LAYER, NEURON)
        for family, body, ok in variants:
            (root / relative).write_bytes(body)
            tally["cases"] += 1
            try:
                await service.get(ref, Kind.ACTIVATIONS)
                accepted = True
            except NeuronDeskError as exc:
                accepted = False
                if relative not in str(exc):
                    tally["refusal without file name"] += 1
            except Exception as exc:
                tally[f"crash ({family}): {type(exc).__name__}"] += 1
                continue
            if accepted and not ok:
                tally[f"accepted garbage ({family})"] += 1
            if ok and not accepted:
                tally[f"refused a valid file ({family})"] += 1
            if any(r != ref for r in store.stored_neurons("corpus")):
                tally["wrong-neuron stores"] += 1
            store.clear_files("corpus")
        await service.aclose()
    store.close()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per", type=int, default=100, help="variants per family (100)")
    args = parser.parse_args()
    variants = corpus(args.per)
    families = Counter(f for f, _, _ in variants)
    print(
        f"corpus: {len(variants):,} variants in {len(families)} families, of a "
        f"{len(codec.dumps(gpt2_xl_sized_record())) // 1024} KB GPT-2 XL-sized record"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, work in (
            ("import", lambda: run_import(variants, Path(tmp))),
            ("mirror", lambda: asyncio.run(run_mirror(variants, Path(tmp)))),
        ):
            started = time.perf_counter()
            tally = work()
            seconds = time.perf_counter() - started
            bad = {k: v for k, v in tally.items() if k != "cases"}
            print(
                f"{name}: {tally['cases']:,} cases in {seconds:.0f} s; "
                f"accepted garbage {sum(v for k, v in bad.items() if 'garbage' in k)}, "
                f"wrong-neuron stores {bad.get('wrong-neuron stores', 0)}, "
                f"crashes {sum(v for k, v in bad.items() if k.startswith('crash'))}"
            )
            for key, count in sorted(bad.items()):
                print(f"  {count} x {key}")


if __name__ == "__main__":
    main()
