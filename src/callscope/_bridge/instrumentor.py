"""``CallscopeInstrumentor``: the OpenTelemetry instrumentor, and its lifecycle.

Instrumenting does four things, and uninstrumenting undoes each:

1. registers LangChain's own configure hook, so that every callback manager LangChain builds
   (chains, bare ``model.invoke``, tool calls, retrievers, LangGraph) carries callscope's
   ``SpanHandler`` — no monkeypatching of LangChain's callback system;
2. wraps the functions that open a step's context, and the model, LLM and retriever methods
   that run a provider call (``steps``, ``run_bodies``), so code inside a step or a run sees its span;
3. creates the run registry, which uninstrument empties, ending any still-open span;
4. stands in for LangChain's callback-manager logger, to hear of other handlers' failures
   (``failures``).

The handler also records the GenAI client metrics (``metrics``) unless they are switched off;
uninstrumenting stops them with the handler.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from callscope._attributes import TRACER_NAME
from callscope._bridge.delivery import forget_exit_checks, give_up_on_refused_endpoint_at_exit, give_up_on_refused_metrics_at_exit
from callscope._bridge.export import otlp_endpoint_from_env, otlp_metrics_endpoint_from_env
from callscope._bridge.failures import FailureWatch
from callscope._bridge.handler import SpanHandler
from callscope._bridge.metrics import Metrics
from callscope._bridge.probe import ManagerProbe
from callscope._bridge.run_bodies import RunBodyPropagator
from callscope._bridge.runs import RunRegistry
from callscope._bridge.settings import Settings
from callscope._bridge.steps import StepContextPropagator
from callscope._bridge.trace_file import add_trace_file_from_env
from callscope.package import _instruments
from callscope.version import __version__

_log = logging.getLogger("callscope")

__all__ = ["CallscopeInstrumentor"]

#: The semantic-conventions release whose GenAI attributes callscope's spans follow: the last one
#: that held them in the main repository (they moved to semantic-conventions-genai in 1.42).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.1"


class CallscopeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces every LangChain run as an OpenTelemetry span.

    This is the class ``opentelemetry-instrument`` loads (entry point ``callscope`` in the
    ``opentelemetry_instrumentor`` group). ``instrument()`` with no arguments does exactly what
    the zero-code path does.

    >>> from callscope import CallscopeInstrumentor
    >>> CallscopeInstrumentor().instrument(tracer_provider=provider)  # doctest: +SKIP
    >>> CallscopeInstrumentor().uninstrument()  # doctest: +SKIP

    Keyword arguments of ``instrument()``:
        tracer_provider: the provider to create spans with; ``None`` means the global one.
        meter_provider: the provider to record GenAI client metrics with; ``None`` means the
            global one (metrics cost nothing while no meter provider is configured).
        metrics: ``False`` turns the metrics off; overrides ``CALLSCOPE_METRICS``.
        capture_content: put message content on spans; overrides
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        max_in_flight_runs, run_ttl_seconds, max_attribute_length: see
            ``callscope.environment_variables``.
        include_internal_handlers: also list LangChain's and LangGraph's internal handlers
            (streaming, event and log stream, listener tracers) among the handlers a run reached.
        conversation_keys: the ``configurable``/metadata keys naming a run's conversation;
            overrides ``CALLSCOPE_CONVERSATION_KEYS``.
    """

    _handler: SpanHandler | None = None
    _propagator: StepContextPropagator | None = None
    _run_bodies: RunBodyPropagator | None = None
    _probe: ManagerProbe | None = None
    _failures: FailureWatch | None = None
    _hook: tuple[Any, ...] | None = None
    #: The arguments the active instrumentation was made with (those not None).
    _arguments: dict[str, Any] = {}

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def instrument(self, **kwargs: Any) -> None:
        """Instrument, or, when already instrumented, keep the active instrumentation: quietly if
        the call asks for nothing different (the zero-code path followed by a plain
        ``instrument()``), with a warning naming the ignored arguments if it does."""
        if not self._is_instrumented_by_opentelemetry:
            return super().instrument(**kwargs)  # type: ignore[no-any-return]
        requested = _given(kwargs)
        changed = sorted(name for name, value in requested.items() if self._arguments.get(name, _UNSET) != value)
        if changed:
            _log.warning(
                "callscope is already instrumented, so instrument(%s) changed nothing: spans still go to the "
                "tracer provider and settings of the first call. Call callscope.uninstrument() first to "
                "instrument with new arguments.",
                ", ".join(f"{name}=…" for name in changed),
            )
        return None

    def _instrument(self, **kwargs: Any) -> None:
        self._arguments = _given(kwargs)
        settings = Settings.resolve(
            capture_content=kwargs.get("capture_content"),
            max_in_flight_runs=kwargs.get("max_in_flight_runs"),
            run_ttl_seconds=kwargs.get("run_ttl_seconds"),
            max_attribute_length=kwargs.get("max_attribute_length"),
            include_internal_handlers=kwargs.get("include_internal_handlers"),
            metrics=kwargs.get("metrics"),
            conversation_keys=kwargs.get("conversation_keys"),
        )
        tracer_provider = kwargs.get("tracer_provider")
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        add_trace_file_from_env(provider)
        # Before _end_open_runs_at_exit below: atexit runs last-registered first, so the runs
        # still open at exit are ended before the queue is counted.
        give_up_on_refused_endpoint_at_exit(provider, otlp_endpoint_from_env())
        meter_provider = kwargs.get("meter_provider")
        give_up_on_refused_metrics_at_exit(meter_provider if meter_provider is not None else metrics_api.get_meter_provider(), otlp_metrics_endpoint_from_env())
        tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL)
        registry = RunRegistry(max_runs=settings.max_in_flight_runs, ttl_seconds=settings.run_ttl_seconds)
        metrics = Metrics.create(kwargs.get("meter_provider"), schema_url=SCHEMA_URL) if settings.metrics else None
        handler = SpanHandler(tracer, settings, registry, metrics)
        propagator = StepContextPropagator(registry, handler.unsampled)
        propagator.install()
        run_bodies = RunBodyPropagator(registry, on_cancelled=handler.end_cancelled_run)
        run_bodies.install()
        probe = ManagerProbe(handler.unsampled)
        probe.install()
        failures = FailureWatch(handler.failures.record)
        failures.install()
        self._hook = _register_handler(handler)
        self._handler, self._propagator, self._run_bodies, self._probe = handler, propagator, run_bodies, probe
        self._failures = failures
        # atexit runs last-registered first, so this runs before the provider's own shutdown
        # (registered when the provider was made) flushes: runs whose end LangChain never
        # delivered (an async stream dropped as its event loop closed) are exported, not lost.
        atexit.register(self._end_open_runs_at_exit)

    def _uninstrument(self, **kwargs: Any) -> None:
        atexit.unregister(self._end_open_runs_at_exit)
        forget_exit_checks()
        if self._hook is not None:
            _unregister_handler(self._hook)
        if self._propagator is not None:
            self._propagator.uninstall()
        if self._run_bodies is not None:
            self._run_bodies.uninstall()
        if self._probe is not None:
            self._probe.uninstall()
        if self._failures is not None:
            self._failures.uninstall()
            self._failures = None
        if self._handler is not None:
            self._handler.registry.clear()
        self._hook = self._handler = self._propagator = self._run_bodies = self._probe = None
        self._arguments = {}

    def _end_open_runs_at_exit(self) -> None:
        if self._handler is not None:
            self._handler.registry.clear("callscope: the process exited before this run ended")

    @property
    def handler(self) -> SpanHandler | None:
        """The active span handler, or ``None`` when not instrumented (for tests and tools)."""
        return self._handler


_UNSET = object()
#: instrument()'s own options; BaseInstrumentor's (skip_dep_check, …) say nothing about the result.
_OPTIONS = frozenset(
    {
        "tracer_provider",
        "meter_provider",
        "metrics",
        "capture_content",
        "max_in_flight_runs",
        "run_ttl_seconds",
        "max_attribute_length",
        "include_internal_handlers",
        "conversation_keys",
    }
)


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in kwargs.items() if name in _OPTIONS and value is not None}


def _register_handler(handler: SpanHandler) -> tuple[Any, ...]:
    # LangChain adds ``var.get()`` to every callback manager it configures while the value is not
    # None. The handler's hook has the handler as its *default*, which makes that true in every
    # thread and task (inside a dropped trace's steps it holds the trace's marker instead).
    from langchain_core.tracers import context as lc_context

    lc_context.register_configure_hook(handler.hook, True)
    return lc_context._configure_hooks[-1]


def _unregister_handler(hook: tuple[Any, ...]) -> None:
    # LangChain has no public way to remove a configure hook; the list is the registry.
    from langchain_core.tracers import context as lc_context

    try:
        lc_context._configure_hooks.remove(hook)
    except ValueError:
        _log.debug("callscope: configure hook already gone")
