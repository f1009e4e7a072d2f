"""The start probe: which callback manager is starting the run, read where LangChain starts it.

LangChain does not pass the starting callback manager to callback handlers, yet only it says
which handlers a run reaches and how (``scope``). ``ManagerProbe`` wraps the managers'
``on_*_start`` methods to publish the manager in a ContextVar for exactly the duration of the
call (set and reset in the same frame, so it cannot leak); the span handler reads it once per
run start. The probe is also where a dropped trace is left: it hands the run managers a start
returns to ``UnsampledTraces.step_off`` while the span handler has asked to leave that run.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
from collections.abc import Callable
from typing import Any

from callscope._bridge.dispatch import MANAGER_MODULE, START_CALLBACKS, fair_llm_start
from callscope._bridge.unsampled import UnsampledTraces

_starting_manager: contextvars.ContextVar[Any] = contextvars.ContextVar("callscope_starting_manager", default=None)


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
    callscope (``dispatch``).
    """

    def __init__(self, unsampled: UnsampledTraces) -> None:
        self._installed: list[tuple[type, str, Any, Any]] = []
        self._unsampled = unsampled

    def install(self) -> None:
        module = importlib.import_module(MANAGER_MODULE)
        unsampled = self._unsampled
        for owner, make in ((module.CallbackManager, _probe_sync), (module.AsyncCallbackManager, _probe_async)):
            for method in START_CALLBACKS:
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
