"""The LangChain callback handler that turns every run into a span.

One instance serves the whole process (LangChain adds it to every callback manager through a
configure hook). It never attaches or detaches OTel context: a span's parent is looked up from
the run tree (``parent_run_id``) and only a root run falls back to the caller's current context.
Making a run's span *current* for the code inside the run is the job of ``_propagation``.

Every callback body is fenced, by ``_absorb`` or, in the three most frequent callbacks (chain
start and end, streamed tokens), by the same try/except written inline to save a frame per call:
whatever goes wrong here is logged and swallowed, because an exception from a handler would
surface in LangChain's log ("Error in … callback") or, with ``raise_error``, in the user's chain.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import traceback
from itertools import islice
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, get_current_span, set_span_in_context

from callscope import _semconv as sc
from callscope import _scope
from callscope._dispatch import is_callscope
from callscope._metrics import Metrics
from callscope._propagation import claim_run_body
from callscope._runs import RunRecord, RunRegistry
from callscope._serialize import bound_text, encodable, to_json
from callscope._settings import Settings
from callscope._unsampled import MeasuredUnsampledTrace, UnsampledTrace, UnsampledTraces, marker_on, read_sampler

_log = logging.getLogger("callscope")
_F = TypeVar("_F", bound=Callable[..., Any])

_MAX_LOGGED_FAILURES = 10
_MAX_PENDING_FAILURES = 256
_MAX_FAILURE_EVENTS = 16
_MAX_FAILURE_MESSAGE = 1024
_TRACER_NAME = "callscope"
_STARTS = frozenset({"on_chain_start", "on_chat_model_start", "on_llm_start", "on_tool_start", "on_retriever_start"})
_ENDS = frozenset(
    {f"on_{kind}_{outcome}" for kind in ("chain", "llm", "tool", "retriever") for outcome in ("end", "error")}
)


@dataclass(slots=True, frozen=True)
class _Failure:
    handler: Any
    callback: str
    error_type: str
    message: str
    #: The handler has ``raise_error=True``: LangChain re-raises, aborting the dispatch.
    aborts: bool
# Runnables that invoke their children with the config they were given instead of their child
# config, so the children report the wrong parent (langchain-ai/langchain#36072).
_LOSES_CHILDREN = frozenset({"RunnableWithFallbacks"})

#: The scope of runs in a dropped trace: never written to, since nothing is recorded about them.
_DROPPED_SCOPE = _scope.TraceScope()

_Describe = Callable[[Any, Mapping[str, Any], Any, Any], tuple[str, dict[str, Any]]]


def _absorb(method: _F) -> _F:
    """Run a callback body; log (a bounded number of times) and swallow anything it raises."""

    @functools.wraps(method)
    def fenced(self: SpanHandler, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            self._note_failure(method.__name__, "the chain is unaffected", level=logging.ERROR)

    return fenced  # type: ignore[return-value]


class SpanHandler(BaseCallbackHandler):
    """Starts a span on every ``on_*_start`` and ends it on the matching end or error."""

    # Inline: on the async path LangChain then calls this handler in the caller's task, in order,
    # instead of hopping to a thread pool per event.
    run_inline = True
    raise_error = False
    # Never listed among the handlers a run reached: callscope is the observer, not the observed.
    _callscope_internal = True

    def __init__(self, tracer: Tracer, settings: Settings, registry: RunRegistry, metrics: Metrics | None = None) -> None:
        self._tracer = tracer
        # None while metrics are off: the callbacks then do no metric work at all.
        self._metrics = metrics
        self._settings = settings
        self._content = settings.capture_content.on_spans
        self._limit = settings.max_attribute_length
        self.registry = registry
        self.internal_errors = 0
        #: callscope's LangChain configure hook: LangChain adds its value to every callback
        #: manager it configures (this handler; inside a dropped trace, that trace's marker).
        self.hook: contextvars.ContextVar[Any] = contextvars.ContextVar("callscope_span_handler", default=self)
        self.unsampled = UnsampledTraces(self, self.hook)
        # What the sampler does, read again on each run start until it is known for good.
        self._sampling_follows_parent, self._dropped_without_asking, self._sampler_settled = read_sampler(tracer)
        self._labels_by_trace = _scope.LabelsByTrace()
        #: Failures of other handlers in a run's start callback that LangChain dispatched
        #: before callscope's: applied when callscope's handler sees the start. Empty unless a
        #: handler fails, and bounded (a start callscope never sees leaves its entry behind).
        self._pending_failures: dict[UUID, list[_Failure]] = {}

    # --- starts -------------------------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        operation: str,
        kind: SpanKind,
        describe: _Describe,
        serialized: Any,
        kwargs: Mapping[str, Any],
        tags: Any,
        metadata: Any,
        content: Callable[[], dict[str, Any]] | None = None,
    ) -> RunRecord | None:
        if not is_instrumentation_enabled():
            return None
        if not self._sampler_settled:
            self._sampling_follows_parent, self._dropped_without_asking, self._sampler_settled = read_sampler(self._tracer)
        runs = self.registry
        # The step this run is started from, as LangChain's config context says.
        config = var_child_runnable_config.get()
        step = runs.get(getattr(config.get("callbacks"), "parent_run_id", None)) if config else None
        parent = runs.get(parent_run_id)
        if parent is not None and step is not None and step is not parent and step.loses_children and step.parent_run_id == parent_run_id:
            # LangChain reported the mislabelling run's own parent: the step's run is the parent.
            parent = step
        if parent is not None and not parent.sampled and self._sampling_follows_parent:
            # The sampler would drop this run as it dropped its parent: skip the whole span, but
            # keep a record so that children and step bodies still find the (unsampled) trace.
            record = RunRecord(
                span=parent.span,
                context=parent.context,
                operation=operation,
                name="",
                scope=parent.scope,
                sampled=False,
                parent_run_id=parent_run_id,
            )
            self.registry.add(run_id, record)
            self.registry.adopt(parent, run_id)
            claim_run_body(operation, record.context)
            return record
        manager = _scope.starting_manager()
        if parent is None and self._sampling_follows_parent:
            marker = marker_on(manager)
            if marker is not None:
                return self._start_in_dropped_trace(run_id, operation, marker)
            caller = get_current_span().get_span_context() if operation == sc.CHAIN else None
            if caller is not None and self._dropped_without_asking(caller):
                # The sampler's answer is known without the span's name and attributes. Under an
                # unsampled caller, code inside the trace keeps the caller's context (the same
                # trace, not sampled: all a non-recording span would tell it); a trace of its own
                # gets the non-recording span the SDK makes, so that what it calls downstream
                # is told the trace is not sampled.
                self._leave_trace(run_id, otel_context.get_current() if caller.is_valid else set_span_in_context(self._tracer.start_span(operation)))
                return None
        try:
            name, attributes = describe(serialized, kwargs, tags, metadata)
        except Exception:
            # A payload no mapping anticipated must cost the span its details, never the span.
            self._note_failure(f"describing a {operation} run", "the span was kept with fewer details")
            name, attributes = operation, {}
        if content is not None:
            # With the other start attributes: one attribute-cleaning pass in the SDK, not two.
            try:
                attributes.update(content())
            except Exception:
                self._note_failure(f"capturing a {operation} run's content", "the span was kept without it")
        # A known parent run decides the parent span. Otherwise (a root run, or a run whose parent
        # LangChain lost) the current context decides: the caller's span at the top level, or the
        # span of the step this run was started from, which _propagation made current there.
        parent_context = parent.context if parent is not None else None
        if parent is None and step is None:
            # A root in a worker thread the step's OTel context was carried into (OpenTelemetry's
            # threading instrumentation does that), where LangChain's config context is not.
            step = self._run_of_current_span()
        # A run LangChain reports as a root but that starts inside a traced step belongs to that
        # step's trace, and so to its handler labels and its root's summary.
        enclosing = parent or step
        scope = enclosing.scope if enclosing is not None else self._new_root_scope()
        # Classified before the span starts so the labels go in with the other start attributes
        # (one attribute-cleaning pass in the SDK instead of a set_attribute call per list).
        handlers = scope.handlers_of(manager, operation)
        if handlers.local:
            attributes[_scope.LOCAL] = handlers.local
        if handlers.inherited:
            attributes[_scope.INHERITED] = handlers.inherited
        if handlers.filtered:
            attributes[_scope.FILTERED] = handlers.filtered
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
                dropped_in = attributes[_scope.DROPPED_IN] = step.name
        if dropped:
            attributes[_scope.DROPPED] = dropped
        span = self._tracer.start_span(name, context=parent_context, kind=kind, attributes=attributes)
        context = set_span_in_context(span, parent_context)
        if not span.is_recording():
            if parent is None and operation == sc.CHAIN and self._sampling_follows_parent:
                # A dropped trace: callscope leaves it here, at its root (see _unsampled). Model,
                # tool and retrieval roots stay: their span is current in provider code, and
                # their metrics are due whatever the sampler says.
                self._leave_trace(run_id, context)
                return None
            record = RunRecord(
                span=span, context=context, operation=operation, name=name, scope=scope, sampled=False, parent_run_id=parent_run_id
            )
            self.registry.add(run_id, record)
            if parent is not None:
                self.registry.adopt(parent, run_id)
            claim_run_body(operation, context)
            return record
        scope.record_run(name, operation, handlers, dropped, run_id)
        if dropped_in is not None:
            scope.record_dropped(dropped_in, dropped)
        if enclosing is None:
            self._labels_by_trace.remember(span.get_span_context().trace_id, scope.labels)
        record = RunRecord(
            span=span,
            context=context,
            operation=operation,
            name=name,
            scope=scope,
            owns_scope=enclosing is None,
            handlers=handlers,
            parent_run_id=parent_run_id,
            loses_children=operation == sc.CHAIN and name in _LOSES_CHILDREN,
            passes_down=getattr(manager, "inheritable_handlers", None),
            dropped=dropped,
        )
        self.registry.add(run_id, record)
        if self._pending_failures:
            for failure in self._pending_failures.pop(run_id, ()):
                self._apply_failure(record, run_id, failure)
        if parent is not None:
            self.registry.adopt(parent, run_id)
        claim_run_body(operation, context)
        for processor in handlers.processors:
            try:
                processor.on_start(span, parent_context)
            except Exception:
                _log.exception("callscope: span processor %r failed in on_start", processor)
        return record

    def _start_in_dropped_trace(self, run_id: UUID, operation: str, marker: UnsampledTrace) -> RunRecord | None:
        """A run whose manager carries a dropped trace's marker: callscope's handler is on it
        only where LangChain configured a manager outside the trace's steps (a LangGraph task,
        a worker thread), or the marker handed a measured run over. A chain is left again; a
        model, tool or retrieval run gets a record without a span, so its body and metrics
        still have the trace's context."""
        unsampled = self.unsampled
        if operation == sc.CHAIN:
            unsampled.leave(run_id, marker)
            return None
        if self.registry.get(run_id) is not None:
            return None  # the same start, delivered by the marker after callscope's handler or before it
        context = marker.context
        record = RunRecord(
            span=get_current_span(context), context=context, operation=operation, name="", scope=_DROPPED_SCOPE, sampled=False
        )
        self.registry.add(run_id, record)
        if isinstance(marker, MeasuredUnsampledTrace):
            # Its later events reach the span handler through the marker: not twice.
            unsampled.leave(run_id, marker)
        claim_run_body(operation, context)
        return record

    def _leave_trace(self, run_id: UUID, context: Any) -> None:
        """Step off the dropped trace whose root is ``run_id`` (see ``_unsampled``)."""
        measuring = self._metrics is not None and self._metrics.live()
        self.unsampled.leave(run_id, self.unsampled.new_marker(context, measured=measuring))

    def _run_of_current_span(self) -> RunRecord | None:
        """The run whose span is the current span, if it is one of callscope's: asked only for a
        LangChain root started outside any LangChain step."""
        span = get_current_span()
        if getattr(getattr(span, "instrumentation_scope", None), "name", None) != _TRACER_NAME:
            return None  # no span (a top-level call), or the application's own (a web request)
        return self.registry.find_by_span(span)

    def _new_root_scope(self) -> _scope.TraceScope:
        return _scope.TraceScope(self._settings.include_internal_handlers, self._labels_by_trace.for_new_root())

    def _note_failure(self, what: str, outcome: str, *, level: int = logging.WARNING) -> None:
        """Count an internal failure and log it with its traceback, the first few times only."""
        self.internal_errors += 1
        if self.internal_errors <= _MAX_LOGGED_FAILURES:
            _log.log(level, "callscope: %s failed; %s", what, outcome, exc_info=True)

    # --- other handlers' failures -------------------------------------------------------------

    def record_failure(self, handler: Any, callback: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: BaseException | None) -> None:
        """Another handler raised from ``callback`` (LangChain logged "Error in …"): record it on
        the run's span. Called by ``_failures`` from inside LangChain's dispatch, so it must not
        raise and must not change what LangChain does next."""
        try:
            if is_callscope(handler):
                return
            failure = _Failure(
                handler,
                callback,
                encodable(type(error).__qualname__) if error is not None else "Exception",
                bound_text(_safe_str(error), min(self._limit, _MAX_FAILURE_MESSAGE)) if error is not None else "",
                getattr(handler, "raise_error", False) is True,
            )
            run_id = kwargs.get("run_id")
            record = self.registry.get(run_id) if isinstance(run_id, UUID) else None
            if record is not None:
                self._apply_failure(record, run_id, failure)
                if failure.aborts and callback in _ENDS:
                    # LangChain re-raises now, so callscope's handler, later in this dispatch,
                    # never gets the end: give it the end it would have got, or the span stays
                    # open. The other handlers get exactly what LangChain gives them.
                    getattr(self, callback)(*args, **kwargs)
                return
            if callback in _STARTS and not failure.aborts and isinstance(run_id, UUID):
                # callscope's handler gets this start later in the same dispatch.
                if len(self._pending_failures) >= _MAX_PENDING_FAILURES:
                    self._pending_failures.pop(next(iter(self._pending_failures)), None)
                self._pending_failures.setdefault(run_id, []).append(failure)
                return
            # The run's span has ended (callscope's handler came first in this dispatch), or the
            # run never starts (a raise_error handler aborted its start): its parent's span says.
            parent_run_id = kwargs.get("parent_run_id")
            parent = self.registry.get(parent_run_id)
            if parent is not None:
                self._apply_failure(parent, parent_run_id, failure, of_child=run_id)
        except Exception:
            self._note_failure("recording another handler's failure", "LangChain's handling of it is unaffected")

    def _apply_failure(self, record: RunRecord, run_id: Any, failure: _Failure, *, of_child: Any = None) -> None:
        """Record ``failure`` on the span of ``record`` (run ``run_id``), or, ``of_child`` being a
        run id, on the span of the parent ``record`` of that run, whose own span had ended."""
        if not record.sampled:
            return
        label = record.scope.label(failure.handler)
        span = record.span
        outcome = failure.error_type + (", aborted the run" if failure.aborts else "")
        run_name = record.name
        if of_child is not None:
            run_name = record.scope.run_named(of_child) or f"a child run of {record.name}"
        record.scope.record_failure(label, failure.callback, run_name, outcome)
        labels, events = record.scope.failed_on(run_id)
        if not span.is_recording() or events >= _MAX_FAILURE_EVENTS:
            return
        attributes: dict[str, Any] = {
            _scope.FAILURE_HANDLER: label,
            _scope.FAILURE_CALLBACK: failure.callback,
            "exception.type": failure.error_type,
            "exception.message": failure.message,
        }
        if failure.aborts:
            attributes["callscope.handler.raise_error"] = True
        if of_child is not None:
            attributes[_scope.FAILURE_OF_RUN] = run_name
        span.add_event(_scope.FAILURE_EVENT, attributes)
        if of_child is None and label not in labels and len(labels) < _scope._MAX_LABELS_PER_TRACE:
            labels += (label,)
            span.set_attribute(_scope.FAILED, labels)
        record.scope.set_failed_on(run_id, labels, events + 1)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # With on_chain_end the most frequent callback: fenced here, as _absorb does, without
        # _absorb's extra frame and argument repacking.
        try:
            content = (lambda: {sc.INPUT: to_json(inputs, self._limit)}) if self._content else None
            record = self._start(run_id, parent_run_id, sc.CHAIN, SpanKind.INTERNAL, sc.describe_chain, serialized, kwargs, tags, metadata, content)
            if record is not None and sc.is_resume(inputs) and record.span.is_recording():
                record.span.set_attribute(sc.LANGGRAPH_RESUMED, True)
        except Exception:
            self._note_failure("on_chain_start", "the chain is unaffected", level=logging.ERROR)

    @_absorb
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        content = (lambda: sc.input_messages(messages, self._limit)) if self._content else None
        record = self._start(run_id, parent_run_id, sc.CHAT, SpanKind.CLIENT, sc.describe_chat, serialized, kwargs, tags, metadata, content)
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.CHAT, serialized, kwargs, metadata)

    @_absorb
    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        content = (lambda: sc.prompt_messages(prompts, self._limit)) if self._content else None
        record = self._start(
            run_id, parent_run_id, sc.TEXT_COMPLETION, SpanKind.CLIENT, sc.describe_text_completion, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.TEXT_COMPLETION, serialized, kwargs, metadata)

    @_absorb
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: Any = None,
        **kwargs: Any,
    ) -> None:
        arguments = inputs if inputs is not None else input_str
        content = (lambda: {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: to_json(arguments, self._limit)}) if self._content else None
        record = self._start(
            run_id, parent_run_id, sc.EXECUTE_TOOL, SpanKind.INTERNAL, sc.describe_tool, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.EXECUTE_TOOL, serialized, kwargs, metadata)

    @_absorb
    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        asked = self._content and isinstance(query, str)
        content = (lambda: {gen_ai.GEN_AI_RETRIEVAL_QUERY_TEXT: bound_text(query, self._limit)}) if asked else None
        record = self._start(
            run_id, parent_run_id, sc.RETRIEVAL, SpanKind.CLIENT, sc.describe_retriever, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.RETRIEVAL, serialized, kwargs, metadata)

    # --- during a run -------------------------------------------------------------------------

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        # Called for every streamed chunk: fenced here, as _absorb would, without its extra frame.
        try:
            record = self.registry.get(run_id)
            if record is None:
                return
            if record.first_chunk_monotonic is None:
                record.first_chunk_monotonic = time.monotonic()
            if record.metric_attributes is not None:
                self._metrics.chunk(record)  # type: ignore[union-attr]
            record.chunks += 1
        except Exception:
            self._note_failure("on_llm_new_token", "the chain is unaffected", level=logging.ERROR)

    @_absorb
    def on_custom_event(self, name: Any, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self.registry.get(run_id)
        if record is None or not record.span.is_recording():
            return
        attributes: dict[str, Any] = {}
        manager = _step_manager()
        if manager is not None and getattr(manager, "parent_run_id", None) == run_id:
            received = record.scope.handlers_of(manager, "custom_event")
            if received.local:
                attributes[_scope.LOCAL] = received.local
            if received.inherited:
                attributes[_scope.INHERITED] = received.inherited
            if received.filtered:
                attributes[_scope.FILTERED] = received.filtered
        if self._content:
            attributes["callscope.event.data"] = to_json(data, self._limit)
        record.span.add_event(bound_text(name, 256) if isinstance(name, str) else "custom_event", attributes)

    def current_handlers(self) -> tuple[str, ...]:
        """Labels of the handlers an event dispatched from the current step would reach."""
        manager = _step_manager()
        if manager is None or not hasattr(manager, "handlers"):
            return ()
        run = self.registry.get(getattr(manager, "parent_run_id", None))
        scope = run.scope if run is not None else self._new_root_scope()
        received = scope.handlers_of(manager, "custom_event")
        return received.local + received.inherited

    @_absorb
    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self.registry.get(run_id)
        if record is None or not record.span.is_recording():
            return
        attempt = getattr(retry_state, "attempt_number", None)
        attributes = {sc.RETRY_ATTEMPT: attempt} if isinstance(attempt, int) else None
        record.span.add_event("retry", attributes)

    # --- ends ---------------------------------------------------------------------------------

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:  # fenced here, as on_chain_start is
            self._end(run_id, self._annotate_chain_end, outputs)
        except Exception:
            self._note_failure("on_chain_end", "the chain is unaffected", level=logging.ERROR)

    @_absorb
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, self._annotate_llm_end, response)

    @_absorb
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, self._annotate_tool_end, output)

    @_absorb
    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, self._annotate_retriever_end, documents)

    def _end(self, run_id: UUID, annotate: Callable[[RunRecord, Any], None], payload: Any, failed: bool = False) -> None:
        record = self.registry.pop(run_id)
        if record is None:
            return
        if record.metric_attributes is not None:
            # Before the span ends: a synchronous exporter must not lengthen the measured run.
            self._metrics.ended(record, payload, failed=failed)  # type: ignore[union-attr]
        try:
            if record.span.is_recording():
                annotate(record, payload)
        finally:
            # Whatever the payload does to the annotation (a hostile __iter__, say), the span
            # has left the registry and must still end, or it is lost.
            record.finish()
            if record.owns_scope and record.span.parent is None:
                self._labels_by_trace.forget(record.span.get_span_context().trace_id, record.scope.labels)

    def _annotate_chain_end(self, record: RunRecord, outputs: Any) -> None:
        if self._content:
            record.span.set_attribute(sc.OUTPUT, to_json(outputs, self._limit))

    def _annotate_llm_end(self, record: RunRecord, response: Any) -> None:
        attributes = sc.model_end_attributes(response)
        self._add_stream_timing(record, attributes)
        if self._content:
            attributes.update(sc.output_messages(response, self._limit))
        record.span.set_attributes(attributes)

    def _annotate_tool_end(self, record: RunRecord, output: Any) -> None:
        if self._content:
            result = getattr(output, "content", output) if hasattr(output, "tool_call_id") else output
            record.span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_RESULT, to_json(result, self._limit))

    def _annotate_retriever_end(self, record: RunRecord, documents: Any) -> None:
        if self._content:
            record.span.set_attribute(gen_ai.GEN_AI_RETRIEVAL_DOCUMENTS, to_json(_documents(documents), self._limit))

    @_absorb
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._fail(run_id, error)

    @_absorb
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._fail(run_id, error)

    @_absorb
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._fail(run_id, error)

    @_absorb
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._fail(run_id, error)

    @_absorb
    def end_cancelled_run(self, run_id: UUID) -> None:
        """A model run whose task was cancelled while it awaited its provider: LangChain's
        ``agenerate`` is cancelled inside its ``gather`` and never reports the run's end to any
        handler, so the run-body wrapper reports it here (a run already ended is left alone)."""
        self._fail(run_id, asyncio.CancelledError())

    def _fail(self, run_id: UUID, error: BaseException) -> None:
        stopped = _stopped_by_caller(error)
        record = self.registry.get(run_id) if stopped else None
        self._end(run_id, self._annotate_failure, error, failed=True)
        if record is not None:
            self._end_runs_stopped_with(record, stopped)

    def _end_runs_stopped_with(self, stopped_run: RunRecord, outcome: str) -> None:
        """A run stopped from outside takes its unfinished runs with it, and LangChain does not
        always say so: a chat model cancelled while awaiting its provider inside ``agenerate``
        never gets an end or error callback. Their spans end now, with the same outcome,
        instead of staying open until the run TTL."""
        for record in self.registry.pop_descendants(stopped_run):
            try:
                if record.span.is_recording():
                    attributes: dict[str, Any] = {outcome: True}
                    self._add_stream_timing(record, attributes)
                    record.span.set_attributes(attributes)
            finally:
                record.finish()

    def _annotate_failure(self, record: RunRecord, error: BaseException) -> None:
        span = record.span
        attributes: dict[str, Any] = {}
        self._add_stream_timing(record, attributes)
        stopped = _stopped_by_caller(error)
        steering = None if stopped else sc.control_flow_attributes(error)
        if stopped:
            # The consumer stopped reading (break, close(), aclose(), garbage collection), or
            # cancelled the task running the run (astream_events and LangGraph do that to their
            # workers when their own consumer stops; a timeout does it too): the run ends early,
            # but nothing failed.
            attributes[stopped] = True
        elif steering is not None:
            attributes.update(steering)
            if sc.LANGGRAPH_INTERRUPTED in steering:
                self._mark_enclosing_runs_interrupted(record, steering)
        else:
            # Python checks only __name__ is UTF-8; __qualname__ and __module__ may hold anything.
            error_type = encodable(type(error).__qualname__)
            message = bound_text(_safe_str(error), self._limit)
            attributes[sc.ERROR_TYPE] = error_type
            span.add_event(
                "exception",
                {
                    "exception.type": f"{encodable(str(type(error).__module__))}.{error_type}",
                    "exception.message": message,
                    "exception.stacktrace": bound_text(_safe_traceback(error), self._limit),
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"[:1024]))
        span.set_attributes(attributes)

    def _mark_enclosing_runs_interrupted(self, record: RunRecord, steering: dict[str, Any]) -> None:
        """The graph that holds an interrupted node returns normally (its output carries the
        interrupt only in ``invoke``), so it is told here, while it is still open, and so is
        every run around it: the whole call is paused, waiting for the human."""
        interrupted = {key: value for key, value in steering.items() if key != sc.LANGGRAPH_CONTROL_FLOW}
        parent = self.registry.get(record.parent_run_id)
        depth = 0
        while parent is not None and depth < 256:  # a bound, should a parent chain ever loop
            if parent.span.is_recording():
                parent.span.set_attributes(interrupted)
            parent = self.registry.get(parent.parent_run_id)
            depth += 1

    @staticmethod
    def _add_stream_timing(record: RunRecord, attributes: dict[str, Any]) -> None:
        if record.first_chunk_monotonic is None:
            return
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = record.first_chunk_monotonic - record.started_monotonic
        attributes[sc.STREAM_CHUNKS] = record.chunks


def _stopped_by_caller(error: BaseException) -> str | None:
    """The attribute that says how the caller stopped a run, or ``None`` if it was not stopped."""
    if isinstance(error, GeneratorExit):
        return sc.STREAM_ABANDONED
    if isinstance(error, sc.CANCELLATIONS):
        return sc.RUN_CANCELLED
    return None


def _step_manager() -> Any:
    """The callback manager LangChain's config context holds for the current step, if any."""
    config = var_child_runnable_config.get()
    return config.get("callbacks") if config else None


def _documents(documents: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        listed = list(islice(documents, 64)) if documents is not None else []
    except Exception:  # a payload that is not the documented list of Documents
        return out
    for document in listed:
        item: dict[str, Any] = {"id": getattr(document, "id", None)}
        metadata = getattr(document, "metadata", None)
        if isinstance(metadata, Mapping) and isinstance(metadata.get("score"), (int, float)):
            item["score"] = metadata["score"]
        content = getattr(document, "page_content", None)
        if isinstance(content, str):
            item["content"] = content
        out.append(item)
    return out


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def _safe_traceback(error: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(error))
    except Exception:
        return ""
