"""Runs stopped from outside or steered, and what that does to the runs around them.

Three things end a run early without failing it: its consumer stops reading (``break``,
``close()``, ``aclose()``: LangChain reports ``GeneratorExit``), its task is cancelled (how
``astream_events`` and LangGraph stop their workers, and what a timeout does), and LangGraph
steers with an exception (``interrupt()``, a handoff to the parent graph, a drain). None of them
is an error on the span. LangChain does not always tell the runs around such a stop: a chat model
cancelled while awaiting its provider never gets an end callback, and the graph around an
interrupted node returns normally. ``end_runs_stopped_with`` and ``mark_enclosing_runs_interrupted``
tell them, from the run registry's parent and child links.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Sequence
from typing import Any

from callscope._attributes import (
    LANGGRAPH_CONTROL_FLOW,
    LANGGRAPH_DRAIN_REASON,
    LANGGRAPH_GOTO,
    LANGGRAPH_INTERRUPT_IDS,
    LANGGRAPH_INTERRUPTED,
    RUN_CANCELLED,
    STREAM_ABANDONED,
)
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.attribute_values import short_label
from callscope._bridge.semconv import Attributes

_MAX_LISTED = 32
#: How far up ``mark_enclosing_runs_interrupted`` walks: a bound, should a parent chain ever loop.
_MAX_DEPTH = 256


def stopped_by_caller(error: BaseException) -> str | None:
    """The attribute that says how the caller stopped a run, or ``None`` if it was not stopped."""
    if isinstance(error, GeneratorExit):
        return STREAM_ABANDONED
    if isinstance(error, CANCELLATIONS):
        return RUN_CANCELLED
    return None


def end_runs_stopped_with(registry: RunRegistry, stopped_run: RunRecord, outcome: str) -> None:
    """A run stopped from outside takes its unfinished runs with it, and LangChain does not
    always say so: a chat model cancelled while awaiting its provider inside ``agenerate``
    never gets an end or error callback. Their spans end now, with the same outcome,
    instead of staying open until the run TTL."""
    for record in registry.pop_descendants(stopped_run):
        try:
            if record.span.is_recording():
                attributes: dict[str, Any] = {outcome: True}
                record.add_stream_timing(attributes)
                record.span.set_attributes(attributes)
        finally:
            record.finish()


def mark_enclosing_runs_interrupted(registry: RunRegistry, record: RunRecord, steering: Attributes) -> None:
    """The graph that holds an interrupted node returns normally (its output carries the
    interrupt only in ``invoke``), so it is told here, while it is still open, and so is
    every run around it: the whole call is paused, waiting for the human."""
    interrupted = {key: value for key, value in steering.items() if key != LANGGRAPH_CONTROL_FLOW}
    parent = registry.get(record.parent_run_id)
    depth = 0
    while parent is not None and depth < _MAX_DEPTH:
        if parent.span.is_recording():
            parent.span.set_attributes(interrupted)
        parent = registry.get(parent.parent_run_id)
        depth += 1


#: How a caller stops a run from outside: not a failure of the run.
CANCELLATIONS = (asyncio.CancelledError, concurrent.futures.CancelledError)


def ended_without_failure(error: BaseException) -> bool:
    """A run that ended with ``error`` but did not fail: its consumer stopped reading (an
    abandoned stream), its caller cancelled it, or LangGraph steered with it."""
    return isinstance(error, (GeneratorExit, *CANCELLATIONS)) or control_flow_attributes(error) is not None


def control_flow_attributes(error: BaseException) -> Attributes | None:
    """What a run ended by LangGraph's control flow says instead of an error, or ``None`` for a
    real failure.

    LangGraph steers with exceptions derived from ``GraphBubbleUp``: ``interrupt()`` raises
    ``GraphInterrupt`` (human in the loop; the graph returns normally and resumes later),
    ``Command(graph=Command.PARENT)`` raises ``ParentCommand`` (a handoff to the parent graph),
    a drain request raises ``GraphDrained`` (stopped at a checkpoint, resumable). They pass
    through the node and subgraph runs as ``on_chain_error`` although nothing failed. Every
    other LangGraph exception (recursion limit, node timeout, invalid update, a bad resume) is a
    failure and stays one.
    """
    cls = type(error)
    if not _steers_langgraph(cls):
        return None
    attributes: Attributes = {LANGGRAPH_CONTROL_FLOW: cls.__name__}
    if _derives_from(cls, "GraphInterrupt"):
        attributes[LANGGRAPH_INTERRUPTED] = True
        ids = [i for interrupt in _first_arg_items(error) if isinstance(i := getattr(interrupt, "id", None), str)]
        if ids:
            attributes[LANGGRAPH_INTERRUPT_IDS] = tuple(short_label(i) for i in ids[:_MAX_LISTED])
    elif _derives_from(cls, "ParentCommand"):
        goto = getattr(error.args[0], "goto", None) if error.args else None
        targets = [goto] if isinstance(goto, str) or not isinstance(goto, Sequence) else list(goto)
        # A target is a node name or a Send (node plus its input: content, never exported here).
        names = [n for target in targets[:_MAX_LISTED] if isinstance(n := getattr(target, "node", target), str)]
        if names:
            attributes[LANGGRAPH_GOTO] = tuple(short_label(n) for n in names)
    elif isinstance(reason := getattr(error, "reason", None), str):
        attributes[LANGGRAPH_DRAIN_REASON] = short_label(reason)
    return attributes


def is_resume(inputs: Any) -> bool:
    """True for a graph's input that resumes it after an interrupt, ``Command(resume=...)``."""
    cls = type(inputs)
    return cls.__name__ == "Command" and cls.__module__.startswith("langgraph") and getattr(inputs, "resume", None) is not None


@functools.lru_cache(maxsize=256)
def _steers_langgraph(cls: type) -> bool:
    # By the class hierarchy, not a list of names: LangGraph adds control-flow exceptions under
    # GraphBubbleUp (GraphDrained is recent) and callscope must not need langgraph installed.
    return _derives_from(cls, "GraphBubbleUp")


def _derives_from(cls: type, name: str) -> bool:
    return any(base.__name__ == name and base.__module__.startswith("langgraph") for base in cls.__mro__)


def _first_arg_items(error: BaseException) -> list[Any]:
    first = error.args[0] if error.args else None
    return list(first[:_MAX_LISTED]) if isinstance(first, Sequence) and not isinstance(first, str) else []
