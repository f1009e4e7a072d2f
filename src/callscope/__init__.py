"""callscope: LangChain callbacks as OpenTelemetry spans, with callback scoping made visible.

>>> import callscope
>>> callscope.instrument()          # every LangChain run in this process becomes a span
>>> chain.invoke({"topic": "otel"})  # doctest: +SKIP
>>> callscope.uninstrument()        # LangChain behaves exactly as before

Zero-code: ``opentelemetry-instrument python app.py`` loads :class:`CallscopeInstrumentor`
through its ``opentelemetry_instrumentor`` entry point.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from callscope._exceptions import CallscopeError, ConfigError
from callscope.version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from callscope._bridge.export import configure
    from callscope._bridge.instrumentor import CallscopeInstrumentor
    from callscope._bridge.processors import attach, detach
    from callscope._bridge.trace_file import OTLPJsonLinesExporter

#: Loaded on first use: they import LangChain and the SDK, which `callscope tree` never needs
#: (it starts printing a 150 MB file's first trace within a second only without them).
_LAZY = {
    "CallscopeInstrumentor": "callscope._bridge.instrumentor",
    "attach": "callscope._bridge.processors",
    "detach": "callscope._bridge.processors",
    "configure": "callscope._bridge.export",
    "OTLPJsonLinesExporter": "callscope._bridge.trace_file",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'callscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "__version__",
    "attach",
    "CallscopeError",
    "CallscopeInstrumentor",
    "ConfigError",
    "configure",
    "current_handlers",
    "detach",
    "instrument",
    "OTLPJsonLinesExporter",
    "uninstrument",
]


def instrument(
    tracer_provider: TracerProvider | None = None,
    *,
    capture_content: bool | None = None,
    max_in_flight_runs: int | None = None,
    run_ttl_seconds: float | None = None,
    max_attribute_length: int | None = None,
    include_internal_handlers: bool | None = None,
    meter_provider: MeterProvider | None = None,
    metrics: bool | None = None,
    conversation_keys: Sequence[str] | None = None,
) -> None:
    """Trace every LangChain run in this process, and measure its GenAI operations.

    While instrumented, a second call changes nothing; if it passes different arguments it logs
    a warning naming them. Call :func:`uninstrument` first to instrument with new arguments.

    ``tracer_provider=None`` uses the global provider. Model, tool and retrieval runs are also
    recorded as GenAI client metrics (``gen_ai.client.operation.duration``, ``…token.usage``,
    ``…time_to_first_chunk``, ``…time_per_output_chunk``) with ``meter_provider``, ``None``
    meaning the global one; they cost nothing while no meter provider is configured, and
    ``metrics=False`` (or ``CALLSCOPE_METRICS=false``) turns them off. ``conversation_keys``
    names the ``configurable`` keys whose value is a run's ``gen_ai.conversation.id`` (default
    ``thread_id``, ``session_id``, ``conversation_id``). The other options override
    their environment variables (see ``callscope.environment_variables``); an invalid value
    raises :class:`ConfigError`.

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> callscope.instrument(TracerProvider(), meter_provider=MeterProvider())  # doctest: +SKIP
    """
    from callscope._bridge.instrumentor import CallscopeInstrumentor

    CallscopeInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        metrics=metrics,
        capture_content=capture_content,
        max_in_flight_runs=max_in_flight_runs,
        run_ttl_seconds=run_ttl_seconds,
        max_attribute_length=max_attribute_length,
        include_internal_handlers=include_internal_handlers,
        conversation_keys=conversation_keys,
    )


def uninstrument() -> None:
    """Stop tracing. Idempotent. Runs still in flight have their spans ended as evicted.

    >>> callscope.uninstrument()  # doctest: +SKIP
    """
    from callscope._bridge.instrumentor import CallscopeInstrumentor

    CallscopeInstrumentor().uninstrument()


def current_handlers() -> tuple[str, ...]:
    """Labels of the callback handlers that an event dispatched from here would reach.

    Inside a step (a lambda body, a tool, a LangGraph node) these are the runtime handlers
    inherited down to it; outside any run, or when not instrumented, the tuple is empty.

    >>> def step(x):
    ...     print(callscope.current_handlers())  # e.g. ('LoggingHandler',)
    ...     return x
    """
    from callscope._bridge.instrumentor import CallscopeInstrumentor

    handler = CallscopeInstrumentor().handler
    return handler.current_handlers() if handler is not None else ()
