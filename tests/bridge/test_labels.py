"""Handler labels per OpenTelemetry trace: numbered, bounded, forgotten with their trace."""

from __future__ import annotations

import gc

from opentelemetry import trace

from callscope._bridge.labels import MAX_LABELS_PER_TRACE, LabelsByTrace, TraceLabels
from tests.bridge.test_scope import RequestLogger


def test_trace_labels_stay_bounded_however_long_the_trace():
    labels = TraceLabels()
    keep = [RequestLogger() for _ in range(MAX_LABELS_PER_TRACE + 5)]
    assigned = [labels.label(handler) for handler in keep]
    assert assigned[1] == "RequestLogger#2" and assigned[-1] == "RequestLogger#+"
    assert len(labels._labels) == MAX_LABELS_PER_TRACE
    # A collected handler's label is forgotten: a new object reusing its id gets a new label.
    del keep, assigned
    gc.collect()
    assert labels._labels == {} and labels._keep == {}


def test_only_recent_traces_keep_their_labels(tracer_provider):
    book = LabelsByTrace(max_traces=2)
    tracer = tracer_provider.get_tracer("t")
    seen = []
    for name in ("a", "b", "c"):
        with tracer.start_as_current_span(name):
            seen.append(book.for_new_root())
            assert book.for_new_root() is seen[-1]
    assert len(book._by_trace) == 2
    assert trace.get_current_span().get_span_context().is_valid is False
    assert book.for_new_root() is not book.for_new_root()  # no caller span: a trace of its own
