"""The callback surface LangChain sees: each ``on_*`` hands the event to the module that owns it.

One ``SpanHandler`` serves the whole process (LangChain adds it to every callback manager
through a configure hook). What a run becomes at its start is ``starts``'s, at its end
``ends``'s, a stop or a LangGraph steer ``stops``'s, other handlers' failures ``failures``'s,
what happens while a run is open ``events``'s and, for streamed chunks, the record's own.
Making a run's span *current* for the code inside it is the job of ``steps`` and
``run_bodies``; it never attaches or detaches OTel context itself.

Every callback body is fenced (``fence``): by ``absorb`` or, in the three most frequent
callbacks (chain start and end, streamed tokens), by the same try/except written inline to save
a frame per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, Tracer

from callscope._attributes import INPUT, LANGGRAPH_RESUMED
from callscope._bridge import semconv as sc
from callscope._bridge.ends import RunEnds
from callscope._bridge.events import record_custom_event, record_retry
from callscope._bridge.failures import HandlerFailures
from callscope._bridge.fence import Fence, absorb
from callscope._bridge.labels import LabelsByTrace
from callscope._bridge.messages import input_messages, prompt_messages
from callscope._bridge.metrics import Metrics
from callscope._bridge.runs import RunRegistry, monotonic
from callscope._bridge.scope import step_manager
from callscope._bridge.serialize import bound_text, to_json
from callscope._bridge.settings import Settings
from callscope._bridge.starts import RunStarts
from callscope._bridge.stops import is_resume
from callscope._bridge.unsampled import UnsampledTraces


class SpanHandler(BaseCallbackHandler):
    """Starts a span on every ``on_*_start`` and ends it on the matching end or error."""

    # Inline: on the async path LangChain then calls this handler in the caller's task, in order,
    # instead of hopping to a thread pool per event.
    run_inline = True
    raise_error = False
    # Never listed among the handlers a run reached: callscope is the observer, not the observed.
    _callscope_internal = True

    def __init__(self, tracer: Tracer, settings: Settings, registry: RunRegistry, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.fence = Fence()
        # None while metrics are off: the callbacks then do no metric work at all.
        self._metrics = metrics
        self._settings = settings
        self._content = settings.capture_content.on_spans
        self._limit = settings.max_attribute_length
        #: callscope's LangChain configure hook: LangChain adds its value to every callback
        #: manager it configures (this handler; inside a dropped trace, that trace's marker).
        self.hook: contextvars.ContextVar[Any] = contextvars.ContextVar("callscope_span_handler", default=self)
        self.unsampled = UnsampledTraces(self, self.hook)
        self.failures = HandlerFailures(self, registry, settings.max_attribute_length, self.fence)
        self.labels_by_trace = LabelsByTrace()
        self._starts = RunStarts(tracer, settings, registry, metrics, self.unsampled, self.failures, self.labels_by_trace, self.fence)
        self._ends = RunEnds(settings, registry, metrics, self.labels_by_trace)

    @property
    def internal_errors(self) -> int:
        """How many times a callback body of callscope's failed (and was absorbed)."""
        return self.fence.count

    # --- starts -------------------------------------------------------------------------------

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
        # With on_chain_end the most frequent callback: fenced here, as absorb does, without
        # absorb's extra frame and argument repacking.
        try:
            content = (lambda: {INPUT: to_json(inputs, self._limit)}) if self._content else None
            record = self._starts.start(run_id, parent_run_id, sc.CHAIN, SpanKind.INTERNAL, sc.describe_chain, serialized, kwargs, tags, metadata, content)
            # A LangGraph Command is the only resume: checked by class name before any call.
            if record is not None and type(inputs).__name__ == "Command" and is_resume(inputs) and record.span.is_recording():
                record.span.set_attribute(LANGGRAPH_RESUMED, True)
        except Exception:
            self.fence.note("on_chain_start", "the chain is unaffected", level=logging.ERROR)

    @absorb
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
        content = (lambda: input_messages(messages, self._limit)) if self._content else None
        record = self._starts.start(run_id, parent_run_id, sc.CHAT, SpanKind.CLIENT, sc.describe_chat, serialized, kwargs, tags, metadata, content)
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.CHAT, serialized, kwargs, metadata)

    @absorb
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
        content = (lambda: prompt_messages(prompts, self._limit)) if self._content else None
        record = self._starts.start(
            run_id, parent_run_id, sc.TEXT_COMPLETION, SpanKind.CLIENT, sc.describe_text_completion, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.TEXT_COMPLETION, serialized, kwargs, metadata)

    @absorb
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
        record = self._starts.start(
            run_id, parent_run_id, sc.EXECUTE_TOOL, SpanKind.INTERNAL, sc.describe_tool, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.EXECUTE_TOOL, serialized, kwargs, metadata)

    @absorb
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
        record = self._starts.start(
            run_id, parent_run_id, sc.RETRIEVAL, SpanKind.CLIENT, sc.describe_retriever, serialized, kwargs, tags, metadata, content
        )
        if record is not None and self._metrics is not None:
            self._metrics.started(record, sc.RETRIEVAL, serialized, kwargs, metadata)

    # --- during a run -------------------------------------------------------------------------

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        # Called for every streamed chunk, so written out here rather than handed over: a call
        # into another module and absorb's frame would each cost every chunk of every stream.
        try:
            record = self.registry.get(run_id)
            if record is None:
                return
            if record.first_chunk_monotonic is None:
                record.first_chunk_monotonic = monotonic()
            if record.metric_attributes is not None:
                self._metrics.chunk(record)  # type: ignore[union-attr]
            record.chunks += 1
        except Exception:
            self.fence.note("on_llm_new_token", "the chain is unaffected", level=logging.ERROR)

    @absorb
    def on_custom_event(self, name: Any, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self.registry.get(run_id)
        if record is not None and record.span.is_recording():
            record_custom_event(record, run_id, name, data, self._limit if self._content else None)

    @absorb
    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self.registry.get(run_id)
        if record is not None and record.span.is_recording():
            record_retry(record, retry_state)

    def current_handlers(self) -> tuple[str, ...]:
        """Labels of the handlers an event dispatched from the current step would reach."""
        manager = step_manager()
        if manager is None or not hasattr(manager, "handlers"):
            return ()
        run = self.registry.get(getattr(manager, "parent_run_id", None))
        scope = run.scope if run is not None else self._starts.new_root_scope()
        received = scope.handlers_of(manager, "custom_event")
        return received.local + received.inherited

    # --- ends ---------------------------------------------------------------------------------

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:  # fenced here, as on_chain_start is
            if self._content and "inputs" in kwargs:
                self._ends.streamed_input(run_id, kwargs["inputs"])
            self._ends.end(run_id, self._ends.annotate_chain, outputs)
        except Exception:
            self.fence.note("on_chain_end", "the chain is unaffected", level=logging.ERROR)

    @absorb
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.end(run_id, self._ends.annotate_model, response)

    @absorb
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.end(run_id, self._ends.annotate_tool, output)

    @absorb
    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.end(run_id, self._ends.annotate_retriever, documents)

    @absorb
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._content and "inputs" in kwargs:
            self._ends.streamed_input(run_id, kwargs["inputs"])
        self._ends.fail(run_id, error)

    @absorb
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.fail(run_id, error)

    @absorb
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.fail(run_id, error)

    @absorb
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ends.fail(run_id, error)

    @absorb
    def end_cancelled_run(self, run_id: UUID) -> None:
        """A model run whose task was cancelled while it awaited its provider: LangChain's
        ``agenerate`` is cancelled inside its ``gather`` and never reports the run's end to any
        handler, so the run-body wrapper reports it here (a run already ended is left alone)."""
        self._ends.fail(run_id, asyncio.CancelledError())
