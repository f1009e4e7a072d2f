"""Unsampled traces: callscope steps off the callback managers of a trace the sampler dropped.

Production tracing samples: at 1 % sampling, the unsampled path is what an application pays on
99 % of its requests. A bridge that stays on every callback manager pays, on every run of a
dropped trace, LangChain's dispatch of every event to it, and its own bookkeeping, to produce
nothing. callscope leaves such a trace at its root instead:

1. The root run's start reaches callscope's span handler, which is on every manager LangChain
   configures. When the sampler drops the root's span, the handler asks to leave the trace
   (``leave``): it keeps no record of the run.
2. The start probe (``probe.ManagerProbe``) then gives the root's run manager new handler lists
   in which callscope's handler is replaced by an ``UnsampledTrace`` marker
   (``step_off``). LangChain passes the marker down to every child manager, as it would have
   passed callscope's handler.
3. In each step of the root, the step-context wrapper (``steps``) makes the marker's
   non-recording context current, so application spans and instrumented clients inside the
   trace are dropped with it, as the sampler decided, and sets callscope's configure hook to the
   marker (``enter_step``), so LangChain adds the marker, not callscope's handler, to every
   manager configured below. Like the OTel context, the hook value lives only in LangChain's
   copy of the context for that step, and every step below inherits it.

The marker is a handler whose ``ignore_*`` flags are all set: LangChain skips it after reading
one attribute, where a handler with do-nothing methods costs a call per event. It is inline,
like callscope's handler, so LangChain's inline/non-inline decisions (``dispatch``) see what
they saw with callscope's handler there: every other handler receives exactly the same events.

With GenAI metrics live, model, tool and retrieval runs must still be measured whatever the
sampler says. The marker of such a trace (``MeasuredUnsampledTrace``) then receives those runs'
events and hands them to the span handler, which measures them without a span; only chains,
the bulk of a trace's runs, are skipped.

Where LangChain configures a manager outside the trace's steps (a batched sequence configures
its steps' managers for all inputs at once, LangGraph may configure a node's, a worker thread
that LangChain's context never reached), callscope's handler is added again next to the
inherited marker. It recognises the marker on the run's manager and leaves that run the same
way, for the price of one start callback and no span: such a run never starts a trace of its own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler, TraceIdRatioBased
from opentelemetry.trace import NoOpTracer, ProxyTracer, SpanContext

from callscope._bridge.scope import contains

#: Roots asked to be left whose run manager the probe has not seen yet; a start the probe never
#: sees (a LangChain version that starts runs another way) must not grow it without bound.
_MAX_LEAVING = 1024


class UnsampledTrace(BaseCallbackHandler):
    """Stands in for callscope's handler on the managers of a trace the sampler dropped."""

    run_inline = True
    raise_error = False
    # Never listed among the handlers a run reached.
    _callscope_internal = True
    # Properties on BaseCallbackHandler; class attributes here, so LangChain reads a constant.
    ignore_llm = True
    ignore_chat_model = True
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self, context: Context) -> None:
        #: The root's context, its non-recording span current: what code in the trace sees.
        self.context = context


class MeasuredUnsampledTrace(UnsampledTrace):
    """The marker of a dropped trace while GenAI metrics are live: model, tool and retrieval
    runs reach the span handler, which measures them without spans; chains do not."""

    ignore_llm = False
    ignore_chat_model = False
    ignore_agent = False
    ignore_retriever = False

    def __init__(self, context: Context, handler: Any) -> None:
        super().__init__(context)
        self._handler = handler


def _forwarded(callback: str) -> Callable[..., None]:
    def forward(self: MeasuredUnsampledTrace, *args: Any, **kwargs: Any) -> None:
        getattr(self._handler, callback)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = callback
    return forward


#: What a measured run's events are, for the span handler to measure it.
_MEASURED_CALLBACKS = tuple(
    f"on_{kind}_{event}" for kind in ("llm", "tool", "retriever") for event in ("start", "end", "error")
) + ("on_chat_model_start", "on_llm_new_token")
for _callback in _MEASURED_CALLBACKS:
    setattr(MeasuredUnsampledTrace, _callback, _forwarded(_callback))


class UnsampledTraces:
    """Leaves dropped traces for one span handler: what its start callback, the start probe and
    the step-context wrapper each do about them."""

    def __init__(self, handler: BaseCallbackHandler, hook: contextvars.ContextVar[Any]) -> None:
        self._handler = handler
        #: callscope's LangChain configure hook: the handler LangChain adds to every manager it
        #: configures in the current context (callscope's, or a marker inside a dropped trace).
        self._hook = hook
        #: Runs the span handler asked to leave, until the probe has their run manager; checked
        #: (empty) on every run start, so a plain attribute.
        self.leaving: dict[UUID, UnsampledTrace] = {}

    def new_marker(self, context: Context, measured: bool) -> UnsampledTrace:
        return MeasuredUnsampledTrace(context, self._handler) if measured else UnsampledTrace(context)

    def leave(self, run_id: UUID, marker: UnsampledTrace) -> None:
        """Called by the span handler from a root's start: step off this run's managers."""
        if len(self.leaving) >= _MAX_LEAVING:
            self.leaving.clear()
        self.leaving[run_id] = marker

    def step_off(self, started: Any) -> None:
        """Called by the start probe with what a manager's ``on_*_start`` returned (a run manager,
        or a list of them for model starts): where the span handler asked to leave a run, swap
        it for the marker on that run's manager. New lists, never changed in place: LangChain
        may still be iterating the old ones (they are the starting manager's too)."""
        for run_manager in started if isinstance(started, list) else (started,):
            marker = self.leaving.pop(getattr(run_manager, "run_id", None), None)  # type: ignore[arg-type]
            if marker is not None:
                run_manager.handlers = self._swapped(run_manager.handlers, marker)
                run_manager.inheritable_handlers = self._swapped(run_manager.inheritable_handlers, marker)

    def _swapped(self, handlers: list[Any], marker: UnsampledTrace) -> list[Any]:
        ours = self._handler
        kept = [handler for handler in handlers if handler is not ours]
        if len(kept) == len(handlers):
            return handlers
        if not contains(kept, marker):
            kept.append(marker)
        return kept

    def enter_step(self, manager: Any) -> None:
        """Called in the context LangChain copied for a step of a run callscope does not know, or
        keeps without a span: if the run belongs to a dropped trace, make that trace's context current here and keep
        callscope's handler off every manager configured below."""
        if isinstance(self._hook.get(), UnsampledTrace):
            return  # an enclosing step of the trace did it already
        marker = marker_on(manager)
        if marker is not None:
            otel_context.attach(marker.context)  # never detached: the copy ends with the step
            self._hook.set(marker)


def marker_on(manager: Any) -> UnsampledTrace | None:
    """The dropped trace's marker among ``manager``'s handlers, if it has one."""
    handlers: Sequence[Any] = getattr(manager, "handlers", None) or ()
    for handler in handlers:
        if isinstance(handler, UnsampledTrace):
            return handler
    return None


def read_sampler(tracer: Any) -> tuple[bool, Callable[[SpanContext], bool], bool]:
    """What callscope may take from ``tracer``'s sampling, and whether that is final:

    - whether the runs below a dropped root are certain to be dropped too, so that skipping them
      (and leaving the trace) is sound: parent-based sampling, and the samplers whose decision
      is the same for every span of a trace; an unknown sampler gets every span offered;
    - the test that tells a root's drop before its span starts (``dropped_without_asking``);
    - final: a tracer of the global provider taken before the application set one is a proxy
      that drops every span and delegates to the real tracer once a provider is set, so it is
      to be read again.
    """
    final = True
    if isinstance(tracer, ProxyTracer):
        tracer = getattr(tracer, "_tracer", None)  # the API's delegate: a no-op tracer until a provider is set
        final = not isinstance(tracer, NoOpTracer)
    if isinstance(tracer, NoOpTracer):  # no SDK (yet, or at all: OTEL_SDK_DISABLED, the API alone)
        return True, _always_dropped, final
    sampler = getattr(tracer, "sampler", None)
    follows_parent = isinstance(sampler, (ParentBased, StaticSampler, TraceIdRatioBased))
    return follows_parent, dropped_without_asking(sampler), final


def _always_dropped(parent: SpanContext) -> bool:
    return True


def dropped_without_asking(sampler: Any) -> Callable[[SpanContext], bool]:
    """For the SDK's own samplers, a test telling whether a new root span parented by the span
    context given will be dropped, without the name and attributes the sampler is asked with:
    always-off, and parent-based sampling whose not-sampled delegates (or whose root sampler,
    for a root without a parent) are always-off. False wherever the answer is not certain (a
    ratio sampler's decision needs the trace id the SDK draws when the span starts)."""
    if _always_drops(sampler):
        return _always_dropped
    if not isinstance(sampler, ParentBased):
        return lambda parent: False
    root = _always_drops(getattr(sampler, "_root", None))
    remote = _always_drops(getattr(sampler, "_remote_parent_not_sampled", None))
    local = _always_drops(getattr(sampler, "_local_parent_not_sampled", None))

    def dropped(parent: SpanContext) -> bool:
        if not parent.is_valid:
            return root
        if parent.trace_flags.sampled:
            return False
        return remote if parent.is_remote else local

    return dropped


def _always_drops(sampler: Any) -> bool:
    return isinstance(sampler, StaticSampler) and getattr(sampler, "_decision", None) is Decision.DROP
