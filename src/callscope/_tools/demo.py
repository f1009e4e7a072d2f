"""``callscope demo``: a small LangChain app on fake models that shows both callback scopes,
and each reason a handler misses a run.

No API key, no network, no server. Three runs, each its own trace:

1. ``answer``: ``{topic, facts: lookup tool, sources: a chain run in a worker thread} | prompt |
   chat model | parser``, invoked with two runtime handlers. The tree shows:

   - ``RuntimeLogger`` *inherited* everywhere but in the worker thread's chain: *dropped* (the
     step ran it without passing its config; the thread carries the OTel context, as
     ``opentelemetry-instrument``'s threading instrumentation does, but not LangChain's);
   - ``ModelsOnlyLogger`` (``ignore_chain=True``): *inherited* by the model, *filtered* on chains;
   - ``ModelLogger`` and ``ToolLogger``, constructor handlers: *local* to their component, and
     *scope* elsewhere;
   - ``FormatAudit``, given to the parser with ``with_config``: *subtree* elsewhere.
2. ``answer-streamed``: the same chain, streamed.
3. ``answer-strict``: a chain whose last step raises (caught, its span ERROR), run with a
   ``FlakyLogger`` whose ``on_llm_end`` raises: LangChain logs "Error in …" and goes on; the
   model's span shows the handler *failed*.

Spans go to an OTLP/JSON lines file through a provider of the demo's own (the global one is
left alone), and over OTLP too when ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set. The GenAI
client metrics go to a meter provider of its own, read back for a per-model summary, and over
OTLP too when ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.outputs import ChatResult
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import StructuredTool
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import callscope
from callscope._bridge.export import (
    build_meter_provider,
    build_tracer_provider,
    otlp_endpoint_from_env,
    otlp_metric_exporter_from_env,
    otlp_protocol_from_env,
)
from callscope._bridge.trace_file import OTLPJsonLinesExporter
from callscope._exceptions import CallscopeError

_log = logging.getLogger("callscope.demo")

__all__ = [
    "DEFAULT_OUTPUT",
    "DEFAULT_SERVICE_NAME",
    "DemoResult",
    "FlakyLogger",
    "FormatAudit",
    "LoggingHandler",
    "ModelLogger",
    "ModelsOnlyLogger",
    "ModelSummary",
    "RuntimeLogger",
    "ToolLogger",
    "run_demo",
    "summarize_models",
]

DEFAULT_OUTPUT = Path("callscope-traces.jsonl")
DEFAULT_SERVICE_NAME = "callscope-demo"


class LoggingHandler(BaseCallbackHandler):
    """A user's callback handler: it logs each run it is told about, and remembers it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []

    def __repr__(self) -> str:
        return f"LoggingHandler({self.name!r})"

    def _saw(self, kind: str, serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> None:
        run_name = kwargs.get("name") or (serialized or {}).get("name") or kind
        self.seen.append(str(run_name))
        _log.debug("%s saw %s %s", self.name, kind, run_name)

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, **kwargs: Any) -> None:
        self._saw("chain", serialized, kwargs)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: Any, **kwargs: Any) -> None:
        self._saw("chat model", serialized, kwargs)

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: Any, **kwargs: Any) -> None:
        self._saw("tool", serialized, kwargs)


# callscope labels handlers by class name, so each role gets a small class of its own.
class RuntimeLogger(LoggingHandler):
    """Passed at call time (``config={"callbacks": [...]}``): inherited by every child run."""


class ModelsOnlyLogger(LoggingHandler):
    """Passed at call time, but ``ignore_chain`` keeps every chain run from it."""

    @property
    def ignore_chain(self) -> bool:
        return True


class FormatAudit(LoggingHandler):
    """Given to the parser with ``with_config(callbacks=...)``: inherited by that subtree only."""


class FlakyLogger(LoggingHandler):
    """A handler with a bug in one callback: LangChain logs its error and goes on."""

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics backend unreachable")


class ModelLogger(LoggingHandler):
    """Given to the chat model's constructor: local to the model's own runs."""


class ToolLogger(LoggingHandler):
    """Given to the tool's constructor: local to the tool's own runs."""


class DemoChatModel(FakeListChatModel):
    """A fake chat model that names its model and reports usage, as real provider models do
    (counting words as tokens), so the metrics summary has something to show. Like many real
    providers, it reports no usage when streamed."""

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = "fake-chat"
        return params

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        message = result.generations[0].message
        prompt = sum(len(str(m.content).split()) for m in messages)
        answer = len(str(message.content).split())
        message.usage_metadata = {"input_tokens": prompt, "output_tokens": answer, "total_tokens": prompt + answer}  # type: ignore[attr-defined]
        return result


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model's GenAI client metrics, as the demo prints them."""

    #: As the model's spans are named: ``chat gpt-4o``, or ``chat`` when the model is unnamed.
    model: str
    provider: str | None
    runs: int
    errors: int
    #: Estimated from the histogram buckets (interpolated, bounded by the exact min and max).
    p50_s: float
    p95_s: float
    input_tokens: int | None
    output_tokens: int | None


@dataclass(slots=True)
class DemoResult:
    """Where the demo's spans went, and the per-model summary of its metrics."""

    output: Path
    #: The OTLP endpoint variable's value when spans were also exported over OTLP, else None.
    otlp_endpoint: str | None
    otlp_protocol: str | None
    handlers: list[LoggingHandler] = field(default_factory=list)
    failure: str = ""
    models: list[ModelSummary] = field(default_factory=list)
    #: What LangChain logged about handler failures during the demo (it goes on without them).
    langchain_log: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 10:
            self.lines.append(record.getMessage())


def _lookup(topic: str) -> str:
    """Look up what the knowledge base says about a topic."""
    return f"{topic}: every LangChain run becomes a span; handlers are scoped per component."


def _strict_parse(text: str) -> dict[str, str]:
    if not text.startswith("{"):
        raise ValueError(f"expected a JSON object from the model, got {text[:24]!r}")
    return {"answer": text}


def _in_worker_thread(pool: ThreadPoolExecutor, work: Callable[[], Any]) -> Any:
    """Run ``work`` in the pool, carrying the OTel context into the thread as
    ``opentelemetry-instrument``'s threading instrumentation does (LangChain's config is not)."""
    captured = otel_context.get_current()

    def carried() -> Any:
        token = otel_context.attach(captured)
        try:
            return work()
        finally:
            otel_context.detach(token)

    return pool.submit(carried).result()


def _build_chain(
    model_logger: LoggingHandler, tool_logger: LoggingHandler, format_audit: LoggingHandler, pool: ThreadPoolExecutor
) -> tuple[Runnable, Runnable]:
    model = DemoChatModel(
        responses=["Spans nest like runs do.", "Handlers given to a component stay with it."],
        callbacks=[model_logger],
    )
    lookup = StructuredTool.from_function(_lookup, name="lookup", callbacks=[tool_logger])
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from these facts: {facts} ({sources})"), ("human", "Tell me about {topic}.")]
    )
    rank = ChatPromptTemplate.from_template("Rank sources on {topic}") | FakeListChatModel(responses=["the LangChain docs"])
    rank = rank.with_config(run_name="rank_sources")

    def sources(topic: str) -> str:
        # The classic slip: the nested chain is invoked without this step's config.
        return str(_in_worker_thread(pool, lambda: rank.invoke({"topic": topic}).content))

    gather = {
        "topic": itemgetter("topic"),
        "facts": itemgetter("topic") | lookup,
        "sources": itemgetter("topic") | RunnableLambda(sources, name="sources"),
    }
    answer = gather | prompt | model | StrOutputParser().with_config(callbacks=[format_audit])
    strict = prompt | model | StrOutputParser() | RunnableLambda(_strict_parse, name="strict_parse")
    return answer, strict


def run_demo(
    output: str | Path = DEFAULT_OUTPUT,
    *,
    service_name: str = DEFAULT_SERVICE_NAME,
    on_file_written: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo app, writing its spans to ``output`` (replaced if it exists).

    ``on_file_written`` is called once every span is in the file, before the OTLP exporter (if
    any) is shut down, which against a dead collector takes up to its timeout.

    Raises :class:`CallscopeError` when callscope is already instrumented in this process (the
    demo must use its own provider) or ``output`` cannot be written.

    >>> result = run_demo("callscope-traces.jsonl")  # doctest: +SKIP
    >>> result.output
    PosixPath('callscope-traces.jsonl')
    """
    output = Path(output)
    _start_fresh(output)
    endpoint = otlp_endpoint_from_env()
    file_processor = BatchSpanProcessor(OTLPJsonLinesExporter(output))
    provider = build_tracer_provider(service_name=service_name, span_processors=[file_processor])
    metric_reader = InMemoryMetricReader()
    meter_provider = build_meter_provider(
        service_name=service_name, metric_readers=[metric_reader], exporter=otlp_metric_exporter_from_env()
    )
    result = DemoResult(output=output, otlp_endpoint=endpoint, otlp_protocol=otlp_protocol_from_env() if endpoint else None)
    callscope.instrument(tracer_provider=provider, meter_provider=meter_provider)
    try:
        _run_app(result)
    finally:
        callscope.uninstrument()
        file_processor.force_flush()
    result.models = summarize_models(metric_reader.get_metrics_data())
    try:
        if on_file_written is not None:
            on_file_written(result)
    finally:
        # Last, because a dead collector holds this up until the exporter's timeout, and the
        # file is worth showing meanwhile.
        meter_provider.shutdown()
        provider.shutdown()
    return result


def _start_fresh(output: Path) -> None:
    """Refuse an instrumented process (the demo must use its own provider); empty ``output``."""
    if callscope.CallscopeInstrumentor().is_instrumented_by_opentelemetry:
        raise CallscopeError(
            "callscope is already instrumented in this process; run the demo from a fresh process"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # A fresh file per run: the tree printed afterwards is this run's, not the last one's.
        output.write_text("", encoding="utf-8")
    except OSError as error:
        raise CallscopeError(f"cannot write {output} ({error.strerror}); pass --output with a writable path") from None


def _run_app(result: DemoResult) -> None:
    """The demo application's three calls, with its handlers, into ``result``."""
    runtime_logger = RuntimeLogger("runtime-logger")
    models_only = ModelsOnlyLogger("models-only-logger")
    model_logger = ModelLogger("model-logger")
    tool_logger = ToolLogger("tool-logger")
    format_audit = FormatAudit("format-audit")
    flaky = FlakyLogger("flaky-logger")
    result.handlers = [runtime_logger, models_only, model_logger, tool_logger, format_audit, flaky]
    # The demo is the application here: LangChain's "Error in FlakyLogger.on_llm_end callback"
    # line is kept for the demo to show, not printed in the middle of its output.
    langchain_log = _Collect()
    manager_logger = logging.getLogger("langchain_core.callbacks.manager")
    manager_logger.addHandler(langchain_log)
    propagate, manager_logger.propagate = manager_logger.propagate, False
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="callscope-demo") as pool:
            answer, strict = _build_chain(model_logger, tool_logger, format_audit, pool)
            config: dict[str, Any] = {"callbacks": [runtime_logger, models_only]}
            answer.invoke({"topic": "callback scoping"}, config={**config, "run_name": "answer"})
            # Distinct start times keep the traces in this order when they are read back.
            time.sleep(0.002)
            for _chunk in answer.stream({"topic": "streaming"}, config={**config, "run_name": "answer-streamed"}):
                pass
            time.sleep(0.002)
            try:
                strict.invoke(
                    {"topic": "errors", "facts": "none", "sources": "none"},
                    config={"callbacks": [runtime_logger, flaky], "run_name": "answer-strict"},
                )
            except ValueError as error:
                result.failure = str(error)
    finally:
        manager_logger.removeHandler(langchain_log)
        manager_logger.propagate = propagate
        result.langchain_log = langchain_log.lines


_DURATION = "gen_ai.client.operation.duration"
_TOKENS = "gen_ai.client.token.usage"


def summarize_models(data: MetricsData | None) -> list[ModelSummary]:
    """Per chat / text-completion model (named as its spans are, ``{operation} {model}``, with
    its provider): runs, failed runs, p50/p95 duration and tokens, from callscope's histograms."""
    durations: dict[tuple[str, str | None], list[Any]] = {}
    errors: dict[tuple[str, str | None], int] = {}
    tokens: dict[tuple[tuple[str, str | None], str], int] = {}
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "callscope":
                continue
            for metric in scope_metrics.metrics:
                for point in getattr(metric.data, "data_points", ()):
                    attributes = point.attributes or {}
                    operation = attributes.get("gen_ai.operation.name")
                    if operation not in ("chat", "text_completion"):
                        continue
                    requested = attributes.get("gen_ai.request.model")
                    provider = attributes.get("gen_ai.provider.name")
                    model = (f"{operation} {requested}" if requested else str(operation), str(provider) if provider else None)
                    if metric.name == _DURATION:
                        durations.setdefault(model, []).append(point)
                        if "error.type" in attributes:
                            errors[model] = errors.get(model, 0) + point.count
                    elif metric.name == _TOKENS:
                        key = (model, str(attributes.get("gen_ai.token.type")))
                        tokens[key] = tokens.get(key, 0) + int(point.sum)
    return [
        ModelSummary(
            model=model[0],
            provider=model[1],
            runs=sum(p.count for p in points),
            errors=errors.get(model, 0),
            p50_s=_quantile(points, 0.50),
            p95_s=_quantile(points, 0.95),
            input_tokens=tokens.get((model, "input")),
            output_tokens=tokens.get((model, "output")),
        )
        for model, points in sorted(durations.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


def _quantile(points: list[Any], q: float) -> float:
    """A quantile of the union of histogram points: find the bucket holding it, interpolate
    linearly inside it, the outer buckets bounded by the exact min and max."""
    bounds = points[0].explicit_bounds
    counts = [sum(p.bucket_counts[i] for p in points) for i in range(len(bounds) + 1)]
    low, high = min(p.min for p in points), max(p.max for p in points)
    target = q * sum(counts)
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= target:
            lower = max(low, bounds[i - 1]) if i > 0 else low
            upper = min(high, bounds[i]) if i < len(bounds) else high
            return lower + (upper - lower) * (target - seen) / count
        seen += count
    return high
