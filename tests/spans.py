"""Reading an exported span tree in tests: find spans by name, walk parents, check one trace."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode


class SpanTree:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    @property
    def all(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def clear(self) -> None:
        self._exporter.clear()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {len(found)} among {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.all)

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for candidate in self.all:
            if candidate.context.span_id == span.parent.span_id:
                return candidate
        return None

    def parent_name(self, span: ReadableSpan) -> str | None:
        parent = self.parent_of(span)
        return parent.name if parent is not None else None

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.all if s.parent is not None and s.parent.span_id == span.context.span_id]

    def ancestors(self, span: ReadableSpan) -> list[str]:
        names = []
        current = self.parent_of(span)
        while current is not None:
            names.append(current.name)
            current = self.parent_of(current)
        return names

    def trace_ids(self, spans: Iterable[ReadableSpan] | None = None) -> set[int]:
        return {s.context.trace_id for s in (self.all if spans is None else spans)}


def emit_small_tree(provider: TracerProvider) -> None:
    """Two spans, a root with handler lists and typed attributes and a failed child linking to it."""
    tracer = provider.get_tracer("tests.otlp_json")
    with tracer.start_as_current_span(
        "root",
        attributes={
            "callscope.handlers.local": ["model-logger"],
            "callscope.handlers.inherited": ["runtime-logger", "audit"],
            "big": 2**40,
            "ratio": 0.5,
            "flag": True,
        },
    ) as root:
        with tracer.start_as_current_span("child", links=[Link(root.get_span_context())]) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
