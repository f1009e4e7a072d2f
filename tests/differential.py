"""The differential harness: run one workload without callscope and with it, and compare
everything a LangChain user can observe.

What is recorded, per run of a workload:
- every callback event each of the user's handlers receives (``Recorder`` and its variants,
  sync and async, inline and not, with ``ignore_*`` flags, raising, and a ``BaseTracer``);
- the workload's output: ``invoke``/``batch`` results, stream chunks, ``astream_events`` (v1, v2)
  and ``astream_log`` patches;
- the exception raised into the caller, if any;
- the log records LangChain's loggers emit ("Error in … callback" among them).

What cannot be compared as is, and how it is normalised:
- run ids are fresh uuid7s every time: a handler's events are arranged as a forest by
  ``run_id``/``parent_run_id`` and each run is named by its path from the root (the component
  names its start event carries), so the comparison checks the parentage without the ids; any
  other UUID (message ids ``lc_run--…``, ``RunInfo``) and memory address in a payload is masked;
- sibling runs that execute concurrently (``batch``, ``RunnableParallel``, LangGraph supersteps)
  deliver events in a timing-dependent order: each run's own events keep their order, and the
  runs are compared as a sorted multiset. Log records, for the same reason, are compared sorted;
- timestamps (tracer runs, ``astream_log`` start/end times) are dropped; tracer runs are
  compared by their tree of names, types, errors and outputs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.runnables import Runnable
from langchain_core.tracers.base import BaseTracer

EVENTS = (
    "on_chain_start",
    "on_chain_end",
    "on_chain_error",
    "on_chat_model_start",
    "on_llm_start",
    "on_llm_new_token",
    "on_llm_end",
    "on_llm_error",
    "on_tool_start",
    "on_tool_end",
    "on_tool_error",
    "on_retriever_start",
    "on_retriever_end",
    "on_retriever_error",
    "on_text",
    "on_retry",
    "on_agent_action",
    "on_agent_finish",
    "on_custom_event",
)
_STARTS = ("on_chain_start", "on_chat_model_start", "on_llm_start", "on_tool_start", "on_retriever_start")
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
_ADDRESS = re.compile(r"0x[0-9a-f]{4,}", re.IGNORECASE)
# ``callscope.attach`` is visible in the component's own ``callbacks`` field, and so in the
# ``repr`` LangChain puts into ``serialized``: documented, and masked here to compare the rest.
_CARRIER = re.compile(r",? ?<callscope\._bridge\.processors\.ProcessorCarrier object at 0x[0-9a-f]+>")
_TIMES = re.compile(r"datetime\.datetime\([^)]*\)|\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:\d\d|Z)?")


def masked(value: Any) -> str:
    """A payload as text with what differs between two identical runs masked."""
    text = _CARRIER.sub("", value if isinstance(value, str) else stable_repr(value))
    return _TIMES.sub("<time>", _ADDRESS.sub("0x…", _UUID.sub("<uuid>", text)))


def stable_repr(value: Any) -> str:
    """``repr`` with plain dicts' keys sorted: a ``RunnableParallel`` builds its output dict in
    the order its branches finish."""
    if isinstance(value, dict):
        items = sorted((stable_repr(k), stable_repr(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(stable_repr(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


# --- the user's handlers --------------------------------------------------------------------------


class Recorder(BaseCallbackHandler):
    """Records every callback event it receives, masked at the moment it arrives (payloads are
    mutable: a message list may change after the event)."""

    fails_on: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.events: list[tuple[str, UUID | None, UUID | None, str]] = []

    def record(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        run_id = kwargs.pop("run_id", None)
        parent_run_id = kwargs.pop("parent_run_id", None)
        payload = masked((args, sorted(kwargs.items())))
        self.events.append((event, run_id, parent_run_id, payload))
        if event in self.fails_on:
            raise RuntimeError(f"{type(self).__name__} refuses {event}")


class AsyncRecorder(AsyncCallbackHandler):
    fails_on: frozenset[str] = frozenset()
    record = Recorder.record

    def __init__(self) -> None:
        self.events: list[tuple[str, UUID | None, UUID | None, str]] = []


def _sync_method(event: str) -> Callable[..., None]:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        self.record(event, args, kwargs)

    method.__name__ = event
    return method


def _async_method(event: str) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> None:
        self.record(event, args, kwargs)

    method.__name__ = event
    return method


for _event in EVENTS:
    setattr(Recorder, _event, _sync_method(_event))
    setattr(AsyncRecorder, _event, _async_method(_event))


def recorder(name: str, *, asynchronous: bool = False, **flags: Any) -> type:
    """A recorder class with LangChain's handler flags set as class attributes (the ``ignore_*``
    flags are read-only properties on the base class, so an instance cannot override them)."""
    base = AsyncRecorder if asynchronous else Recorder
    attributes = dict(flags)
    if "fails_on" in attributes:
        attributes["fails_on"] = frozenset(attributes["fails_on"])
    return type(name, (base,), attributes)


class LegacyRecorder(Recorder):
    """A handler written before chat models: LangChain falls back to ``on_llm_start`` for it."""

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


class RecordingTracer(BaseTracer):
    """A ``BaseTracer`` subclass, as LangSmith's and many users' tracers are: it needs every start
    to see the matching end."""

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error
        self.persisted: list[Any] = []

    def _persist_run(self, run: Any) -> None:
        self.persisted.append(run)

    @property
    def events(self) -> list[str]:
        return sorted(_tracer_run_lines(run, ()) for run in self.persisted)


def _tracer_run_lines(run: Any, path: tuple[str, ...]) -> str:
    here = path + (f"{run.name}[{run.run_type}]",)
    line = " > ".join(here) + f" | error={masked(run.error and run.error.splitlines()[-1])} outputs={masked(run.outputs)}"
    children = sorted(_tracer_run_lines(child, here) for child in run.child_runs)
    return "\n".join([line, *children])


_ORDINARY = [
    recorder("Plain"),
    recorder("Async", asynchronous=True),
    LegacyRecorder,
    RecordingTracer,
    recorder("IgnoreChain", ignore_chain=True),
    recorder("IgnoreLLM", ignore_llm=True),
    recorder("IgnoreChatModel", ignore_chat_model=True),
    recorder("IgnoreAgent", ignore_agent=True),
    recorder("IgnoreRetriever", ignore_retriever=True),
    recorder("IgnoreRetry", ignore_retry=True),
    recorder("IgnoreCustomEvent", ignore_custom_event=True),
    recorder("FailsQuietly", fails_on={"on_chain_start", "on_llm_end", "on_tool_end"}),
]
_INLINE = [
    recorder("Inline", run_inline=True),
    recorder("AsyncInline", asynchronous=True, run_inline=True),
    recorder("Plain"),
    RecordingTracer,
]
_RAISING = [
    recorder("Plain"),
    # Raises into the caller if it ever sees an end without its start.
    lambda: RecordingTracer(raise_error=True),
    recorder("AsyncFailsLoudly", asynchronous=True, raise_error=True, fails_on={"on_tool_end"}),
]
# Inline, so the failure is raised before LangChain hands the event to the other handlers: a
# non-inline raiser races them (the executor may or may not have started their calls yet).
_RAISING_INLINE = [
    recorder("Plain"),
    recorder("FailsLoudly", raise_error=True, run_inline=True, fails_on={"on_llm_end", "on_retriever_end"}),
]

#: Per kind, the handler classes given at run time, to constructors and through ``with_config``.
HANDLER_KINDS: dict[str, tuple[list[Callable[[], Any]], ...]] = {
    # Only ordinary (non-inline) handlers: the set on which LangChain's async LLM start dispatch
    # depends on whether an inline handler is present.
    "ordinary": (_ORDINARY, _ORDINARY, _ORDINARY),
    # A user's own inline handlers: with them, LangChain gives async LLM starts to the inline
    # handlers only, and callscope must not undo that either.
    "inline": (_INLINE, _INLINE, _INLINE),
    # Handlers whose failures reach the caller. One place only: with two handlers raising from
    # one event, which of LangChain's concurrently dispatched failures wins is a race.
    "raising": (_RAISING, [recorder("Plain")], [recorder("Plain")]),
    "raising_inline": (_RAISING_INLINE, [recorder("Plain")], [recorder("Plain")]),
}


@dataclass
class Handlers:
    """One instance of every handler of a kind in each of the three places a handler can go."""

    kind: str
    runtime: list[Any] = field(default_factory=list)
    constructor: list[Any] = field(default_factory=list)
    bound: list[Any] = field(default_factory=list)

    @classmethod
    def of_kind(cls, kind: str) -> Handlers:
        runtime, constructor, bound = HANDLER_KINDS[kind]
        return cls(kind, [m() for m in runtime], [m() for m in constructor], [m() for m in bound])

    def recordings(self) -> dict[str, list[str]]:
        out = {}
        for place, handlers in (("runtime", self.runtime), ("constructor", self.constructor), ("with_config", self.bound)):
            for handler in handlers:
                label = f"{place}/{type(handler).__name__}"
                out[label] = handler.events if isinstance(handler, RecordingTracer) else run_lines(handler.events)
        return out


def run_lines(events: Iterable[tuple[str, UUID | None, UUID | None, str]]) -> list[str]:
    """A handler's events as sorted lines ``path | n: event payload``: the path names the run by
    its ancestors as this handler saw them; ``n`` is the event's position within its run."""
    by_run: dict[Any, list[tuple[str, str]]] = {}
    parent: dict[Any, Any] = {}
    label: dict[Any, str] = {}
    for event, run_id, parent_run_id, payload in events:
        by_run.setdefault(run_id, []).append((event, payload))
        if event != "on_custom_event":
            if run_id in parent and parent[run_id] != parent_run_id:
                by_run[run_id].append(("parent changed", ""))
            parent.setdefault(run_id, parent_run_id)
        if event in _STARTS and run_id not in label:
            label[run_id] = _run_name(payload)

    def path(run_id: Any) -> str:
        names = []
        seen = set()
        while run_id is not None and run_id not in seen:
            seen.add(run_id)
            names.append(label.get(run_id, "(unseen run)"))
            run_id = parent.get(run_id)
        return " > ".join(reversed(names))

    lines = []
    for run_id, run_events in by_run.items():
        where = path(run_id)
        lines.extend(f"{where} | {n}: {event} {payload}" for n, (event, payload) in enumerate(run_events))
    return sorted(lines)


_NAME = re.compile(r"\('name', '([^']*)'\)")
_SERIALIZED_NAME = re.compile(r"'name': '([^']*)'")


def _run_name(payload: str) -> str:
    found = _NAME.search(payload) or _SERIALIZED_NAME.search(payload)
    return found.group(1) if found else "(unnamed run)"


# --- running a workload ---------------------------------------------------------------------------


MODES = ("invoke", "ainvoke", "batch", "abatch", "stream", "astream", "astream_events_v1", "astream_events_v2", "astream_log")


@dataclass
class Observation:
    output: Any
    error: str | None
    logs: list[str]
    recordings: dict[str, list[str]]


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Where the record says it comes from too: callscope listens on LangChain's logger.
        self.records.append(f"{record.name} {record.levelname} {record.funcName}:{record.lineno} {masked(record.getMessage())}")


def observe(build: Callable[[Handlers], tuple[Runnable, list[Any]]], mode: str, kind: str, *, concurrent: bool = False) -> Observation:
    """Build the workload afresh (fresh fake models, fresh handlers) and run it in ``mode``.
    ``concurrent``: the workload runs steps concurrently, so the order of stream chunks and
    events across its runs is timing; they are compared as a sorted list."""
    handlers = Handlers.of_kind(kind)
    runnable, inputs = build(handlers)
    config = {"callbacks": handlers.runtime}
    capture = _LogCapture()
    loggers = [logging.getLogger(name) for name in ("langchain_core", "langgraph")]
    for logger in loggers:
        logger.addHandler(capture)
    output: Any = None
    error = None
    try:
        output = _run(runnable, inputs, mode, config)
    except Exception as exc:  # the exception the caller sees is part of what is compared
        error = f"{type(exc).__module__}.{type(exc).__qualname__}: {masked(str(exc))}"
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
    if concurrent and isinstance(output, list):
        output = sorted(masked(item) for item in _without_ids(output))
    return Observation(masked(output), error, sorted(capture.records), handlers.recordings())


def _run(runnable: Runnable, inputs: list[Any], mode: str, config: dict[str, Any]) -> Any:
    first = inputs[0]
    if mode == "invoke":
        return runnable.invoke(first, config)
    if mode == "batch":
        return runnable.batch(inputs, config, return_exceptions=True)
    if mode == "stream":
        return list(runnable.stream(first, config))
    return asyncio.run(_arun(runnable, inputs, mode, config))


async def _arun(runnable: Runnable, inputs: list[Any], mode: str, config: dict[str, Any]) -> Any:
    first = inputs[0]
    if mode == "ainvoke":
        return await runnable.ainvoke(first, config)
    if mode == "abatch":
        return await runnable.abatch(inputs, {**config, "max_concurrency": 2}, return_exceptions=True)
    if mode == "astream":
        return [chunk async for chunk in runnable.astream(first, config)]
    if mode.startswith("astream_events"):
        version = mode.rsplit("_", 1)[1]
        return _numbered_ids([event async for event in runnable.astream_events(first, config, version=version)])
    if mode == "astream_log":
        return [patch.ops async for patch in runnable.astream_log(first, config)]
    raise ValueError(mode)


def _without_ids(items: list[Any]) -> list[Any]:
    return [{**item, "run_id": "<run>", "parent_ids": "<runs>"} if isinstance(item, dict) and "run_id" in item else item for item in items]


def _numbered_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``astream_events`` in order, each run id replaced by its order of first appearance."""
    numbers: dict[str, int] = {}

    def number(run_id: str) -> int:
        return numbers.setdefault(run_id, len(numbers))

    out = []
    for event in events:
        event = dict(event)
        event["run_id"] = number(event["run_id"])
        if "parent_ids" in event:
            event["parent_ids"] = [number(p) for p in event["parent_ids"]]
        out.append(event)
    return out
