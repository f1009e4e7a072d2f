"""OTLP/JSON lines: a span exporter that writes them, and a reader for them and for Jaeger.

The format is the OpenTelemetry Collector ``file`` exporter's: one ``ExportTraceServiceRequest``
per line, ``{"resourceSpans": [...]}``, in the OTLP JSON encoding. That encoding is protobuf's
JSON mapping with one exception that matters: trace and span ids are **hex** strings, where
``google.protobuf.json_format`` writes bytes as base64. Ids are converted explicitly on the way
out, and the reader accepts both forms on the way in (open-telemetry/opentelemetry-proto#500).

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import BatchSpanProcessor
>>> provider = TracerProvider()
>>> provider.add_span_processor(BatchSpanProcessor(OTLPJsonLinesExporter("spans.jsonl")))  # doctest: +SKIP
>>> read_spans_file("spans.jsonl").spans[0].name  # doctest: +SKIP
'RunnableSequence'
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from callscope._exceptions import CallscopeError

_log = logging.getLogger("callscope")

__all__ = [
    "OTLPJsonLinesExporter",
    "SpanRecord",
    "SpansRead",
    "TraceDataError",
    "parse_document",
    "read_spans_file",
    "read_spans_lines",
    "to_otlp_json",
]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_HEX = re.compile(r"[0-9a-fA-F]+")
# Status and kind arrive as ints from OTLP/JSON and as enum names from some gateways.
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_STATUS_LABELS = {0: "UNSET", 1: "OK", 2: "ERROR"}


class TraceDataError(CallscopeError):
    """Raised when trace data cannot be read at all: a missing or unreadable file, or content
    with no OTLP/JSON in it. The message names the problem and the fix."""


# --- writing ----------------------------------------------------------------------------------


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


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span as read back from OTLP/JSON: just what the tree renderer needs."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: str = "UNSET"  # UNSET, OK or ERROR
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    service_name: str | None = None
    #: The instrumentation scope that made the span (``callscope`` for callscope's own).
    scope_name: str | None = None
    #: The attributes of its ``callscope.handler.failed`` events (another handler raised from
    #: one of the run's callbacks); other events are not kept.
    failures: tuple[Mapping[str, Any], ...] = ()

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass(slots=True)
class SpansRead:
    """What a read produced: the spans, and how much of the input had to be skipped."""

    spans: list[SpanRecord] = field(default_factory=list)
    lines: int = 0
    skipped_lines: int = 0
    skipped_spans: int = 0
    problems: list[str] = field(default_factory=list)

    def _skip_line(self, number: int, why: str) -> None:
        self.skipped_lines += 1
        if len(self.problems) < 5:
            self.problems.append(f"line {number}: {why}")


def read_spans_file(path: str | os.PathLike[str]) -> SpansRead:
    """Read an OTLP/JSON lines file (or one OTLP/JSON document, e.g. a saved Jaeger response).

    Lines that are not OTLP/JSON are skipped and counted. Raises :class:`TraceDataError` when the
    file cannot be read or nothing in it is OTLP/JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceDataError(f"{path}: no such file; run `callscope demo` to write one, or pass the right path") from None
    except IsADirectoryError:
        raise TraceDataError(f"{path} is a directory; pass an OTLP/JSON lines file") from None
    except UnicodeDecodeError:
        raise TraceDataError(f"{path} is not text; pass an OTLP/JSON lines file") from None
    except OSError as error:
        raise TraceDataError(f"cannot read {path} ({error.strerror}); check its permissions") from None
    read = read_spans_lines(text.splitlines())
    if read.lines and read.skipped_lines == read.lines and text.lstrip().startswith("{"):
        # Not JSON lines, but maybe one pretty-printed document (a saved Jaeger API response).
        try:
            whole = parse_document(json.loads(text))
        except (ValueError, TraceDataError):
            pass
        else:
            whole.lines = 1
            return whole
    if read.lines == 0:
        raise TraceDataError(f"{path} is empty; point at a file written by `callscope demo` or a collector's file exporter")
    if read.skipped_lines == read.lines:
        raise TraceDataError(
            f"{path} is not OTLP/JSON ({read.problems[0]}); "
            "pass a file written by `callscope demo` or the collector's file exporter"
        )
    return read


def read_spans_lines(lines: Iterable[str]) -> SpansRead:
    """Parse OTLP/JSON lines; blank lines are ignored, bad ones skipped and counted."""
    read = SpansRead()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        read.lines += 1
        try:
            document = json.loads(line)
        except ValueError as error:
            read._skip_line(number, f"not JSON ({error.msg}; truncated?)")
            continue
        try:
            parsed = parse_document(document)
        except TraceDataError as error:
            read._skip_line(number, str(error))
            continue
        read.spans.extend(parsed.spans)
        read.skipped_spans += parsed.skipped_spans
    return read


def parse_document(document: Any) -> SpansRead:
    """Parse one OTLP/JSON object: ``{"resourceSpans": [...]}``, or Jaeger v2's
    ``/api/v3/traces/{id}`` answer ``{"result": {"resourceSpans": [...]}}``."""
    if isinstance(document, Mapping) and isinstance(document.get("result"), Mapping):
        document = document["result"]
    if not isinstance(document, Mapping) or not isinstance(document.get("resourceSpans"), list):
        raise TraceDataError("no resourceSpans list")
    read = SpansRead(lines=1)
    for resource_spans in document["resourceSpans"]:
        if not isinstance(resource_spans, Mapping):
            read.skipped_spans += 1
            continue
        resource = resource_spans.get("resource")
        resource_attributes = _attributes(resource.get("attributes") if isinstance(resource, Mapping) else None)
        service = resource_attributes.get("service.name")
        for scope_spans in _list(resource_spans.get("scopeSpans")):
            if not isinstance(scope_spans, Mapping):
                read.skipped_spans += 1
                continue
            scope = scope_spans.get("scope")
            scope_name = scope.get("name") if isinstance(scope, Mapping) else None
            for span in _list(scope_spans.get("spans")):
                record = _span_record(
                    span, service if isinstance(service, str) else None, scope_name if isinstance(scope_name, str) else None
                )
                if record is None:
                    read.skipped_spans += 1
                else:
                    read.spans.append(record)
    return read


def _span_record(span: Any, service: str | None, scope_name: str | None) -> SpanRecord | None:
    if not isinstance(span, Mapping):
        return None
    trace_id = _id(span.get("traceId"), 16)
    span_id = _id(span.get("spanId"), 8)
    if trace_id is None or span_id is None:
        return None
    parent_id = _id(span.get("parentSpanId"), 8)
    status = span.get("status") if isinstance(span.get("status"), Mapping) else {}
    try:
        start_ns = int(span.get("startTimeUnixNano", 0))
        end_ns = int(span.get("endTimeUnixNano", start_ns))
    except (TypeError, ValueError):
        return None
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=str(span.get("name", "")),
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=_status(status.get("code")),
        status_message=str(status.get("message", "")),
        attributes=_attributes(span.get("attributes")),
        service_name=service,
        scope_name=scope_name,
        failures=_failures(span.get("events")),
    )


_FAILURE_EVENT = "callscope.handler.failed"
_MAX_FAILURES_PER_SPAN = 16


def _failures(events: Any) -> tuple[Mapping[str, Any], ...]:
    found: list[Mapping[str, Any]] = []
    for event in _list(events):
        if isinstance(event, Mapping) and event.get("name") == _FAILURE_EVENT:
            found.append(_attributes(event.get("attributes")))
            if len(found) >= _MAX_FAILURES_PER_SPAN:
                break
    return tuple(found)


def _id(value: Any, size: int) -> str | None:
    """A hex id from either encoding: hex is ``2 * size`` chars, base64 ``4 * ceil(size / 3)``."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 2 * size and _HEX.fullmatch(value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != size:
            return None
    # An all-zero id means "none" (a root span's parentSpanId, in some encoders).
    return raw.hex() if any(raw) else None


def _status(code: Any) -> str:
    if isinstance(code, str):
        code = _STATUS_NAMES.get(code, code)
    try:
        return _STATUS_LABELS.get(int(code), "UNSET")
    except (TypeError, ValueError):
        return "UNSET"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attributes(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in _list(key_values):
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            out[item["key"]] = _any_value(item.get("value"))
    return out


def _any_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return None
    if "arrayValue" in value:
        inner = value["arrayValue"]
        return [_any_value(v) for v in _list(inner.get("values") if isinstance(inner, Mapping) else None)]
    if "kvlistValue" in value:
        inner = value["kvlistValue"]
        return _attributes(inner.get("values") if isinstance(inner, Mapping) else None)
    if "bytesValue" in value:
        return value["bytesValue"]
    return None
