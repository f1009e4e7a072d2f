"""configure() and the environment-driven pieces behind it (no network: see
tests/integration/test_otlp_receiver.py for export to a real receiver)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import callscope
from callscope._bridge.export import otlp_exporter_from_env, otlp_metric_exporter_from_env, otlp_protocol_from_env, resource_from_env
from callscope._bridge.metrics import global_meter_provider_is_set

_OTEL_VARS = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def _reset_global_provider() -> None:
    # The API allows setting the global provider once per process; tests need it back.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def no_global_provider() -> Iterator[None]:
    _reset_global_provider()
    yield
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.shutdown()
    _reset_global_provider()


def test_configure_builds_and_sets_a_provider_when_there_is_none(no_global_provider: None) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    provider = callscope.configure(service_name="my-agent")
    assert isinstance(provider, TracerProvider)
    assert trace.get_tracer_provider() is provider
    assert provider.resource.attributes["service.name"] == "my-agent"


def test_configure_never_replaces_an_application_provider(no_global_provider: None) -> None:
    app_provider = TracerProvider()
    memory = InMemorySpanExporter()
    app_provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(app_provider)
    extra = InMemorySpanExporter()
    returned = callscope.configure(service_name="ignored", span_processors=[SimpleSpanProcessor(extra)])
    assert returned is app_provider
    assert trace.get_tracer_provider() is app_provider
    with app_provider.get_tracer("t").start_as_current_span("s"):
        pass
    assert [s.name for s in memory.get_finished_spans()] == ["s"]
    assert extra.get_finished_spans() == ()  # not attached to the app's provider
    assert "service.name" not in app_provider.resource.attributes or (
        app_provider.resource.attributes["service.name"] != "ignored"
    )


def test_configure_twice_returns_the_same_provider(no_global_provider: None) -> None:
    first = callscope.configure()
    assert callscope.configure() is first


def test_extra_span_processors_are_attached_to_a_new_provider(no_global_provider: None) -> None:
    memory = InMemorySpanExporter()
    provider = callscope.configure(span_processors=[SimpleSpanProcessor(memory)])
    with trace.get_tracer("t").start_as_current_span("through-the-global"):
        pass
    assert [s.name for s in memory.get_finished_spans()] == ["through-the-global"]
    assert isinstance(provider, TracerProvider)


def test_env_service_name_wins_over_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert resource_from_env("from-code").attributes["service.name"] == "from-env"


def test_service_name_in_resource_attributes_wins_over_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.name=from-attrs")
    resource = resource_from_env("from-code")
    assert resource.attributes["service.name"] == "from-attrs"
    assert resource.attributes["deployment.environment"] == "ci"


def test_argument_applies_when_env_names_no_service() -> None:
    assert resource_from_env("from-code").attributes["service.name"] == "from-code"
    assert resource_from_env(None).attributes["service.name"].startswith("unknown_service")


def test_no_endpoint_means_no_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert otlp_exporter_from_env() is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, GRPCExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GRPCExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HTTPExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, HTTPExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "HTTP/Protobuf "}, HTTPExporter),
    ],
)
def test_protocol_picks_the_sdk_exporter(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: type) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = otlp_exporter_from_env()
    try:
        assert type(exporter) is expected
    finally:
        assert exporter is not None
        exporter.shutdown()


def test_traces_endpoint_alone_enables_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    exporter = otlp_exporter_from_env()
    assert isinstance(exporter, HTTPExporter)
    exporter.shutdown()


def test_traces_exporter_none_disables_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert otlp_exporter_from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    exporter = otlp_exporter_from_env()
    assert exporter is not None
    exporter.shutdown()


def test_unsupported_protocol_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, logger="callscope"):
        assert otlp_protocol_from_env() == "grpc"
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in caplog.text


def test_configure_is_public() -> None:
    assert "configure" in callscope.__all__
    assert callscope.configure.__doc__ and ">>>" in callscope.configure.__doc__


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, 10.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5"}, 2.5),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3"}, 3.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, 10.0),
    ],
)
def test_shutdown_deadline_follows_the_exporter_timeout(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], seconds: float
) -> None:
    from callscope._bridge.export import _export_timeout_s

    for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _export_timeout_s() == seconds


# --- the shutdown probe: only a refused connection shortens the wait -----------------------------


# --- metrics --------------------------------------------------------------------------------------


def _reset_global_meter_provider() -> None:
    from opentelemetry.metrics import _internal as metrics_api

    metrics_api._METER_PROVIDER_SET_ONCE = Once()
    metrics_api._METER_PROVIDER = None


@pytest.fixture
def no_global_providers(no_global_provider: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    _reset_global_meter_provider()
    yield
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        current.shutdown()
    _reset_global_meter_provider()


def test_configure_sets_an_otlp_meter_provider_when_an_endpoint_is_set(
    no_global_providers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert not global_meter_provider_is_set()
    callscope.configure(service_name="my-agent")
    provider = metrics.get_meter_provider()
    assert isinstance(provider, MeterProvider)
    # The same resource as the spans, so a backend joins the two.
    assert provider._sdk_config.resource.attributes["service.name"] == "my-agent"
    [reader] = provider._metric_readers  # the SDK exposes no public list of its readers
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert isinstance(reader._exporter, GRPCMetricExporter)


def test_configure_without_an_endpoint_sets_no_meter_provider(no_global_providers: None) -> None:
    callscope.configure()
    # Nothing to export to: the global stays unset, and callscope's metrics cost nothing.
    assert not global_meter_provider_is_set()


def test_configure_never_replaces_an_application_meter_provider(
    no_global_providers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    app_provider = MeterProvider()
    metrics.set_meter_provider(app_provider)
    callscope.configure()
    assert metrics.get_meter_provider() is app_provider


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, GRPCMetricExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HTTPMetricExporter),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
            HTTPMetricExporter,
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRICS_EXPORTER": "console,otlp"}, GRPCMetricExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRICS_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}, None),
    ],
)
def test_the_metric_exporter_follows_the_environment(
    no_global_providers: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: type | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = otlp_metric_exporter_from_env()
    try:
        assert type(exporter) is (expected or type(None))
    finally:
        if exporter is not None:
            exporter.shutdown()
