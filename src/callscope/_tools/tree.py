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

Under each trace comes LangChain's root run's ``callscope.handlers.missed`` summary, the one-look
answer to "which handler missed what".

**Narrow terminals.** The tree fits the console's width by giving things up in this order:
model and token details; then the handler words (``local``/``inherited``/``failed``/``scope``/
``subtree``/``filtered``/``dropped`` become ``L``/``I``/``X``/``S``/``T``/``F``/``D`` under numbered columns, keyed above the tree) and the status column (a failing
span gets ``✗`` before its name); then the duration column; last, long names continue on the
next line. Every span keeps its name, its failure and each handler's scope; a failing span's
message always has its own indented line(s).

>>> from rich.console import Console
from rich.style import Style
>>> from callscope._tools.otlp_json import read_spans_file
>>> for view in build_traces(read_spans_file("callscope-traces.jsonl").spans):  # doctest: +SKIP
...     render_trace(view, Console())
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rich.cells import cell_len, chop_cells
from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.text import Text

from callscope._attributes import (
    FAILED_ABORTED,
    FAILED_CALLBACK,
    FAILED_HANDLER,
    FAILED_RUN,
    HANDLERS_DROPPED,
    HANDLERS_FAILED,
    HANDLERS_FILTERED,
    HANDLERS_INHERITED,
    HANDLERS_LOCAL,
    HANDLERS_MISSED,
    LANGGRAPH_INTERRUPTED,
    LANGGRAPH_RESUMED,
    RUN_CANCELLED,
    RUN_EVICTED,
    STREAM_ABANDONED,
    TRACER_NAME,
)
from callscope._tools.otlp_json import SpanRecord

__all__ = [
    "CELL_MARKS",
    "CELL_MEANINGS",
    "HANDLERS_DROPPED",
    "HANDLERS_FAILED",
    "HANDLERS_FILTERED",
    "HANDLERS_INHERITED",
    "HANDLERS_LOCAL",
    "HANDLERS_MISSED",
    "OUTCOMES",
    "TREE_ATTRIBUTES",
    "Layout",
    "Row",
    "SpanNode",
    "TracePrinter",
    "TraceView",
    "build_traces",
    "failure_lines",
    "format_duration",
    "handler_cell",
    "outcome_of",
    "render_legend",
    "render_trace",
    "select_rows",
    "wrap_items",
]

_REQUEST_MODEL = "gen_ai.request.model"
_RESPONSE_MODEL = "gen_ai.response.model"
_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_ERROR_TYPE = "error.type"
_CONVERSATION = "gen_ai.conversation.id"
#: How a run ended other than by returning or failing: (attribute, word in the status column,
#: mark before the name in the compact layouts, what it means), first match wins.
OUTCOMES = (
    (RUN_EVICTED, "evicted", "†", "its end never arrived; callscope ended it"),
    (LANGGRAPH_INTERRUPTED, "interrupted", "‖", "LangGraph paused it at an interrupt"),
    (RUN_CANCELLED, "cancelled", "⊘", "its task was cancelled"),
    (STREAM_ABANDONED, "abandoned", "⋯", "its stream's reader stopped early"),
    (LANGGRAPH_RESUMED, "resumed", "↻", "a LangGraph Command(resume=…) continued it"),
)
_OUTCOME_KEYS = frozenset(attribute for attribute, *_ in OUTCOMES)
_OUTCOME_STYLES = {"evicted": "bold red", "interrupted": "yellow", "cancelled": "yellow", "abandoned": "yellow", "resumed": "cyan"}
#: The span attributes the tree shows; a reader can drop the rest.
TREE_ATTRIBUTES = frozenset(
    {
        HANDLERS_LOCAL,
        HANDLERS_INHERITED,
        HANDLERS_MISSED,
        HANDLERS_FILTERED,
        HANDLERS_DROPPED,
        HANDLERS_FAILED,
        _REQUEST_MODEL,
        _RESPONSE_MODEL,
        _INPUT_TOKENS,
        _OUTPUT_TOKENS,
        _ERROR_TYPE,
        _CONVERSATION,
        *(attribute for attribute, *_ in OUTCOMES),
    }
)
#: The instrumentation scope name of callscope's spans (its tracer's name).

LOCAL = "local"
INHERITED = "inherited"
MISSED = "missed"
FAILED = "failed"
FILTERED = "filtered"
DROPPED = "dropped"
SUBTREE = "subtree"
SCOPE = "scope"
NO_DATA = "·"

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
#: The compact layout's one-letter cells.
_MARKS = {LOCAL: "L", INHERITED: "I", MISSED: "M", FAILED: "X", FILTERED: "F", DROPPED: "D", SUBTREE: "T", SCOPE: "S", NO_DATA: "·"}
CELL_MARKS = _MARKS
#: What each cell means, for the legend.
CELL_MEANINGS = {
    LOCAL: "constructor handler",
    INHERITED: "passed down at run time",
    FAILED: "got it, raised (see below)",
    SCOPE: "missed: others' constructor",
    SUBTREE: "missed: other subtree",
    FILTERED: "missed: its ignore_* flag",
    DROPPED: "missed: config not passed",
}
#: A failure's message on its line under the span is cut to this many characters.
_MAX_FAILURE_TEXT = 160
_STATUS_STYLES = {"OK": "green", "UNSET": "dim", "ERROR": "bold red"}
#: Root runs whose missed summary is printed under a trace (an app span can hold many).
_MAX_SUMMARIES = 5
#: A failing span's message takes at most this many lines under it.
_MAX_ERROR_LINES = 3
# One ASCII character each, so that a line keeps its width.
_ASCII_MARKS = str.maketrans({"·": ".", "…": "~", "✗": "X", "→": ">", "─": "-", "†": "E", "‖": "P", "⊘": "C", "⋯": "A", "↻": "R"})


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

    @property
    def conversation(self) -> str | None:
        """The conversation (LangGraph thread, chat session) its runs belong to, if any."""
        for node in _depth_first(self.roots):
            value = _conversation_of(node.span)
            if value is not None:
                return value
        return None

    def missed_summaries(self) -> list[tuple[str, list[str]]]:
        """``(run name, summary lines)`` of each LangChain root run in the trace."""
        return [
            (node.span.name, _labels(node.span, HANDLERS_MISSED))
            for node in _depth_first(self.roots)
            if HANDLERS_MISSED in node.span.attributes
        ]

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
    unreached = [node for node in nodes.values() if id(node) not in reached] if len(reached) < len(nodes) else []
    for node in sorted(unreached, key=_start_key):
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
    view.handlers = _handler_labels(node.span for node in _depth_first(roots))
    view.inherited_labels = frozenset(label for node in nodes.values() for label in _labels(node.span, HANDLERS_INHERITED))
    for node in nodes.values():
        for failure in node.span.failures:
            view.failures.setdefault(_failed_span(node, failure), []).append(failure)
    return view


def _failed_span(node: SpanNode, failure: Mapping[str, Any]) -> str:
    """The span a failure event belongs under: its own, or, for a failure callscope recorded on
    the parent because the run's span had ended, the one child of that name (if the name is
    ambiguous the failure stays on the parent, where its line names the run)."""
    run = failure.get(FAILED_RUN)
    if isinstance(run, str):
        named = [child for child in node.children if child.span.name == run]
        if len(named) == 1:
            return named[0].span.span_id
    return node.span.span_id


def _depth_first(roots: Sequence[SpanNode]) -> Iterator[SpanNode]:
    """``TraceView.walk`` without the ancestry flags, for a look at every span."""
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


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
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value if item is not None]
    return []


def handler_cell(span: SpanRecord, label: str, view: TraceView | None = None) -> str:
    """``local``, ``inherited``, ``failed``, why the run was missed (``filtered``, ``dropped``,
    ``subtree``, ``scope``; ``missed`` without ``view``), or ``·`` for a span that is not a
    LangChain run."""
    return _handler_cells(span, [label], view)[0]


def failure_lines(view: TraceView, span: SpanRecord) -> list[str]:
    """One line per handler failure of ``span``'s run: ``Handler.on_llm_end raised RuntimeError: …``."""
    lines = []
    for failure in view.failures.get(span.span_id, ()):
        text = f"{failure.get(FAILED_HANDLER, '?')}.{failure.get(FAILED_CALLBACK, '?')}"
        run = failure.get(FAILED_RUN)
        if isinstance(run, str) and run != span.name:
            text += f" of {run}"
        text += f" raised {failure.get('exception.type', 'an error')}"
        message = str(failure.get("exception.message") or "")
        if message:
            text += f": {message}"
        if len(text) > _MAX_FAILURE_TEXT:
            text = text[: _MAX_FAILURE_TEXT - 1] + "…"
        if failure.get(FAILED_ABORTED):
            text += " (raise_error: aborted the run)"
        lines.append(text)
    return lines


def format_duration(duration_ns: int) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.25 s``: short enough for a column."""
    ms = duration_ns / 1e6
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


class Layout(Enum):
    """How much a trace's table shows; the widest that fits the console is used."""

    #: ``local``/``inherited``/``missed`` under handler names, status and duration columns.
    FULL = "full"
    #: One-letter marks under numbered handler columns, ``✗`` before a failing span's name.
    COMPACT = "compact"
    #: COMPACT without the duration column.
    NARROW = "narrow"


@dataclass(slots=True)
class Row:
    """One span line: the node, its ancestry's "is last child" flags, and how many of its
    descendants ``--depth`` left out."""

    node: SpanNode
    lasts: tuple[bool, ...]
    hidden: int = 0


def select_rows(view: TraceView, *, max_depth: int | None = None, errors_only: bool = False) -> list[Row]:
    """The rows to draw, depth first: every span, or only the failing ones and their ancestors,
    down to ``max_depth`` levels (1 = the root spans only)."""
    keep = _failing_and_ancestors(view) if errors_only else None
    sizes = _subtree_sizes(view) if max_depth is not None else {}

    def shown(nodes: list[SpanNode]) -> list[SpanNode]:
        return nodes if keep is None else [node for node in nodes if id(node) in keep]

    rows: list[Row] = []
    roots = shown(view.roots)
    stack = [(node, (i == len(roots) - 1,)) for i, node in reversed(list(enumerate(roots)))]
    while stack:
        node, lasts = stack.pop()
        if max_depth is not None and len(lasts) >= max_depth:
            rows.append(Row(node, lasts, sizes[id(node)] - 1))
            continue
        rows.append(Row(node, lasts))
        children = shown(node.children)
        for i, child in reversed(list(enumerate(children))):
            stack.append((child, (*lasts, i == len(children) - 1)))
    return rows


def _children_first(view: TraceView) -> list[SpanNode]:
    return list(_depth_first(view.roots))[::-1]


def _failing_and_ancestors(view: TraceView) -> set[int]:
    keep: set[int] = set()
    for node in _children_first(view):
        span = node.span
        if span.status_code == "ERROR" or span.span_id in view.failures or HANDLERS_FAILED in span.attributes or any(id(child) in keep for child in node.children):
            keep.add(id(node))
    return keep


def _subtree_sizes(view: TraceView) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for node in _children_first(view):
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in node.children)
    return sizes


Segment = tuple[str, str]  # text, rich style


def render_trace(
    view: TraceView,
    console: Console,
    *,
    max_depth: int | None = None,
    errors_only: bool = False,
    width: int | None = None,
    outcomes: set[str] | None = None,
) -> Layout | None:
    """Print one trace, fitted to ``width`` (default ``console.width``, which rich works out
    anew on every call: pass it when printing many traces); return the layout used (None: no
    row to show), and add the ``OUTCOMES`` words of the rows shown to ``outcomes`` (for the
    legend). Plain text, without any style codes, off a terminal or under ``NO_COLOR``."""
    rows = select_rows(view, max_depth=max_depth, errors_only=errors_only)
    if not rows:
        return None
    unicode = _can_draw(console)
    layout, lines, shown = _draw(view, rows, console.width if width is None else width, unicode)
    _write(console, lines if unicode else (_ascii(line) for line in lines))
    if outcomes is not None:
        outcomes |= shown
    return layout


class TracePrinter:
    """Draws traces as they come, and what follows them once: the legend, or why nothing showed
    (``callscope tree``, ``callscope run``, ``callscope.testing``)."""

    def __init__(self, out: Console, *, max_depth: int | None, errors_only: bool) -> None:
        self.out = out
        self.max_depth = max_depth
        self.errors_only = errors_only
        self.traces = 0
        self.layouts: set[Layout] = set()
        self.handlers = False
        self.outcomes: set[str] = set()
        self.width = out.width  # once: rich measures the terminal again on every read

    def all(self, views: list[TraceView]) -> None:
        for view in views:
            self.traces += 1
            layout = render_trace(
                view, self.out, max_depth=self.max_depth, errors_only=self.errors_only, width=self.width, outcomes=self.outcomes
            )
            if layout is not None:
                self.layouts.add(layout)
                self.handlers = self.handlers or bool(view.handlers)
                self.out.file.write("\n")

    def finish(self, source: str) -> None:
        if self.errors_only and not self.layouts:
            self.out.print(
                Text(f"no failing spans in the {self.traces} trace{'s' if self.traces != 1 else ''} of {source}"),
                markup=False,
            )
        if self.handlers or self.outcomes:
            render_legend(self.out, self.layouts, self.outcomes)


def render_legend(console: Console, layouts: Iterable[Layout] = (Layout.FULL,), outcomes: Iterable[str] = ()) -> None:
    """What the handler cells mean, for the layouts used, and the run ``outcomes`` shown (their
    status-column words, or marks in the compact layouts); print it once, after the traces."""
    layouts = set(layouts)
    shown = set(outcomes)
    items = []
    compact = bool(layouts - {Layout.FULL})
    if Layout.FULL in layouts or compact:
        items += [
            f"{cell} ({_MARKS[cell]}): {meaning}" if compact else f"{cell}: {meaning}" for cell, meaning in CELL_MEANINGS.items()
        ]
    items.append(f"{NO_DATA}: not a LangChain run")
    if compact:
        items.append("✗ before a name: the run failed")
    for _, word, mark, meaning in OUTCOMES:
        if word in shown:
            items.append(f"{word} ({mark}): {meaning}" if compact else f"{word}: {meaning}")
    lines = [[(line, "dim")] for line in wrap_items(items, " · ", console.width)]
    _write(console, lines if _can_draw(console) else [_ascii(line) for line in lines])


def _draw(view: TraceView, rows: list[Row], width: int, unicode: bool) -> tuple[Layout, Iterator[list[Segment]], set[str]]:
    """Choose the layout (one pass over the rows, measuring: also the run outcomes shown and the
    trace's conversation) and the lines drawing it (made as they are written, so a
    200,000-span trace is never held as text)."""
    labels = view.handlers
    guides_of: dict[tuple[bool, ...], tuple[str, int]] = {}
    measured = []  # per row: guides, name, details, cells of guides + name, cells of details, duration, outcome
    dur_w, status_w = len("duration"), len("status")
    bare = detailed = marked = 4
    outcomes: set[str] = set()
    conversation = None
    for row in rows:
        span = row.node.span
        known = guides_of.get(row.lasts)
        if known is None:
            guides = _branch(row.lasts, unicode)
            known = guides_of[row.lasts] = (guides, _cells(guides))
        guides, guides_cells = known
        name = _row_name(row)
        details = _details(span)
        name_cells = guides_cells + (len(name) if name.isascii() else cell_len(name))
        details_cells = _cells(details) if details else 0
        duration = format_duration(span.duration_ns)
        outcome = outcome_of(span)
        if outcome is not None:
            outcomes.add(outcome)
        if conversation is None:
            conversation = _conversation_of(span)
        measured.append((guides, name, details, name_cells, details_cells, duration, outcome))
        dur_w = max(dur_w, len(duration))
        status_w = max(status_w, len(_status_word(span, outcome)))
        bare = max(bare, name_cells)
        detailed = max(detailed, name_cells + (2 + details_cells if details else 0))
        marked = max(marked, name_cells + (2 if span.status_code == "ERROR" or outcome else 0))
    word_ws = [max(_cells(label), len(INHERITED)) for label in labels]
    mark_w = len(str(len(labels)))
    marks_total = (1 + len(labels) * (1 + mark_w)) if labels else 0
    full_fixed = 2 + dur_w + 2 + status_w + sum(2 + w for w in word_ws)
    choices = [
        (Layout.FULL, True, detailed, full_fixed),
        (Layout.FULL, False, bare, full_fixed),
        (Layout.COMPACT, False, marked, 2 + dur_w + marks_total),
        (Layout.NARROW, False, marked, marks_total),
    ]
    for layout, with_details, name_w, fixed in choices:
        if name_w + fixed <= width:
            break
    else:
        layout, with_details, name_w = Layout.NARROW, False, max(width - marks_total, 12)
    if conversation is None and len(rows) < view.span_count:  # rows left out may name it
        conversation = view.conversation
    shape = _Shape(layout, with_details, name_w, dur_w, status_w, word_ws, mark_w, width, conversation)
    return layout, _lines(view, rows, measured, shape, unicode), outcomes


@dataclass(slots=True)
class _Shape:
    layout: Layout
    with_details: bool
    name_w: int
    dur_w: int
    status_w: int
    word_ws: list[int]
    mark_w: int
    width: int
    conversation: str | None


def _row_name(row: Row) -> str:
    span = row.node.span
    name = span.name or "(unnamed)"
    if row.hidden:
        name += f" (+{row.hidden} below)"
    if row.node.orphan:
        name += f"  (parent {span.parent_id} not in data)"
    return name


def _lines(
    view: TraceView,
    rows: list[Row],
    measured: list[tuple[str, str, str, int, int, str, str | None]],
    shape: _Shape,
    unicode: bool,
) -> Iterator[list[Segment]]:
    labels, layout, name_w, width = view.handlers, shape.layout, shape.name_w, shape.width
    compact = layout is not Layout.FULL
    marks = {cell: " " + mark.rjust(shape.mark_w) for cell, mark in _MARKS.items()}
    continuation_of: dict[tuple[tuple[bool, ...], bool], str] = {}
    cells_of: dict[tuple[int, int, int, int, str | None], list[str]] = {}

    yield from _heading(view, shape)

    for i, (row, (guides, name, details, name_cells, details_cells, duration, outcome)) in enumerate(
        zip(rows, measured, strict=True)
    ):
        span = row.node.span
        has_children_shown = i + 1 < len(rows) and len(rows[i + 1].lasts) > len(row.lasts)
        key = (row.lasts, has_children_shown)
        continuation = continuation_of.get(key)
        if continuation is None:
            continuation = continuation_of[key] = _continuation(row.lasts, has_children_shown, unicode)
        failed = span.status_code == "ERROR"
        mark = ("✗ " if failed and outcome is None else f"{_OUTCOME_MARKS[outcome]} " if outcome else "") if compact else ""
        if name_cells + len(mark) <= name_w:
            chunks = [name]  # the common case, without measuring again
            used = name_cells + len(mark)
        else:
            room = max(name_w - len(mark) - 8, 0)
            guides, continuation = _squeeze(guides, room), _squeeze(continuation, room)
            first_room = max(name_w - _cells(guides) - len(mark), 1)
            chunks = _chop(name, first_room, max(name_w - _cells(continuation), 1))
            used = _cells(guides) + len(mark) + _cells(chunks[0])
        line: list[Segment] = [(guides, "dim")]
        if mark:
            line.append((mark, "bold red"))
        line.append((chunks[0], "bold red" if failed else ""))
        if shape.with_details and details:
            line.append(("  " + details, "dim"))
            used += 2 + details_cells
        line.append((" " * (name_w - used), ""))
        if layout is not Layout.NARROW:
            line.append(("  " + duration.rjust(shape.dur_w), ""))
        failures = view.failures.get(span.span_id)
        cells = _cells_for(span, labels, view, failures, cells_of)
        if layout is Layout.FULL:
            style = _OUTCOME_STYLES[outcome] if outcome else _STATUS_STYLES.get(span.status_code, "")
            line.append(("  " + _status_word(span, outcome).ljust(shape.status_w), style))
            line += [(_centered(cell, w), _CELL_STYLES[cell]) for cell, w in zip(cells, shape.word_ws, strict=True)]
        elif labels:
            line.append((" ", ""))
            line += [(marks[cell], _CELL_STYLES[cell]) for cell in cells]
        yield line
        for chunk in chunks[1:]:
            yield [(continuation, "dim"), (chunk, "bold red" if failed else "")]
        if failed or failures:
            yield from _trouble_lines(view, span, continuation, width, failed)

    yield from _summaries(view, width)


def _heading(view: TraceView, shape: _Shape) -> Iterator[list[Segment]]:
    """The trace's title, the handler key (compact layouts), the column header and its rule."""
    labels, layout, width = view.handlers, shape.layout, shape.width
    yield from _title(view, width, shape.conversation)
    if layout is not Layout.FULL and labels:
        key = [f"{i} {label}" for i, label in enumerate(labels, start=1)]
        yield from ([(text, "dim")] for text in wrap_items(key, "  ", width, first="handlers: ", rest="  "))
    header: list[Segment] = [(_pad("span", shape.name_w), "bold")]
    if layout is not Layout.NARROW:
        header.append(("  " + "duration".rjust(shape.dur_w), "bold"))
    if layout is Layout.FULL:
        header.append(("  " + "status".ljust(shape.status_w), "bold"))
        header += [("  " + _center(label, w), "bold") for label, w in zip(labels, shape.word_ws, strict=True)]
    elif labels:
        header.append((" " + "".join(" " + str(i).rjust(shape.mark_w) for i in range(1, len(labels) + 1)), "bold"))
    yield header
    yield [("─" * min(width, sum(_cells(text) for text, _ in header)), "dim")]


def _cells_for(
    span: SpanRecord,
    labels: list[str],
    view: TraceView,
    failures: Any,
    cells_of: dict[tuple[int, int, int, int, str | None], list[str]],
) -> list[str]:
    """The span's handler cells. Spans of one batch share their handler lists (see the reader):
    each combination is worked out once, unless the span has failures of its own."""
    attributes = span.attributes
    key = (
        id(attributes.get(HANDLERS_LOCAL)),
        id(attributes.get(HANDLERS_INHERITED)),
        id(attributes.get(HANDLERS_FILTERED)),
        id(attributes.get(HANDLERS_DROPPED)),
        span.scope_name,
    )
    cells = cells_of.get(key) if not failures else None
    if cells is None:
        cells = _handler_cells(span, labels, view)
        if not failures:
            cells_of[key] = cells
    return cells


def _trouble_lines(view: TraceView, span: SpanRecord, continuation: str, width: int, failed: bool) -> Iterator[list[Segment]]:
    """Under a failed span its error, and under any span the handler failures recorded on it."""
    if failed:
        message = span.status_message or str(span.attributes.get(_ERROR_TYPE) or "")
        for text in _error_lines(message, width - _cells(continuation)) if message else ():
            yield [(continuation, "dim"), (text, "red")]
    if view.failures.get(span.span_id):
        for text in failure_lines(view, span):
            for part in _error_lines("✗ " + text, width - _cells(continuation)):
                yield [(continuation, "dim"), (part, "red")]


def _summaries(view: TraceView, width: int) -> Iterator[list[Segment]]:
    """The missed summaries of the trace's LangChain roots, the first few of them; roots whose
    summaries say the same thing share one."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for run, summary in view.missed_summaries():
        merged.setdefault(tuple(summary), []).append(run)
    groups = list(merged.items())
    for summary, runs in groups[:_MAX_SUMMARIES]:
        named = runs if len(groups) > 1 or len(runs) > 1 else None
        first = _summary_heading(summary[0], named) if summary else ""
        for index, entry in enumerate(summary):
            # One line per handler, headed by what happened to it; the roots named once.
            label = first if index == 0 else _summary_heading(entry, None).ljust(len(first))
            wrapped = _wrap_summary(entry, max(width - len(label), 20))
            yield [(label, "bold"), (wrapped[0], "")]
            yield from ([(" " * len(label), ""), (text, "")] for text in wrapped[1:])
    if len(groups) > _MAX_SUMMARIES:
        more = sum(len(runs) for _, runs in groups[_MAX_SUMMARIES:])
        yield [(f"… and the missed summaries of {more} more root run{'s' if more != 1 else ''}", "dim")]


_SAW = re.compile(r" saw (\d+) of (\d+) runs")


def _summary_heading(entry: str, runs: list[str] | None) -> str:
    """``missed:`` for a handler that missed runs, ``failed:`` for one that saw every run and
    raised in some; with the root runs the summary is about when the trace has several."""
    counts = _SAW.search(entry)
    word = "failed" if counts is not None and counts.group(1) == counts.group(2) else "missed"
    if runs is None:
        return f"{word}: "
    return f"{word} ({', '.join(_counted_names(runs))}): "


def _counted_names(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()]


def _handler_cells(span: SpanRecord, labels: list[str], view: TraceView | None = None) -> list[str]:
    """``handler_cell`` for every label, reading the span's lists once."""
    attributes = span.attributes
    has_data = HANDLERS_LOCAL in attributes or HANDLERS_INHERITED in attributes
    if not has_data and span.scope_name not in (None, TRACER_NAME):
        return [NO_DATA] * len(labels)
    local, inherited = _labels(span, HANDLERS_LOCAL), _labels(span, HANDLERS_INHERITED)
    failed = set(_labels(span, HANDLERS_FAILED))
    if view is not None:
        failed.update(str(f.get(FAILED_HANDLER)) for f in view.failures.get(span.span_id, ()))
    filtered = _labels(span, HANDLERS_FILTERED) if HANDLERS_FILTERED in attributes else ()
    dropped = _labels(span, HANDLERS_DROPPED) if HANDLERS_DROPPED in attributes else ()
    cells = []
    for label in labels:
        if label in failed:
            cells.append(FAILED)
        elif label in local:
            cells.append(LOCAL)
        elif label in inherited:
            cells.append(INHERITED)
        elif label in filtered:
            cells.append(FILTERED)
        elif label in dropped:
            cells.append(DROPPED)
        elif view is None:
            cells.append(MISSED)
        else:
            cells.append(SUBTREE if label in view.inherited_labels else SCOPE)
    return cells


def _write(console: Console, lines: Iterable[list[Segment]]) -> None:
    """Write ``lines`` to the console's file, in chunks. Plain strings when there is no colour to
    show (rich would keep bold and dim under NO_COLOR); otherwise each style's escape codes, from
    rich, around its text. Printing through rich costs more per line than a big tree can afford."""
    styled: _Styler | None = None
    if not (console.no_color or console.color_system is None):
        color_system = _COLOR_SYSTEMS.get(console.color_system)
        if color_system is None:  # the legacy Windows console takes no escape codes: let rich do it
            for line in lines:
                console.print(Text.assemble(*line), soft_wrap=True)
            return
        styled = _Styler(color_system)
    encoding = console.encoding or "utf-8"
    lossy = None if encoding.lower().replace("-", "").startswith("utf") else encoding
    chunk: list[str] = []
    for line in lines:
        if styled is None:
            chunk.append("".join(text for text, _ in line).rstrip())
        else:
            chunk.append(styled.line(line))
        if len(chunk) == 2000:
            _write_chunk(console, chunk, lossy)
            chunk = []
    if chunk:
        _write_chunk(console, chunk, lossy)
    console.file.flush()


_COLOR_SYSTEMS = {
    "standard": ColorSystem.STANDARD,
    "256": ColorSystem.EIGHT_BIT,
    "truecolor": ColorSystem.TRUECOLOR,
}


class _Styler:
    def __init__(self, color_system: ColorSystem) -> None:
        self.color_system = color_system
        self.styles: dict[str, Style] = {}

    def line(self, segments: list[Segment]) -> str:
        # Trailing padding is dropped, as in plain text.
        while segments and not segments[-1][0].strip():
            segments = segments[:-1]
        if segments:
            segments = [*segments[:-1], (segments[-1][0].rstrip(), segments[-1][1])]
        parts = []
        for text, style_name in segments:
            if not style_name or not text:
                parts.append(text)
                continue
            style = self.styles.get(style_name)
            if style is None:
                style = self.styles[style_name] = Style.parse(style_name)
            parts.append(style.render(text, color_system=self.color_system))
        return "".join(parts)


def _write_chunk(console: Console, lines: list[str], lossy_encoding: str | None) -> None:
    text = "\n".join(lines) + "\n"
    if lossy_encoding:
        text = text.encode(lossy_encoding, "replace").decode(lossy_encoding)
    console.file.write(text)


def _ascii(line: list[Segment]) -> list[Segment]:
    """``line`` for a console that cannot encode the few non-ASCII marks (same widths)."""
    return [(text.translate(_ASCII_MARKS), style) for text, style in line]


def _can_draw(console: Console) -> bool:
    return console.encoding.lower().replace("-", "").startswith("utf")


def _title(view: TraceView, width: int, conversation: str | None) -> list[list[Segment]]:
    head = f"trace {view.trace_id}"
    spans = f"{view.span_count} span{'s' if view.span_count != 1 else ''}"
    parts = [view.service_name or "unknown service", spans, format_duration(view.duration_ns)]
    if conversation:
        parts.append(f"conversation {conversation}")
    details = " · ".join(parts)
    if len(head) + 2 + _cells(details) <= width:
        return [[(head, "bold"), ("  " + details, "dim")]]
    return [[(head, "bold")], [("  " + details, "dim")]]


def _details(span: SpanRecord) -> str:
    """A model span's model (unless its name says it) and token counts."""
    attributes = span.attributes
    parts = []
    model = attributes.get(_RESPONSE_MODEL) or attributes.get(_REQUEST_MODEL)
    if isinstance(model, str) and model and model not in span.name:
        parts.append(model)
    tokens_in, tokens_out = attributes.get(_INPUT_TOKENS), attributes.get(_OUTPUT_TOKENS)
    if isinstance(tokens_in, int) or isinstance(tokens_out, int):
        counts = [str(n) if isinstance(n, int) else "?" for n in (tokens_in, tokens_out)]
        parts.append(f"{counts[0]}→{counts[1]} tokens")
    return " · ".join(parts)


def _conversation_of(span: SpanRecord) -> str | None:
    value = span.attributes.get(_CONVERSATION)
    return value if isinstance(value, str) and value else None


def _status_word(span: SpanRecord, outcome: str | None) -> str:
    return outcome or span.status_code.lower()


def outcome_of(span: SpanRecord) -> str | None:
    """``interrupted``, ``cancelled``… (see ``OUTCOMES``), or ``None`` for a run that returned or failed."""
    attributes = span.attributes
    if _OUTCOME_KEYS.isdisjoint(attributes):  # nearly every span: one C-level pass over its few keys
        return None
    for attribute, word, _, _ in OUTCOMES:
        if attributes.get(attribute) is True:
            return word
    return None


_OUTCOME_MARKS = {word: mark for _, word, mark, _ in OUTCOMES}


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


def _squeeze(guides: str, room: int) -> str:
    """Guides of a very deep span, cut from the left so the name keeps some room."""
    if len(guides) <= room:
        return guides
    return "…" + guides[len(guides) - room + 1 :] if room > 1 else ""


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - _cells(text), 0)


@functools.lru_cache(maxsize=256)
def _centered(cell: str, width: int) -> str:
    return "  " + _center(cell, width)


def _center(text: str, width: int) -> str:
    gap = max(width - _cells(text), 0)
    return " " * (gap // 2) + text + " " * (gap - gap // 2)


def _chop(text: str, first: int, rest: int) -> list[str]:
    """``text`` in pieces of at most ``first`` cells, then ``rest`` cells, each ending where a
    word of the name does (``ChatPrompt``/``Template``, ``fetch_``/``docs``) when one does."""
    if _cells(text) <= first:
        return [text]
    if not text.isascii():
        head = chop_cells(text, first)[0]
        return [head, *chop_cells(text[len(head) :], rest)]
    chunks = []
    room = first
    while len(text) > room:
        cut = _word_end(text, room)
        chunks.append(text[:cut])
        text = text[cut:]
        room = rest
    chunks.append(text)
    return chunks


_WORD_END = re.compile(r"(?<=[_\-./:, ])|(?<=[a-z0-9])(?=[A-Z<])|(?<=[A-Z])(?=[A-Z][a-z])")


def _word_end(text: str, room: int) -> int:
    """Where to cut ``text`` to fit ``room`` characters: after the last word that fits, if the
    piece keeps at least half the room; else at ``room``."""
    best = 0
    for found in _WORD_END.finditer(text, 1, room + 1):
        best = found.start()
    return best if best * 2 >= room else room


@functools.lru_cache(maxsize=1024)
def _error_lines(message: str, width: int) -> list[str]:
    # Cached: a failing run fails its ancestors with the same message, trace after trace.
    lines = _wrap_words(" ".join(message.split()), max(width, 10))
    if len(lines) > _MAX_ERROR_LINES:
        lines = lines[:_MAX_ERROR_LINES]
        lines[-1] = lines[-1][: max(width, 10) - 1] + "…"
    return lines


@functools.lru_cache(maxsize=1024)
def _wrap_summary(text: str, width: int) -> list[str]:
    # Traces of one workload repeat their summaries: a file of 26,000 traces wraps a few.
    return _wrap_words(text, width)


def _wrap_words(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        while _cells(word) > width:
            if current:
                lines.append(current)
                current = ""
            head = word[: _word_end(word, width)] if word.isascii() else chop_cells(word, width)[0]
            lines.append(head)
            word = word[len(head) :]
        candidate = f"{current} {word}" if current else word
        if _cells(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines


def wrap_items(items: list[str], separator: str, width: int, first: str = "", rest: str = "") -> list[str]:
    lines: list[str] = []
    current = first
    for item in items:
        start = current in (first, rest)
        candidate = current + item if start else current + separator + item
        if _cells(candidate) <= width or start:
            current = candidate
        else:
            lines.append(current)
            current = rest + item
    lines.append(current)
    return lines
