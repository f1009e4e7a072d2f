"""The OTLP/JSON lines exporter: what it writes, and a failed write reported, not raised."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from callscope._bridge.trace_file import OTLPJsonLinesExporter
from tests.spans import emit_small_tree


def test_lines_use_hex_ids_camel_case_int_enums_and_string_int64(provider_with_file) -> None:
    provider, path, memory = provider_with_file
    emit_small_tree(provider)
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # SimpleSpanProcessor: one export, one line, per span
    child_doc = json.loads(lines[0])
    span = child_doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    by_name = {s.name: s for s in memory.get_finished_spans()}
    assert span["traceId"] == format(by_name["child"].context.trace_id, "032x")
    assert span["spanId"] == format(by_name["child"].context.span_id, "016x")
    assert span["parentSpanId"] == format(by_name["root"].context.span_id, "016x")
    assert span["links"][0]["spanId"] == format(by_name["root"].context.span_id, "016x")
    assert span["status"] == {"code": 2, "message": "boom"}
    assert span["kind"] == 1  # SPAN_KIND_INTERNAL, as an int
    assert isinstance(span["startTimeUnixNano"], str) and int(span["startTimeUnixNano"]) == by_name["child"].start_time
    root_span = json.loads(lines[1])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = {a["key"]: a["value"] for a in root_span["attributes"]}
    assert attrs["big"] == {"intValue": str(2**40)}
    assert attrs["callscope.handlers.inherited"] == {
        "arrayValue": {"values": [{"stringValue": "runtime-logger"}, {"stringValue": "audit"}]}
    }


def test_export_failure_is_reported_not_raised(tmp_path: Path) -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    exporter = OTLPJsonLinesExporter(tmp_path / "missing-dir" / "spans.jsonl")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    provider.shutdown()


def _one_span(provider: TracerProvider, name: str = "s") -> None:
    with provider.get_tracer("t").start_as_current_span(name):
        pass


def test_configure_adds_the_trace_file_the_environment_names(tmp_path: Path, monkeypatch) -> None:
    from callscope._bridge.export import build_tracer_provider

    path = tmp_path / "from-env.jsonl"
    monkeypatch.setenv("CALLSCOPE_TRACE_FILE", str(path))
    provider = build_tracer_provider(service_name="svc")
    _one_span(provider, "configured")
    provider.shutdown()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "configured"


def test_the_trace_file_is_added_once_per_provider_and_path(tmp_path: Path, monkeypatch) -> None:
    from callscope._bridge.trace_file import add_trace_file_from_env

    path = tmp_path / "once.jsonl"
    monkeypatch.setenv("CALLSCOPE_TRACE_FILE", str(path))
    provider = TracerProvider()
    assert add_trace_file_from_env(provider) == path
    assert add_trace_file_from_env(provider) == path  # configure() then instrument(): still one
    _one_span(provider)
    provider.shutdown()
    assert len(path.read_text().splitlines()) == 1


def test_instrument_adds_the_trace_file_to_the_provider_it_is_given(tmp_path: Path, monkeypatch) -> None:
    import callscope
    from langchain_core.runnables import RunnableLambda

    path = tmp_path / "instrumented.jsonl"
    monkeypatch.setenv("CALLSCOPE_TRACE_FILE", str(path))
    provider = TracerProvider()
    callscope.instrument(provider)
    try:
        RunnableLambda(lambda x: x, name="traced_step").invoke(1)
    finally:
        callscope.uninstrument()
    provider.shutdown()
    assert "traced_step" in path.read_text()


def test_no_trace_file_without_the_variable_or_on_a_provider_that_is_not_the_sdks(tmp_path: Path, monkeypatch, caplog) -> None:
    from opentelemetry.trace import NoOpTracerProvider

    from callscope._bridge.trace_file import add_trace_file_from_env

    monkeypatch.delenv("CALLSCOPE_TRACE_FILE", raising=False)
    assert add_trace_file_from_env(TracerProvider()) is None
    monkeypatch.setenv("CALLSCOPE_TRACE_FILE", str(tmp_path / "never.jsonl"))
    assert add_trace_file_from_env(NoOpTracerProvider()) is None
    assert "not the OpenTelemetry SDK's" in caplog.text and "callscope.configure()" in caplog.text
    assert not (tmp_path / "never.jsonl").exists()


def test_the_exporter_is_public() -> None:
    import callscope

    assert callscope.OTLPJsonLinesExporter is OTLPJsonLinesExporter
    assert "OTLPJsonLinesExporter" in callscope.__all__


def test_the_readme_snippet_writes_the_file_the_tree_reads(tmp_path: Path, monkeypatch) -> None:
    """README, "A trace file in your own pipeline": the snippet as printed, then callscope tree."""
    import subprocess
    import sys

    import callscope
    from langchain_core.runnables import RunnableLambda

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("**A trace file in your own pipeline.**") :]
    code = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python\n"))]
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(code, names)
    try:
        RunnableLambda(lambda x: x, name="from_the_snippet").invoke(1)
    finally:
        callscope.uninstrument()
    names["provider"].shutdown()
    tree = subprocess.run([sys.executable, "-m", "callscope", "tree", "traces.jsonl"], capture_output=True, text=True, timeout=60)
    assert tree.returncode == 0, tree.stderr
    assert "from_the_snippet" in tree.stdout
