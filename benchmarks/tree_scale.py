"""`callscope tree` on files the size a day of traffic makes: time and peak memory next to the goals.

    python3 benchmarks/tree_scale.py                 # makes the files once (~1 min), then measures (~1 min)
    python3 benchmarks/tree_scale.py --cache DIR     # where the generated files live (default: /tmp)
    python3 benchmarks/tree_scale.py --python PATH   # measure another install, e.g. an older checkout's venv

The files are built from real spans: `callscope demo` runs once, and its three traces (23 spans)
are the templates, copied with fresh ids and times the way a busy service fills the Collector's
`file` exporter output — traces of concurrent requests interleaved, children before parents (the
order spans end in), up to 512 spans per line (one export batch):

- many.jsonl: 200,000 spans in about 26,000 traces (~156 MiB);
- one.jsonl: one agent trace of 200,000 spans (the demo's trace repeated under one root).

Each measurement is a fresh `python -m callscope tree` process with its output to a pipe (plain
text, 160 columns); peak RSS is the child's ru_maxrss. The goals are wall-clock times on an idle
machine; the CPU column (user + system) shows what a busy machine stretched. `--cases` runs some
of the cases (by number, e.g. `--cases 1,5`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPANS = 200_000
BATCH = 512
CONCURRENT_REQUESTS = 40
# Bump when the generated files change shape, so stale caches are rebuilt.
FORMAT = "4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()), help="directory for the generated files")
    parser.add_argument("--python", default=sys.executable, help="interpreter with callscope installed")
    parser.add_argument("--cases", default="", help="comma-separated case numbers to run (default: all)")
    args = parser.parse_args()
    cache = args.cache / f"callscope-tree-scale-v{FORMAT}"
    files = _files(cache, args.python)
    print(f"files: {files.many} ({files.many.stat().st_size / 2**20:.0f} MiB, {SPANS:,} spans, "
          f"{files.many_traces:,} traces), {files.one} ({files.one.stat().st_size / 2**20:.0f} MiB, one trace)")
    print(f"callscope: {args.python}\n")
    cases = [
        Case(f"--trace (a {files.picked_spans}-span trace)", ["tree", str(files.many), "--trace", files.picked], 3.0, 100),
        Case("whole file, 26k traces", ["tree", str(files.many)], 20.0, 100, first_output_goal_s=1.0),
        Case("whole file, --limit 10", ["tree", str(files.many), "--limit", "10"], 3.0, 100),
        Case("standard input, --trace", ["tree", "-", "--trace", files.picked], 3.0, 100, stdin=files.many),
        Case("one 200k-span trace", ["tree", str(files.one)], 15.0, 400),
    ]
    if args.cases:
        cases = [cases[int(n) - 1] for n in args.cases.split(",")]
    print(f"{'case':34} {'time':>8} {'goal':>7} {'first out':>10} {'goal':>6} {'peak RSS':>9} {'goal':>7} {'CPU':>8}  result")
    failures = 0
    for case in cases:
        measured = _measure(args.python, case)
        ok = measured.ok(case)
        failures += not ok
        first = f"{measured.first_output_s:.2f} s" if measured.first_output_s is not None else "-"
        first_goal = f"{case.first_output_goal_s:g} s" if case.first_output_goal_s else ""
        print(
            f"{case.name:34} {measured.seconds:6.2f} s {case.seconds_goal:5g} s {first:>10} {first_goal:>6} "
            f"{measured.peak_rss_mb:6.0f} MB {case.rss_goal_mb:4d} MB {measured.cpu_s:6.2f} s  "
            + ("ok" if ok else f"MISSED{'' if measured.exit_status == 0 else f' (exit {measured.exit_status})'}")
        )
    return 1 if failures else 0


@dataclass
class Case:
    name: str
    argv: list[str]
    seconds_goal: float
    rss_goal_mb: int
    first_output_goal_s: float | None = None
    stdin: Path | None = None


@dataclass
class Measured:
    seconds: float
    first_output_s: float | None
    peak_rss_mb: float
    exit_status: int
    output_bytes: int
    cpu_s: float

    def ok(self, case: Case) -> bool:
        first_ok = case.first_output_goal_s is None or (
            self.first_output_s is not None and self.first_output_s <= case.first_output_goal_s
        )
        return (
            self.exit_status == 0
            and self.output_bytes > 0
            and self.seconds <= case.seconds_goal
            and self.peak_rss_mb <= case.rss_goal_mb
            and first_ok
        )


def _measure(python: str, case: Case) -> Measured:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    stdin = case.stdin.open("rb") if case.stdin else subprocess.DEVNULL
    # A file, not a pipe: a chatty stderr must not block the child while stdout is read.
    stderr = tempfile.TemporaryFile()
    start = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "callscope", *case.argv], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, env=env
    )
    first: float | None = None
    size = 0
    assert process.stdout is not None
    while chunk := process.stdout.read1(1 << 16):
        if first is None:
            first = time.perf_counter() - start
        size += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if case.stdin:
        stdin.close()
    stderr.seek(0)
    errors = stderr.read().decode(errors="replace")
    stderr.close()
    if process.returncode != 0:
        print(f"  {case.name}: exit {process.returncode}: {errors.strip()[:300]}")
    # ru_maxrss is in KiB on Linux.
    return Measured(elapsed, first, usage.ru_maxrss / 1024, process.returncode, size, usage.ru_utime + usage.ru_stime)


# --- the files --------------------------------------------------------------------------------


@dataclass
class Files:
    many: Path
    one: Path
    many_traces: int
    picked: str
    picked_spans: int


def _files(cache: Path, python: str) -> Files:
    cache.mkdir(parents=True, exist_ok=True)
    many, one, index = cache / "many.jsonl", cache / "one.jsonl", cache / "index.json"
    if not index.exists():
        resource, traces = _templates(python)
        random.seed(14)
        print("generating the files (once) ...", flush=True)
        many_traces, picked, picked_spans = _write(many, resource, _many_traces(traces))
        _write(one, resource, _one_trace(traces[0]))
        index.write_text(json.dumps({"many_traces": many_traces, "picked": picked, "picked_spans": picked_spans}))
    meta = json.loads(index.read_text())
    return Files(many, one, meta["many_traces"], meta["picked"], meta["picked_spans"])


def _templates(python: str) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """The demo's resource and its traces' spans (each trace's spans in the order they ended)."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "demo.jsonl"
        subprocess.run([python, "-m", "callscope", "demo", "--output", str(output)], check=True, capture_output=True)
        lines = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    resource = lines[0]["resourceSpans"][0]["resource"]
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        for resource_spans in line["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    by_trace.setdefault(span["traceId"], []).append(span)
    traces = [sorted(spans, key=lambda s: int(s["endTimeUnixNano"])) for spans in by_trace.values()]
    return resource, traces


def _copy(spans: list[dict[str, Any]], trace_id: str, shift_ns: int, root_parent: str | None) -> list[dict[str, Any]]:
    ids = {span["spanId"]: random.randbytes(8).hex() for span in spans}
    copies = []
    for span in spans:
        copy = dict(span, traceId=trace_id, spanId=ids[span["spanId"]])
        parent = span.get("parentSpanId")
        if parent in ids:
            copy["parentSpanId"] = ids[parent]
        elif root_parent:
            copy["parentSpanId"] = root_parent
        else:
            copy.pop("parentSpanId", None)
        copy["startTimeUnixNano"] = str(int(span["startTimeUnixNano"]) + shift_ns)
        copy["endTimeUnixNano"] = str(int(span["endTimeUnixNano"]) + shift_ns)
        copies.append(copy)
    return copies


def _many_traces(templates: list[list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Spans of concurrent requests, in the order they end: several traces open at once."""
    open_traces: list[list[dict[str, Any]]] = []
    emitted = 0
    started = 0
    while emitted < SPANS or open_traces:
        while emitted + sum(map(len, open_traces)) < SPANS and len(open_traces) < CONCURRENT_REQUESTS:
            template = templates[started % len(templates)]
            open_traces.append(_copy(template, random.randbytes(16).hex(), started * 50_000_000, None))
            started += 1
        trace = random.choice(open_traces)
        span = trace.pop(0)
        if not trace:
            open_traces.remove(trace)
        emitted += 1
        yield span["traceId"], span


def _one_trace(template: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """An agent loop of 200,000 spans: the demo's trace repeated under one root."""
    trace_id = random.randbytes(16).hex()
    root_id = random.randbytes(8).hex()
    root = template[-1]  # ended last: the demo trace's root
    steps = (SPANS - 1) // len(template)
    step_ns = int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"])
    for step in range(steps):
        for span in _copy(template, trace_id, step * step_ns, root_id):
            # Steps of one agent run are not LangChain roots: only the trace's root has the summary.
            span["attributes"] = [a for a in span["attributes"] if not a["key"].startswith("callscope.handlers.missed")]
            yield trace_id, span
    last = dict(root, traceId=trace_id, spanId=root_id, name="agent-loop")
    last.pop("parentSpanId", None)
    last["endTimeUnixNano"] = str(int(root["startTimeUnixNano"]) + steps * step_ns)
    yield trace_id, last


def _write(path: Path, resource: dict[str, Any], spans: Iterator[tuple[str, dict[str, Any]]]) -> tuple[int, str, int]:
    """Write ``spans`` in export batches; return the trace count and a mid-file trace with its size."""
    counts: dict[str, int] = {}
    batch: list[dict[str, Any]] = []
    with path.open("w", encoding="utf-8") as out:
        for trace_id, span in spans:
            counts[trace_id] = counts.get(trace_id, 0) + 1
            batch.append(span)
            if len(batch) == BATCH:
                out.write(_line(resource, batch))
                batch = []
        if batch:
            out.write(_line(resource, batch))
    ids = list(counts)
    middle = ids[len(ids) // 2 :]
    picked = next((t for t in middle if counts[t] == 9), middle[0])
    return len(ids), picked, counts[picked]


def _line(resource: dict[str, Any], spans: list[dict[str, Any]]) -> str:
    document = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "callscope"}, "spans": spans}]}]}
    return json.dumps(document, separators=(",", ":")) + "\n"


if __name__ == "__main__":
    sys.exit(main())
