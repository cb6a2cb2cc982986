"""Run every benchmark script in this folder, collect their BENCH lines and write
docs/performance.md: one table (target | figure | limit | ratio | ok), the machine (CPU model,
cores, Python, load average at the start, how fast it ran before and after the scripts),
the date and the command (issue 12).

Each script runs on its own (offscreen, offline), with a time limit; one that fails or prints
no BENCH line is listed as such under the table, with the tail of what it said.

    python tests/benchmarks/run_all.py [--only startup,app_browsing] [--out docs/performance.md]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TIME_LIMIT_S = 600
"""Per script: BENCH.md asks ≤ 3 minutes each; a loaded machine gets some slack."""
SPEED_WORKLOAD = """
import time
start = time.perf_counter()
table = {}
for i in range(2_000_000):
    table[i & 1023] = table.get(i & 1023, 0) + i
print((time.perf_counter() - start) * 1000)
"""
"""A fixed piece of pure-Python work: how fast the machine runs right now. A shared VM's
speed changes between runs (seen here: the same code's figures 2-2.5× apart at the same
load average), so the table says how fast the machine was before and after its scripts."""


def scripts(only: set[str] | None) -> list[Path]:
    """The benchmark scripts: every .py here but helpers (`_*.py`) and this one."""
    found = sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name
    )
    return [p for p in found if only is None or p.stem in only]


def run(script: Path) -> tuple[list[dict[str, Any]], str, float]:
    """(BENCH lines, problem or "", seconds) of one script."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return bench_lines(out), f"stopped after {TIME_LIMIT_S} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    lines = bench_lines(done.stdout)
    problem = ""
    if done.returncode:
        problem = f"exit status {done.returncode}: {tail(done.stderr or done.stdout)}"
    elif not lines:
        problem = f"no BENCH line: {tail(done.stdout)}"
    return lines, problem, seconds


def bench_lines(out: str) -> list[dict[str, Any]]:
    lines = []
    for line in out.splitlines():
        if line.startswith("BENCH "):
            try:
                lines.append(json.loads(line[len("BENCH ") :]))
            except json.JSONDecodeError:
                continue
    return lines


def tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])[-400:]


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load": load,
    }


def machine_speed(times: int = 3) -> float:
    """Milliseconds of `SPEED_WORKLOAD` in a fresh interpreter, the least of `times`."""
    spent = []
    for _ in range(times):
        done = subprocess.run(
            [sys.executable, "-c", SPEED_WORKLOAD], capture_output=True, text=True, timeout=120
        )
        spent.append(float(done.stdout.strip()))
    return min(spent)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def markdown(results: list[tuple[Path, list[dict[str, Any]], str, float]], info: dict[str, str], command: str) -> str:
    rows = [
        "| target | figure | limit | ratio | ok |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for script, lines, _problem, _seconds in results:
        for line in lines:
            limit = f"{'≥' if line.get('limit_kind') == 'min' else '≤'} {_cell(line['limit'])}"
            unit = line.get("unit", "")
            rows.append(
                f"| {_cell(line['target'])} (`{script.name}`) | {_cell(line['figure'])} {unit} "
                f"| {limit} {unit} | {_cell(line['ratio'])} | {'yes' if line.get('ok') else '**no**'} |"
            )
            if line.get("note"):
                notes.append(f"- {_cell(line['target'])}: {line['note']}")
    failed = [f"- `{s.name}`: {p}" for s, _, p, _ in results if p]
    took = ", ".join(f"{s.stem} {sec:.0f} s" for s, _, _, sec in results)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Performance",
        "",
        "Every figure below was printed by a script in `tests/benchmarks/` in one run of",
        f"`{command}`, each next to its limit. A limit given as a multiple of a baseline was",
        "measured against that baseline in the same run (the ratio is what counts on a busy machine).",
        "",
        *rows,
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['system']}, Python {info['python']};",
        f"load average at the start {info['load']}. Date: {now}. Time per script: {took}.",
        f"Machine speed: a fixed pure-Python workload (`SPEED_WORKLOAD` in run_all.py) took "
        f"{info['speed_before']} ms before the scripts and {info['speed_after']} ms after them",
        "(the least of three each; the lower, the faster the machine ran).",
        "",
        "## Notes",
        "",
        *notes,
    ]
    if failed:
        parts += ["", "## Scripts that printed no figures", "", *failed]
    return "\n".join(parts) + "\n"


def main() -> None:
    args = sys.argv[1:]
    only = set(args[args.index("--only") + 1].split(",")) if "--only" in args else None
    out = Path(args[args.index("--out") + 1]) if "--out" in args else ROOT / "docs/performance.md"
    info = machine()
    info["speed_before"] = f"{machine_speed():.0f}"
    print(f"machine speed: {info['speed_before']} ms", flush=True)
    results = []
    for script in scripts(only):
        print(f"running {script.name} …", flush=True)
        lines, problem, seconds = run(script)
        for line in lines:
            print("BENCH " + json.dumps(line, ensure_ascii=False), flush=True)
        if problem:
            print(f"  {script.name}: {problem}", flush=True)
        results.append((script, lines, problem, seconds))
    info["speed_after"] = f"{machine_speed():.0f}"
    print(f"machine speed after: {info['speed_after']} ms", flush=True)
    command = "python tests/benchmarks/run_all.py" + (" " + " ".join(args) if args else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, info, command), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
