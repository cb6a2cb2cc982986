"""Concurrent first opens of a fresh home: many processes open (create, migrate) the same new
store at the same instant, then read and write it. Counts failures per round; held to 0.

    python tests/benchmarks/concurrent_first_open.py                  # 20 processes x 20 rounds
    python tests/benchmarks/concurrent_first_open.py --cli-rounds 3   # and real commands
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from neuron_desk.core.paths import Paths
from neuron_desk.desk import Desk


def _one(barrier: Barrier, home: str, out: str) -> None:
    barrier.wait()
    try:
        paths = Paths.from_env({"NEURON_DESK_HOME": home})
        desk = Desk.open(paths)
        desk.registry.all()
        desk.store.put_json("meta", f"pid-{os.getpid()}", 1)
        desk.close()
        Path(out).write_text("ok")
    except Exception as exc:
        Path(out).write_text(f"{type(exc).__name__}: {exc}")


def api_round(folder: Path, processes: int) -> list[str]:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    outs = [folder / f"out-{i}" for i in range(processes)]
    workers = [
        context.Process(target=_one, args=(barrier, str(folder / "home"), str(o))) for o in outs
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    return [o.read_text() if o.exists() else "no answer" for o in outs]


def cli_round(folder: Path, processes: int) -> list[str]:
    env = {**os.environ, "NEURON_DESK_HOME": str(folder / "home")}
    commands = [
        ["datasets"],
        ["neurons", "smollm2-135m", "--layer", "0"],
        ["cache"],
        ["search", "x"],
    ]
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "neuron_desk", *commands[i % len(commands)]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    results = []
    for p in running:
        _, err = p.communicate(timeout=300)
        ok = p.returncode == 0 or (p.returncode == 1 and not err.strip())  # search: no match
        results.append("ok" if ok else err.strip()[-300:])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cli-rounds", type=int, default=0)
    args = parser.parse_args()
    for label, work, rounds in (
        ("Desk.open", api_round, args.rounds),
        ("CLI commands", cli_round, args.cli_rounds),
    ):
        if not rounds:
            continue
        failures: Counter[str] = Counter()
        started = time.perf_counter()
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                failures.update(r for r in work(Path(tmp), args.processes) if r != "ok")
        seconds = time.perf_counter() - started
        opens = rounds * args.processes
        print(
            f"{label}: {rounds} rounds x {args.processes} concurrent first opens of a fresh home "
            f"({opens} opens) in {seconds:.0f} s: {sum(failures.values())} failures"
        )
        for message, count in failures.most_common():
            print(f"  {count} x {message}")


if __name__ == "__main__":
    main()
