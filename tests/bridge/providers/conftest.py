"""Real provider packages against loopback servers speaking their APIs (tests/fakes), traced by
callscope with a real SDK tracer and meter provider.

A test drives a model in one of the four modes with ``drive`` and reads the one model span with
``Traced.model_span`` and the metric points with ``Traced.metrics``; what it asserts is what the
fake server received or sent on the wire, never a value copied from callscope's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import callscope
from tests.modes import MODES
from tests.spans import SpanTree


class Traced:
    def __init__(self, spans: SpanTree, reader: InMemoryMetricReader) -> None:
        self.spans = spans
        self._reader = reader

    def model_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.all if s.attributes.get("gen_ai.operation.name") in ("chat", "text_completion", "embeddings")]

    def model_span(self) -> ReadableSpan:
        found = self.model_spans()
        assert len(found) == 1, f"expected one model span, got {[s.name for s in found]} among {self.spans.names()}"
        return found[0]

    def assert_metrics(self, request: dict[str, Any], *, response_model: str | None = None, error_type: str | None = None) -> None:
        """One duration point with the request's attributes (and the response model, or the
        error type), and, for a reply, one token usage point per token type with the same."""
        durations = self.metrics("gen_ai.client.operation.duration")
        if error_type is not None:
            assert durations == [{**request, "error.type": error_type}]
            assert self.metrics("gen_ai.client.token.usage") == []
            return
        answered = {**request, "gen_ai.response.model": response_model}
        assert durations == [answered]
        tokens = sorted(self.metrics("gen_ai.client.token.usage"), key=lambda point: point["gen_ai.token.type"])
        assert tokens == [{**answered, "gen_ai.token.type": kind} for kind in ("input", "output")]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """The attribute sets of ``name``'s data points."""
        data = self._reader.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(dict(p.attributes) for p in metric.data.data_points)
        return points


class Checks:
    """Collects every mismatch of a test, then fails once listing them all."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def equal(self, what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            self.failures.append(f"{what}: got {actual!r}, expected {expected!r}")

    def true(self, what: str, condition: bool) -> None:
        if not condition:
            self.failures.append(what)

    def done(self) -> None:
        assert not self.failures, "\n".join(self.failures)


def chat_request(provider: str, model: str, server: Any) -> dict[str, Any]:
    """The attributes every metric point of a chat call to ``server`` carries."""
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model, "server.address": server.host, "server.port": server.port}


@pytest.fixture
def traced(tracer_provider, span_exporter) -> Iterator[Traced]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, capture_content=True)
    yield Traced(SpanTree(span_exporter), reader)
    instrumentor.uninstrument()
    meter_provider.shutdown()


# Facts a provider package receives on the wire but never hands to LangChain's callbacks, by
# package and mode: callscope cannot record them, and the README's Providers section says so.
# Tests expect what the callbacks carry, so a package release that starts passing one on fails
# its test, and the entry here (and the README line) goes.
STREAMED = ("stream", "astream")
RESPONSE_ID_DROPPED = {
    "langchain-openai": STREAMED,  # the streamed chunks' id is not copied
    "langchain-anthropic": STREAMED,  # message_start's id is not kept
    "langchain-google-genai": MODES,  # responseId is never read
    "langchain-mistralai": MODES,
    "langchain-groq": MODES,
}
# Packages that report the requested model as the response's (the wire's model is dropped).
RESPONSE_MODEL_ECHOED = {"langchain-mistralai": ("invoke", "ainvoke"), "langchain-groq": MODES}


def expected_response_id(package: str, mode: str, on_the_wire: str) -> str | None:
    return None if mode in RESPONSE_ID_DROPPED.get(package, ()) else on_the_wire


def expected_response_model(package: str, mode: str, on_the_wire: str, requested: str) -> str:
    return requested if mode in RESPONSE_MODEL_ECHOED.get(package, ()) else on_the_wire


@pytest.fixture
def httpx_spans(tracer_provider: Any) -> Iterator[None]:
    """The ``httpx`` instrumentation (HTTPXClientInstrumentor) on the test's tracer provider: the
    HTTP client of langchain-groq (the groq SDK's clients are httpx clients), langchain-mistralai
    and langchain-ollama. The openai SDK uses httpx2 instead (tests/bridge/providers/test_openai.py)."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


def http_posts(traced: Traced) -> list[ReadableSpan]:
    """The HTTP client spans of POST requests (old and new HTTP semantic conventions)."""
    return [s for s in traced.spans.all if s.kind is SpanKind.CLIENT and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"]


def url_of(span: ReadableSpan) -> Any:
    return span.attributes.get("url.full", span.attributes.get("http.url"))
