"""The OTLP/JSON lines trace file: the span exporter that writes it.

The format is the OpenTelemetry Collector ``file`` exporter's, which ``callscope tree`` reads
(``callscope._tools.otlp_json``): one ``ExportTraceServiceRequest`` per line, in the OTLP JSON
encoding, with trace and span ids as **hex** strings where ``google.protobuf.json_format``
writes bytes as base64 (open-telemetry/opentelemetry-proto#500), so ids are converted here.

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import BatchSpanProcessor
>>> provider = TracerProvider()
>>> provider.add_span_processor(BatchSpanProcessor(OTLPJsonLinesExporter("spans.jsonl")))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_log = logging.getLogger("callscope")

__all__ = ["OTLPJsonLinesExporter", "to_otlp_json"]

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
    """Appends each exported batch to ``path`` as one OTLP/JSON line.

    A write error is logged and reported as a failed export; it never raises into the
    processor. Lines are written whole under a lock, so concurrent batches never interleave.

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
            line = json.dumps(to_otlp_json(spans), separators=(",", ":"), ensure_ascii=False) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line)
        except Exception:
            _log.exception("callscope: could not write %d spans to %s", len(spans), self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # Every export opens, writes and closes the file: nothing is ever buffered here.
        return True
