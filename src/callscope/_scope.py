"""The scope model: which callback handlers receive a run's events, and how they got there.

LangChain gives a run the handlers of the callback manager that starts it. Of those, the ones in
the manager's ``inheritable_handlers`` came from the call (``config={"callbacks": ...}``) or an
enclosing ``with_config`` and reach every child run: they are *inherited*. The others were given
to this component's constructor and reach only its own run: they are *local*.

The starting manager is not passed to callback handlers, so ``ManagerProbe`` wraps the managers'
``on_*_start`` methods to publish it in a ContextVar for exactly the duration of the call (set
and reset in the same frame, so it cannot leak). ``SpanHandler`` reads it once per run start.

Handlers are labelled per OpenTelemetry trace: the class name, and ``#2``, ``#3`` … for further
distinct instances of the same class in order of first appearance (``TraceLabels``), shared by
every LangChain root run in that trace (``LabelsByTrace``). ``TraceScope`` holds one root's
reference to those labels and, for the root's span, which of its runs each handler saw and
missed: a trace with two LangChain roots has one summary on each root, about its own runs.

**Why a handler missed a run.** Each miss has one reason, each derived from what LangChain's
managers held and delivered:

- ``filtered``: the handler was on the run's manager, but its ``ignore_*`` flag for the run's
  type kept the run from it (known at the run's start);
- ``dropped``: the run's LangChain root started inside a traced step (a lambda, tool or node
  body, or a worker thread the step's OTel context was carried into) without the step's config,
  so handlers the step passed down never reached it (known at the run's start);
- ``subtree``: an inherited handler that some other run of this root received, passed down on
  another subtree (``with_config(callbacks=...)`` on a sibling, a runtime handler given to a
  nested call);
- ``scope``: a handler only ever given to constructors (it sees those components' own runs).

``subtree`` and ``scope`` are facts about the root's runs taken together, not about one run (the
model whose constructor handler the prompt missed starts after the prompt ended), so they are
given in the root's summary; each span carries the per-run facts (its ``local``, ``inherited``,
``filtered`` and ``dropped`` handlers), from which ``callscope tree`` derives each cell by the
same rule. A handler that received an event and raised (``failed``) is recorded where it
happened: an event on the run's span and a line in the summary (see ``SpanHandler.record_failure``).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import get_current_span

from callscope._dispatch import fair_llm_start, is_callscope

if TYPE_CHECKING:
    from callscope._unsampled import UnsampledTraces

LOCAL = "callscope.handlers.local"
INHERITED = "callscope.handlers.inherited"
MISSED = "callscope.handlers.missed"
#: Prefix of the per-handler root attributes: ``callscope.handlers.missed.<label>``.
MISSED_PREFIX = MISSED + "."
#: Handlers on the run's manager whose ``ignore_*`` flag kept this run from them.
FILTERED = "callscope.handlers.filtered"
#: Handlers the step this run's LangChain root started in passed down, which this run lacks.
DROPPED = "callscope.handlers.dropped"
#: On the run that started without its caller's config: the step it started in.
DROPPED_IN = "callscope.handlers.dropped_in"
#: Handlers that raised from one of this run's callbacks (each failure is also a span event).
FAILED = "callscope.handlers.failed"
#: The span event of one handler failure.
FAILURE_EVENT = "callscope.handler.failed"
FAILURE_HANDLER = "callscope.handler"
FAILURE_CALLBACK = "callscope.callback"
#: On a failure event recorded on a parent's span because the failing run's own span had ended
#: (LangChain dispatched the callback to callscope before the failing handler): that run's
#: name, so a reader puts the failure under the child of that name. (Not its span id: keeping
#: that for every run would cost every run, and nothing at all is spent until a handler fails.)
FAILURE_OF_RUN = "callscope.callback.run"

#: Why a handler missed a run, and the fix, in one phrase each.
SCOPE, SUBTREE, FILTERED_REASON, DROPPED_REASON, FAILED_REASON = "scope", "subtree", "filtered", "dropped", "failed"
FIXES = {
    SCOPE: "pass it at run time, config={'callbacks': [...]}, to see the whole chain",
    SUBTREE: "pass it to the outermost call, config={'callbacks': [...]}, to see the whole chain",
    FILTERED_REASON: "unset the flag to receive these runs",
    DROPPED_REASON: "pass `config` to the nested `invoke` (into the thread, too)",
    FAILED_REASON: "fix the handler; LangChain logged the error and went on without it",
}
_FIX_ABORTED = "fix the handler; with raise_error=True its error aborted the run"

_MAX_TRACKED_RUNS = 1000
_MAX_LABELS_PER_TRACE = 256
_MAX_TRACES_REMEMBERED = 4096
_LABEL_LOCK = threading.Lock()
_MAX_LISTED_MISSES = 32
_MAX_FAILURES_PER_TRACE = 64

#: The LangChain callback condition that decides whether a handler receives each operation.
IGNORE_CONDITION = {
    "chain": "ignore_chain",
    "chat": "ignore_chat_model",
    "text_completion": "ignore_llm",
    "execute_tool": "ignore_agent",
    "retrieval": "ignore_retriever",
    "custom_event": "ignore_custom_event",
}

_starting_manager: contextvars.ContextVar[Any] = contextvars.ContextVar("callscope_starting_manager", default=None)

_START_METHODS = ("on_chain_start", "on_chat_model_start", "on_llm_start", "on_tool_start", "on_retriever_start")
_MANAGER_MODULE = "langchain_core.callbacks.manager"


def starting_manager() -> Any:
    """The callback manager whose ``on_*_start`` is running right now, if any."""
    return _starting_manager.get()


class ManagerProbe:
    """Publishes the starting callback manager while its ``on_*_start`` runs, and hands the run
    managers it returns to ``UnsampledTraces.step_off`` while a dropped trace is being left.

    Plain method wrappers, not wrapt proxies: they run on every run start, where a wrapt bound
    wrapper costs an allocation and argument marshalling each time. Each keeps the original as
    ``__wrapped__`` and is removed only while it is still the class attribute. The async LLM
    start's probe also keeps LangChain's dispatch to the other handlers as it is without
    callscope (``_dispatch``).
    """

    def __init__(self, unsampled: UnsampledTraces) -> None:
        self._installed: list[tuple[type, str, Any, Any]] = []
        self._unsampled = unsampled

    def install(self) -> None:
        module = importlib.import_module(_MANAGER_MODULE)
        unsampled = self._unsampled
        for owner, make in ((module.CallbackManager, _probe_sync), (module.AsyncCallbackManager, _probe_async)):
            for method in _START_METHODS:
                original = owner.__dict__.get(method)
                if original is None:
                    continue  # inherited or gone in this LangChain version: nothing to publish
                if owner is module.AsyncCallbackManager and method == "on_llm_start":
                    probe = fair_llm_start(original, _starting_manager, unsampled)
                else:
                    probe = make(original, unsampled)
                setattr(owner, method, probe)
                self._installed.append((owner, method, original, probe))

    def uninstall(self) -> None:
        while self._installed:
            owner, method, original, probe = self._installed.pop()
            if owner.__dict__.get(method) is probe:
                setattr(owner, method, original)


def _probe_sync(original: Callable[..., Any], unsampled: UnsampledTraces) -> Callable[..., Any]:
    @functools.wraps(original)
    def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _starting_manager.set(self)
        try:
            started = original(self, *args, **kwargs)
        finally:
            _starting_manager.reset(token)
        if unsampled.leaving:
            unsampled.step_off(started)
        return started

    return probed


def _probe_async(original: Callable[..., Any], unsampled: UnsampledTraces) -> Callable[..., Any]:
    @functools.wraps(original)
    async def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Inside the coroutine, so set and reset happen in the awaiting task's own context.
        token = _starting_manager.set(self)
        try:
            started = await original(self, *args, **kwargs)
        finally:
            _starting_manager.reset(token)
        if unsampled.leaving:
            unsampled.step_off(started)
        return started

    return probed


def is_plumbing(handler: Any) -> bool:
    """LangChain's and LangGraph's internal handlers: the ones they add themselves to carry a
    feature (``stream``/``astream_events``/``astream_log`` output, ``with_listeners`` and
    ``RunnableWithMessageHistory`` listeners, LangGraph's message streaming and idle timeouts),
    not observers a user attached."""
    return _is_plumbing_class(type(handler))


#: Where LangChain and LangGraph offer the callback handlers meant for users.
_PUBLIC_HANDLER_MODULES = ("langchain_core.callbacks", "langchain_core.tracers", "langgraph.callbacks")
#: LangChain's marker types for handlers that consume a stream's output.
_STREAMING_MARKERS = ("_StreamingCallbackHandler", "_V2StreamingCallbackHandler")


@functools.lru_cache(maxsize=256)
def _is_plumbing_class(cls: type) -> bool:
    # By what the class is, not by a list of names that goes stale: a streaming handler by
    # LangChain's marker base, otherwise any handler class LangChain or LangGraph define but do
    # not offer to users (private, or absent from their public handler modules). A user's own
    # class, even one derived from a LangChain tracer, is never plumbing.
    if any(base.__name__ in _STREAMING_MARKERS and _from_langchain(base.__module__) for base in cls.__mro__):
        return True
    module = cls.__module__
    if not _from_langchain(module):
        return False
    private = cls.__name__.startswith("_") or any(part.startswith("_") for part in module.split("."))
    return private or cls not in _public_handler_classes()


def _from_langchain(module: str) -> bool:
    return module.startswith(("langchain_core.", "langgraph."))


@functools.lru_cache(maxsize=1)
def _public_handler_classes() -> frozenset[type]:
    from langchain_core.callbacks import BaseCallbackHandler

    public: set[type] = set()
    for module_name in _PUBLIC_HANDLER_MODULES:
        # LangGraph only if the application already loaded it: importing it here would load a
        # whole framework into an app that does not use it (its handlers cannot be in play then).
        if module_name.startswith("langgraph") and "langgraph" not in sys.modules:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # a LangGraph too old to have lifecycle callbacks
        for name in getattr(module, "__all__", ()):
            candidate = getattr(module, name, None)
            if isinstance(candidate, type) and issubclass(candidate, BaseCallbackHandler):
                public.add(candidate)
    return frozenset(public)


@dataclass(frozen=True, slots=True)
class RunHandlers:
    """The handlers one run's events reach, as labels, plus processors attached to it."""

    local: tuple[str, ...] = ()
    inherited: tuple[str, ...] = ()
    processors: tuple[Any, ...] = ()
    #: On the manager, but an ``ignore_*`` flag for this run's type kept the run from them.
    filtered: tuple[str, ...] = ()

    def received(self, label: str) -> bool:
        return label in self.local or label in self.inherited


EMPTY = RunHandlers()


class TraceLabels:
    """The handler labels of one OpenTelemetry trace: the class name, then ``#2``, ``#3`` … for
    further distinct instances of the class, in order of first appearance.

    Bounded whatever the trace's length: a labelled handler is held by weak reference (its label
    is forgotten when it is collected, so a new object reusing its ``id`` is labelled afresh),
    and past ``_MAX_LABELS_PER_TRACE`` distinct handlers the rest share ``<class>#+``.
    """

    __slots__ = ("_labels", "_per_class", "_keep")

    def __init__(self) -> None:
        self._labels: dict[int, str] = {}
        self._per_class: dict[str, int] = {}
        #: Weak references (or, for objects that take none, the objects) that keep ids unique.
        self._keep: dict[int, Any] = {}

    def label(self, handler: Any) -> str:
        key = id(handler)
        label = self._labels.get(key)
        if label is None:
            # Parallel branches run in threads and may meet a new handler at the same moment;
            # numbering must happen once per handler.
            with _LABEL_LOCK:
                label = self._labels.get(key)
                if label is None:
                    name = type(handler).__name__
                    if len(self._labels) >= _MAX_LABELS_PER_TRACE:
                        return f"{name}#+"
                    count = self._per_class.get(name, 0) + 1
                    self._per_class[name] = count
                    label = name if count == 1 else f"{name}#{count}"
                    self._labels[key] = label
                    try:
                        self._keep[key] = weakref.ref(handler, functools.partial(self._forget, key))
                    except TypeError:  # a handler class with __slots__ and no __weakref__
                        self._keep[key] = handler
        return label

    def _forget(self, key: int, ref: Any) -> None:
        # Called by the garbage collector, possibly while this thread holds _LABEL_LOCK: no lock
        # here, only single dict operations (atomic under the GIL). The collected object died
        # before any new object could take its id, so the entry is still its own.
        if self._keep.get(key) is ref:
            self._labels.pop(key, None)
            self._keep.pop(key, None)


class LabelsByTrace:
    """Which ``TraceLabels`` a new LangChain root run uses: the one of the OpenTelemetry trace it
    starts in, so that two chains run under one caller span (a web request running two chains)
    number their handlers together. Holds the most recent ``max_traces`` traces only."""

    def __init__(self, max_traces: int = _MAX_TRACES_REMEMBERED) -> None:
        self._by_trace: dict[int, TraceLabels] = {}
        self._max_traces = max_traces

    def for_new_root(self) -> TraceLabels:
        parent = get_current_span().get_span_context()
        if not parent.is_valid:
            return TraceLabels()  # the root starts a trace of its own
        labels = self._by_trace.get(parent.trace_id)
        if labels is None:
            with _LABEL_LOCK:
                labels = self._by_trace.get(parent.trace_id)
                if labels is None:
                    labels = self._by_trace[parent.trace_id] = TraceLabels()
                    self._forget_oldest()
        return labels

    def remember(self, trace_id: int, labels: TraceLabels) -> None:
        """Record the labels of a root that started its own trace: a root started later in that
        trace without a callscope run around it (inside a model's provider code, say) shares them."""
        if self._by_trace.get(trace_id) is not None:
            return
        with _LABEL_LOCK:
            if self._by_trace.setdefault(trace_id, labels) is labels:
                self._forget_oldest()

    def forget(self, trace_id: int, labels: TraceLabels) -> None:
        """The root that started trace ``trace_id`` has ended: no run can start in that trace any
        more, so its labels need not be kept (traces under an application's span stay, bounded,
        since the application may run another chain in them)."""
        if self._by_trace.get(trace_id) is labels:
            with _LABEL_LOCK:
                if self._by_trace.get(trace_id) is labels:
                    del self._by_trace[trace_id]

    def _forget_oldest(self) -> None:
        while len(self._by_trace) > self._max_traces:
            del self._by_trace[next(iter(self._by_trace))]


#: What the root's summary needs of one run under it: a plain tuple, built on every run.
#: (name, operation, handlers, dropped labels, run id: a handler failure reported after the
#: run's span ended is attributed to the run by its id, a scan on failures only.)
_Run = tuple[str, str, RunHandlers, tuple[str, ...], Any]


@dataclass(slots=True, eq=False)
class TraceScope:
    """The handler labels of the trace a LangChain root run belongs to and, for that root's
    span, which runs under it each handler saw and missed, why, and which callbacks failed."""

    include_plumbing: bool = False
    labels: TraceLabels = field(default_factory=TraceLabels)
    _runs: list[_Run] = field(default_factory=list)
    _untracked_runs: int = 0
    #: The labels on a manager of a run under this root, in order of first appearance.
    _seen: dict[str, None] = field(default_factory=dict)
    #: label -> the step a LangChain root under this root started in without its config.
    _dropped_in: dict[str, str] = field(default_factory=dict)
    #: (label, callback, run name, error type), bounded; then a count of the rest.
    _failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    _untracked_failures: int = 0
    #: run id -> (labels of the handlers that failed in its callbacks, failure events on its
    #: span): kept here, not on the run's record, so that runs nothing fails in pay nothing.
    _failed_runs: dict[Any, tuple[tuple[str, ...], int]] = field(default_factory=dict)

    def label(self, handler: Any) -> str:
        return self.labels.label(handler)

    def handlers_of(self, manager: Any, operation: str) -> RunHandlers:
        """Classify ``manager``'s handlers for a run of ``operation``; computed once per run."""
        handlers = getattr(manager, "handlers", None)
        if not handlers:
            return EMPTY
        inheritable = getattr(manager, "inheritable_handlers", None) or ()
        ignore = IGNORE_CONDITION.get(operation)
        local: list[str] = []
        inherited: list[str] = []
        processors: list[Any] = []
        filtered: list[str] | None = None
        for handler in handlers:
            if is_callscope(handler):
                attached = getattr(handler, "_callscope_processors", None)
                # A processor carrier in constructor scope reaches this component's own run only.
                if attached and not _contains(inheritable, handler):
                    processors.extend(attached)
                continue
            if not self.include_plumbing and is_plumbing(handler):
                continue
            if ignore and getattr(handler, ignore, False):
                # LangChain's handle_event skips it for this event: the same test, the same flag.
                if filtered is None:
                    filtered = []
                filtered.append(self.label(handler))
                continue
            (inherited if _contains(inheritable, handler) else local).append(self.label(handler))
        if not (local or inherited or processors or filtered):
            return EMPTY
        return RunHandlers(tuple(local), tuple(inherited), tuple(processors), tuple(filtered) if filtered else ())

    def lost_on_the_way(self, passed_down: Any, manager: Any, received: RunHandlers, already: tuple[str, ...]) -> tuple[str, ...]:
        """Labels of the handlers a step passed down (``passed_down``, its manager's inheritable
        handlers) that a LangChain root started inside it does not have (``manager``), plus the
        ones its own root had already lost (``already``)."""
        handlers = getattr(manager, "handlers", None) or ()
        lost: list[str] = []
        for handler in passed_down or ():
            if is_callscope(handler) or _contains(handlers, handler):
                continue
            if not self.include_plumbing and is_plumbing(handler):
                continue
            lost.append(self.label(handler))
        lost.extend(label for label in already if not received.received(label) and label not in received.filtered)
        return tuple(dict.fromkeys(lost))

    def record_run(
        self,
        name: str,
        operation: str,
        handlers: RunHandlers,
        dropped: tuple[str, ...] = (),
        run_id: Any = None,
    ) -> None:
        if handlers is not EMPTY:
            seen = self._seen
            for label in handlers.local + handlers.inherited + handlers.filtered:
                if label not in seen and len(seen) < _MAX_LABELS_PER_TRACE:
                    seen[label] = None
        if len(self._runs) < _MAX_TRACKED_RUNS:
            # The RunHandlers themselves, not a set built from them: membership is asked only
            # once, when the root ends, and most runs are never asked about at all.
            self._runs.append((name, operation, handlers, dropped, run_id))
        else:
            self._untracked_runs += 1

    def run_named(self, run_id: Any) -> str | None:
        """The name of a run under this root, most recent first; None if not tracked."""
        for name, _, _, _, recorded_id in reversed(self._runs):
            if recorded_id == run_id:
                return name
        return None

    def record_dropped(self, step: str, labels: tuple[str, ...]) -> None:
        for label in labels:
            if len(self._dropped_in) < _MAX_LABELS_PER_TRACE:
                self._dropped_in.setdefault(label, step)

    def failed_on(self, run_id: Any) -> tuple[tuple[str, ...], int]:
        """(labels, events) of the failures recorded on a run's span so far."""
        return self._failed_runs.get(run_id, ((), 0))

    def set_failed_on(self, run_id: Any, labels: tuple[str, ...], events: int) -> None:
        if run_id in self._failed_runs or len(self._failed_runs) < _MAX_FAILURES_PER_TRACE:
            self._failed_runs[run_id] = (labels, events)

    def record_failure(self, label: str, callback: str, run: str, error_type: str) -> None:
        if label not in self._seen and len(self._seen) < _MAX_LABELS_PER_TRACE:
            self._seen[label] = None
        if len(self._failures) < _MAX_FAILURES_PER_TRACE:
            self._failures.append((label, callback, run, error_type))
        else:
            self._untracked_failures += 1

    def missed_attributes(self) -> dict[str, Any]:
        """Root-span attributes: for every handler on a manager under this root, the runs under
        this root it missed, grouped by reason with the fix, and the callbacks it failed in."""
        total = len(self._runs)
        failures: dict[str, list[tuple[str, str, str]]] = {}
        for label, callback, run_name, error_type in self._failures:
            failures.setdefault(label, []).append((callback, run_name, error_type))
        # The runs where each label was given to a constructor, and the first run that inherited
        # it (its subtree's top: runs start after their parents); built only once a miss needs it.
        local_in: dict[str, dict[str, None]] = {}
        inherited_from: dict[str, str] = {}
        summary: list[str] = []
        attributes: dict[str, Any] = {}
        for label in self._seen:
            if label not in failures:
                for run in self._runs:
                    handlers = run[2]
                    if label not in handlers.local and label not in handlers.inherited:
                        break
                else:
                    continue  # the common case: it received every run, and never failed
            if not local_in and not inherited_from:
                for name, _, handlers, _, _ in self._runs:
                    for received in handlers.local:
                        local_in.setdefault(received, {})[name] = None
                    for received in handlers.inherited:
                        inherited_from.setdefault(received, name)
            by_reason: dict[str, list[str]] = {}
            flags: dict[str, None] = {}
            missed: list[str] = []
            for name, operation, handlers, dropped, _ in self._runs:
                if label in handlers.local or label in handlers.inherited:
                    continue
                if label in handlers.filtered:
                    reason = FILTERED_REASON
                    flags[IGNORE_CONDITION.get(operation, "ignore_*")] = None
                elif label in dropped:
                    reason = DROPPED_REASON
                elif label in inherited_from:
                    reason = SUBTREE
                else:
                    reason = SCOPE
                by_reason.setdefault(reason, []).append(name)
                missed.append(name)
            failed = failures.get(label, [])
            if not missed and not failed:
                continue
            parts = [f"{label} saw {total - len(missed)} of {total} runs"]
            for reason in (SCOPE, SUBTREE, FILTERED_REASON, DROPPED_REASON):
                names = by_reason.get(reason)
                if names:
                    parts.append(f"{reason}: missed {', '.join(_counted(names))} ({self._why(reason, label, local_in, inherited_from, flags)}; fix: {FIXES[reason]})")
            if failed:
                events = [f"{callback} of {run_name} ({error_type})" for callback, run_name, error_type in failed]
                fix = _FIX_ABORTED if any(", aborted" in error_type for _, _, error_type in failed) else FIXES[FAILED_REASON]
                parts.append(f"{FAILED_REASON}: raised in {', '.join(_counted(events))} (fix: {fix})")
            if missed:
                listed = missed[:_MAX_LISTED_MISSES]
                if len(missed) > len(listed):
                    listed.append(f"… {len(missed) - len(listed)} more")
                attributes[MISSED_PREFIX + label] = tuple(listed)
            summary.append("; ".join(parts))
        if summary:
            if self._untracked_runs:
                summary.append(f"({self._untracked_runs} further runs not tracked)")
            if self._untracked_failures:
                summary.append(f"({self._untracked_failures} further handler failures not listed)")
            attributes[MISSED] = tuple(summary)
        return attributes

    def _why(self, reason: str, label: str, local_in: dict[str, dict[str, None]], inherited_from: dict[str, str], flags: dict[str, None]) -> str:
        if reason == SCOPE:
            owners = list(local_in.get(label, {}))
            if not owners:
                return "a constructor callback of a component outside these runs"
            more = f" and {len(owners) - 3} more" if len(owners) > 3 else ""
            return f"a constructor callback of {', '.join(owners[:3])}{more}"
        if reason == SUBTREE:
            return f"passed down from {inherited_from[label]} only"
        if reason == FILTERED_REASON:
            return f"{' / '.join(f'{flag}=True' for flag in flags)} on the handler"
        step = self._dropped_in.get(label)
        return f"started in {step} without its config" if step else "started without its caller's config"


def _contains(handlers: Any, handler: Any) -> bool:
    """Identity membership: LangChain dedups handlers by identity, and a handler's __eq__ is
    user code."""
    for other in handlers:
        if other is handler:
            return True
    return False


def _counted(names: Iterable[str]) -> list[str]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    listed = [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()]
    if len(listed) > _MAX_LISTED_MISSES:
        rest = sum(list(counts.values())[_MAX_LISTED_MISSES:])
        listed = [*listed[:_MAX_LISTED_MISSES], f"… {rest} more"]
    return listed
