"""OTLP/JSON lines, and Jaeger's OTLP/JSON documents, read back into spans for the tree.

The format is the OpenTelemetry Collector ``file`` exporter's: one ``ExportTraceServiceRequest``
per line, ``{"resourceSpans": [...]}``, in the OTLP JSON encoding. That encoding is protobuf's
JSON mapping with one exception that matters: trace and span ids are **hex** strings, where
``google.protobuf.json_format`` writes bytes as base64. The reader accepts both forms
(open-telemetry/opentelemetry-proto#500). It needs neither LangChain nor the OpenTelemetry SDK:
``callscope tree`` starts printing a large file's first trace without loading them. The writer
is the bridge's (``callscope._bridge.trace_file``).

>>> read_spans_file("callscope-traces.jsonl").spans[0].name  # doctest: +SKIP
'RunnableSequence'
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from callscope._attributes import HANDLER_FAILED_EVENT
from callscope._exceptions import CallscopeError

_log = logging.getLogger("callscope")

__all__ = [
    "SpanRecord",
    "SpansFile",
    "SpansRead",
    "TraceDataError",
    "TraceIndex",
    "parse_document",
    "read_spans_file",
    "read_spans_lines",
]

# Status and kind arrive as ints from OTLP/JSON and as enum names from some gateways.
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_STATUS_LABELS = {0: "UNSET", 1: "OK", 2: "ERROR"}
#: Where a span names its trace. Inside a JSON string a quote is escaped, so this literal only
#: matches a key; the literal prefix keeps the scan of a large file near memchr speed.
_TRACE_ID_KEY = re.compile(rb'"traceId":\s*"([^"]*)"')
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: The name ``-`` stands for standard input.
STDIN = "-"
_STDIN_NAME = "standard input"


class TraceDataError(CallscopeError):
    """Raised when trace data cannot be read at all: a missing or unreadable file, or content
    with no OTLP/JSON in it. The message names the problem and the fix."""


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
    """What a read produced: the spans, and how much of the input had to be skipped and why."""

    spans: list[SpanRecord] = field(default_factory=list)
    lines: int = 0
    skipped_lines: int = 0
    skipped_spans: int = 0
    problems: list[str] = field(default_factory=list)

    def _skip_line(self, number: int, why: str) -> None:
        self.skipped_lines += 1
        self._note(f"line {number}: {why}")

    def _skip_span(self, why: str) -> None:
        self.skipped_spans += 1
        self._note(why)

    def _note(self, problem: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(problem)

    def _merge(self, other: SpansRead, number: int | None = None) -> None:
        self.skipped_spans += other.skipped_spans
        for problem in other.problems:
            self._note(f"line {number}: {problem}" if number is not None else problem)


def read_spans_file(path: str | os.PathLike[str]) -> SpansRead:
    """Read all of an OTLP/JSON lines file (or one OTLP/JSON document, e.g. a saved Jaeger
    response). For large files, :class:`SpansFile` reads one trace at a time.

    Lines that are not OTLP/JSON are skipped and counted. Raises :class:`TraceDataError` when the
    file cannot be read or nothing in it is OTLP/JSON.
    """
    with SpansFile.open(path) as source:
        spans = [span for trace in source.traces() for span in trace]
        source.read.spans = spans
        return source.read


def read_spans_lines(lines: Iterable[str]) -> SpansRead:
    """Parse OTLP/JSON lines; blank lines are ignored, bad ones skipped and counted."""
    read = SpansRead()
    for number, line in enumerate(lines, start=1):
        _parse_line(line, number, read, read.spans.append)
    return read


def _parse_line(
    line: str | bytes,
    number: int,
    read: SpansRead,
    emit: Callable[[SpanRecord], None],
    wanted: Collection[str] | None = None,
    attribute_keys: Collection[str] | None = None,
) -> None:
    if isinstance(line, bytes) and line.startswith(_UTF8_BOM):
        line = line[len(_UTF8_BOM) :]
    elif isinstance(line, str) and line.startswith("\ufeff"):
        line = line[1:]
    if not line.strip():
        return
    read.lines += 1
    try:
        document = json.loads(line)
    except UnicodeDecodeError:
        read._skip_line(number, "not UTF-8 text")
        return
    except ValueError as error:
        read._skip_line(number, f"not JSON ({getattr(error, 'msg', error)}; truncated?)")
        return
    try:
        parsed = _parse(document, emit, wanted, attribute_keys)
    except TraceDataError as error:
        read._skip_line(number, str(error))
        return
    read._merge(parsed, number)


def parse_document(document: Any) -> SpansRead:
    """Parse one OTLP/JSON object: ``{"resourceSpans": [...]}``, or Jaeger v2's
    ``/api/v3/traces/{id}`` answer ``{"result": {"resourceSpans": [...]}}``."""
    spans: list[SpanRecord] = []
    read = _parse(document, spans.append)
    read.spans = spans
    read.lines = 1
    return read


def _parse(
    document: Any,
    emit: Callable[[SpanRecord], None],
    wanted: Collection[str] | None = None,
    attribute_keys: Collection[str] | None = None,
) -> SpansRead:
    if isinstance(document, dict) and isinstance(document.get("result"), Mapping):
        document = document["result"]
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        raise TraceDataError("no resourceSpans list")
    read = SpansRead()
    # Spans of one batch repeat their trace id and handler lists: one object each saves a big
    # trace's memory and the id conversions.
    shared: dict[Any, Any] = {}
    for resource_spans in document["resourceSpans"]:
        if not isinstance(resource_spans, dict):
            read._skip_span("a resourceSpans entry that is not an object")
            continue
        resource = resource_spans.get("resource")
        resource_attributes = _attributes(resource.get("attributes") if isinstance(resource, dict) else None)
        service = resource_attributes.get("service.name")
        service = service if isinstance(service, str) else None
        for scope_spans in _list(resource_spans.get("scopeSpans")):
            if not isinstance(scope_spans, dict):
                read._skip_span("a scopeSpans entry that is not an object")
                continue
            scope = scope_spans.get("scope")
            scope_name = scope.get("name") if isinstance(scope, dict) else None
            scope_name = scope_name if isinstance(scope_name, str) else None
            for span in _list(scope_spans.get("spans")):
                record = _span_record(span, service, scope_name, wanted, attribute_keys, shared)
                if isinstance(record, SpanRecord):
                    emit(record)
                elif record is not None:
                    read._skip_span(record)
    return read


@dataclass(slots=True)
class TraceIndex:
    """Where each trace is in a file: the lines holding its spans, from one fast scan."""

    #: Trace id (hex) -> numbers of the lines naming it, ascending; in order of first appearance.
    lines_by_trace: dict[str, list[int]]
    #: Non-blank lines in the file.
    lines: int

    @property
    def trace_ids(self) -> list[str]:
        return list(self.lines_by_trace)

    def newest(self, count: int) -> list[str]:
        """The ``count`` traces written last (a collector appends spans as they end)."""
        by_last_line = sorted(self.lines_by_trace, key=lambda trace: self.lines_by_trace[trace][-1])
        return by_last_line[-count:]


class SpansFile:
    """An OTLP/JSON lines file (or standard input), read one trace at a time.

    A Collector's ``file`` exporter writes spans as they end, so the spans of one trace can
    sit on several lines, among other traces' spans. :meth:`index` scans the file once for trace
    ids without parsing it; :meth:`traces` then parses it line by line and hands over each trace
    as soon as the last line naming it has been read, so memory holds the traces still open, not
    the file. Standard input is first copied to a temporary file, since it can be read only once.

    >>> with SpansFile.open("callscope-traces.jsonl") as source:  # doctest: +SKIP
    ...     for spans in source.traces():
    ...         print(spans[0].trace_id, len(spans))
    """

    def __init__(self, file: IO[bytes], name: str) -> None:
        self.file = file
        self.name = name
        #: Lines and spans skipped so far, and why (filled by :meth:`traces`).
        self.read = SpansRead()
        self._index: TraceIndex | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SpansFile:
        """Open ``path``, or standard input for ``-``; raises :class:`TraceDataError` naming the
        problem and the fix."""
        if str(path) == STDIN:
            return cls(_spool(sys.stdin.buffer), _STDIN_NAME)
        path = Path(path)
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise TraceDataError(
                f"{path}: no such file; run `callscope demo` to write one, or pass the right path"
            ) from None
        except IsADirectoryError:
            raise TraceDataError(f"{path} is a directory; pass an OTLP/JSON lines file") from None
        except OSError as error:
            raise TraceDataError(f"cannot read {path} ({error.strerror}); check its permissions") from None
        return cls(file, str(path))

    def __enter__(self) -> SpansFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def index(self) -> TraceIndex:
        """Scan the file for trace ids (no JSON parsing); raises :class:`TraceDataError` for a
        file that is empty or not text."""
        if self._index is not None:
            return self._index
        raw_lines: dict[bytes, list[int]] = {}
        lines = 0
        self.file.seek(0)
        head = self.file.read(4)
        if head.startswith(_UTF16_BOMS):
            raise TraceDataError(f"{self.name} is UTF-16 text; save it as UTF-8 (e.g. PowerShell's `-Encoding utf8`)")
        self.file.seek(0)
        for number, line in enumerate(self.file, start=1):
            if line.isspace() or line == _UTF8_BOM:
                continue
            lines += 1
            for raw in _TRACE_ID_KEY.findall(line):
                seen = raw_lines.get(raw)
                if seen is None:
                    raw_lines[raw] = [number]
                elif seen[-1] != number:
                    seen.append(number)
        if lines == 0:
            raise TraceDataError(
                f"{self.name} is empty; "
                + (
                    "pipe OTLP/JSON lines into it, e.g. `cat callscope-traces.jsonl | callscope tree -`"
                    if self.name == _STDIN_NAME
                    else "point at a file written by `callscope demo` or a collector's file exporter"
                )
            )
        by_trace: dict[str, list[int]] = {}
        for raw, numbers in raw_lines.items():
            trace_id = _id(raw.replace(b"\\/", b"/").decode("ascii", "replace"), 16)
            if trace_id is None:
                continue
            known = by_trace.get(trace_id)
            by_trace[trace_id] = numbers if known is None else sorted({*known, *numbers})
        self._index = TraceIndex(by_trace, lines)
        return self._index

    def traces(
        self, wanted: Collection[str] | None = None, *, attribute_keys: Collection[str] | None = None
    ) -> Iterator[list[SpanRecord]]:
        """The spans of each trace (or of the ``wanted`` trace ids), one trace at a time, in the
        order the file completes them. ``attribute_keys`` keeps only those span attributes (the
        rest of a big file's attributes would cost memory for nothing).

        Raises :class:`TraceDataError` once it is clear that nothing in the file is OTLP/JSON.
        """
        index = self.index()
        self.read = SpansRead()
        wanted = set(wanted) if wanted is not None else None
        # The last line naming each trace: after it, the trace is complete. Traces the scan did
        # not see (unusual formatting) are held to the end.
        done_after: dict[int, list[str]] = {}
        for trace_id, numbers in index.lines_by_trace.items():
            if wanted is None or trace_id in wanted:
                done_after.setdefault(numbers[-1], []).append(trace_id)
        lines_to_parse: set[int] | None = None
        if wanted is not None:
            lines_to_parse = {n for trace in wanted for n in index.lines_by_trace.get(trace, ())}
        open_traces: dict[str, list[SpanRecord]] = {}

        def emit(span: SpanRecord) -> None:
            spans = open_traces.get(span.trace_id)
            if spans is None:
                open_traces[span.trace_id] = [span]
            else:
                spans.append(span)

        self.file.seek(0)
        for number, line in enumerate(self.file, start=1):
            if lines_to_parse is None or number in lines_to_parse:
                _parse_line(line, number, self.read, emit, wanted, attribute_keys)
            for trace_id in done_after.get(number, ()):
                spans = open_traces.pop(trace_id, None)
                if spans:
                    yield spans
        if self.read.lines and self.read.skipped_lines == self.read.lines:
            yield from self._whole_document(wanted, attribute_keys)
            return
        yield from open_traces.values()

    def _whole_document(
        self, wanted: Collection[str] | None, attribute_keys: Collection[str] | None
    ) -> Iterator[list[SpanRecord]]:
        """Not JSON lines at all: maybe one pretty-printed document (a saved Jaeger response)."""
        self.file.seek(0)
        text = self.file.read()
        first_problem = self.read.problems[0]
        try:
            by_trace: dict[str, list[SpanRecord]] = {}
            read = _parse(
                json.loads(text.removeprefix(_UTF8_BOM)),
                lambda span: by_trace.setdefault(span.trace_id, []).append(span),
                wanted,
                attribute_keys,
            )
        except (ValueError, TraceDataError):
            raise TraceDataError(
                f"{self.name} is not OTLP/JSON ({first_problem}); "
                "pass a file written by `callscope demo` or the collector's file exporter"
            ) from None
        self.read = read
        read.lines = 1
        yield from by_trace.values()


def _spool(stream: IO[bytes]) -> IO[bytes]:
    """Standard input copied to a temporary file (deleted on close), which can be read twice."""
    spooled = tempfile.TemporaryFile()
    shutil.copyfileobj(stream, spooled, 1 << 20)
    spooled.seek(0)
    return spooled


def _span_record(
    span: Any,
    service: str | None,
    scope_name: str | None,
    wanted: Collection[str] | None = None,
    attribute_keys: Collection[str] | None = None,
    shared: dict[Any, Any] | None = None,
) -> SpanRecord | str | None:
    """The span, or why it is malformed, or None for a span of a trace not ``wanted``."""
    if not isinstance(span, dict):
        return "a span that is not an object"
    raw_trace_id = span.get("traceId")
    trace_id = shared.get(raw_trace_id) if shared is not None and isinstance(raw_trace_id, str) else None
    if trace_id is None:
        trace_id = _id(raw_trace_id, 16)
        if shared is not None and trace_id is not None:
            shared[raw_trace_id] = trace_id
    if trace_id is None:
        return f"a span with traceId {_shown(span.get('traceId'))} (not a 16-byte hex or base64 id)"
    if wanted is not None and trace_id not in wanted:
        return None
    span_id = _id(span.get("spanId"), 8)
    if span_id is None:
        return f"a span with spanId {_shown(span.get('spanId'))} (not an 8-byte hex or base64 id)"
    raw_parent = span.get("parentSpanId")
    parent_id = _id(raw_parent, 8) if raw_parent else None
    status = span.get("status")
    if status:
        status_code = _status(status.get("code")) if isinstance(status, dict) else "UNSET"
        status_message = str(status.get("message", "")) if isinstance(status, dict) else ""
    else:  # the common "status": {}
        status_code, status_message = "UNSET", ""
    try:
        start_ns = int(span.get("startTimeUnixNano", 0))
        end_ns = int(span.get("endTimeUnixNano", start_ns))
    except (TypeError, ValueError):
        return f"a span with startTimeUnixNano {_shown(span.get('startTimeUnixNano'))} (not a whole number)"
    attributes = _attributes(span.get("attributes"), attribute_keys)
    if shared is not None:
        for key, value in attributes.items():
            if type(value) is list:
                try:
                    attributes[key] = shared.setdefault(("list", *value), value)
                except TypeError:  # a kvlist inside: unhashable, not worth sharing
                    pass
    name = span.get("name", "")
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=name if type(name) is str else str(name),
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=status_code,
        status_message=status_message,
        attributes=attributes,
        service_name=service,
        scope_name=scope_name,
        failures=_failures(span.get("events")),
    )


_MAX_FAILURES_PER_SPAN = 16


def _failures(events: Any) -> tuple[Mapping[str, Any], ...]:
    found: list[Mapping[str, Any]] = []
    for event in _list(events):
        if isinstance(event, Mapping) and event.get("name") == HANDLER_FAILED_EVENT:
            found.append(_attributes(event.get("attributes")))
            if len(found) >= _MAX_FAILURES_PER_SPAN:
                break
    return tuple(found)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "missing"
    return text if len(text) <= 40 else text[:39] + "…"


def _id(value: Any, size: int) -> str | None:
    """A hex id from either encoding: hex is ``2 * size`` chars, base64 ``4 * ceil(size / 3)``."""
    if not isinstance(value, str) or not value:
        return None
    raw: bytes | None = None
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
        if raw is not None and len(raw) != size:  # fromhex skips spaces
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != size:
            return None
    # An all-zero id means "none" (a root span's parentSpanId, in some encoders).
    if raw == _ZERO_IDS[size]:
        return None
    return value if len(value) == 2 * size and (value.islower() or value.isdigit()) else raw.hex()


_ZERO_IDS = {8: bytes(8), 16: bytes(16)}


def _status(code: Any) -> str:
    if isinstance(code, str):
        code = _STATUS_NAMES.get(code, code)
    try:
        return _STATUS_LABELS.get(int(code), "UNSET")
    except (TypeError, ValueError):
        return "UNSET"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attributes(key_values: Any, keys: Collection[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if type(key_values) is not list:
        return out
    for item in key_values:
        key = item.get("key") if type(item) is dict else None
        if type(key) is str and (keys is None or key in keys):
            value = item.get("value")
            # Most values are strings: skip the general conversion for them.
            out[key] = value["stringValue"] if type(value) is dict and "stringValue" in value else _any_value(value)
    return out


def _any_value(value: Any) -> Any:
    if not isinstance(value, dict):
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
        return [
            v["stringValue"] if type(v) is dict and "stringValue" in v else _any_value(v)
            for v in _list(inner.get("values") if isinstance(inner, dict) else None)
        ]
    if "kvlistValue" in value:
        inner = value["kvlistValue"]
        return _attributes(inner.get("values") if isinstance(inner, dict) else None)
    if "bytesValue" in value:
        return value["bytesValue"]
    return None
