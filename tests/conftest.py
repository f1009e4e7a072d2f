"""Fixtures shared by the whole suite: a real SDK provider with an in-memory exporter, and
callscope instrumented against it (uninstrumented afterwards, leaving no global state)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import callscope
from callscope._bridge.trace_file import OTLPJsonLinesExporter
from tests.spans import SpanTree


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def instrumented(tracer_provider: TracerProvider) -> Iterator[callscope.CallscopeInstrumentor]:
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter, instrumented: callscope.CallscopeInstrumentor) -> SpanTree:
    """The exported spans, read fresh on every access."""
    return SpanTree(span_exporter)


@pytest.fixture
def user_tracer(tracer_provider: TracerProvider):
    """A tracer for spans the *application* opens (the caller, code inside steps)."""
    return tracer_provider.get_tracer("tests.user")


@pytest.fixture
def no_detach_errors(caplog: pytest.LogCaptureFixture):
    """Fails the test if OpenTelemetry logged a context detach failure or LangChain a callback error."""
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if "detach" in r.getMessage().lower() or r.getMessage().startswith("Error in")]
    assert bad == [], bad


@pytest.fixture
def provider_with_file(tmp_path: Path):
    """A provider writing an OTLP/JSON lines file (and an in-memory copy) under ``tmp_path``."""
    path = tmp_path / "spans.jsonl"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-under-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonLinesExporter(path)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, path, memory
    provider.shutdown()
