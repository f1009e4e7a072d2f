"""callscope against a real Jaeger v2 (built from its Go module by deploy/jaeger.sh): the demo
exported over OTLP gRPC and HTTP, read back with ``callscope tree --jaeger``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from callscope._tools.otlp_json import SpanRecord, parse_document, read_spans_file
from tests.integration.conftest import JaegerServer

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).resolve().parents[1] / "data" / "jaeger_v3_trace.json"


def callscope(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NO_COLOR", "FORCE_COLOR", "COLUMNS"))}
    return subprocess.run(
        [sys.executable, "-m", "callscope", *args],
        cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False,
    )


def run_demo(endpoint: str, protocol: str, cwd: Path) -> tuple[str, dict[str, int]]:
    """Run ``callscope demo`` into ``endpoint`` under a fresh service name; that name and the
    span count of each trace the demo wrote, oldest trace first."""
    service = f"callscope-test-{uuid.uuid4().hex[:8]}"
    done = callscope(
        "demo", "--output", "out.jsonl", cwd=cwd,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_SERVICE_NAME=service,
        # Jaeger stores traces only; the README's Jaeger command turns the demo's metrics off.
        OTEL_METRICS_EXPORTER="none",
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to export" not in done.stderr, done.stderr
    spans = read_spans_file(cwd / "out.jsonl").spans
    counts = Counter(span.trace_id for span in spans)
    assert len(counts) == 3
    first_start = {trace_id: min(s.start_ns for s in spans if s.trace_id == trace_id) for trace_id in counts}
    return service, {trace_id: counts[trace_id] for trace_id in sorted(counts, key=first_start.__getitem__)}


def by_span_id(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {span.span_id: span for span in spans}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_demo_in_jaeger_reads_back_as_the_same_tree(jaeger: JaegerServer, tmp_path: Path, protocol: str) -> None:
    endpoint = jaeger.otlp_grpc if protocol == "grpc" else jaeger.otlp_http
    service, counts = run_demo(endpoint, protocol, tmp_path)
    written = by_span_id(read_spans_file(tmp_path / "out.jsonl").spans)

    for trace_id, count in counts.items():
        stored = by_span_id(parse_document(jaeger.wait_for_trace(trace_id, count)).spans)
        # Every span comes back whole: ids, parents, names, times, status, the handler string
        # arrays, the GenAI attributes, service.name and the instrumentation scope.
        assert stored == {span_id: span for span_id, span in written.items() if span.trace_id == trace_id}
        assert {span.service_name for span in stored.values()} == {service}

        from_jaeger = callscope("tree", "--jaeger", jaeger.query_url, "--trace", trace_id, cwd=tmp_path)
        from_file = callscope("tree", "out.jsonl", "--trace", trace_id, cwd=tmp_path)
        assert from_jaeger.returncode == 0, from_jaeger.stderr
        assert from_jaeger.stderr == ""
        assert from_jaeger.stdout == from_file.stdout
        assert f"trace {trace_id}  {service} · {count} spans" in from_jaeger.stdout

    chats = [span for span in written.values() if span.name.startswith("chat")]
    # The answering model carries its constructor handler (the worker thread's model has none).
    answering = [span for span in chats if span.name == "chat fake-chat"]
    assert answering and all(isinstance(span.attributes["callscope.handlers.local"], list) for span in answering)
    assert all(span.attributes["gen_ai.operation.name"] == "chat" for span in chats)


def test_service_search_shows_the_latest_traces_newest_first(jaeger: JaegerServer, tmp_path: Path) -> None:
    service, counts = run_demo(jaeger.otlp_grpc, "grpc", tmp_path)
    for trace_id, count in counts.items():
        jaeger.wait_for_trace(trace_id, count)
    oldest_first = list(counts)
    titles = lambda out: [line.split()[1] for line in out.splitlines() if line.startswith("trace ")]  # noqa: E731

    every = callscope("tree", "--jaeger", jaeger.query_url, "--service", service, cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    assert titles(every.stdout) == oldest_first[::-1]

    two = callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--limit", "2", "--since", "15m", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert titles(two.stdout) == oldest_first[:0:-1]

    newest = callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--limit", "1", cwd=tmp_path)
    by_id = callscope("tree", "--jaeger", jaeger.query_url, "--trace", oldest_first[-1], cwd=tmp_path)
    assert newest.returncode == by_id.returncode == 0
    assert newest.stdout == by_id.stdout


def test_services_are_listed_and_unknown_ones_named(jaeger: JaegerServer, tmp_path: Path) -> None:
    service, counts = run_demo(jaeger.otlp_http, "http/protobuf", tmp_path)
    for trace_id, count in counts.items():
        jaeger.wait_for_trace(trace_id, count)

    listed = callscope("tree", "--jaeger", jaeger.query_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"  {service}" in listed.stdout.splitlines()
    assert f"callscope tree --jaeger {jaeger.query_url} --service " in listed.stdout

    unknown = callscope("tree", "--jaeger", jaeger.query_url, "--service", "no-such-service", cwd=tmp_path)
    assert unknown.returncode == 3
    [line] = unknown.stderr.splitlines()
    assert line.startswith(f"callscope: error: Jaeger at {jaeger.query_url} has no service 'no-such-service' (it has: ")
    assert service in line


def test_a_window_without_traces_is_one_line(jaeger: JaegerServer, tmp_path: Path) -> None:
    service, counts = run_demo(jaeger.otlp_grpc, "grpc", tmp_path)
    for trace_id, count in counts.items():
        jaeger.wait_for_trace(trace_id, count)
    time.sleep(2.1)  # every trace of the service now started more than a second ago

    empty = callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--since", "1s", cwd=tmp_path)
    assert empty.returncode == 3
    assert empty.stderr.splitlines() == [
        f"callscope: error: no traces of {service!r} started in the last 1s in Jaeger at {jaeger.query_url}; "
        "widen the window with --since, e.g. --since 24h"
    ]
    assert empty.stdout == ""


def test_an_unknown_trace_is_one_line(jaeger: JaegerServer, tmp_path: Path) -> None:
    missing = uuid.uuid4().hex
    done = callscope("tree", "--jaeger", jaeger.query_url, "--trace", missing, cwd=tmp_path)
    assert done.returncode == 3
    [line] = done.stderr.splitlines()
    assert line.startswith(f"callscope: error: trace {missing} not found in Jaeger at {jaeger.query_url}; check the id")


def _spans(document: dict) -> list[dict]:
    return [span for rs in document["result"]["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def _encoding(document: dict) -> dict[str, set[str]]:
    """How each span field is encoded (its JSON types), and the resource attribute keys."""
    fields: dict[str, set[str]] = {}
    for span in _spans(document):
        for key, value in span.items():
            fields.setdefault(key, set()).add(type(value).__name__)
    fields["resource attributes"] = {
        attribute["key"] for rs in document["result"]["resourceSpans"] for attribute in rs["resource"]["attributes"]
    }
    return fields


def test_the_recorded_response_is_what_this_jaeger_answers(jaeger: JaegerServer, tmp_path: Path) -> None:
    # tests/data/jaeger_v3_trace.json feeds the fast CLI tests; it must stay a true copy of what
    # the server sends: the same fields, ids, times, kinds, flags and status encoded the same way.
    _, counts = run_demo(jaeger.otlp_grpc, "grpc", tmp_path)
    trace_id, count = next(iter(counts.items()))  # the demo's first trace, like the recorded one
    live = jaeger.wait_for_trace(trace_id, count)
    recorded = json.loads(RECORDED.read_text())

    assert set(live) == set(recorded) == {"result"}
    assert _encoding(live) == _encoding(recorded)
    assert sorted(span["name"] for span in _spans(live)) == sorted(span["name"] for span in _spans(recorded))
    for document in (live, recorded):
        for span in _spans(document):
            assert len(span["traceId"]) == 32 and span["traceId"] == span["traceId"].lower()
            # Jaeger sorts attributes by key (its SortCollections adjuster), whatever the sender's order.
            keys = [attribute["key"] for attribute in span["attributes"]]
            assert keys == sorted(keys)


def test_the_newest_traces_are_found_among_many_stored_at_once(jaeger: JaegerServer, tmp_path: Path) -> None:
    # Jaeger's num_traces returns the traces stored last, and one incoming batch is stored in
    # random order: --limit must still give the newest by start time.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = f"callscope-test-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_grpc, insecure=True)))
    tracer = provider.get_tracer("tests.jaeger")
    now = time.time_ns()
    started: dict[str, int] = {}
    for i in range(30):
        start = now - (30 - i) * 1_000_000_000  # one a second, the last a second ago
        span = tracer.start_span(f"run {i}", start_time=start)
        span.end(end_time=start + 1_000_000)
        started[format(span.get_span_context().trace_id, "032x")] = start
    assert provider.force_flush(10_000)  # one export batch: all thirty at once
    provider.shutdown()
    for trace_id in started:
        jaeger.wait_for_trace(trace_id, 1)

    done = callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--limit", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("trace ")]
    assert shown == sorted(started, key=started.__getitem__, reverse=True)[:5]


def test_the_jaeger_under_test_is_the_release_compose_pins(jaeger_binary: Path) -> None:
    import yaml

    done = subprocess.run(
        [str(jaeger_binary), "version"], capture_output=True, text=True, timeout=30, check=False, env={"PATH": os.defpath}
    )
    assert done.returncode == 0, done.stderr
    version = json.loads(done.stdout.strip().splitlines()[-1])["gitVersion"]
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    assert compose["services"]["jaeger"]["image"] == f"jaegertracing/jaeger:{version.removeprefix('v')}"


def test_the_users_script_starts_that_jaeger(jaeger_binary: Path, tmp_path: Path) -> None:
    # `deploy/jaeger.sh` (no Docker) as the README gives it, on free ports instead of 4317/16686.
    from tests.integration.conftest import DEPLOY, free_port, stop, wait_until_healthy

    ports = {name: free_port() for name in ("OTLP_GRPC", "OTLP_HTTP", "QUERY", "QUERY_GRPC", "HEALTH")}
    log = tmp_path / "jaeger.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(DEPLOY / "jaeger.sh")],
            env={**os.environ, **{f"CALLSCOPE_JAEGER_{k}": str(v) for k, v in ports.items()}},
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(ports["HEALTH"], process, log, "deploy/jaeger.sh")
        service, counts = run_demo(f"http://127.0.0.1:{ports['OTLP_GRPC']}", "grpc", tmp_path)
        started = JaegerServer(f"http://127.0.0.1:{ports['QUERY']}", "", "", log)
        for trace_id, count in counts.items():
            started.wait_for_trace(trace_id, count)
        listed = callscope("tree", "--jaeger", f"http://127.0.0.1:{ports['QUERY']}", cwd=tmp_path)
        assert listed.returncode == 0 and f"  {service}" in listed.stdout.splitlines(), listed.stdout + listed.stderr
    finally:
        stop(process)
    assert process.returncode == 0  # SIGTERM: a clean shutdown
    assert f"query API on http://127.0.0.1:{ports['QUERY']}" in log.read_text()
