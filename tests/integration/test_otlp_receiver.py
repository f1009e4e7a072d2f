"""Export to a real OTLP receiver (rotel) over gRPC and HTTP/protobuf, and what happens when the
collector is down or hangs. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import json
import logging
import re

import time
from collections.abc import Iterator

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import callscope
from callscope._bridge.export import build_tracer_provider
from tests.integration.conftest import Receiver

pytestmark = pytest.mark.integration

PROTOCOLS = ("grpc", "http/protobuf")
EXPORT_TIMEOUT_S = 1


class AuditHandler(BaseCallbackHandler):
    pass


def _endpoint(receiver: Receiver, protocol: str) -> str:
    # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL for both; the HTTP exporter appends /v1/traces.
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "callscope-export-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(EXPORT_TIMEOUT_S))
    yield monkeypatch


@pytest.fixture
def traced() -> Iterator[list[TracerProvider]]:
    """Instrument callscope against the provider a test builds; uninstrument and shut down after."""
    providers: list[TracerProvider] = []
    yield providers
    callscope.uninstrument()
    for provider in providers:
        provider.shutdown()


def _chain() -> Runnable:
    model = FakeListChatModel(responses=["exported"], callbacks=[AuditHandler()])
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | model


def _build(otlp_env: pytest.MonkeyPatch, endpoint: str, protocol: str, traced: list[TracerProvider]):
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    memory = InMemorySpanExporter()
    provider = build_tracer_provider(service_name="ignored-because-env-wins", span_processors=[SimpleSpanProcessor(memory)])
    traced.append(provider)
    callscope.instrument(tracer_provider=provider)
    return provider, memory


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_arrive_intact(
    rotel_receiver: Receiver, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str
) -> None:
    provider, memory = _build(otlp_env, _endpoint(rotel_receiver, protocol), protocol, traced)
    tracer = provider.get_tracer("tests.integration")
    # An application span around the chain, carrying handler lists written here, so the
    # attribute arrays are checked even where scoping would leave them out.
    with tracer.start_as_current_span(
        "app-request",
        attributes={
            "callscope.handlers.local": ["AuditHandler"],
            "callscope.handlers.inherited": ["RuntimeLogger", "Tracer#2"],
        },
    ):
        _chain().invoke({"q": "hello"}, config={"callbacks": [AuditHandler()], "run_name": "exported-chain"})
    provider.shutdown()

    sent = {format(s.context.span_id, "016x"): s for s in memory.get_finished_spans()}
    assert len(sent) >= 4  # app span, the sequence, the prompt, the model
    received = {row["span_id"]: row for row in rotel_receiver.wait_for(len(sent))}
    assert set(received) == set(sent)
    trace_ids = {row["trace_id"] for row in received.values()}
    assert trace_ids == {format(next(iter(sent.values())).context.trace_id, "032x")}
    for span_id, span in sent.items():
        row = received[span_id]
        assert row["name"] == span.name
        expected_parent = format(span.parent.span_id, "016x") if span.parent else "0" * 16
        assert (row["parent_span_id"] or "0" * 16) == expected_parent, span.name
        assert row["service"] == "callscope-export-test"
        for key, value in span.attributes.items():
            if key.startswith("callscope.handlers."):
                assert row["attributes"][key] == list(value), (span.name, key)
    app = next(row for row in received.values() if row["name"] == "app-request")
    assert app["attributes"]["callscope.handlers.inherited"] == ["RuntimeLogger", "Tracer#2"]
    assert app["attributes"]["callscope.handlers.local"] == ["AuditHandler"]
    chain_root = next(row for row in received.values() if row["name"] == "exported-chain")
    assert chain_root["parent_span_id"] == app["span_id"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_queued_at_shutdown_are_flushed(
    rotel_receiver: Receiver, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str
) -> None:
    otlp_env.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # nothing leaves before shutdown
    provider, memory = _build(otlp_env, _endpoint(rotel_receiver, protocol), protocol, traced)
    chain = _chain()
    for i in range(5):
        chain.invoke({"q": str(i)})
    time.sleep(0.3)
    assert rotel_receiver.received() == []  # still queued in the BatchSpanProcessor
    started = time.monotonic()
    provider.shutdown()
    assert time.monotonic() - started < EXPORT_TIMEOUT_S + 1
    rows = rotel_receiver.wait_for(len(memory.get_finished_spans()))
    assert {row["span_id"] for row in rows} == {format(s.context.span_id, "016x") for s in memory.get_finished_spans()}


def _run_against_a_broken_collector(
    otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], endpoint: str, protocol: str
) -> tuple[float, float, list[str]]:
    provider, memory = _build(otlp_env, endpoint, protocol, traced)
    chain = _chain()
    started = time.monotonic()
    outputs = [chain.invoke({"q": str(i)}).content for i in range(3)]
    chain_seconds = time.monotonic() - started
    started = time.monotonic()
    provider.shutdown()  # must not raise, and must give up within the exporter timeout
    shutdown_seconds = time.monotonic() - started
    assert len(memory.get_finished_spans()) == 9  # the chain was traced all the same
    return chain_seconds, shutdown_seconds, outputs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dead_collector_blocks_nothing(
    dead_port: int, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callscope")
    chain_s, shutdown_s, outputs = _run_against_a_broken_collector(
        otlp_env, traced, f"http://127.0.0.1:{dead_port}", protocol
    )
    assert outputs == ["exported"] * 3
    # What was dropped is reported once, with the total, not once per span or batch.
    (report,) = [r.getMessage() for r in caplog.records if r.name == "callscope" and "not exported" in r.getMessage()]
    assert report.startswith("callscope: 9 span(s) were not exported: 9 not sent because the collector refused connections")
    assert chain_s < 0.5, f"the chain waited on the collector: {chain_s:.2f}s"
    assert shutdown_s < EXPORT_TIMEOUT_S + 1.0, f"shutdown took {shutdown_s:.2f}s"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_collector_blocks_nothing(
    hanging_port: int, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str
) -> None:
    chain_s, shutdown_s, outputs = _run_against_a_broken_collector(
        otlp_env, traced, f"http://127.0.0.1:{hanging_port}", protocol
    )
    assert outputs == ["exported"] * 3
    assert chain_s < 0.5, f"the chain waited on the collector: {chain_s:.2f}s"
    assert shutdown_s < EXPORT_TIMEOUT_S + 1.0, f"shutdown took {shutdown_s:.2f}s"


def test_configure_then_instrument_exports_through_the_global_provider(
    rotel_receiver: Receiver, otlp_env: pytest.MonkeyPatch
) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import _internal as metrics_api
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.util._once import Once

    def reset_global() -> None:
        # The API sets the global providers once per process; the test must leave none behind
        # (configure() also sets a meter provider, since an endpoint is set).
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        meter_provider = metrics.get_meter_provider()
        if isinstance(meter_provider, MeterProvider):
            meter_provider.shutdown()
        metrics_api._METER_PROVIDER_SET_ONCE = Once()
        metrics_api._METER_PROVIDER = None

    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rotel_receiver.http_base)
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    otlp_env.delenv("OTEL_SERVICE_NAME")
    reset_global()
    try:
        provider = callscope.configure(service_name="configured-app")
        callscope.instrument()
        try:
            _chain().invoke({"q": "global"})
        finally:
            callscope.uninstrument()
        assert isinstance(provider, TracerProvider)
        provider.shutdown()
    finally:
        reset_global()
    rows = rotel_receiver.wait_for(3)
    assert {row["service"] for row in rows} == {"configured-app"}
    assert len({row["trace_id"] for row in rows}) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shutdown_is_bounded_once_not_per_queued_batch(
    hanging_port: int, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str
) -> None:
    # 2000 spans are four export batches; the SDK's own shutdown spends a timeout on each.
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hanging_port}")
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    provider = build_tracer_provider()
    traced.append(provider)
    tracer = provider.get_tracer("tests.integration")
    for _ in range(2000):
        with tracer.start_as_current_span("queued"):
            pass
    started = time.monotonic()
    provider.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed < EXPORT_TIMEOUT_S + 0.8, f"shutdown took {elapsed:.2f}s"


def _otlp_exporter(receiver: Receiver, protocol: str):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter

        return GRPCExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter

    return HTTPExporter(endpoint=receiver.http_traces_endpoint, timeout=EXPORT_TIMEOUT_S)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_poisoned_run_does_not_cost_its_batch(rotel_receiver: Receiver, protocol: str) -> None:
    # Normal runs and one run whose every string LangChain hands over holds lone surrogates (the
    # halves of a split emoji), all in ONE export batch of the SDK's BatchSpanProcessor: the
    # OTLP encoder fails a whole batch on one unencodable span name or status.
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from langchain_core.runnables import RunnableLambda

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # Nothing leaves before shutdown, so every span is in the same batch.
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(rotel_receiver, protocol), schedule_delay_millis=60_000))
    callscope.instrument(tracer_provider=provider, capture_content=True)
    try:
        def step(text: str) -> str:
            if "\ud800" in text:
                raise ValueError(f"provider said: {text}")
            return text

        normal = RunnableLambda(step) | FakeListChatModel(responses=["fine"])
        for i in range(10):
            normal.invoke(f"question {i}")
        poisoned_model = FakeListChatModel(responses=["half an emoji \ud83d"], name="Model\udc00")
        poisoned = (RunnableLambda(lambda text: text).with_config(run_name="lambda \ud83d") | poisoned_model).with_config(
            run_name="poisoned \ud83d run", metadata={"ls_model_name": "model-\ud83d", "tenant": "t\udc00"}
        )
        poisoned.invoke("a question \ud83d\ude00 \ud83d")
        with pytest.raises(ValueError):
            RunnableLambda(step).with_config(run_name="failing \ud800").invoke("bad \ud800 input")
        for i in range(10, 20):
            normal.invoke(f"question {i}")
    finally:
        callscope.uninstrument()
    provider.shutdown()

    sent = {format(s.context.span_id, "016x"): s for s in memory.get_finished_spans()}
    assert len(sent) == 20 * 3 + 3 + 1
    received = {row["span_id"]: row for row in rotel_receiver.wait_for(len(sent))}
    assert set(received) == set(sent)  # every span arrived, the normal runs' too
    names = {row["name"] for row in received.values()}
    assert {"poisoned \ufffd run", "lambda \ufffd", "failing \ufffd"} <= names
    poisoned_root = next(row for row in received.values() if row["name"] == "poisoned \ufffd run")
    assert poisoned_root["attributes"]["callscope.input"] == '"a question \U0001F600 \ufffd"'
    failing = next(row for row in received.values() if row["name"] == "failing \ufffd")
    assert failing["attributes"]["error.type"] == "ValueError"
    assert not any("\ud800" <= ch <= "\udfff" for row in received.values() for ch in json.dumps(row, ensure_ascii=False))


def _loss_report(caplog: pytest.LogCaptureFixture) -> tuple[int, dict[str, int]]:
    """The one loss report: its total and its count per cause."""
    (report,) = [r.getMessage() for r in caplog.records if r.name == "callscope" and "not exported" in r.getMessage()]
    total = re.match(r"callscope: (\d+) span\(s\) were not exported: ", report)
    assert total, report
    causes = {
        cause: int(n)
        for n, cause in re.findall(
            r"(\d+) (dropped because the export queue was full|rejected or never answered|not sent because the collector refused|still unsent when shutdown gave up)",
            report,
        )
    }
    return int(total.group(1)), causes


def _end_spans(otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], endpoint: str, protocol: str, count: int) -> TracerProvider:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    provider = build_tracer_provider()
    traced.append(provider)
    tracer = provider.get_tracer("tests.integration")
    for _ in range(count):
        with tracer.start_as_current_span("lost"):
            pass
    return provider


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_lost_span_is_counted_once_by_cause_when_the_collector_refuses(
    dead_port: int, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The default 10 s timeout: the first batch's export then sits in the exporter's retry
    # back-off while the queue (2048) fills and the rest is dropped.
    otlp_env.delenv("OTEL_EXPORTER_OTLP_TIMEOUT")
    caplog.set_level(logging.WARNING, logger="callscope")
    provider = _end_spans(otlp_env, traced, f"http://127.0.0.1:{dead_port}", protocol, 3000)
    started = time.monotonic()
    provider.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"shutdown waited {elapsed:.2f}s on a collector that refuses connections"
    total, causes = _loss_report(caplog)
    assert total == 3000 == sum(causes.values()), causes
    queue_full = causes["dropped because the export queue was full"]
    assert 3000 - 2048 - 512 <= queue_full <= 3000 - 2048, causes
    assert causes["not sent because the collector refused"] >= 2048


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_lost_span_is_counted_once_by_cause_when_the_collector_hangs(
    hanging_port: int, otlp_env: pytest.MonkeyPatch, traced: list[TracerProvider], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callscope")
    provider = _end_spans(otlp_env, traced, f"http://127.0.0.1:{hanging_port}", protocol, 3000)
    started = time.monotonic()
    provider.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed < EXPORT_TIMEOUT_S + 0.8, f"shutdown took {elapsed:.2f}s"  # a silent collector keeps its bound
    total, causes = _loss_report(caplog)
    assert total == 3000 == sum(causes.values()), causes
    assert causes["dropped because the export queue was full"] > 0
    assert causes["still unsent when shutdown gave up"] > 0
