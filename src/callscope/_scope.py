"""The scope model: which callback handlers receive a run's events, and how they got there.

LangChain gives a run the handlers of the callback manager that starts it. Of those, the ones in
the manager's ``inheritable_handlers`` came from the call (``config={"callbacks": ...}``) or an
enclosing ``with_config`` and reach every child run: they are *inherited*. The others were given
to this component's constructor and reach only its own run: they are *local*.

The starting manager is not passed to callback handlers, so ``ManagerProbe`` wraps the managers'
``on_*_start`` methods to publish it in a ContextVar for exactly the duration of the call (set
and reset in the same frame, so it cannot leak). ``SpanHandler`` reads it once per run start.

Handlers are labelled per trace: the class name, and ``#2``, ``#3`` … for further distinct
instances of the same class in order of first appearance. ``TraceScope`` keeps those labels and,
for the root span, which runs each handler saw and missed.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from callscope._dispatch import fair_llm_start, is_callscope

LOCAL = "callscope.handlers.local"
INHERITED = "callscope.handlers.inherited"
MISSED = "callscope.handlers.missed"
#: Prefix of the per-handler root attributes: ``callscope.handlers.missed.<label>``.
MISSED_PREFIX = MISSED + "."

_MAX_TRACKED_RUNS = 1000
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
    """LangChain's and LangGraph's internal handlers: the ones ``stream``, ``astream_events``
    and ``astream_log`` add to carry output, not observers a user attached."""
    return _is_plumbing_class(type(handler))


@functools.lru_cache(maxsize=256)
def _is_plumbing_class(cls: type) -> bool:
    # By name: the marker classes are private to LangChain and may move between modules.
    return any(base.__name__ in ("_StreamingCallbackHandler", "_V2StreamingCallbackHandler") for base in cls.__mro__)


@dataclass(frozen=True, slots=True)
class RunHandlers:
    """The handlers one run's events reach, as labels, plus processors attached to it."""

    local: tuple[str, ...] = ()
    inherited: tuple[str, ...] = ()
    processors: tuple[Any, ...] = ()


EMPTY = RunHandlers()


@dataclass(slots=True, eq=False)
class TraceScope:
    """Per-trace handler labels and, for the root span, who saw which run."""

    include_plumbing: bool = False
    _labels: dict[int, str] = field(default_factory=dict)
    #: Keeps labelled handlers alive so that their ids cannot be reused within the trace.
    _handlers: list[Any] = field(default_factory=list)
    _per_class: dict[str, int] = field(default_factory=dict)
    _runs: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    _untracked_runs: int = 0

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
                    count = self._per_class.get(name, 0) + 1
                    self._per_class[name] = count
                    label = name if count == 1 else f"{name}#{count}"
                    self._labels[key] = label
                    self._handlers.append(handler)
        return label

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
        if len(self._runs) < _MAX_TRACKED_RUNS:
            self._runs.append((name, frozenset(handlers.local + handlers.inherited)))
        else:
            self._untracked_runs += 1

    def missed_attributes(self) -> dict[str, Any]:
        """Root-span attributes: for every handler seen in the trace, the runs it missed."""
        total = len(self._runs)
        summary: list[str] = []
        attributes: dict[str, Any] = {}
        for label in self._labels.values():
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
