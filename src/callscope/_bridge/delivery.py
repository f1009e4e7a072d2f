"""Delivery to the collector: what ``configure()`` exports through, and what it says it lost.

The SDK's ``BatchSpanProcessor`` batches and retries; what it does not do is bound its shutdown
by the exporter's own timeout, notice that nothing listens at the collector's address, or tell
the user how many spans were lost and why. ``DeadlineBatchSpanProcessor`` adds those three, and
nothing on the path of a span that is exported; ``RefusalAwareMetricReader`` does the same for
the last metrics at shutdown. A pipeline callscope did not build (``opentelemetry-instrument``'s,
an application's) gets the refusal check at exit only: ``give_up_on_refused_endpoint_at_exit``.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import weakref
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

_log = logging.getLogger("callscope")


class RefusalAwareMetricReader(PeriodicExportingMetricReader):
    """A ``PeriodicExportingMetricReader`` whose ``shutdown()`` (at exit, too) skips the last
    export when the collector refuses connections: the SDK's would hold the process for the
    exporter's retries (measured: 7 s against a closed port), as ``DeadlineBatchSpanProcessor``
    explains for spans. A collector that hangs is bounded by the exporter's own timeout."""

    def __init__(self, exporter: MetricExporter, *, endpoint: str | None) -> None:
        super().__init__(exporter)
        self._endpoint = endpoint

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._endpoint and refuses_connections(self._endpoint):
            timeout_millis = 0.0
            _warn_metrics_not_sent()
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


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
        if pending and self._endpoint and refuses_connections(self._endpoint):
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
        _warn_spans_not_exported(lost, "; ".join(causes))


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


def give_up_on_refused_endpoint_at_exit(provider: Any, endpoint: str | None) -> None:
    """At exit, before ``provider`` flushes: if nothing listens at ``endpoint`` (the OTLP endpoint
    the environment names), the OTLP exporters behind its SDK ``BatchSpanProcessor``s fail their
    last exports at once, and one line says how many spans could not be sent. They cannot be
    delivered anyway; the SDK's exporter would only retry until its timeout (measured: 8 s for a
    one-chain script under ``opentelemetry-instrument``, 0.7 s without spans to send), and say
    nothing of the count. Register it after the provider exists: atexit runs it first."""
    if endpoint is not None:
        atexit.register(_give_up_if_refused, weakref.ref(provider), endpoint)


def give_up_on_refused_metrics_at_exit(meter_provider: Any, endpoint: str | None) -> None:
    """The same for the last metrics of ``meter_provider``'s periodic OTLP readers."""
    if endpoint is not None:
        atexit.register(_skip_final_metrics_if_refused, weakref.ref(meter_provider), endpoint)


def forget_exit_checks() -> None:
    """Undo both registrations above (``uninstrument()``)."""
    atexit.unregister(_give_up_if_refused)
    atexit.unregister(_skip_final_metrics_if_refused)


def _give_up_if_refused(provider_ref: Any, endpoint: str) -> None:
    try:
        # The SDK keeps its processors privately; a later SDK that moves them just waits as before.
        processors = getattr(getattr(provider_ref(), "_active_span_processor", None), "_span_processors", ())
        batchers = [p for p in processors if type(p) is BatchSpanProcessor and _is_otlp(p.span_exporter)]
        if not batchers or not refuses_connections(endpoint):
            return
        unsent = 0
        for processor in batchers:
            unsent += len(getattr(getattr(processor, "_batch_processor", None), "_queue", None) or ())
            _fail_exports(processor.span_exporter, SpanExportResult.FAILURE)
        if unsent:
            _warn_spans_not_exported(unsent, "not sent because the collector refused connections, so shutdown did not wait")
    except Exception:  # at exit, whatever the SDK's shape: never a traceback from here
        _log.debug("callscope: could not check the OTLP endpoint at exit", exc_info=True)


def _skip_final_metrics_if_refused(provider_ref: Any, endpoint: str) -> None:
    try:
        readers = getattr(provider_ref(), "_metric_readers", ())
        exporters = [getattr(r, "_exporter", None) for r in readers if type(r) is PeriodicExportingMetricReader]
        exporters = [exporter for exporter in exporters if _is_otlp(exporter)]
        if not exporters or not refuses_connections(endpoint):
            return
        for exporter in exporters:
            _fail_exports(exporter, MetricExportResult.FAILURE)
        _warn_metrics_not_sent()
    except Exception:
        _log.debug("callscope: could not check the OTLP endpoint at exit", exc_info=True)


def _warn_spans_not_exported(lost: int, causes: str) -> None:
    # The endpoint itself is not repeated: its URL may carry credentials.
    _log.warning(
        "callscope: %d span(s) were not exported: %s. Check that the OTLP collector at "
        "OTEL_EXPORTER_OTLP_ENDPOINT is running and reachable.",
        lost,
        causes,
    )


def _warn_metrics_not_sent() -> None:
    # Not "not exported": that sentence is the span report's, one line for all spans.
    _log.warning(
        "callscope: the last metrics were not sent because the collector refused connections; "
        "check that the OTLP collector at OTEL_EXPORTER_OTLP_ENDPOINT is running and reachable."
    )


def _fail_exports(exporter: Any, failure: Any) -> None:
    # This exporter instance only, at exit: its last exports fail at once instead of retrying a
    # refused connection; the provider then shuts it down as usual.
    exporter.export = functools.partial(_refused, failure)


def _refused(failure: Any, *args: Any, **kwargs: Any) -> Any:
    return failure


def _is_otlp(exporter: Any) -> bool:
    return exporter is not None and type(exporter).__module__.startswith("opentelemetry.exporter.otlp.")


#: How long the shutdown probe waits for a connection: a refusal comes back within a round trip.
_PROBE_TIMEOUT_S = 0.25


def refuses_connections(endpoint: str) -> bool:
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
