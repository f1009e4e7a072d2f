"""The terminal trace tree: one line per span, one column per callback handler.

The handler columns are what makes callback scoping visible. callscope records, on each run's
span, which handlers LangChain gave that run, as two string-array attributes:

- ``callscope.handlers.local``: the component's constructor handlers (``callbacks=`` on the
  model, tool, ...), which see only that component's own runs;
- ``callscope.handlers.inherited``: runtime handlers (``config={"callbacks": [...]}``), which
  are passed down to every child run.

A cell says ``local``, ``inherited`` or ``missed`` (the handler saw other runs of this trace but
not this one). callscope leaves out an empty list, so a callscope span with neither attribute
missed every handler. A span from another instrumentation (say, an HTTP client inside a tool)
shows ``·``: handlers do not apply to it.

>>> from rich.console import Console
>>> from callscope._otlp_json import read_spans_file
>>> for view in build_traces(read_spans_file("callscope-traces.jsonl").spans):  # doctest: +SKIP
...     render_trace(view, Console())
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callscope._otlp_json import SpanRecord

__all__ = [
    "HANDLERS_INHERITED",
    "HANDLERS_LOCAL",
    "SpanNode",
    "TraceView",
    "build_traces",
    "format_duration",
    "handler_cell",
    "render_legend",
    "render_trace",
]

HANDLERS_LOCAL = "callscope.handlers.local"
HANDLERS_INHERITED = "callscope.handlers.inherited"
#: The instrumentation scope name of callscope's spans (its tracer's name).
CALLSCOPE_SCOPE = "callscope"

LOCAL = "local"
INHERITED = "inherited"
MISSED = "missed"
NO_DATA = "·"

_CELL_STYLES = {LOCAL: "bold green", INHERITED: "cyan", MISSED: "red", NO_DATA: "dim"}
_STATUS_STYLES = {"OK": "green", "UNSET": "dim", "ERROR": "bold red"}
_MAX_STATUS_MESSAGE = 60
# One ASCII character each, so that styled spans keep their offsets.
_ASCII_MARKS = str.maketrans({"·": "-", "…": "~"})


@dataclass(slots=True)
class SpanNode:
    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)
    #: True when the span names a parent that is not in the data (a partial file or export).
    orphan: bool = False


@dataclass(slots=True)
class TraceView:
    """One trace, ready to draw: its root spans (children ordered by start) and its handlers."""

    trace_id: str
    roots: list[SpanNode]
    handlers: list[str]
    span_count: int

    @property
    def service_name(self) -> str | None:
        for node in self.roots:
            if node.span.service_name:
                return node.span.service_name
        return None

    @property
    def duration_ns(self) -> int:
        if not self.roots:
            return 0
        return max(n.span.end_ns for n in self.roots) - min(n.span.start_ns for n in self.roots)

    def walk(self) -> Iterable[tuple[SpanNode, tuple[bool, ...]]]:
        """Depth-first, yielding each node with the "is last child" flags of its ancestry."""
        stack: list[tuple[SpanNode, tuple[bool, ...]]] = [
            (node, (i == len(self.roots) - 1,)) for i, node in reversed(list(enumerate(self.roots)))
        ]
        while stack:
            node, lasts = stack.pop()
            yield node, lasts
            for i, child in reversed(list(enumerate(node.children))):
                stack.append((child, (*lasts, i == len(node.children) - 1)))


def build_traces(spans: Iterable[SpanRecord]) -> list[TraceView]:
    """Group spans by trace (earliest trace first) and link each to its parent."""
    by_trace: dict[str, dict[str, SpanRecord]] = {}
    for span in spans:
        # A span exported twice (a re-sent batch) is drawn once.
        by_trace.setdefault(span.trace_id, {})[span.span_id] = span
    views = [_build_trace(trace_id, members) for trace_id, members in by_trace.items()]
    views.sort(key=lambda view: min((n.span.start_ns for n in view.roots), default=0))
    return views


def _build_trace(trace_id: str, members: dict[str, SpanRecord]) -> TraceView:
    nodes = {span_id: SpanNode(span) for span_id, span in members.items()}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_id) if node.span.parent_id else None
        if parent is None or parent is node:
            node.orphan = node.span.parent_id is not None
            roots.append(node)
        else:
            parent.children.append(node)
    # Malformed data can link spans in a cycle, which no root reaches. Cut each cycle at its
    # earliest span and draw that span as a root, so every span is drawn, once.
    reached = _reachable(roots)
    for node in sorted(nodes.values(), key=_start_key):
        if id(node) in reached:
            continue
        parent = nodes[node.span.parent_id]  # present: only linked spans can be unreached
        parent.children.remove(node)
        node.orphan = True
        roots.append(node)
        reached |= _reachable([node])
    for node in nodes.values():
        node.children.sort(key=_start_key)
    roots.sort(key=_start_key)
    view = TraceView(trace_id=trace_id, roots=roots, handlers=[], span_count=len(nodes))
    view.handlers = _handler_labels(node.span for node, _ in view.walk())
    return view


def _reachable(roots: Sequence[SpanNode]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.children)
    return seen


def _start_key(node: SpanNode) -> tuple[int, str]:
    return node.span.start_ns, node.span.span_id


def _handler_labels(spans: Iterable[SpanRecord]) -> list[str]:
    labels: dict[str, None] = {}
    for span in spans:
        for key in (HANDLERS_LOCAL, HANDLERS_INHERITED):
            for label in _labels(span, key):
                labels.setdefault(label, None)
    return list(labels)


def _labels(span: SpanRecord, key: str) -> list[str]:
    value = span.attributes.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value if item is not None]
    return []


def handler_cell(span: SpanRecord, label: str) -> str:
    """``local``, ``inherited``, ``missed``, or ``·`` for a span that is not a LangChain run."""
    has_data = HANDLERS_LOCAL in span.attributes or HANDLERS_INHERITED in span.attributes
    if not has_data and span.scope_name not in (None, CALLSCOPE_SCOPE):
        return NO_DATA
    if label in _labels(span, HANDLERS_LOCAL):
        return LOCAL
    if label in _labels(span, HANDLERS_INHERITED):
        return INHERITED
    return MISSED


def format_duration(duration_ns: int) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.25 s``: short enough for a column."""
    ms = duration_ns / 1e6
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def render_trace(view: TraceView, console: Console) -> None:
    """Print one trace as a table. Styles are dropped by ``console`` itself when it writes to a
    pipe or ``NO_COLOR`` is set, leaving the same words in plain text."""
    unicode = _can_draw(console)
    table = Table(
        box=box.SIMPLE_HEAD if unicode else box.ASCII2,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("span", no_wrap=True, overflow="ellipsis")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    for label in view.handlers:
        table.add_column(label, justify="center", no_wrap=True)
    for node, lasts in view.walk():
        span = node.span
        name = Text(_branch(lasts, unicode), style="dim")
        name.append(span.name or "(unnamed)", style="bold red" if span.status_code == "ERROR" else "")
        if node.orphan:
            name.append(f"  (parent {span.parent_id} not in data)", style="dim italic")
        cells = [
            Text(_ascii(cell, unicode), style=_CELL_STYLES[cell])
            for cell in (handler_cell(span, label) for label in view.handlers)
        ]
        table.add_row(name, format_duration(span.duration_ns), _ascii(_status(span), unicode), *cells)
    # The title is printed on its own line: as a table title it would wrap to the table's width.
    console.print(_ascii(_title(view), unicode))
    console.print(table)


def render_legend(console: Console) -> None:
    """One line explaining the handler cells; print it once, after the traces."""
    legend = Text(
        f"{LOCAL}: the component's constructor handler · {INHERITED}: a runtime handler, passed down"
        f" · {MISSED}: never saw that run · {NO_DATA}: not a LangChain run",
        style="dim",
    )
    console.print(_ascii(legend, _can_draw(console)))


def _can_draw(console: Console) -> bool:
    return console.encoding.lower().replace("-", "").startswith("utf")


def _ascii(text: Text | str, unicode: bool) -> Text | str:
    """``text`` with its few non-ASCII marks replaced, for a console that cannot encode them."""
    if unicode:
        return text
    if isinstance(text, str):
        return text.translate(_ASCII_MARKS)
    plain = text.copy()
    plain.plain = text.plain.translate(_ASCII_MARKS)  # same length, so the styles still fit
    return plain


def _title(view: TraceView) -> Text:
    title = Text(f"trace {view.trace_id}", style="bold")
    details = [view.service_name or "unknown service", f"{view.span_count} span{'s' if view.span_count != 1 else ''}"]
    details.append(format_duration(view.duration_ns))
    title.append("  " + " · ".join(details), style="dim")
    return title


def _branch(lasts: tuple[bool, ...], unicode: bool) -> str:
    if len(lasts) <= 1:
        return ""
    pipe, tee, corner, blank = ("│  ", "├─ ", "└─ ", "   ") if unicode else ("|  ", "|- ", "`- ", "   ")
    # The root level draws no guide; each deeper level continues or closes its ancestor's line.
    guides = "".join(blank if last else pipe for last in lasts[1:-1])
    return guides + (corner if lasts[-1] else tee)


def _status(span: SpanRecord) -> Text:
    if span.status_code == "ERROR":
        message = span.status_message
        if len(message) > _MAX_STATUS_MESSAGE:
            message = message[: _MAX_STATUS_MESSAGE - 1] + "…"
        return Text(f"error: {message}" if message else "error", style=_STATUS_STYLES["ERROR"])
    return Text(span.status_code.lower(), style=_STATUS_STYLES.get(span.status_code, ""))
