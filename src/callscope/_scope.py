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
from typing import Any

from opentelemetry.trace import get_current_span

from callscope._dispatch import fair_llm_start, is_callscope

LOCAL = "callscope.handlers.local"
INHERITED = "callscope.handlers.inherited"
MISSED = "callscope.handlers.missed"
#: Prefix of the per-handler root attributes: ``callscope.handlers.missed.<label>``.
MISSED_PREFIX = MISSED + "."

_MAX_TRACKED_RUNS = 1000
_MAX_LABELS_PER_TRACE = 256
_MAX_TRACES_REMEMBERED = 4096
_LABEL_LOCK = threading.Lock()
_MAX_LISTED_MISSES = 32

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
    """Publishes the starting callback manager while its ``on_*_start`` runs.

    Plain method wrappers, not wrapt proxies: they run on every run start, where a wrapt bound
    wrapper costs an allocation and argument marshalling each time. Each keeps the original as
    ``__wrapped__`` and is removed only while it is still the class attribute. The async LLM
    start's probe also keeps LangChain's dispatch to the other handlers as it is without
    callscope (``_dispatch``).
    """

    def __init__(self) -> None:
        self._installed: list[tuple[type, str, Any, Any]] = []

    def install(self) -> None:
        module = importlib.import_module(_MANAGER_MODULE)
        for owner, make in ((module.CallbackManager, _probe_sync), (module.AsyncCallbackManager, _probe_async)):
            for method in _START_METHODS:
                original = owner.__dict__.get(method)
                if original is None:
                    continue  # inherited or gone in this LangChain version: nothing to publish
                if owner is module.AsyncCallbackManager and method == "on_llm_start":
                    probe = fair_llm_start(original, _starting_manager)
                else:
                    probe = make(original)
                setattr(owner, method, probe)
                self._installed.append((owner, method, original, probe))

    def uninstall(self) -> None:
        while self._installed:
            owner, method, original, probe = self._installed.pop()
            if owner.__dict__.get(method) is probe:
                setattr(owner, method, original)


def _probe_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _starting_manager.set(self)
        try:
            return original(self, *args, **kwargs)
        finally:
            _starting_manager.reset(token)

    return probed


def _probe_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Inside the coroutine, so set and reset happen in the awaiting task's own context.
        token = _starting_manager.set(self)
        try:
            return await original(self, *args, **kwargs)
        finally:
            _starting_manager.reset(token)

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


@dataclass(slots=True, eq=False)
class TraceScope:
    """The handler labels of the trace a LangChain root run belongs to and, for that root's
    span, which runs under it each handler saw and missed."""

    include_plumbing: bool = False
    labels: TraceLabels = field(default_factory=TraceLabels)
    _runs: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    _untracked_runs: int = 0
    #: The labels that reached a run under this root, in order of first appearance.
    _seen: dict[str, None] = field(default_factory=dict)

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
        for handler in handlers:
            if is_callscope(handler):
                attached = getattr(handler, "_callscope_processors", None)
                # A processor carrier in constructor scope reaches this component's own run only.
                if attached and not _contains(inheritable, handler):
                    processors.extend(attached)
                continue
            if (ignore and getattr(handler, ignore, False)) or (not self.include_plumbing and is_plumbing(handler)):
                continue
            (inherited if _contains(inheritable, handler) else local).append(self.label(handler))
        if not (local or inherited or processors):
            return EMPTY
        return RunHandlers(tuple(local), tuple(inherited), tuple(processors))

    def record_run(self, name: str, handlers: RunHandlers) -> None:
        for label in handlers.local + handlers.inherited:
            if label not in self._seen and len(self._seen) < _MAX_LABELS_PER_TRACE:
                self._seen[label] = None
        if len(self._runs) < _MAX_TRACKED_RUNS:
            self._runs.append((name, frozenset(handlers.local + handlers.inherited)))
        else:
            self._untracked_runs += 1

    def missed_attributes(self) -> dict[str, Any]:
        """Root-span attributes: for every handler that saw a run under this root, the runs
        under this root it missed."""
        total = len(self._runs)
        summary: list[str] = []
        attributes: dict[str, Any] = {}
        for label in self._seen:
            missed = [name for name, seen in self._runs if label not in seen]
            if not missed:
                continue
            listed = missed[:_MAX_LISTED_MISSES]
            if len(missed) > len(listed):
                listed.append(f"… {len(missed) - len(listed)} more")
            attributes[MISSED_PREFIX + label] = tuple(listed)
            summary.append(f"{label} saw {total - len(missed)} of {total} runs; missed {', '.join(_counted(missed))}")
        if summary:
            if self._untracked_runs:
                summary.append(f"({self._untracked_runs} further runs not tracked)")
            attributes[MISSED] = tuple(summary)
        return attributes


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
    return [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()][:_MAX_LISTED_MISSES]
