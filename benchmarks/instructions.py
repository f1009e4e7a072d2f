#!/usr/bin/env python3
"""Instructions per call for every configuration and workload, counted by callgrind.

    python3 benchmarks/instructions.py                              # own configs, all workloads
    python3 benchmarks/instructions.py --configs floor,callscope --calls 40
    python3 benchmarks/instructions.py --src /path/to/other/checkout/src   # compare a revision

Wall-clock times on a shared 2-core machine move by ±15 % between runs, so a 5 % change cannot
be seen there. Instruction counts can: callgrind counts the same instructions whatever else the
machine does: two runs of one commit agree to about 0.5 % (object addresses, which differ
from run to run, still move dict and set probes). Each configuration runs in a fresh process under
``valgrind --tool=callgrind``, counting only inside the ``operator.call`` that wraps each
workload's timed loop (start-up, imports and warm-up are not counted) and dumping one profile
per workload. They are not time: an allocation, a cache miss or a lock costs more than its
instructions say, so the wall-clock benchmark (``run.py``) stays the judge of the goals, and
this is the microscope for what a change did.

Needs valgrind and an interpreter whose symbol table names ``_operator_call`` (CPython builds
from pyenv, python.org and Debian do); uses the same venv as ``run.py``. About 40 s per
configuration, two at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from configs import OWN_CONFIGS  # noqa: E402
from run import REPO, WORKER, WORKLOADS, prepare  # noqa: E402

DEFAULT_CONFIGS = ("none", "noop-handler", "floor", "callscope", "callscope-content", "callscope-sampled-out")
_TOTAL = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def count(python: Path, config: str, calls: int, src: Path | None) -> dict[str, float]:
    """Instructions per call of each workload, for one configuration."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as out:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg",
            "--collect-atstart=no", "--toggle-collect=_operator_call", "--dump-after=_operator_call",
            str(python), str(WORKER), "instructions", "--config", config, "--iterations", str(calls),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"{config}: the worker failed under callgrind:\n{done.stderr[-2000:]}")
        dumps = sorted(Path(out).glob("cg.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        totals = [int(match.group(1)) for dump in dumps if (match := _TOTAL.search(dump.read_text()))]
    if len(totals) != len(WORKLOADS) or not all(totals):
        raise SystemExit(
            f"callgrind counted nothing inside operator.call for {config}: {python} has no _operator_call "
            "symbol (a stripped build?). Use --python with a CPython from pyenv, python.org or Debian."
        )
    return {workload: total / calls for workload, total in zip(WORKLOADS, totals)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated; none and floor are always added")
    parser.add_argument("--calls", type=int, default=20, help="counted calls per workload (the count is exact: 20 is plenty)")
    parser.add_argument("--jobs", type=int, default=2, help="configurations counted at once")
    parser.add_argument("--src", type=Path, help="count this callscope source directory instead of the installed one")
    parser.add_argument("--python", type=Path, help="interpreter (default: run.py's benchmark venv)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind); run.py measures wall-clock time without it")
    configs = ["none", "floor"] + [c for c in args.configs.split(",") if c and c not in ("none", "floor")]
    unknown = [c for c in configs if c not in OWN_CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; one of {', '.join(OWN_CONFIGS)}")
    python = args.python or prepare(HERE / ".venv-peers", False, False)
    with ThreadPoolExecutor(args.jobs) as pool:
        counted = dict(zip(configs, pool.map(lambda c: count(python, c, args.calls, args.src), configs)))
    base, floor = counted["none"], counted["floor"]
    print(f"Instructions per call, thousands ({args.calls} counted calls per workload; added = minus none; x floor = added / floor's added)")
    header = f"{'config':<32}" + "".join(f"{w:>14}{'added':>9}{'x floor':>9}" for w in WORKLOADS)
    print(header)
    print("-" * len(header))
    for config, per_call in counted.items():
        row = f"{config:<32}"
        for w in WORKLOADS:
            added = per_call[w] - base[w]
            ratio = f"{added / (floor[w] - base[w]):.2f}" if config != "none" else ""
            row += f"{per_call[w] / 1000:>14,.0f}{added / 1000:>+9,.0f}{ratio:>9}"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
