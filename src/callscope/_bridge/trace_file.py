"""The OTLP/JSON lines trace file: the span exporter that writes it, and ``CALLSCOPE_TRACE_FILE``.

The format is the OpenTelemetry Collector ``file`` exporter's, which ``callscope tree`` reads
(``callscope._tools.otlp_json``): one ``ExportTraceServiceRequest`` per line, in the OTLP JSON
encoding, with trace and span ids as **hex** strings where ``google.protobuf.json_format``
writes bytes as base64 (open-telemetry/opentelemetry-proto#500), so ids are converted here.

An application that builds its own pipeline adds the exporter behind any span processor:

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import BatchSpanProcessor
>>> provider = TracerProvider()
>>> provider.add_span_processor(BatchSpanProcessor(OTLPJsonLinesExporter("spans.jsonl")))  # doctest: +SKIP

or sets ``CALLSCOPE_TRACE_FILE=spans.jsonl``: :func:`callscope.configure`, ``callscope.instrument()``
and the zero-code path (``opentelemetry-instrument``, ``callscope run``) then add it to the SDK
tracer provider they use, behind a ``BatchSpanProcessor``, once per provider and path.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from callscope.environment_variables import CALLSCOPE_TRACE_FILE

_log = logging.getLogger("callscope")

__all__ = ["OTLPJsonLinesExporter", "add_trace_file_from_env", "to_otlp_json"]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` as an OTLP/JSON object (hex ids, lowerCamelCase,
    enums as ints, 64-bit ints as strings)."""
    message = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in message.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _ids_base64_to_hex(span)
                for link in span.get("links", ()):
                    _ids_base64_to_hex(link)
    return message


def _ids_base64_to_hex(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()


class OTLPJsonLinesExporter(SpanExporter):
    """Appends each exported batch to ``path`` as one OTLP/JSON line, the file ``callscope tree``
    reads.

    Each batch is one ``write`` of one whole line to a file opened for appending, so batches from
    several threads, or from several processes sharing the file (a server's workers, pytest-xdist),
    never interleave. Nothing is buffered here: what ``export`` returned SUCCESS for is in the
    file. A write error (a missing directory, a full disk) is logged and reported as a failed
    export; it never raises into the processor. Behind a ``BatchSpanProcessor`` the writes happen
    on the processor's thread, never on the application's.

    >>> exporter = OTLPJsonLinesExporter("callscope-traces.jsonl")
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _log.warning("callscope: OTLP/JSON exporter already shut down; dropping %d spans", len(spans))
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = (json.dumps(to_otlp_json(spans), separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    written = os.write(descriptor, line)
                    while written < len(line):  # a regular file takes it whole; a pipe may not
                        written += os.write(descriptor, line[written:])
                finally:
                    os.close(descriptor)
        except Exception:
            _log.exception("callscope: could not write %d spans to %s", len(spans), self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # Every export opens, writes and closes the file: nothing is ever buffered here.
        return True


#: Providers the trace file was added to, by path: CALLSCOPE_TRACE_FILE is honoured by
#: configure(), instrument() and the zero-code path, and any two of them may see one provider.
_ADDED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_added_lock = threading.Lock()


def add_trace_file_from_env(provider: Any) -> Path | None:
    """Add ``CALLSCOPE_TRACE_FILE``'s exporter to ``provider`` behind a ``BatchSpanProcessor``,
    unless it is there already; return the file, or ``None`` when the variable is unset or the
    provider is not the SDK's (then a warning says how to get the file)."""
    value = os.environ.get(CALLSCOPE_TRACE_FILE, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().absolute()
    if not callable(getattr(provider, "add_span_processor", None)):
        _log.warning(
            "callscope: %s=%s is set, but the tracer provider %s is not the OpenTelemetry SDK's, so no "
            "trace file is written; call callscope.configure() before callscope.instrument(), or add "
            "callscope.OTLPJsonLinesExporter to your own SDK TracerProvider",
            CALLSCOPE_TRACE_FILE,
            value,
            type(provider).__name__,
        )
        return None
    with _added_lock:
        paths = _ADDED.setdefault(provider, set())
        if str(path) in paths:
            return path
        paths.add(str(path))
    provider.add_span_processor(BatchSpanProcessor(OTLPJsonLinesExporter(path)))
    return path
