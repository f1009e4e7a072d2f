"""Export set-up from the standard ``OTEL_*`` environment: :func:`configure`.

callscope itself only uses the OpenTelemetry API; an application (or ``opentelemetry-instrument``)
owns the provider. :func:`configure` is for the application that has none yet: it builds one the
way the SDK would, from the environment, and never replaces a provider that is already set.

Everything about the network exporter is the SDK's: the OTLP exporter classes read
``OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,CERTIFICATE,INSECURE}``
themselves, and ``Resource.create()`` reads ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. This module only decides *whether* to export and over which
transport.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

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

    >>> import callscope
    >>> provider = callscope.configure(service_name="my-agent")  # doctest: +SKIP
    >>> callscope.instrument()  # the global provider, now the one configure() returned
    """
    with _configure_lock:
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider):
            _log.debug("callscope: a global tracer provider is already set; configure() leaves it as is")
            return current
        provider = build_tracer_provider(service_name=service_name, span_processors=span_processors)
        trace.set_tracer_provider(provider)
        return provider


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
        provider.add_span_processor(DeadlineBatchSpanProcessor(exporter, shutdown_timeout_s=_export_timeout_s()))
    return provider


class DeadlineBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` whose ``shutdown()`` gives up after ``shutdown_timeout_s``.

    The SDK's own waits up to 30 s, and against a collector that accepts connections but never
    answers, each queued batch of 512 spans costs a full exporter timeout (measured: 2000 queued
    spans, timeout 1 s, 4 s). Passing a deadline makes the wait the exporter timeout, once; spans
    still queued then are dropped, as they would be at any deadline.
    """

    def __init__(self, span_exporter: SpanExporter, *, shutdown_timeout_s: float) -> None:
        self._losses = _LossCountingExporter(span_exporter)
        super().__init__(self._losses)
        self._shutdown_timeout_ms = max(0.0, shutdown_timeout_s) * 1000
        self._reported = False

    def shutdown(self) -> None:
        # The SDK's BatchProcessor.shutdown takes the deadline; BatchSpanProcessor does not pass
        # one. If a later SDK moves that object, fall back to its default behaviour.
        inner = getattr(self, "_batch_processor", None)
        if inner is None or "timeout_millis" not in inspect.signature(inner.shutdown).parameters:
            super().shutdown()
        else:
            inner.shutdown(timeout_millis=self._shutdown_timeout_ms)
        self._report_losses(len(getattr(inner, "_queue", ())))

    def _report_losses(self, still_queued: int) -> None:
        # The SDK logs each failed batch (and each retry); the user is owed one sentence with the
        # total, whatever the number of batches or spans.
        lost = self._losses.failed + still_queued
        if lost and not self._reported:
            self._reported = True
            _log.warning(
                "callscope: %d span(s) were not exported: the OTLP collector rejected or never "
                "answered %d, and %d were still queued when shutdown gave up. Check that the "
                "collector at OTEL_EXPORTER_OTLP_ENDPOINT is running and reachable.",
                lost,
                self._losses.failed,
                still_queued,
            )


class _LossCountingExporter(SpanExporter):
    """Delegates to an exporter and counts the spans it failed to send."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:
            self._count(len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:
            self._count(len(spans))
        return result

    def _count(self, n: int) -> None:
        with self._lock:
            self.failed += n

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        # The SDK passes its remaining deadline only to exporters whose shutdown names it.
        if "timeout_millis" in inspect.signature(self._exporter.shutdown).parameters:
            self._exporter.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


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
    for name in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
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
