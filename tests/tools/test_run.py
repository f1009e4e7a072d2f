"""`callscope run`'s parts that need no child process: the command's environment and name, its
exit status, reading only the spans a run appended, and when --live shows a trace."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from callscope._bridge.trace_file import OTLPJsonLinesExporter
from callscope._tools.otlp_json import SpanRecord
from callscope._tools.run import QUIET_SECONDS, LiveTraces, NewSpans, command_environment, exit_status, service_name


def test_environment_puts_the_bootstrap_first_and_keeps_the_callers_path(tmp_path: Path):
    env = command_environment(tmp_path / "t.jsonl", ["python", "app.py"], {"PYTHONPATH": "/mine:/also", "KEEP": "1"})
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "sitecustomize.py").is_file()
    assert rest == ["/mine", "/also"]
    assert env["CALLSCOPE_RUN"] == "1"
    assert env["CALLSCOPE_TRACE_FILE"] == str(tmp_path / "t.jsonl")
    assert env["CALLSCOPE_RUN_SERVICE"] == "app"
    assert env["KEEP"] == "1"


def test_environment_leaves_the_callers_own_settings(tmp_path: Path):
    env = command_environment(tmp_path / "t.jsonl", ["python", "app.py"], {"OTEL_BSP_SCHEDULE_DELAY": "900", "CALLSCOPE_RUN_SERVICE": "named"})
    assert env["OTEL_BSP_SCHEDULE_DELAY"] == "900"
    assert env["CALLSCOPE_RUN_SERVICE"] == "named"
    assert "PYTHONPATH" in env and os.pathsep not in env["PYTHONPATH"]


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["python", "app.py", "--port", "1"], "app"),
        (["/venv/bin/python3.11", "-u", "tools/job.py"], "job"),
        (["python", "-m", "pkg.main", "x"], "pkg.main"),
        (["uvicorn", "app:app"], "uvicorn"),
        (["/usr/local/bin/pytest", "-q"], "pytest"),
    ],
)
def test_service_name_is_what_the_command_runs(command, name):
    assert service_name(command) == name


def test_exit_status_as_a_shell_reports_it():
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(-signal.SIGINT) == 130


def _write_spans(path: Path, *names: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonLinesExporter(path)))
    tracer = provider.get_tracer("t")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()


def test_new_spans_are_only_those_appended_after_opening(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    _write_spans(path, "earlier")
    new = NewSpans(path)
    _write_spans(path, "mine")
    assert [s.name for s in new.poll()] == ["mine"]
    assert new.poll() == []
    assert [s.name for s in new.read.spans] == ["mine"]


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    _write_spans(path, "whole")
    line = path.read_bytes()
    path.write_bytes(b"")
    new = NewSpans(path)
    with path.open("ab") as out:
        out.write(line[:40])
    assert new.poll() == []
    with path.open("ab") as out:
        out.write(line[40:])
    assert [s.name for s in new.poll()] == ["whole"]


def test_a_file_not_yet_created_has_no_spans(tmp_path: Path):
    new = NewSpans(tmp_path / "later.jsonl")
    assert new.poll() == []
    _write_spans(tmp_path / "later.jsonl", "first")
    assert [s.name for s in new.poll()] == ["first"]


def _span(trace: str, span: str, parent: str | None) -> SpanRecord:
    return SpanRecord(trace_id=trace, span_id=span, parent_id=parent, name=span, start_ns=0, end_ns=1)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_shows_a_trace_when_its_root_arrives_and_not_before():
    shown: list[list[str]] = []
    clock = _Clock()
    live = LiveTraces(lambda spans: shown.append([s.span_id for s in spans]), clock)
    live.add([_span("t1", "child", "root")])
    live.tick()
    assert shown == []
    live.add([_span("t1", "root", None), _span("t2", "other-child", "other-root")])
    assert shown == [["child", "root"]]
    live.add([_span("t1", "straggler", "root")])  # after its trace was shown: not shown again
    live.flush()
    assert shown == [["child", "root"], ["other-child"]]


def test_live_shows_a_trace_under_a_foreign_parent_once_it_is_quiet():
    shown: list[list[str]] = []
    clock = _Clock()
    live = LiveTraces(lambda spans: shown.append([s.span_id for s in spans]), clock)
    live.add([_span("t1", "run", "web-request-span")])
    clock.now += QUIET_SECONDS / 2
    live.tick()
    assert shown == []
    clock.now += QUIET_SECONDS
    live.tick()
    assert shown == [["run"]]


def test_appended_lines_stay_whole_when_batches_race(tmp_path: Path):
    """Many threads exporting into one file: every line is one whole OTLP/JSON document."""
    import threading

    path = tmp_path / "race.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonLinesExporter(path)))
    tracer = provider.get_tracer("t")

    def emit(index: int) -> None:
        for n in range(50):
            with tracer.start_as_current_span(f"s{index}-{n}", attributes={"pad": "x" * 5000}):
                pass

    threads = [threading.Thread(target=emit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert {json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for line in lines} == {
        f"s{i}-{n}" for i in range(8) for n in range(50)
    }
