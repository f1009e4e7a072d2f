"""A model's, LLM's or retriever's span is current for the code that performs the run.

A chat model, an LLM and a retriever have no step of their own: LangChain calls ``_generate``,
``_stream``, ``_call``, ``_get_relevant_documents``… in the caller's context (the enclosing
step's, or the application's for a bare ``model.invoke``). ``RunBodyPropagator`` wraps the base
class methods that call them and makes the run's span current around each call, restoring the
caller's context in the same frame (for a generator: around each resumption), so a provider's
HTTP request nests under the run that made it. Where LangChain starts the run inside the wrapped
method (``stream``, ``astream``, a retriever's ``invoke``), the wrapper opens a ``RunBody`` and
the span handler, when that run starts, makes its span current within it
(``claim_run_body``); the wrapper's restore point undoes that too.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context

from callscope._bridge.instances import describe_instance, streams_its_request
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.stops import CANCELLATIONS

_log = logging.getLogger("callscope")


class RunBody:
    """The code of one model, LLM or retriever run, while a wrapper of ``RunBodyPropagator``
    executes it: the run's context once its start callback has been seen, and the model whose
    ``stream``/``astream`` runs it (None for a retriever)."""

    __slots__ = ("context", "started", "model")

    def __init__(self, model: Any = None) -> None:
        self.context: otel_context.Context | None = None
        self.started = False
        self.model = model


_run_body: contextvars.ContextVar[RunBody | None] = contextvars.ContextVar("callscope_run_body", default=None)

#: The operations whose start may claim a ``RunBody``: models, LLMs, retrievers.
_BODY_OPERATIONS = frozenset({"chat", "text_completion", "retrieval"})


#: The body being run, if any: the span handler asks before it calls ``claim_run_body``, so a
#: run outside any body (most runs) costs no Python call.
open_run_body = _run_body.get


def claim_run_body(body: RunBody, record: RunRecord) -> None:
    """Called by the span handler as a run starts inside ``body``: if it is the first run started
    there (the wrapped method's own run, which LangChain always starts first), make its span
    current there. The wrapper that opened the body restores the caller's context."""
    if body.started:
        return
    body.started = True
    if record.operation in _BODY_OPERATIONS:
        context = body.context = record.context
        if body.model is not None:
            describe_instance(record, body.model)
            if streams_its_request(type(body.model)):
                record.streamed_request = True
        # Undone by the restore point the wrapper took before running this code (same Context:
        # callscope's handler is run inline, in the caller's context, sync and async).
        otel_context.attach(context)


_Tokens = tuple["contextvars.Token[RunBody | None] | None", object] | None


def _enter(body: RunBody) -> _Tokens:
    if body.started:
        # Later resumptions of a stream: only the run's own span, if callscope saw it start.
        return None if body.context is None else (None, otel_context.attach(body.context))
    # Before the run has started, attach the caller's own context: it is the restore point that
    # undoes whatever claim_run_body makes current later in this same resumption.
    return _run_body.set(body), otel_context.attach(otel_context.get_current())


def _exit(tokens: _Tokens) -> None:
    if tokens is None:
        return
    body_token, context_token = tokens
    otel_context.detach(context_token)  # type: ignore[arg-type]
    if body_token is not None:
        _run_body.reset(body_token)


def _run_started_inside(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a method that starts its run itself and returns (a retriever's ``invoke``)."""

    @functools.wraps(original)
    def run_body(*args: Any, **kwargs: Any) -> Any:
        tokens = _enter(RunBody())
        try:
            return original(*args, **kwargs)
        finally:
            _exit(tokens)

    return run_body


def _arun_started_inside(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def run_body(*args: Any, **kwargs: Any) -> Any:
        # Set and restored inside this coroutine, so in the awaiting task's own context.
        tokens = _enter(RunBody())
        try:
            return await original(*args, **kwargs)
        finally:
            _exit(tokens)

    return run_body


def _stream_started_inside(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Wrap a generator method that starts its run on first resumption (``stream``).

    A generator runs in whichever context resumes it, so the run's span is made current around
    each resumption (next, throw, close), never across a ``yield``: between chunks the consumer
    sees its own context. Values and exceptions are passed through unchanged.
    """

    @functools.wraps(original)
    def run_body(*args: Any, **kwargs: Any) -> Iterator[Any]:
        inner = original(*args, **kwargs)
        body = RunBody(args[0] if args else None)
        resume: Callable[..., Any] = inner.send
        value: Any = None
        while True:
            tokens = _enter(body)
            try:
                item = resume(value)
            except StopIteration as stop:
                return stop.value
            finally:
                _exit(tokens)
                # LangChain starts the run before the first chunk: unclaimed by then, it is a
                # run callscope does not trace (a dropped trace), and later chunks pay nothing.
                body.started = True
            try:
                value = yield item
                resume = inner.send
            except GeneratorExit:
                # The consumer stopped reading: LangChain's cleanup (its error callback, the
                # provider's response close) still runs under the run's span.
                tokens = _enter(body)
                try:
                    inner.close()
                finally:
                    _exit(tokens)
                raise
            except BaseException as thrown:  # noqa: BLE001 - thrown in by the consumer: hand it on
                resume, value = inner.throw, thrown

    return run_body


def _astream_started_inside(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """The async-generator form of ``_stream_started_inside`` (``astream``)."""

    @functools.wraps(original)
    async def run_body(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        inner = original(*args, **kwargs)
        body = RunBody(args[0] if args else None)
        resume: Callable[..., Any] = inner.asend
        value: Any = None
        while True:
            tokens = _enter(body)
            try:
                item = await resume(value)
            except StopAsyncIteration:
                return
            finally:
                _exit(tokens)
                body.started = True
            try:
                value = yield item
                resume = inner.asend
            except GeneratorExit:
                if not inner.ag_running and not _closed_by_event_loop():
                    tokens = _enter(body)
                    try:
                        await inner.aclose()
                    finally:
                        _exit(tokens)
                raise
            except BaseException as thrown:  # noqa: BLE001 - thrown in by the consumer: hand it on
                resume, value = inner.athrow, thrown

    return run_body


def _closed_by_event_loop() -> bool:
    """True when an async generator is being closed by the event loop itself, not by its
    consumer: the loop's finalizer for an abandoned generator, or ``shutdown_asyncgens``, each
    run ``agen.aclose()`` as a task of its own.

    The loop then closes the inner generator the same way once it is released, exactly as it
    would without callscope. Closing it from here instead would race with the loop: cancelled
    half-way (``asyncio.run`` cancels pending tasks before ``shutdown_asyncgens``), an inner
    ``aclose()`` leaves the generator marked running, and the loop logs "aclose(): asynchronous
    generator is already running" when it reaches it.
    """
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a plain close() driven by hand
        return False
    return task is not None and type(task.get_coro()).__name__ == "async_generator_athrow"


class RunBodyPropagator:
    """Installs and removes the wrappers that make a model's, LLM's or retriever's span current
    for the code that performs the run (``_generate``, ``_stream``, ``_call``,
    ``_get_relevant_documents`` and their async forms), so a provider's HTTP request nests under
    the run that made it.

    Two shapes, by where LangChain starts the run:

    - already started, its run manager passed in (``_generate_with_cache``, ``_generate_helper``
      and their async forms): the run's span is looked up by ``run_id`` and made current for the
      call;
    - started inside the method (``stream``, ``astream``, a retriever's ``invoke``/``ainvoke``):
      a ``RunBody`` the start callback claims (see ``claim_run_body``).
    """

    def __init__(self, registry: RunRegistry, *, on_cancelled: Callable[[Any], None]) -> None:
        self._registry = registry
        self._on_cancelled = on_cancelled
        self._installed: list[tuple[type, str, Any, Any]] = []

    def install(self) -> None:
        runs, cancelled = self._registry, self._on_cancelled
        wrappers: tuple[tuple[str, str, str, Callable[[Any], Any]], ...] = (
            ("langchain_core.language_models.chat_models", "BaseChatModel", "_generate_with_cache", _with_run_manager(runs, 3, "run_manager")),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "_agenerate_with_cache", _awith_run_manager(runs, 3, "run_manager", cancelled)),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "stream", _stream_started_inside),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "astream", _astream_started_inside),
            # An LLM's _generate serves every prompt of a batch at once, with the first run's
            # manager (LangChain: "TODO: support multiple run managers"): its span is the one made current.
            ("langchain_core.language_models.llms", "BaseLLM", "_generate_helper", _with_run_manager(runs, 3, "run_managers")),
            ("langchain_core.language_models.llms", "BaseLLM", "_agenerate_helper", _awith_run_manager(runs, 3, "run_managers", cancelled)),
            ("langchain_core.language_models.llms", "BaseLLM", "stream", _stream_started_inside),
            ("langchain_core.language_models.llms", "BaseLLM", "astream", _astream_started_inside),
            ("langchain_core.retrievers", "BaseRetriever", "invoke", _run_started_inside),
            ("langchain_core.retrievers", "BaseRetriever", "ainvoke", _arun_started_inside),
        )
        for module_name, class_name, method, wrap in wrappers:
            owner = getattr(importlib.import_module(module_name), class_name, None)
            original = owner.__dict__.get(method) if isinstance(owner, type) else None
            if not callable(original):
                _log.warning(
                    "callscope: %s.%s.%s not found; the code of these runs will not see their span. "
                    "This LangChain version is newer than callscope knows.",
                    module_name,
                    class_name,
                    method,
                )
                continue
            wrapper = wrap(original)
            setattr(owner, method, wrapper)
            self._installed.append((owner, method, original, wrapper))

    def uninstall(self) -> None:
        while self._installed:
            owner, method, original, wrapper = self._installed.pop()
            if owner.__dict__.get(method) is wrapper:
                setattr(owner, method, original)
            else:
                _log.warning("callscope: %s.%s was wrapped again after callscope; leaving it in place", owner.__name__, method)


def _run_context(runs: RunRegistry, manager: Any, model: Any) -> otel_context.Context | None:
    """The context of the run ``manager`` (or the first of a list) belongs to, once the model's
    own fields have been added to it."""
    try:
        if isinstance(manager, list):
            manager = manager[0] if manager else None
        record = runs.get(getattr(manager, "run_id", None))
    except Exception:  # a run manager of a shape LangChain never passes: run without the span
        _log.debug("callscope: could not find the run of a model call", exc_info=True)
        return None
    if record is None:
        return None
    describe_instance(record, model)
    return record.context


def _with_run_manager(runs: RunRegistry, index: int, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a method given its run's manager(s) as ``args[index]`` (``self`` is ``args[0]``)
    or as keyword ``name``."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def run_body(*args: Any, **kwargs: Any) -> Any:
            context = _run_context(runs, args[index] if len(args) > index else kwargs.get(name), args[0])
            if context is None:
                return original(*args, **kwargs)
            token = otel_context.attach(context)
            try:
                return original(*args, **kwargs)
            finally:
                otel_context.detach(token)

        return run_body

    return wrap


def _awith_run_manager(
    runs: RunRegistry, index: int, name: str, on_cancelled: Callable[[Any], None]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The async form of ``_with_run_manager``; a cancellation that escapes the call is
    reported through ``on_cancelled`` for each of its runs, because LangChain's ``agenerate``,
    cancelled inside its ``gather``, never reports those runs' ends."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        async def run_body(*args: Any, **kwargs: Any) -> Any:
            manager = args[index] if len(args) > index else kwargs.get(name)
            context = _run_context(runs, manager, args[0])
            token = otel_context.attach(context) if context is not None else None
            try:
                return await original(*args, **kwargs)
            except CANCELLATIONS:
                for run_manager in manager if isinstance(manager, list) else (manager,):
                    on_cancelled(getattr(run_manager, "run_id", None))
                raise
            finally:
                if token is not None:
                    otel_context.detach(token)

        return run_body

    return wrap
