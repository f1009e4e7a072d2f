"""Export set-up from the standard ``OTEL_*`` environment: :func:`configure`.

callscope itself only uses the OpenTelemetry API; an application (or ``opentelemetry-instrument``)
owns the provider. :func:`configure` is for the application that has none yet: it builds one the
way the SDK would, from the environment, and never replaces a provider that is already set.

Everything about the network exporter is the SDK's: the OTLP exporter classes read
``OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,CERTIFICATE,INSECURE}``
themselves, and ``Resource.create()`` reads ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. This module only decides *whether* to export and over which
transport. Metrics follow the same rules with their own variables
(``OTEL_EXPORTER_OTLP_METRICS_*``, ``OTEL_METRICS_EXPORTER``); the periodic reader reads
``OTEL_METRIC_EXPORT_INTERVAL`` and ``…_TIMEOUT``, the exporter its temporality and histogram
aggregation preferences.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from callscope._bridge.delivery import DeadlineBatchSpanProcessor, RefusalAwareMetricReader
from callscope._bridge.metrics import global_meter_provider_is_set
from callscope._bridge.trace_file import add_trace_file_from_env

_log = logging.getLogger("callscope")

__all__ = ["configure"]

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
#: The opentelemetry-python default (the distro's too), unlike the spec's ``http/protobuf``:
#: ``OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317`` then works as the README shows.
DEFAULT_PROTOCOL = GRPC

#: The SDK exporters' default timeout, in seconds.
_DEFAULT_TIMEOUT_S = 10.0

_configure_lock = threading.Lock()


def configure(
    *,
    service_name: str | None = None,
    span_processors: Iterable[SpanProcessor] = (),
) -> trace.TracerProvider:
    """Return the global tracer provider, first building one from ``OTEL_*`` if there is none.

    If the application already set a global provider, it is returned untouched: nothing is
    added to it and it is never replaced. Otherwise a new SDK ``TracerProvider`` is built, set as
    the global one and returned:

    - its resource comes from ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``;
      ``service_name`` is used only when neither of them names the service, so operators can
      still rename it without a code change;
    - it exports over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
      ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_TRACES_EXPORTER``, if set,
      lists ``otlp``). The transport follows ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` /
      ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or ``http/protobuf``); headers,
      timeout, compression and TLS are read by the SDK's exporter itself;
    - the exporter sits behind a ``BatchSpanProcessor``, so a slow or dead collector never
      blocks a chain. ``provider.shutdown()`` (also run at exit) sends what is queued and
      returns within the exporter timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default)
      when the collector is down or hangs.

    ``span_processors`` are added to a newly built provider as well (e.g. a console or file
    exporter); they are ignored when the provider already existed. ``CALLSCOPE_TRACE_FILE``
    adds the trace file ``callscope tree`` reads (``callscope.instrument()`` adds it to a provider
    that already existed).

    Metrics likewise: when no global meter provider is set and ``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set (and ``OTEL_METRICS_EXPORTER``, if set,
    lists ``otlp``), an SDK ``MeterProvider`` with the same resource and the SDK's OTLP metric
    exporter behind a ``PeriodicExportingMetricReader`` becomes the global one, so that
    :func:`callscope.instrument` records GenAI metrics to it. With no endpoint none is set, and
    metrics cost nothing.

    >>> import callscope
    >>> provider = callscope.configure(service_name="my-agent")  # doctest: +SKIP
    >>> callscope.instrument()  # the global provider, now the one configure() returned
    """
    with _configure_lock:
        _configure_metrics(service_name)
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider):
            _log.debug("callscope: a global tracer provider is already set; configure() leaves it as is")
            return current
        provider = build_tracer_provider(service_name=service_name, span_processors=span_processors)
        trace.set_tracer_provider(provider)
        return provider


def _configure_metrics(service_name: str | None) -> None:
    if global_meter_provider_is_set():
        _log.debug("callscope: a global meter provider is already set; configure() leaves it as is")
        return
    exporter = otlp_metric_exporter_from_env()
    if exporter is not None:
        metrics.set_meter_provider(build_meter_provider(service_name=service_name, exporter=exporter))


def build_meter_provider(
    *,
    service_name: str | None = None,
    metric_readers: Iterable[MetricReader] = (),
    exporter: MetricExporter | None = None,
) -> MeterProvider:
    """Build, without making it global, a meter provider with ``metric_readers`` and, when given
    an ``exporter``, a ``PeriodicExportingMetricReader`` in front of it."""
    readers = list(metric_readers)
    if exporter is not None:
        readers.append(RefusalAwareMetricReader(exporter, endpoint=otlp_metrics_endpoint_from_env()))
    return MeterProvider(resource=resource_from_env(service_name), metric_readers=readers)


def otlp_metrics_endpoint_from_env() -> str | None:
    """The OTLP endpoint variable that is set (metrics-specific first), or ``None``."""
    for name in (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def otlp_metric_exporter_from_env() -> MetricExporter | None:
    """The SDK's OTLP metric exporter, or ``None`` when no endpoint variable is set (metrics or
    general) or ``OTEL_METRICS_EXPORTER`` does not list ``otlp``. The transport follows
    ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
    if otlp_metrics_endpoint_from_env() is None:
        return None
    exporters = os.environ.get(OTEL_METRICS_EXPORTER, "").strip().lower()
    if exporters and "otlp" not in {part.strip() for part in exporters.split(",")}:
        _log.debug("callscope: %s=%s, so no OTLP metric exporter", OTEL_METRICS_EXPORTER, exporters)
        return None
    # Constructed with no arguments, as the span exporters are: each reads its settings from the
    # environment as the SDK documents.
    if _protocol_from(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL) == HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter

        return HTTPMetricExporter()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter

    return GRPCMetricExporter()


def build_tracer_provider(
    *,
    service_name: str | None = None,
    span_processors: Iterable[SpanProcessor] = (),
) -> TracerProvider:
    """Build, without making it global, the provider :func:`configure` would set."""
    provider = TracerProvider(resource=resource_from_env(service_name))
    for processor in span_processors:
        provider.add_span_processor(processor)
    add_trace_file_from_env(provider)
    exporter = otlp_exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(
            DeadlineBatchSpanProcessor(exporter, shutdown_timeout_s=_export_timeout_s(), endpoint=otlp_endpoint_from_env())
        )
    return provider


def resource_from_env(service_name: str | None = None) -> Resource:
    """``Resource.create()``, with ``service_name`` as the fallback when the env names none."""
    resource = Resource.create()
    if service_name and not _env_names_service():
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def otlp_endpoint_from_env() -> str | None:
    """The OTLP endpoint variable that is set (traces-specific first), or ``None``."""
    for name in (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def otlp_protocol_from_env() -> str:
    """``grpc`` or ``http/protobuf``; an unsupported value warns and falls back to ``grpc``."""
    return _protocol_from(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)


def _protocol_from(*names: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip().lower()
        if not value:
            continue
        if value in (GRPC, HTTP_PROTOBUF):
            return value
        _log.warning(
            "%s=%r is not supported by the Python OTLP exporters (use grpc or http/protobuf); using %s",
            name,
            value,
            DEFAULT_PROTOCOL,
        )
        return DEFAULT_PROTOCOL
    return DEFAULT_PROTOCOL


def otlp_exporter_from_env() -> SpanExporter | None:
    """The SDK's OTLP span exporter for the configured protocol, or ``None`` when no endpoint
    variable is set or ``OTEL_TRACES_EXPORTER`` does not list ``otlp``."""
    if otlp_endpoint_from_env() is None:
        return None
    exporters = os.environ.get(OTEL_TRACES_EXPORTER, "").strip().lower()
    if exporters and "otlp" not in {part.strip() for part in exporters.split(",")}:
        _log.debug("callscope: %s=%s, so no OTLP exporter", OTEL_TRACES_EXPORTER, exporters)
        return None
    # Constructed with no arguments on purpose: each exporter then reads endpoint, headers,
    # timeout, compression and TLS settings from the environment exactly as the SDK documents.
    if otlp_protocol_from_env() == HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter

        return HTTPExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter

    return GRPCExporter()


def _export_timeout_s() -> float:
    """The exporter's timeout as the SDK exporters read it: seconds, traces-specific first."""
    for name in (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT):
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        try:
            return float(value)
        except ValueError:
            _log.warning("%s=%r is not a number of seconds; bounding shutdown at %ss", name, value, _DEFAULT_TIMEOUT_S)
            return _DEFAULT_TIMEOUT_S
    return _DEFAULT_TIMEOUT_S


def _env_names_service() -> bool:
    if os.environ.get("OTEL_SERVICE_NAME", "").strip():
        return True
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == SERVICE_NAME and value.strip():
            return True
    return False
