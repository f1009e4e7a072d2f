#!/usr/bin/env python3
"""Where each microsecond of an invoke goes: LangChain, the OpenTelemetry SDK, callscope's own code.

    python3 benchmarks/where_time_goes.py                   # floor and callscope, invoke workload
    python3 benchmarks/where_time_goes.py --configs floor,callscope,callscope-sampled-out --workload langgraph

Each configuration runs the workload in a fresh process under py-spy (a sampling profiler: no
per-call overhead, so small functions are not inflated as under cProfile), 1,000 samples a
second. Every sample is charged to the innermost frame that belongs to a known owner, walking
out from the leaf:

- callscope (or the floor's handler): by module and function, the code itself and the builtins
  it calls (dict lookups, ContextVars, regexes);
- the OpenTelemetry SDK/API: by the outermost SDK function the caller entered
  (``Tracer.start_span``, ``Span.end`` …), so a span's cost is one line whoever asked for it;
- LangChain (with LangGraph, pydantic and LangSmith's helpers it calls): one line;
- the standard library and builtins belong to whoever called them.

Shares are turned into µs per call with the call time measured in the same process. Needs
py-spy (``pip install py-spy``; the benchmark venv gets it on first use) and permission to
trace a child process (containers usually allow it).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import REPO, WORKER, WORKLOADS, pip, prepare  # noqa: E402

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?):\d+\)$")


def owner(frame_file: str, function: str) -> str | None:
    if "/callscope/" in frame_file:
        return f"callscope {Path(frame_file).stem}.{function}"
    if frame_file.endswith("floor.py"):
        return f"floor {function}"
    if "/opentelemetry/" in frame_file:
        return "otel"
    if any(f"/{package}/" in frame_file for package in _LANGCHAIN):
        return "LangChain"
    return None  # the standard library and builtins: charged to whoever called them


_LANGCHAIN = ("langchain_core", "langgraph", "langsmith", "pydantic", "pydantic_core", "uuid_utils")


def charge(stack: str) -> str:
    """The line a sample is charged to (see the module docstring)."""
    frames = [m.groupdict() for f in stack.split(";") if (m := _FRAME.match(f))]
    for i in range(len(frames) - 1, -1, -1):
        who = owner(frames[i]["file"], frames[i]["function"])
        if who is None:
            continue
        if who != "otel":
            return who
        while i > 0 and owner(frames[i - 1]["file"], frames[i - 1]["function"]) == "otel":
            i -= 1
        return f"OTel {frames[i]['function']}"
    return "the workload's own code"


def profile(python: Path, py_spy: Path, config: str, workload: str, calls: int) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as out:
        raw = Path(out) / "raw.txt"
        command = [str(py_spy), "record", "--nonblocking", "--full-filenames", "-r", "1000", "-f", "raw", "-o", str(raw), "--",
                   str(python), str(WORKER), "spin", "--config", config, "--workload", workload, "--iterations", str(calls)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONHASHSEED="0"))
        if done.returncode != 0:
            raise SystemExit(f"py-spy failed for {config}:\n{done.stderr[-2000:]}")
        # py-spy writes its own lines to the same stdout as the worker's result.
        per_call_us = next(json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))["per_call_us"]
        samples: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "spin_loop" in stack:  # only the timed loop, not start-up and imports
                samples[charge(stack)] += int(count)
    total = sum(samples.values())
    return per_call_us, {line: per_call_us * n / total for line, n in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="none,floor,callscope")
    parser.add_argument("--workload", default="invoke", choices=WORKLOADS)
    parser.add_argument("--calls", type=int, default=15000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--python", type=Path, help="interpreter (default: run.py's benchmark venv)")
    args = parser.parse_args(argv)
    python = args.python or prepare(HERE / ".venv-peers", False, False)
    py_spy = python.parent / "py-spy"
    if not py_spy.exists() and not pip(python, "py-spy"):
        found = shutil.which("py-spy")
        if found is None:
            raise SystemExit("py-spy is not installed and could not be installed (pip install py-spy)")
        py_spy = Path(found)
    results = {c: profile(python, py_spy, c, args.workload, args.calls) for c in args.configs.split(",")}
    for config, (per_call, lines) in results.items():
        print(f"\n{config}: {per_call:.0f} µs per {args.workload} call")
        for line, us in sorted(lines.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {us:8.1f} µs  {line}")
    if "floor" in results and "callscope" in results:
        floor, callscope = results["floor"][1], results["callscope"][1]
        print(f"\ncallscope minus floor, by owner (µs per {args.workload} call):")
        groups: collections.Counter[str] = collections.Counter()
        for source, sign in ((callscope, 1), (floor, -1)):
            for line, us in source.items():
                key = line.split(".")[0] if line.startswith("callscope") else ("floor's handler" if line.startswith("floor") else line)
                groups[key] += sign * us
        for line, us in sorted(groups.items(), key=lambda kv: -abs(kv[1])):
            if abs(us) >= 1:
                print(f"  {us:+8.1f} µs  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
