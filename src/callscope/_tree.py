"""The terminal trace tree: one line per span, one column per callback handler.

The handler columns are what makes callback scoping visible. callscope records, on each run's
span, which handlers LangChain gave that run, as two string-array attributes:

- ``callscope.handlers.local``: the component's constructor handlers (``callbacks=`` on the
  model, tool, ...), which see only that component's own runs;
- ``callscope.handlers.inherited``: runtime handlers (``config={"callbacks": [...]}``), which
  are passed down to every child run.

A cell says ``local`` or ``inherited``, or, for a run the handler did not get, why:

- ``filtered``: the handler was on the run's manager, but its ``ignore_*`` flag kept the run
  from it (``callscope.handlers.filtered``);
- ``dropped``: the run's chain started inside a step without the step's config, and the handler
  the step passed down never reached it (``callscope.handlers.dropped``);
- ``subtree``: an inherited handler, passed down on another subtree of this trace;
- ``scope``: a handler only ever given to constructors (other components' own runs).

``subtree`` and ``scope`` are derived from the same span attributes by the same rule callscope's
root summary uses: a handler inherited by any run of the trace is ``subtree``, else ``scope``.
``failed``: the handler received the run but raised from one of its callbacks; each failure is
shown under its span. A span from another instrumentation (say, an HTTP client inside a tool)
shows ``·``: handlers do not apply to it.

>>> from rich.console import Console
>>> from callscope._otlp_json import read_spans_file
>>> for view in build_traces(read_spans_file("callscope-traces.jsonl").spans):  # doctest: +SKIP
...     render_trace(view, Console())
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callscope._otlp_json import SpanRecord

__all__ = [
    "CELL_MARKS",
    "CELL_MEANINGS",
    "HANDLERS_DROPPED",
    "HANDLERS_FAILED",
    "HANDLERS_FILTERED",
    "HANDLERS_INHERITED",
    "HANDLERS_LOCAL",
    "SpanNode",
    "TraceView",
    "build_traces",
    "failure_lines",
    "format_duration",
    "handler_cell",
    "render_legend",
    "render_trace",
]

HANDLERS_LOCAL = "callscope.handlers.local"
HANDLERS_INHERITED = "callscope.handlers.inherited"
HANDLERS_FILTERED = "callscope.handlers.filtered"
HANDLERS_DROPPED = "callscope.handlers.dropped"
HANDLERS_FAILED = "callscope.handlers.failed"
#: The instrumentation scope name of callscope's spans (its tracer's name).
CALLSCOPE_SCOPE = "callscope"

LOCAL = "local"
INHERITED = "inherited"
MISSED = "missed"
FAILED = "failed"
FILTERED = "filtered"
DROPPED = "dropped"
SUBTREE = "subtree"
SCOPE = "scope"
NO_DATA = "·"

_FAILURE_HANDLER = "callscope.handler"
_FAILURE_CALLBACK = "callscope.callback"
_FAILURE_RUN = "callscope.callback.run"

_CELL_STYLES = {
    LOCAL: "bold green",
    INHERITED: "cyan",
    MISSED: "red",
    FAILED: "bold red",
    FILTERED: "yellow",
    DROPPED: "bold magenta",
    SUBTREE: "red",
    SCOPE: "red",
    NO_DATA: "dim",
}
#: One-letter marks for each cell, for layouts too narrow for the words.
CELL_MARKS = {
    LOCAL: "L",
    INHERITED: "I",
    MISSED: "M",
    FAILED: "X",
    FILTERED: "F",
    DROPPED: "D",
    SUBTREE: "T",
    SCOPE: "S",
    NO_DATA: "·",
}
#: What each cell means, for the legend.
CELL_MEANINGS = {
    LOCAL: "the component's constructor handler",
    INHERITED: "a runtime handler, passed down",
    FAILED: "received it but raised (shown under the span)",
    FILTERED: "missed: its ignore_* flag",
    DROPPED: "missed: the chain started in a step without its config",
    SUBTREE: "missed: passed down on another subtree only",
    SCOPE: "missed: a constructor handler of other components",
    NO_DATA: "not a LangChain run",
}
_STATUS_STYLES = {"OK": "green", "UNSET": "dim", "ERROR": "bold red"}
_MAX_STATUS_MESSAGE = 60
# One ASCII character each, so that styled spans keep their offsets.
_ASCII_MARKS = str.maketrans({"·": "-", "…": "~", "✗": "x", "×": "x"})


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
    #: The labels some run of the trace inherited: a miss of theirs is ``subtree``, not ``scope``.
    inherited_labels: frozenset[str] = frozenset()
    #: span id -> the handler failures of that span's run, including those recorded on its
    #: parent because the run's own span had ended first.
    failures: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)

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
    view.inherited_labels = frozenset(label for node in nodes.values() for label in _labels(node.span, HANDLERS_INHERITED))
    for node in nodes.values():
        for failure in node.span.failures:
            view.failures.setdefault(_failed_span(node, failure), []).append(failure)
    return view


def _failed_span(node: SpanNode, failure: Mapping[str, Any]) -> str:
    """The span a failure event belongs under: its own, or, for a failure callscope recorded on
    the parent because the run's span had ended, the one child of that name (if the name is
    ambiguous the failure stays on the parent, where its line names the run)."""
    run = failure.get(_FAILURE_RUN)
    if isinstance(run, str):
        named = [child for child in node.children if child.span.name == run]
        if len(named) == 1:
            return named[0].span.span_id
    return node.span.span_id


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


def handler_cell(span: SpanRecord, label: str, view: TraceView | None = None) -> str:
    """``local``, ``inherited``, ``failed``, why the run was missed (``filtered``, ``dropped``,
    ``subtree``, ``scope``; ``missed`` without ``view``), or ``·`` for a span that is not a
    LangChain run."""
    has_data = HANDLERS_LOCAL in span.attributes or HANDLERS_INHERITED in span.attributes
    if not has_data and span.scope_name not in (None, CALLSCOPE_SCOPE):
        return NO_DATA
    if view is not None and any(f.get(_FAILURE_HANDLER) == label for f in view.failures.get(span.span_id, ())):
        return FAILED
    if label in _labels(span, HANDLERS_FAILED):
        return FAILED
    if label in _labels(span, HANDLERS_LOCAL):
        return LOCAL
    if label in _labels(span, HANDLERS_INHERITED):
        return INHERITED
    if label in _labels(span, HANDLERS_FILTERED):
        return FILTERED
    if label in _labels(span, HANDLERS_DROPPED):
        return DROPPED
    if view is None:
        return MISSED
    return SUBTREE if label in view.inherited_labels else SCOPE


def failure_lines(view: TraceView, span: SpanRecord) -> list[tuple[str, str]]:
    """Per handler failure of ``span``'s run: ``("Handler.on_llm_end", "raised RuntimeError: …")``."""
    lines = []
    for failure in view.failures.get(span.span_id, ()):
        where = f"{failure.get(_FAILURE_HANDLER, '?')}.{failure.get(_FAILURE_CALLBACK, '?')}"
        what = f"raised {failure.get('exception.type', 'an error')}"
        message = str(failure.get("exception.message") or "")
        if message:
            what += f": {message}"
        if len(what) > _MAX_STATUS_MESSAGE:
            what = what[: _MAX_STATUS_MESSAGE - 1] + "…"
        if failure.get("callscope.handler.raise_error"):
            what += " (raise_error: aborted the run)"
        run = failure.get(_FAILURE_RUN)
        if isinstance(run, str) and run != span.name:
            where += f" of {run}"
        lines.append((where, what))
    return lines


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
            for cell in (handler_cell(span, label, view) for label in view.handlers)
        ]
        table.add_row(name, format_duration(span.duration_ns), _ascii(_status(span), unicode), *cells)
        guide = _continuation(lasts, bool(node.children), unicode)
        for where, what in failure_lines(view, span):
            table.add_row(Text(guide, style="dim") + Text(_ascii(f"✗ {where}", unicode), style="red"), "", Text(_ascii(what, unicode), style="red"))
    # The title is printed on its own line: as a table title it would wrap to the table's width.
    console.print(_ascii(_title(view), unicode))
    console.print(table)


def render_legend(console: Console) -> None:
    """What the handler cells mean, with their one-letter marks; print it once, after the traces."""
    legend = Text(
        " · ".join(f"{cell} ({CELL_MARKS[cell]}): {meaning}" if cell != NO_DATA else f"{cell}: {meaning}" for cell, meaning in CELL_MEANINGS.items()),
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


def _continuation(lasts: tuple[bool, ...], has_children: bool, unicode: bool) -> str:
    """The guides in front of a row's second and further lines: its ancestors' lines, and its
    own line down to its children."""
    pipe, blank = ("│  ", "   ") if unicode else ("|  ", "   ")
    guides = "".join(blank if last else pipe for last in lasts[1:])
    return guides + (pipe[:2] if has_children else "  ")


def _status(span: SpanRecord) -> Text:
    if span.status_code == "ERROR":
        message = span.status_message
        if len(message) > _MAX_STATUS_MESSAGE:
            message = message[: _MAX_STATUS_MESSAGE - 1] + "…"
        return Text(f"error: {message}" if message else "error", style=_STATUS_STYLES["ERROR"])
    return Text(span.status_code.lower(), style=_STATUS_STYLES.get(span.status_code, ""))
