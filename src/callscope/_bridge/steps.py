"""Runtime callbacks as context propagation: the run's span is current inside the run's step.

LangChain runs every step body (a lambda, a tool body, a nested chain, a LangGraph node, a
stream's generator) inside a ``contextvars.Context`` it copies for that step, through
``set_config_context``, which calls ``_set_config_context(config)`` *inside the copy*. The
config's callback manager there is the child manager of the run that owns the step, so its
``parent_run_id`` names that run.

callscope wraps ``_set_config_context`` and, inside that private copy, makes the owning run's
span the current OTel span. Because the value lives only in LangChain's copy:

- the step body (and any span or instrumented HTTP client it starts) sees the run's span;
- nothing is ever detached, so "Failed to detach context" cannot happen;
- nothing can leak to the caller: the caller's own context was never written to.

Callback handlers cannot do this: LangChain runs async end callbacks in a fresh context copy,
so an attach in ``on_chain_start`` can never be undone from ``on_chain_end``. Models, LLMs and
retrievers have no step of their own: ``run_bodies`` covers them.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from callscope._bridge.runs import RunRegistry
from callscope._bridge.unsampled import UnsampledTraces

_log = logging.getLogger("callscope")

#: Every ``(module, function)`` that opens a step context, in LangChain and in LangGraph.
STEP_CONTEXT_OPENERS = (
    ("langchain_core.runnables.config", "_set_config_context"),
    ("langgraph._internal._runnable", "_set_config_context"),
)


class StepContextPropagator:
    """Installs and removes the ``_set_config_context`` wrappers for one run registry.

    The wrapper is a plain function rather than a wrapt proxy: it runs for every step of every
    chain, and a plain closure costs a fraction of wrapt's descriptor and argument marshalling.
    It keeps the original as ``__wrapped__`` and is only removed while it is still the module's
    attribute, so a wrapper someone installed on top of it is never torn out.
    """

    def __init__(self, registry: RunRegistry, unsampled: UnsampledTraces) -> None:
        self._registry = registry
        self._unsampled = unsampled
        self._installed: list[tuple[Any, str, Callable[..., Any], Callable[..., Any]]] = []

    def install(self) -> None:
        for module_name, function in STEP_CONTEXT_OPENERS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue  # LangGraph not installed
            original = getattr(module, function, None)
            if not callable(original):
                _log.warning(
                    "callscope: %s.%s not found; code inside steps will not see the step's span. "
                    "This LangChain/LangGraph version is newer than callscope knows.",
                    module_name,
                    function,
                )
                continue
            opener = self._opener(original)
            setattr(module, function, opener)
            self._installed.append((module, function, original, opener))

    def uninstall(self) -> None:
        while self._installed:
            module, function, original, opener = self._installed.pop()
            if getattr(module, function, None) is opener:
                setattr(module, function, original)
            else:
                _log.warning("callscope: %s.%s was wrapped again after callscope; leaving it in place", module.__name__, function)

    def _opener(self, original: Callable[..., Any]) -> Callable[..., Any]:
        runs, unsampled = self._registry, self._unsampled

        @functools.wraps(original)
        def open_step_context(config: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(config, *args, **kwargs)
            try:
                manager = config.get("callbacks")
                record = runs.get(getattr(manager, "parent_run_id", None))
                if record is not None:
                    # We are inside the Context LangChain copied for this step (it calls this
                    # function through ctx.run). The token is deliberately dropped: the copy is
                    # discarded with the step, so there is nothing to restore.
                    otel_context.attach(record.context)
                if record is None or not record.sampled:
                    # A run callscope does not know (perhaps one of a dropped trace it left), or
                    # one it keeps without a span.
                    unsampled.enter_step(manager)
            except Exception:
                _log.debug("callscope: could not make the step's span current", exc_info=True)
            return result

        return open_step_context
