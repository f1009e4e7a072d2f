"""Callback coverage as a test: a pytest plugin with the ``callscope_runs`` fixture.

The fixture traces the test's LangChain runs in memory (its own instrumentation, removed when
the test ends) and answers, for a handler instance or its label, which runs the handler saw and
which it missed and why, with the same reasons and fixes as ``callscope tree``:

>>> def test_cost_tracker_sees_every_model_call(callscope_runs):  # doctest: +SKIP
...     tracker = CostTracker()
...     chain.invoke({"q": "hi"}, config={"callbacks": [tracker]})
...     callscope_runs.assert_saw_all(tracker, operation="chat")

A failing assertion says which runs were missed, why, and the fix. ``pytest --callscope-tree``
adds the trace tree of every failing test that used the fixture to pytest's report.

The plugin is registered through the ``pytest11`` entry point and does nothing unless a test
asks for the fixture: importing it loads neither LangChain nor OpenTelemetry.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from callscope._bridge.labels import TraceLabels
    from callscope._tools.otlp_json import SpanRecord
    from callscope._tools.tree import TraceView

__all__ = ["CallbackCoverageError", "Miss", "RecordedRuns", "Run", "callscope_runs"]

_TREE_OPTION = "--callscope-tree"
_RECORDER = pytest.StashKey["RecordedRuns"]()


@dataclass(frozen=True)
class Run:
    """One LangChain run of the test, as its span recorded it."""

    name: str
    #: ``chat``, ``text_completion``, ``execute_tool``, ``retrieval``, ``invoke_agent`` or
    #: ``chain`` (chains, prompts, parsers, lambdas, graph nodes).
    operation: str
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class Miss:
    """A run a handler did not receive."""

    run: Run
    #: ``scope``, ``subtree``, ``filtered`` or ``dropped``: the tree's words.
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.run.name} ({self.reason}; fix: {self.fix})"


class CallbackCoverageError(AssertionError):
    """A handler missed runs it was asserted to see; the message says which, why and the fix."""


class RecordedRuns:
    """The LangChain runs of one test, and which handler saw which (see the module docstring)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self._exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._labels: dict[str, list[TraceLabels]] = {}

    # --- what the test asks ------------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        """Every LangChain run the test made, in start order."""
        return [_run(span) for span in self._spans() if _is_run(span)]

    def seen_by(self, handler: Any) -> list[Run]:
        """The runs ``handler`` (an instance, or its label such as ``"CostTracker#2"``) received."""
        seen, _ = self._coverage(handler)
        return seen

    def missed_by(self, handler: Any) -> list[Miss]:
        """The runs ``handler`` did not receive, each with the reason and the fix. A handler that
        appears in no trace of the test missed nothing here: assert it saw something, too."""
        _, missed = self._coverage(handler)
        return missed

    def assert_saw_all(self, handler: Any, *, operation: str | None = None) -> None:
        """Fail unless ``handler`` received every run of the test (of ``operation`` only, e.g.
        ``"chat"``), and at least one."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        seen, missed = self._coverage(handler)
        if operation is not None:
            seen = [run for run in seen if run.operation == operation]
            missed = [miss for miss in missed if miss.run.operation == operation]
        label = self._describe(handler)
        what = f"{operation} runs" if operation else "runs"
        if missed:
            lines = [f"{label} saw {len(seen)} of {len(seen) + len(missed)} {what}; it missed:"]
            lines += [f"  {miss}" for miss in missed]
            raise CallbackCoverageError("\n".join(lines))
        if not seen:
            total = len([run for run in self.runs if operation is None or run.operation == operation])
            raise CallbackCoverageError(
                f"{label} saw none of the test's {total} {what}: pass it to the call, "
                "config={'callbacks': [handler]}, or to the component's constructor"
            )

    def tree(self, width: int = 120) -> str:
        """The test's traces as ``callscope tree`` prints them (plain text)."""
        from rich.console import Console

        from callscope._tools.tree import TracePrinter, build_traces

        out = io.StringIO()
        console = Console(file=out, width=width, no_color=True, color_system=None, highlight=False)
        printer = TracePrinter(console, max_depth=None, errors_only=False)
        printer.all(build_traces(self._spans()))
        printer.finish("the test")
        return out.getvalue()

    # --- how -----------------------------------------------------------------------------------

    def _spans(self) -> list[SpanRecord]:
        from callscope._bridge.trace_file import to_otlp_json
        from callscope._tools.otlp_json import parse_document

        finished = self._exporter.get_finished_spans()
        spans = parse_document(to_otlp_json(finished)).spans if finished else []
        return sorted(spans, key=lambda span: span.start_ns)

    def _coverage(self, handler: Any) -> tuple[list[Run], list[Miss]]:
        from callscope._bridge.scope import FIXES
        from callscope._tools.tree import build_traces, handler_cell

        seen: list[Run] = []
        missed: list[Miss] = []
        for view in build_traces(self._spans()):
            label = self._label_in(view, handler)
            if label is None:
                continue
            for span in _spans_of(view):
                if not _is_run(span):
                    continue
                cell = handler_cell(span, label, view)
                if cell in ("local", "inherited", "failed"):
                    seen.append(_run(span))
                else:
                    missed.append(Miss(_run(span), cell, FIXES.get(cell, "")))
        return seen, missed

    def _label_in(self, view: TraceView, handler: Any) -> str | None:
        """``handler``'s label in this trace, if any run of it met the handler."""
        if isinstance(handler, str):
            return handler if handler in view.handlers else None
        for labels in self._labels.get(view.trace_id, ()):
            label = labels.label_of(handler)
            if label is not None:
                return label
        return None

    def _describe(self, handler: Any) -> str:
        return handler if isinstance(handler, str) else f"{type(handler).__name__} (id {id(handler):#x})"

    def _watch(self, trace_id: int, labels: TraceLabels) -> None:
        self._labels.setdefault(format(trace_id, "032x"), []).append(labels)

    def _start(self) -> None:
        from callscope._bridge import labels
        from callscope._bridge.instrumentor import CallscopeInstrumentor

        instrumentor = CallscopeInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            raise pytest.UsageError(
                "callscope is already instrumented in this process, and the callscope_runs fixture records with "
                "its own instrumentation: call callscope.uninstrument() before the test (or drop the "
                "instrument() call from conftest.py for these tests)"
            )
        labels.watch(self._watch)
        instrumentor.instrument(tracer_provider=self.tracer_provider, metrics=False)

    def _stop(self) -> None:
        from callscope._bridge import labels
        from callscope._bridge.instrumentor import CallscopeInstrumentor

        labels.unwatch(self._watch)
        CallscopeInstrumentor().uninstrument()
        self.tracer_provider.shutdown()


def _is_run(span: SpanRecord) -> bool:
    from callscope._tools.tree import HANDLERS_INHERITED, HANDLERS_LOCAL

    return span.scope_name == "callscope" or HANDLERS_LOCAL in span.attributes or HANDLERS_INHERITED in span.attributes


def _run(span: SpanRecord) -> Run:
    operation = span.attributes.get("gen_ai.operation.name") or "chain"
    return Run(name=span.name, operation=str(operation), trace_id=span.trace_id, span_id=span.span_id)


def _spans_of(view: TraceView) -> Sequence[SpanRecord]:
    found: list[SpanRecord] = []
    stack = list(reversed(view.roots))
    while stack:
        node = stack.pop()
        found.append(node.span)
        stack.extend(reversed(node.children))
    return found


# --- the pytest plugin ------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("callscope").addoption(
        _TREE_OPTION,
        action="store_true",
        default=False,
        help="add the trace tree of each failing test that used callscope_runs to its report",
    )


@pytest.fixture
def callscope_runs(request: pytest.FixtureRequest) -> Iterator[RecordedRuns]:
    """The test's LangChain runs, traced in memory by callscope (see ``callscope.testing``)."""
    recorder = RecordedRuns()
    recorder._start()
    request.node.stash[_RECORDER] = recorder
    try:
        yield recorder
    finally:
        recorder._stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    recorder = item.stash.get(_RECORDER, None)
    if recorder is not None and report.failed and call.when == "call" and item.config.getoption(_TREE_OPTION):
        report.sections.append(("callscope trace tree", recorder.tree()))
    return report
