"""Hostile downloads at full size, each attack in a fresh process that reports its own peak RSS:

- a 2 GiB body (chunked, no length), one file, and all five kinds of a neuron at once (`show`);
- five 1 GiB gzip bombs at once (one per kind, as `show` fetches them);
- a slowloris mirror (one byte every 20 s) against the per-file time limit.

Limits held: peak RSS under 300 MB; the slowloris fetch fails within the file time limit
(120 s by default; `--file-time` to try another).

    python tests/benchmarks/hostile_downloads.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GIB = 1 << 30


def attack(kind: str, file_time_s: float) -> dict[str, object]:
    """Run one attack in this process; what happened and the peak RSS."""
    from neuron_desk.core.errors import NeuronDeskError
    from neuron_desk.core.refs import NeuronRef
    from neuron_desk.data.registry import ALL_KINDS, Dataset, Kind, Registry
    from neuron_desk.data.service import NeuronService
    from neuron_desk.data.store import Store
    from tests.reliability.hostile import Attacks, HostileMirror, gzip_bomb

    ref = NeuronRef("hostile", 0, 1)
    paths = [k.relative_path(0, 1) for k in Kind]
    attacks = Attacks(endless_bytes=2 * GIB)
    if kind == "body":
        attacks.endless = {paths[0]}
    elif kind == "five-bodies":
        attacks.endless = set(paths)
    elif kind == "five-bombs":
        bomb = gzip_bomb(GIB)
        attacks.bombs = dict.fromkeys(paths, bomb)
    elif kind == "slowloris":
        attacks.trickle = {paths[0]: 20.0}
    with tempfile.TemporaryDirectory() as tmp, HostileMirror(attacks) as mirror:
        store = Store.open(Path(tmp) / "store.sqlite3")
        registry = Registry(store, bundled=[])
        registry.add(
            Dataset(
                name="hostile",
                title="Hostile",
                model="x",
                n_layers=2,
                n_neurons=8,
                kinds=ALL_KINDS,
                tokenizer="gpt2",
                base_url=mirror.base_url,
            )
        )
        service = NeuronService(registry, store, http_retries=0, file_time_s=file_time_s)

        async def go() -> list[str]:
            try:
                if kind in ("body", "slowloris"):
                    try:
                        await service.get(ref, Kind.ACTIVATIONS)
                        return ["accepted"]
                    except NeuronDeskError as exc:
                        return [str(exc)]
                data = await service.neuron(ref)
                return list(data.errors().values())
            finally:
                await service.aclose()

        started = time.monotonic()
        errors = asyncio.run(go())
        seconds = time.monotonic() - started
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"errors": errors, "seconds": seconds, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file-time", type=float, default=120.0, help="per-file limit (120 s)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(attack(args.one, args.file_time)))
        return
    labels = {
        "body": "2 GiB body, one file",
        "five-bodies": "2 GiB bodies, five kinds at once (show)",
        "five-bombs": "1 GiB gzip bombs, five kinds at once (show)",
        "slowloris": f"slowloris, 1 byte / 20 s (file limit {args.file_time:g} s)",
    }
    for kind, label in labels.items():
        done = subprocess.run(
            [sys.executable, __file__, "--one", kind, "--file-time", str(args.file_time)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            print(f"{label}: FAILED\n{done.stderr[-2000:]}")
            continue
        result = json.loads(done.stdout)
        errors = result["errors"]
        print(
            f"{label}: peak RSS {result['peak_rss'] / 2**20:.0f} MB, {result['seconds']:.1f} s, "
            f"{len(errors)} refused: {errors[0][:150] if errors else '-'}"
        )


if __name__ == "__main__":
    main()
