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

import inspect
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

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
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from callscope._bridge.metrics import global_meter_provider_is_set

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
    exporter); they are ignored when the provider already existed.

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


class RefusalAwareMetricReader(PeriodicExportingMetricReader):
    """A ``PeriodicExportingMetricReader`` whose ``shutdown()`` (at exit, too) skips the last
    export when the collector refuses connections: the SDK's would hold the process for the
    exporter's retries (measured: 7 s against a closed port), as ``DeadlineBatchSpanProcessor``
    explains for spans. A collector that hangs is bounded by the exporter's own timeout."""

    def __init__(self, exporter: MetricExporter, *, endpoint: str | None) -> None:
        super().__init__(exporter)
        self._endpoint = endpoint

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._endpoint and _refuses_connections(self._endpoint):
            timeout_millis = 0.0
            # Not "not exported": that sentence is the span report's, one line for all spans.
            _log.warning(
                "callscope: the last metrics were not sent because the collector refused connections; "
                "check that the OTLP collector at OTEL_EXPORTER_OTLP_ENDPOINT is running and reachable."
            )
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


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
    exporter = otlp_exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(
            DeadlineBatchSpanProcessor(exporter, shutdown_timeout_s=_export_timeout_s(), endpoint=otlp_endpoint_from_env())
        )
    return provider


class DeadlineBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` whose ``shutdown()`` is bounded once and says what it lost.

    - The SDK's own shutdown waits up to 30 s, and against a collector that accepts connections
      but never answers, each queued batch of 512 spans costs a full exporter timeout (measured:
      2000 queued spans, timeout 1 s, 4 s). Here the wait is the exporter timeout, once.
    - When the collector *refuses* connections (nothing listens at the endpoint), nothing queued
      can be delivered, and the exporter would only retry until its timeout: shutdown then gives
      up at once instead of holding the process for 10 s.
    - Every span it lost is counted by cause (the export queue was full, the collector rejected
      or never answered the export, still unsent when shutdown gave up) and reported once.
    """

    def __init__(self, span_exporter: SpanExporter, *, shutdown_timeout_s: float, endpoint: str | None = None) -> None:
        self._losses = _LossCountingExporter(span_exporter)
        super().__init__(self._losses)
        self._shutdown_timeout_ms = max(0.0, shutdown_timeout_s) * 1000
        self._endpoint = endpoint
        self._closing = self._reported = self._refused = False
        self._lock = threading.Lock()
        self.dropped_queue_full = 0
        inner = getattr(self, "_batch_processor", None)
        # The SDK's batcher drops the oldest span when a span ends with the queue full (it logs
        # "Queue full, dropping Span." once and counts nothing readable); on_end makes the same
        # check so the loss is counted. A later SDK without these fields goes uncounted.
        self._queue: Any = getattr(inner, "_queue", None)
        self._max_queue_size: int = getattr(inner, "_max_queue_size", 0) or 0
        self._emit = getattr(inner, "emit", None) if self._queue is not None and self._max_queue_size else None

    def on_end(self, span: ReadableSpan) -> None:
        emit = self._emit
        if emit is None:
            super().on_end(span)
            return
        # What BatchSpanProcessor.on_end does, plus one len() per span; the lock is taken only
        # for a span that is about to be dropped.
        if not (span.context and span.context.trace_flags.sampled):
            return
        if len(self._queue) >= self._max_queue_size and not self._closing:
            with self._lock:
                self.dropped_queue_full += 1
        emit(span)

    def shutdown(self) -> None:
        if self._closing:
            return  # the provider's explicit shutdown and its atexit hook both land here
        inner = getattr(self, "_batch_processor", None)
        self._closing = True
        pending = len(self._queue or ()) + self._losses.in_flight
        timeout_ms = self._shutdown_timeout_ms
        if pending and self._endpoint and _refuses_connections(self._endpoint):
            timeout_ms = 0.0
            self._refused = True
        # The SDK's BatchProcessor.shutdown takes the deadline; BatchSpanProcessor does not pass
        # one. If a later SDK moves that object, fall back to its default behaviour.
        if inner is None or "timeout_millis" not in inspect.signature(inner.shutdown).parameters:
            super().shutdown()
        else:
            inner.shutdown(timeout_millis=timeout_ms)
        self._report_losses(len(self._queue or ()))

    def _report_losses(self, queued: int) -> None:
        # The SDK logs each failed batch, each retry and the first full queue; the user is owed
        # one sentence with the total and its causes, whatever the number of batches or spans.
        if self._reported:
            return
        self._reported = True
        with self._lock:
            dropped = self.dropped_queue_full
        # One snapshot: a batch still being sent when shutdown gave up may fail a moment later,
        # and must count once, as unsent, not also as failed.
        failed, in_flight = self._losses.snapshot()
        unsent = queued + in_flight
        lost = dropped + failed + unsent
        if not lost:
            return
        causes = []
        if dropped:
            causes.append(f"{dropped} dropped because the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE={self._max_queue_size})")
        if failed:
            causes.append(f"{failed} rejected or never answered by the collector")
        if unsent and self._refused:
            causes.append(f"{unsent} not sent because the collector refused connections, so shutdown did not wait")
        elif unsent:
            causes.append(f"{unsent} still unsent when shutdown gave up after {self._shutdown_timeout_ms / 1000:g}s")
        # The endpoint itself is not repeated: its URL may carry credentials.
        _log.warning(
            "callscope: %d span(s) were not exported: %s. Check that the OTLP collector at "
            "OTEL_EXPORTER_OTLP_ENDPOINT is running and reachable.",
            lost,
            "; ".join(causes),
        )


class _LossCountingExporter(SpanExporter):
    """Delegates to an exporter and counts the spans it failed to send, and those it is sending."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self.failed = 0
        #: Spans handed to the exporter and not yet answered (the batcher exports one batch at a time).
        self.in_flight = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.in_flight = len(spans)
        try:
            result = self._exporter.export(spans)
        except Exception:
            self._settle(len(spans), failed=True)
            raise
        self._settle(len(spans), failed=result is not SpanExportResult.SUCCESS)
        return result

    def _settle(self, n: int, *, failed: bool) -> None:
        with self._lock:
            self.in_flight = 0
            if failed:
                self.failed += n

    def snapshot(self) -> tuple[int, int]:
        """``(failed, in_flight)`` read together, so no batch is in both."""
        with self._lock:
            return self.failed, self.in_flight

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        # The SDK passes its remaining deadline only to exporters whose shutdown names it.
        if "timeout_millis" in inspect.signature(self._exporter.shutdown).parameters:
            self._exporter.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


#: How long the shutdown probe waits for a connection: a refusal comes back within a round trip.
_PROBE_TIMEOUT_S = 0.25


def _refuses_connections(endpoint: str) -> bool:
    """True only when a TCP connection to the collector's address is refused: nothing listens,
    so no retry within the timeout can succeed. Anything else (accepted, timed out, no explicit
    port, a proxy in the way, a Unix socket) leaves the decision to the exporter's timeout."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        return False
    if url.scheme not in ("http", "https", "grpc") or not host or port is None or _proxied(host):
        return False
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _proxied(host: str) -> bool:
    # gRPC and requests both honour proxy variables; through a proxy, a refused direct
    # connection says nothing about the collector.
    if os.environ.get("grpc_proxy") or os.environ.get("GRPC_PROXY"):
        return True
    return bool(getproxies()) and not proxy_bypass(host)


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
