"""LangChain's dispatch to the user's handlers, exactly as it is without callscope.

callscope's ``SpanHandler`` is an inline handler (``run_inline = True``): on the async path
LangChain then calls it in the caller's task, in order, instead of hopping to a thread pool per
event. Inline handlers change one LangChain decision. ``AsyncCallbackManager.on_llm_start``
(langchain-core 1.x) gives the start of a text-completion run to the manager's inline handlers
*or*, when it has none, to the others — never to both. With callscope on every manager, every
ordinary handler would lose the start of every async ``BaseLLM`` run: ``astream_events`` would
drop the run, every ``BaseTracer`` would log "No indexed run ID", start counters would count zero.

``fair_llm_start`` makes that decision as if callscope's handlers were not there: when callscope
alone is inline, the others receive the start exactly as LangChain sends it to them without
callscope, and callscope's handlers receive it too, first and inline. In every other case
LangChain's own method runs unchanged, so a user's own inline handler still has the effect it
has without callscope.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

#: The module whose callback managers dispatch every event; callscope wraps parts of it.
MANAGER_MODULE = "langchain_core.callbacks.manager"
#: The callbacks that start a run, one per kind of run.
START_CALLBACKS = ("on_chain_start", "on_chat_model_start", "on_llm_start", "on_tool_start", "on_retriever_start")


def is_callscope(handler: Any) -> bool:
    """callscope's own handlers: the span handler and the carriers of attached processors."""
    return getattr(handler, "_callscope_internal", False) is True


def takes_start_from_others(handlers: Sequence[Any]) -> bool:
    """True when LangChain would give an LLM start to callscope's inline handlers only, although
    without callscope it would have gone to the other handlers."""
    callscope_inline = others_inline = others_not_inline = False
    for handler in handlers:
        if is_callscope(handler):
            callscope_inline = callscope_inline or handler.run_inline
        elif handler.run_inline:
            others_inline = True
        else:
            others_not_inline = True
    return callscope_inline and others_not_inline and not others_inline


def fair_llm_start(original: Callable[..., Any], starting_manager: ContextVar[Any], unsampled: Any) -> Callable[..., Any]:
    """Wrap ``AsyncCallbackManager.on_llm_start``; also does what the other start probes do
    (``probe.ManagerProbe``): publishes the starting manager in ``starting_manager`` for the
    duration of the call, and hands the run managers to ``unsampled.step_off``."""
    manager_module = importlib.import_module(MANAGER_MODULE)

    @functools.wraps(original)
    async def on_llm_start(self: Any, serialized: Any, prompts: Any, run_id: Any = None, **kwargs: Any) -> Any:
        token = starting_manager.set(self)
        try:
            handlers = self.handlers
            if not takes_start_from_others(handlers):
                started = await original(self, serialized, prompts, run_id, **kwargs)
            else:
                started = await _start_for_both(manager_module, original, self, handlers, serialized, list(prompts), run_id, kwargs)
        finally:
            starting_manager.reset(token)
        if unsampled.leaving:
            unsampled.step_off(started)
        return started

    return on_llm_start


async def _start_for_both(
    manager_module: Any,
    original: Callable[..., Any],
    manager: Any,
    handlers: list[Any],
    serialized: Any,
    prompts: list[Any],
    run_id: Any,
    kwargs: dict[str, Any],
) -> list[Any]:
    ours = [h for h in handlers if h.run_inline]  # only callscope's, or we would not be here
    # Run ids are chosen up front, the way LangChain chooses them (the given id for the first
    # prompt, a fresh uuid7 for the others), so callscope's span starts before the other
    # handlers' thread-pool work and both sides see the same run.
    run_ids = [run_id if i == 0 and run_id is not None else manager_module.uuid7() for i in range(len(prompts))]
    for prompt, run_id_ in zip(prompts, run_ids):
        await manager_module.ahandle_event(
            ours,
            "on_llm_start",
            "ignore_llm",
            serialized,
            [prompt],
            run_id=run_id_,
            parent_run_id=manager.parent_run_id,
            tags=manager.tags,
            metadata=manager.metadata,
            **kwargs,
        )
    # The others get LangChain's own dispatch, from a copy of the manager that lacks
    # callscope's inline handlers: the copy is private to this call, nothing shared is mutated.
    without_ours = copy.copy(manager)
    without_ours.handlers = [h for h in handlers if not h.run_inline]
    if len(prompts) == 1:
        run_managers = await original(without_ours, serialized, prompts, run_ids[0], **kwargs)
    else:
        # One call per prompt, so each run keeps the id callscope's handlers saw; the calls run
        # concurrently, as LangChain gathers the other handlers' starts of all prompts at once.
        per_prompt = await asyncio.gather(
            *(original(without_ours, serialized, [p], r, **kwargs) for p, r in zip(prompts, run_ids))
        )
        run_managers = [m for managers in per_prompt for m in managers]
    for run_manager in run_managers:
        # The run's later events (tokens, end, error) go to every handler, callscope's included,
        # through the very list LangChain would have given the run manager.
        run_manager.handlers = handlers
    return run_managers
