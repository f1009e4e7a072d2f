"""What a run becomes at its start: its parent, whether it is traced, its handlers, its span.

One LangChain start callback, in order:

1. the parent: the run LangChain names (``parent_run_id``), corrected where a runnable
   mislabels its children (``RunnableWithFallbacks``, langchain-ai/langchain#36072), else the
   step the run was started from (LangChain's config context) or the callscope span current in
   a worker thread the step's OTel context was carried into;
2. sampling: a run under an unsampled parent gets a record without a span, a dropped trace is
   left at its root (``unsampled``), and where the sampler's answer is known before the span
   starts, the root's name and attributes are never built;
3. the span's name and attributes (``semconv``), content when capture is on, and the scope
   labels (``scope``): which handlers the run reached, which an ``ignore_*`` flag kept from
   it, which a LangChain root started without its step's config dropped;
4. the span, started with all of that in one call, and the run's record in the registry; a
   model's, LLM's or retriever's span is made current for its body (``run_bodies``), and
   processors attached to the component (``processors``) are told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.runnables.config import var_child_runnable_config
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind, Tracer, get_current_span, set_span_in_context

from callscope._attributes import CONFIG_DROPPED, HANDLERS_DROPPED, HANDLERS_DROPPED_IN, TRACER_NAME
from callscope._bridge import scope as _scope
from callscope._bridge.failures import HandlerFailures
from callscope._bridge.fence import Fence
from callscope._bridge.labels import LabelsByTrace
from callscope._bridge.metrics import Metrics
from callscope._bridge.probe import starting_manager
from callscope._bridge.agents import agent_at_start, note_model_call
from callscope._bridge.run_bodies import claim_run_body, open_run_body
from callscope._bridge.run_config import RunConfigReader
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.semconv import CHAIN, CHAT, TEXT_COMPLETION
from callscope._bridge.settings import Settings
from callscope._bridge.unsampled import MeasuredUnsampledTrace, UnsampledTrace, UnsampledTraces, marker_on, read_sampler

_log = logging.getLogger("callscope")

# Runnables that invoke their children with the config they were given instead of their child
# config, so the children report the wrong parent (langchain-ai/langchain#36072).
_LOSES_CHILDREN = frozenset({"RunnableWithFallbacks"})

#: The scope of runs in a dropped trace: never written to, since nothing is recorded about them.
_DROPPED_SCOPE = _scope.TraceScope()

Describe = Callable[[Any, Mapping[str, Any], Any, Any], tuple[str, dict[str, Any]]]


_MODELS = frozenset({CHAT, TEXT_COMPLETION})
_NO_MARKERS = (None, None)

#: What a run whose config could not be read passes down: nothing.
_NOT_CONFIGURED: tuple[frozenset[str], None, None, None] = (frozenset(), None, None, None)


class RunStarts:
    """Starts the spans of one span handler's runs (see ``SpanHandler.on_*_start``)."""

    def __init__(
        self,
        tracer: Tracer,
        settings: Settings,
        registry: RunRegistry,
        metrics: Metrics | None,
        unsampled: UnsampledTraces,
        failures: HandlerFailures,
        labels_by_trace: LabelsByTrace,
        fence: Fence,
    ) -> None:
        self._tracer = tracer
        self._include_plumbing = settings.include_internal_handlers
        self._registry = registry
        self._unsampled = unsampled
        self._failures = failures
        self._labels_by_trace = labels_by_trace
        self._fence = fence
        # A dropped trace's model, tool and retrieval runs are still measured while metrics are live.
        self._metrics = metrics
        self._run_config = RunConfigReader(registry, settings.conversation_keys, settings.max_attribute_length)
        # What the sampler does, read again on each run start until it is known for good.
        self._sampling_follows_parent, self._dropped_without_asking, self._sampler_settled = read_sampler(tracer)

    def start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        operation: str,
        kind: SpanKind,
        describe: Describe,
        serialized: Any,
        kwargs: Mapping[str, Any],
        tags: Any,
        metadata: Any,
        content: Callable[[], dict[str, Any]] | None = None,
    ) -> RunRecord | None:
        """The run's record, or ``None`` for a run callscope leaves untraced."""
        # The hot path, written out in one function: every run of every chain comes through here,
        # and each helper split off costs a Python call per run. On the benchmark's 5-run chain
        # callscope adds about 1.5M instructions per invoke, start and end together, where a
        # bare span per run adds 1.0M (benchmarks/README.md).
        if not is_instrumentation_enabled():
            return None
        if not self._sampler_settled:
            self._sampling_follows_parent, self._dropped_without_asking, self._sampler_settled = read_sampler(self._tracer)
        # The config of the step this run is started from, as LangChain's config context says.
        config = var_child_runnable_config.get()
        runs = self._registry
        # The run owning the step this run is started from, and its parent run.
        step = runs.get(getattr(config.get("callbacks"), "parent_run_id", None)) if config else None
        parent = runs.get(parent_run_id)
        if parent is not None and step is not None and step is not parent and step.loses_children and step.parent_run_id == parent_run_id:
            # LangChain reported the mislabelling run's own parent: the step's run is the parent.
            parent = step
        if parent is not None and not parent.sampled and self._sampling_follows_parent:
            # The sampler would drop this run as it dropped its parent: skip the whole span, but
            # keep a record so that children and step bodies still find the (unsampled) trace.
            record = RunRecord(parent.span, parent.context, operation, "", parent.scope)
            record.sampled, record.parent_run_id = False, parent_run_id
            return self._keep_unsampled(run_id, record, parent)
        manager = starting_manager()
        if parent is None and self._sampling_follows_parent:
            marker = marker_on(manager)
            if marker is not None:
                return self._start_in_dropped_trace(run_id, operation, marker)
            if operation == CHAIN and self._dropped_before_start(run_id, operation):
                return None
        try:
            name, attributes = describe(serialized, kwargs, tags, metadata)
        except Exception:
            # A payload no mapping anticipated must cost the span its details, never the span.
            self._fence.note(f"describing a {operation} run", "the span was kept with fewer details")
            name, attributes = operation, {}
        if content is not None:
            self._add_content(operation, attributes, content)
        # A known parent run decides the parent span. Otherwise (a root run, or a run whose parent
        # LangChain lost) the current context decides: the caller's span at the top level, or the
        # span of the step this run was started from, which the step context made current there.
        parent_context = parent.context if parent is not None else None
        if parent is not None:  # the usual run: its parent decides
            enclosing, scope = parent, parent.scope
        else:
            step, enclosing, scope = self._enclosing_of_root(step)
        try:
            configured = self._run_config.add(attributes, tags, metadata, config, enclosing)
        except Exception:  # a config no mapping anticipated costs the span its labels, never the span
            self._fence.note(f"reading a {operation} run's config", "the span was kept without its tags and metadata")
            configured = _NOT_CONFIGURED
        agent = None
        in_agent = parent.in_agent if parent is not None else None
        if operation == CHAIN:
            # An agent's markers differ from the run above's; runs below it inherit the same.
            markers = configured[2]
            above = enclosing.markers if enclosing is not None else None
            if markers is not None and markers != above and markers != _NO_MARKERS:
                name, agent = agent_at_start(name, attributes, markers, above)
        elif in_agent is not None and operation in _MODELS:
            note_model_call(in_agent, attributes, kwargs.get("invocation_params"))
        # Classified before the span starts so the labels go in with the other start attributes
        # (one attribute-cleaning pass in the SDK instead of a set_attribute call per list).
        handlers = scope.handlers_of(manager, operation)
        if handlers is _scope.EMPTY and (not parent.dropped if parent is not None else step is None or not step.sampled):
            dropped, dropped_in = (), None  # no handler of the user's, nothing dropped: the usual run
        else:
            dropped, dropped_in = _add_scope_attributes(attributes, scope, handlers, manager, parent, step)
        span = self._tracer.start_span(name, context=parent_context, kind=kind, attributes=attributes)
        context = set_span_in_context(span, parent_context)
        if not span.is_recording():
            return self._start_unrecorded(run_id, parent_run_id, operation, name, span, context, scope, parent)
        # The required fields by position and the rest stored after: matching a dozen keyword
        # arguments against the record's 28 fields costs twice what building it does.
        record = RunRecord(span, context, operation, name, scope)
        record.handlers, record.parent_run_id, record.dropped = handlers, parent_run_id, dropped
        record.passes_down = getattr(manager, "inheritable_handlers", None)
        if enclosing is None:
            record.owns_scope = True
        if operation == CHAIN and name in _LOSES_CHILDREN:
            record.loses_children = True
        record.user_tags, record.user_metadata, record.markers, record.conversation = configured
        record.agent, record.in_agent = agent, agent or in_agent
        scope.record_run(name, operation, handlers, dropped, run_id)
        if dropped_in is not None:
            scope.record_dropped(dropped_in, dropped)
        if enclosing is None:
            self._labels_by_trace.remember(span.get_span_context().trace_id, scope.labels)
        return self._keep(run_id, record, parent, parent_context)

    def _enclosing_of_root(self, step: RunRecord | None) -> tuple[RunRecord | None, RunRecord | None, _scope.TraceScope]:
        """For a run without a known parent: the step it started in, the run it belongs to (that
        step) and the scope it is counted in (that run's, else a new root's)."""
        if step is None:
            # A root in a worker thread the step's OTel context was carried into (OpenTelemetry's
            # threading instrumentation does that), where LangChain's config context is not.
            step = self._run_of_current_span()
        # A run LangChain reports as a root but that starts inside a traced step belongs to that
        # step's trace, and so to its handler labels and its root's summary.
        return step, step, step.scope if step is not None else self.new_root_scope()

    def _start_unrecorded(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        operation: str,
        name: str,
        span: Span,
        context: Context,
        scope: _scope.TraceScope,
        parent: RunRecord | None,
    ) -> RunRecord | None:
        """A run whose span the sampler dropped although its parent (if any) was sampled."""
        if parent is None and operation == CHAIN and self._sampling_follows_parent:
            # A dropped trace: callscope leaves it here, at its root (see unsampled). Model,
            # tool and retrieval roots stay: their span is current in provider code, and
            # their metrics are due whatever the sampler says.
            self._leave_trace(run_id, context)
            return None
        record = RunRecord(span=span, context=context, operation=operation, name=name, scope=scope, sampled=False, parent_run_id=parent_run_id)
        return self._keep_unsampled(run_id, record, parent)

    def _add_content(self, operation: str, attributes: dict[str, Any], content: Callable[[], dict[str, Any]]) -> None:
        """Captured content joins the other start attributes: one attribute-cleaning pass in
        the SDK, not two."""
        try:
            attributes.update(content())
        except Exception:
            self._fence.note(f"capturing a {operation} run's content", "the span was kept without it")

    def _keep(self, run_id: UUID, record: RunRecord, parent: RunRecord | None, parent_context: Context | None) -> RunRecord:
        """Register a recording run, and tell whatever waited for its start."""
        self._registry.add(run_id, record)
        if self._failures.pending:
            self._failures.apply_pending(record, run_id)
        if parent is not None:
            self._registry.adopt(parent, run_id)
        body = open_run_body()
        if body is not None:  # a model's, LLM's or retriever's own run
            claim_run_body(body, record)
        for processor in record.handlers.processors:
            try:
                processor.on_start(record.span, parent_context)
            except Exception:
                _log.exception("callscope: span processor %r failed in on_start", processor)
        return record

    def _keep_unsampled(self, run_id: UUID, record: RunRecord, parent: RunRecord | None) -> RunRecord:
        """Register a run kept without a recording span: its children and its body still find
        the trace's context through it."""
        self._registry.add(run_id, record)
        if parent is not None:
            self._registry.adopt(parent, run_id)
        body = open_run_body()
        if body is not None:  # a model's, LLM's or retriever's own run
            claim_run_body(body, record)
        return record

    def _dropped_before_start(self, run_id: UUID, operation: str) -> bool:
        """Leave a chain root whose drop the sampler's answer tells before the span starts."""
        caller = get_current_span().get_span_context()
        if not self._dropped_without_asking(caller):
            return False
        # Under an unsampled caller, code inside the trace keeps the caller's context (the same
        # trace, not sampled: all a non-recording span would tell it); a trace of its own gets
        # the non-recording span the SDK makes, so that what it calls downstream is told the
        # trace is not sampled. Neither needs the root's name and attributes.
        context = otel_context.get_current() if caller.is_valid else set_span_in_context(self._tracer.start_span(operation))
        self._leave_trace(run_id, context)
        return True

    def _start_in_dropped_trace(self, run_id: UUID, operation: str, marker: UnsampledTrace) -> RunRecord | None:
        """A run whose manager carries a dropped trace's marker: callscope's handler is on it
        only where LangChain configured a manager outside the trace's steps (a LangGraph task,
        a worker thread), or the marker handed a measured run over. A chain is left again; a
        model, tool or retrieval run gets a record without a span, so its body and metrics
        still have the trace's context."""
        if operation == CHAIN:
            self._unsampled.leave(run_id, marker)
            return None
        if self._registry.get(run_id) is not None:
            return None  # the same start, delivered by the marker after callscope's handler or before it
        context = marker.context
        record = RunRecord(
            span=get_current_span(context), context=context, operation=operation, name="", scope=_DROPPED_SCOPE, sampled=False
        )
        self._registry.add(run_id, record)
        if isinstance(marker, MeasuredUnsampledTrace):
            # Its later events reach the span handler through the marker: not twice.
            self._unsampled.leave(run_id, marker)
        body = open_run_body()
        if body is not None:  # a model's, LLM's or retriever's own run
            claim_run_body(body, record)
        return record

    def _leave_trace(self, run_id: UUID, context: Context) -> None:
        """Step off the dropped trace whose root is ``run_id`` (see ``unsampled``)."""
        measuring = self._metrics is not None and self._metrics.live()
        self._unsampled.leave(run_id, self._unsampled.new_marker(context, measured=measuring))

    def _run_of_current_span(self) -> RunRecord | None:
        """The run whose span is the current span, if it is one of callscope's: asked only for a
        LangChain root started outside any LangChain step."""
        span = get_current_span()
        if getattr(getattr(span, "instrumentation_scope", None), "name", None) != TRACER_NAME:
            return None  # no span (a top-level call), or the application's own (a web request)
        return self._registry.find_by_span(span)

    def new_root_scope(self) -> _scope.TraceScope:
        """The scope of a LangChain root run, with the handler labels of the trace it starts in."""
        return _scope.TraceScope(self._include_plumbing, self._labels_by_trace.for_new_root())


def _add_scope_attributes(
    attributes: dict[str, Any],
    scope: _scope.TraceScope,
    handlers: _scope.RunHandlers,
    manager: Any,
    parent: RunRecord | None,
    step: RunRecord | None,
) -> tuple[tuple[str, ...], str | None]:
    """Put the run's handler labels among its start attributes; return the handlers it lacks
    because its LangChain root started without its step's config, and that step's name where
    this run is that root."""
    if handlers is not _scope.EMPTY:  # most runs reach no handler of the user's: no call then
        handlers.add_to(attributes)
    dropped: tuple[str, ...] = ()
    dropped_in = None
    if parent is not None:
        if parent.dropped:
            dropped = tuple(label for label in parent.dropped if not handlers.received(label) and label not in handlers.filtered)
    elif step is not None and step.sampled:
        # A LangChain root inside a step: the handlers the step passed down that its manager
        # lacks never reach it or anything under it.
        dropped = scope.lost_on_the_way(step.passes_down, manager, handlers, step.dropped)
        if dropped and set(dropped) - set(step.dropped):
            dropped_in = attributes[HANDLERS_DROPPED_IN] = step.name
            attributes[CONFIG_DROPPED] = True
    if dropped:
        attributes[HANDLERS_DROPPED] = dropped
    return dropped, dropped_in
