"""Constructor callbacks as span processors attached to a single component.

A constructor callback (``ChatModel(callbacks=[h])``) reaches exactly that component's own runs.
``attach`` puts a carrier handler among the component's constructor callbacks; LangChain then
scopes it like any constructor callback, and ``SpanHandler`` hands the spans of runs the carrier
reaches to the carrier's processors. The tracer provider's own processors still see every span.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from opentelemetry.sdk.trace import SpanProcessor

from callscope._exceptions import ConfigError

_Component = TypeVar("_Component")

__all__ = ["attach", "detach"]


class ProcessorCarrier(BaseCallbackHandler):
    """The constructor callback that carries span processors; it handles no events itself."""

    _callscope_internal = True
    # Inline, so that on the async path its do-nothing callbacks cost a call in the caller's
    # task rather than a thread-pool hop per event.
    run_inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A tuple, rebuilt under the lock, so the hot path reads it without locking.
        self._callscope_processors: tuple[SpanProcessor, ...] = ()

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        """Defined, so LangChain does not raise NotImplementedError and retry as an LLM start."""

    # Components are copied (deepcopy, model_copy(deep=True), configurable_fields) and pickled
    # (caching, multiprocessing); their callbacks go along, and a lock can be neither.
    def __deepcopy__(self, memo: dict[int, Any]) -> ProcessorCarrier:
        """A copied component keeps its attachment: its own carrier, the same processors (they
        are the application's export pipeline, not part of the component's value)."""
        clone = ProcessorCarrier()
        clone._callscope_processors = self._callscope_processors
        memo[id(self)] = clone
        return clone

    def __copy__(self) -> ProcessorCarrier:
        return self.__deepcopy__({})

    def __reduce__(self) -> tuple[type[ProcessorCarrier], tuple[()]]:
        """A pickled component is restored without its attachment: processors hold threads and
        connections of this process. The carrier comes back empty, and an empty carrier does
        nothing; ``attach()`` on the restored component fills it again."""
        return (ProcessorCarrier, ())

    def add(self, processors: tuple[SpanProcessor, ...]) -> None:
        with self._lock:
            new = tuple(p for p in processors if p not in self._callscope_processors)
            self._callscope_processors = self._callscope_processors + new

    def remove(self, processors: tuple[SpanProcessor, ...]) -> None:
        with self._lock:
            if processors:
                self._callscope_processors = tuple(p for p in self._callscope_processors if p not in processors)
            else:
                self._callscope_processors = ()


def attach(component: _Component, *processors: SpanProcessor) -> _Component:
    """Give ``processors`` exactly the spans of ``component``'s own runs, the scope a
    constructor callback has: not the chain around it, not runs nested inside it.

    Works on components that take constructor callbacks (chat models, LLMs, tools). Returns the
    component, so it can wrap a constructor call. The processors' lifecycle stays yours
    (``shutdown()`` them when done).

    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor, ConsoleSpanExporter
    >>> model = callscope.attach(ChatOpenAI(), SimpleSpanProcessor(ConsoleSpanExporter()))  # doctest: +SKIP
    """
    if not processors:
        raise ConfigError("attach() needs at least one span processor, e.g. attach(model, SimpleSpanProcessor(exporter)).")
    for processor in processors:
        if not (callable(getattr(processor, "on_start", None)) and callable(getattr(processor, "on_end", None))):
            raise ConfigError(
                f"attach() takes OpenTelemetry span processors (with on_start and on_end), got {type(processor).__name__}. "
                "Wrap an exporter in SimpleSpanProcessor or BatchSpanProcessor."
            )
    _carrier(component, create=True).add(processors)  # type: ignore[union-attr]
    return component


def detach(component: _Component, *processors: SpanProcessor) -> _Component:
    """Stop giving ``component``'s spans to ``processors`` (to all attached ones if none given).

    >>> callscope.detach(model)  # doctest: +SKIP
    """
    carrier = _carrier(component, create=False)
    if carrier is None:
        return component
    carrier.remove(processors)
    if not carrier._callscope_processors:
        _remove_carrier(component, carrier)
    return component


def _carrier(component: Any, *, create: bool) -> ProcessorCarrier | None:
    fields = getattr(type(component), "model_fields", None)
    if not isinstance(fields, dict) or "callbacks" not in fields:
        raise ConfigError(
            f"{type(component).__name__} takes no constructor callbacks, so no span processor can be scoped to "
            "its own runs. Attach to the chat model, LLM or tool it contains, or pass a callback handler at run "
            "time (config={'callbacks': [...]}) or with .with_config(callbacks=[...]) to cover its whole subtree."
        )
    callbacks = component.callbacks
    existing = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else (callbacks or [])
    for handler in existing:
        if isinstance(handler, ProcessorCarrier):
            return handler
    if not create:
        return None
    carrier = ProcessorCarrier()
    if isinstance(callbacks, BaseCallbackManager):
        callbacks.add_handler(carrier, inherit=False)
    else:
        component.callbacks = [*existing, carrier]
    return carrier


def _remove_carrier(component: Any, carrier: ProcessorCarrier) -> None:
    callbacks = component.callbacks
    if isinstance(callbacks, BaseCallbackManager):
        callbacks.remove_handler(carrier)
    else:
        remaining = [h for h in callbacks or [] if h is not carrier]
        component.callbacks = remaining or None
