"""GenAI client metrics, measured from the same LangChain callbacks as the spans.

The four client histograms of the OpenTelemetry GenAI semantic conventions (v1.41.1,
``model/gen-ai/metrics.yaml``), each created with the bucket boundaries the conventions
recommend (``docs/gen-ai/gen-ai-metrics.md``) as ``explicit_bucket_boundaries_advisory``:

- ``gen_ai.client.operation.duration`` (s): every chat, text-completion, tool and retrieval run,
  at its end or error;
- ``gen_ai.client.token.usage`` ({token}): every model run whose response reports usage, once
  with ``gen_ai.token.type=input`` and once with ``output``;
- ``gen_ai.client.operation.time_to_first_chunk`` (s): a streamed model run's first chunk, from
  the run's start;
- ``gen_ai.client.operation.time_per_output_chunk`` (s): every later chunk, from the previous one.

Attributes are the registry's and nothing else: ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model`` and ``server.address``/``server.port`` (model
runs, named as on their spans, the server only when the model was given an endpoint),
``gen_ai.response.model`` (duration and tokens, when the response names it) and ``error.type``
(the duration of a failed run: the exception's class name, as on the span). Chunk metrics are
recorded as the chunks arrive, before the response names its model, so they carry the start
attributes only. A tool or retriever has no GenAI provider, so its duration has no
``gen_ai.provider.name`` (the registry requires one; there is none to give).

Measuring is independent of sampling: a run whose trace is sampled out has no span, and is
measured all the same.

Cost: the span handler calls in only for model, tool and retrieval runs, and not at all while
metrics are off. Each measured run gets one attribute dict at its start (tool and retrieval runs
share a constant one); instruments are created once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Histogram, Meter, MeterProvider, NoOpMeter, NoOpMeterProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.trace import INVALID_SPAN, set_span_in_context

from callscope._bridge import semconv as sc
from callscope._bridge.runs import RunRecord, monotonic
from callscope._bridge.serialize import encodable
from callscope._bridge.stops import ended_without_failure
from callscope.version import __version__

_log = logging.getLogger("callscope")

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Metrics", "global_meter_provider_is_set"]

#: gen_ai.client.operation.duration, …time_to_first_chunk, …time_per_output_chunk (seconds).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: gen_ai.client.token.usage.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

_OPERATION = gen_ai.GEN_AI_OPERATION_NAME
_MODEL_OPERATIONS = frozenset({sc.CHAT, sc.TEXT_COMPLETION})
_INPUT = gen_ai.GenAiTokenTypeValues.INPUT.value
_OUTPUT = gen_ai.GenAiTokenTypeValues.OUTPUT.value
# Shared by every tool / retrieval run: never mutated (a failure copies it).
_TOOL_ATTRIBUTES: Mapping[str, Any] = {_OPERATION: sc.EXECUTE_TOOL}
_RETRIEVAL_ATTRIBUTES: Mapping[str, Any] = {_OPERATION: sc.RETRIEVAL}

_MAX_LOGGED_FAILURES = 10
# Per-chunk points are recorded in a context whose span is invalid, so the SDK's trace-based
# exemplar filter skips them: an exemplar per chunk is a fifth of a record's cost, and the run's
# duration and first-chunk points already link to its span. (An empty Context would not do: the
# SDK takes a falsy context for "none given" and uses the current one.)
_NO_EXEMPLAR = set_span_in_context(INVALID_SPAN)

try:
    from opentelemetry.metrics._internal import _ProxyMeterProvider
except ImportError:  # pragma: no cover - a later API that moved it: judged by class name
    _ProxyMeterProvider = None  # type: ignore[assignment,misc]


def global_meter_provider_is_set() -> bool:
    """Whether the application (or ``opentelemetry-instrument``) has set a global meter provider.

    Until then the API hands out a proxy; it has no public way to ask, so the proxy's class is
    the one private name used here.
    """
    provider = metrics.get_meter_provider()
    if _ProxyMeterProvider is None:
        return type(provider).__name__ != "_ProxyMeterProvider"
    return not isinstance(provider, _ProxyMeterProvider)


#: Each histogram: the attribute that holds it, name, unit, description, recommended buckets.
_INSTRUMENTS = (
    ("_duration", gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION, "s", "GenAI operation duration.", DURATION_BUCKETS),
    ("_tokens", gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE, "{token}", "Number of input and output tokens used.", TOKEN_BUCKETS),
    (
        "_first_chunk",
        gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
        "s",
        "Time to receive the first chunk of a streamed response.",
        DURATION_BUCKETS,
    ),
    (
        "_per_chunk",
        gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK,
        "s",
        "Time per output chunk after the first one.",
        DURATION_BUCKETS,
    ),
)


class Metrics:
    """The four GenAI client histograms, and what the span handler calls to record them.

    Create it with :meth:`create`, which returns ``None`` when there is nothing to record to.
    With the global meter provider not yet set, instruments are created on the first model, tool
    or retrieval run after it is set; until then each such run costs one check.
    """

    def __init__(self, meter_provider: MeterProvider | None, *, schema_url: str) -> None:
        self._given = meter_provider
        self._schema_url = schema_url
        self._bound = False
        self._failures = 0
        self._duration: Histogram
        self._tokens: Histogram
        self._first_chunk: Histogram
        self._per_chunk: Histogram

    @classmethod
    def create(cls, meter_provider: MeterProvider | None, *, schema_url: str) -> Metrics | None:
        """A recorder for ``meter_provider`` (``None``: the global one), or ``None`` when that
        provider records nothing (a no-op provider, an SDK disabled by ``OTEL_SDK_DISABLED``),
        so that the handler then does no metric work at all."""
        if isinstance(meter_provider, NoOpMeterProvider):
            return None
        recorder = cls(meter_provider, schema_url=schema_url)
        if meter_provider is None and not global_meter_provider_is_set():
            return recorder  # bound on the first measured run after the application sets one
        meter = recorder._meter()
        if isinstance(meter, NoOpMeter):
            return None
        recorder._bind(meter)
        return recorder

    def live(self) -> bool:
        """True once there is a meter provider to record to (the global one may be set late)."""
        return self._bound or self._bind_global()

    def _meter(self) -> Meter:
        return metrics.get_meter("callscope", __version__, self._given, schema_url=self._schema_url)

    def _bind_global(self) -> bool:
        """Create the instruments once the global meter provider is set; False until then."""
        if not global_meter_provider_is_set():
            return False
        self._bind(self._meter())
        return True

    def _bind(self, meter: Meter) -> None:
        for attribute, name, unit, description, buckets in _INSTRUMENTS:
            histogram = meter.create_histogram(name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets)
            setattr(self, attribute, histogram)
        self._bound = True

    # --- called by the span handler ------------------------------------------------------------

    def started(
        self, record: RunRecord, operation: str, serialized: Any, kwargs: Mapping[str, Any], metadata: Any
    ) -> None:
        """Measure this model, tool or retrieval run: give it its attribute dict."""
        if not self._bound and not self._bind_global():
            return
        try:
            if operation == sc.EXECUTE_TOOL:
                attributes: Any = _TOOL_ATTRIBUTES
            elif operation == sc.RETRIEVAL:
                attributes = _RETRIEVAL_ATTRIBUTES
            else:
                provider, model, server = sc.model_identity(serialized, kwargs, metadata)
                server = server or record.model_server
                attributes = {_OPERATION: operation, gen_ai.GEN_AI_PROVIDER_NAME: provider}
                if model:
                    attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
                if server is not None:
                    attributes[sc.SERVER_ADDRESS], attributes[sc.SERVER_PORT] = server
            record.metric_attributes = attributes
        except Exception:
            self._note_failure("starting")

    def chunk(self, record: RunRecord) -> None:
        """A streamed chunk arrived (``record.chunks`` counts those before it)."""
        try:
            attributes = record.metric_attributes
            if record.chunks == 0:
                first = record.first_chunk_monotonic or monotonic()
                self._first_chunk.record(first - record.started_monotonic, attributes, record.context)
                record.last_chunk_monotonic = first
                return
            now = monotonic()
            self._per_chunk.record(now - record.last_chunk_monotonic, attributes, _NO_EXEMPLAR)
            record.last_chunk_monotonic = now
        except Exception:
            self._note_failure("recording a chunk")

    def ended(self, record: RunRecord, payload: Any, *, failed: bool) -> None:
        """The run ended (``payload`` is its result) or failed (``payload`` is the exception)."""
        try:
            duration = monotonic() - record.started_monotonic
            attributes: Any = record.metric_attributes
            context = record.context
            if failed:
                # A run the caller stopped (an abandoned stream, a cancellation) or LangGraph's
                # control flow (an interrupt, a handoff) ended early, but nothing failed (as on
                # the span): its duration is recorded without error.type.
                if not ended_without_failure(payload):
                    attributes = {**attributes, sc.ERROR_TYPE: encodable(type(payload).__qualname__)}
                self._duration.record(duration, attributes, context)
                return
            if attributes[_OPERATION] not in _MODEL_OPERATIONS:
                self._duration.record(duration, attributes, context)
                return
            response = sc.model_end_attributes(payload)
            response_model = response.get(gen_ai.GEN_AI_RESPONSE_MODEL)
            if response_model:
                attributes = {**attributes, gen_ai.GEN_AI_RESPONSE_MODEL: response_model}
            self._duration.record(duration, attributes, context)
            input_tokens = response.get(gen_ai.GEN_AI_USAGE_INPUT_TOKENS)
            if input_tokens is not None:
                self._tokens.record(input_tokens, {**attributes, gen_ai.GEN_AI_TOKEN_TYPE: _INPUT}, context)
                self._tokens.record(
                    response[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS], {**attributes, gen_ai.GEN_AI_TOKEN_TYPE: _OUTPUT}, context
                )
        except Exception:
            self._note_failure("recording a run's end")

    def _note_failure(self, what: str) -> None:
        self._failures += 1
        if self._failures <= _MAX_LOGGED_FAILURES:
            _log.warning("callscope: %s failed in GenAI metrics; the chain is unaffected", what, exc_info=True)
