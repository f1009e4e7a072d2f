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
