"""One benchmark measurement in one fresh process; run.py starts many of these.

    python benchmarks/worker.py speed --config callscope --iterations 400
    python benchmarks/worker.py memory --config callscope --invokes 20000
    python benchmarks/worker.py concurrency --config callscope --runs 1000
    python benchmarks/worker.py profile --config callscope --iterations 3000
    valgrind --tool=callgrind ... python benchmarks/worker.py instructions --config callscope  (see instructions.py)

The result is one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import socket
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

sys.path.insert(0, str(Path(__file__).resolve().parent))

from configs import CONFIGS  # noqa: E402  (benchmarks/ is on the path)
#: LangChain runs per chain invoke: the sequence, the prompt, the model, the parser, the lambda.
RUNS_PER_INVOKE = 5


class CountingExporter(SpanExporter):
    """Counts spans and keeps none: the same cheap sink for every configuration."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class EncodingExporter(CountingExporter):
    """A working OTLP sink without the network: encodes each batch to OTLP protobuf bytes, as the
    real exporter does before sending, so it is the fair baseline for the dead-collector config
    (whose exporter pays that encoding, and the failed sends, on the batch thread)."""

    def __init__(self, counted: CountingExporter) -> None:
        super().__init__()
        self._counted = counted

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encode_spans(spans).SerializeToString()
        return self._counted.export(spans)


class _NamesItsModel:
    """Reports a model name, as every real provider's model does.

    The official instrumentation traces a chat model only when it knows the model's name; with
    this every bridge sees the same information.
    """

    reported_name: ClassVar[str] = "fake-model"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)  # type: ignore[misc]
        params["ls_provider"] = "fake"
        params["ls_model_name"] = self.reported_name
        return params


class NamedFakeChatModel(_NamesItsModel, FakeListChatModel):
    pass


class NamedFakeListLLM(_NamesItsModel, FakeListLLM):
    """The text-completion counterpart, for the async LLM workload."""

    reported_name: ClassVar[str] = "fake-llm"


class StartCounter(AsyncCallbackHandler):
    """An application's own async handler (a rate limiter, a cost meter): not inline, as most
    handlers are, so LangChain's async LLM start dispatch must still reach it."""

    def __init__(self) -> None:
        self.starts = 0

    async def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1


def build_llm_chain() -> Any:
    prompt = PromptTemplate.from_template("Tell me about {topic}.")
    return prompt | NamedFakeListLLM(responses=["OpenTelemetry traces LangChain."]) | StrOutputParser()


def user_step(text: str) -> str:
    return text.upper()


def build_chain() -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "Tell me about {topic}.")])
    model = NamedFakeChatModel(responses=["OpenTelemetry traces LangChain."])
    return prompt | model | StrOutputParser() | RunnableLambda(user_step)


class GraphState(TypedDict):
    topic: str
    answer: str


def build_graph() -> Any:
    from langgraph.graph import END, START, StateGraph

    chain = build_chain()

    def draft(state: GraphState) -> dict[str, str]:
        return {"answer": chain.invoke({"topic": state["topic"]})}

    def polish(state: GraphState) -> dict[str, str]:
        return {"answer": state["answer"].strip()}

    graph = StateGraph(GraphState)
    graph.add_node("draft", draft)
    graph.add_node("polish", polish)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "polish")
    graph.add_edge("polish", END)
    return graph.compile()


def configure(config: str, exporter: SpanExporter) -> tuple[TracerProvider | None, Any]:
    """Turn tracing on as ``config`` says; returns the provider and a handle (or None)."""
    if config == "none":
        return None, None
    sampler = ALWAYS_OFF if config in ("callscope-sampled-out", "callscope-metrics-sampled-out") else None
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    if config in ("callscope-batch", "callscope-dead-collector"):
        # What a production set-up looks like (configure() builds the same): a batching
        # processor, in front of either a sink that encodes like a working OTLP exporter or a real
        # OTLP exporter aimed at a loopback port nobody listens on. The two must cost the same.
        sink = EncodingExporter(counted=exporter) if config == "callscope-batch" else _dead_collector_exporter()
        provider.add_span_processor(BatchSpanProcessor(sink))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if config == "floor":
        import floor

        return provider, floor.install(provider.get_tracer("floor"))
    if config == "noop-handler":
        import floor

        return provider, floor.install_noop()
    if config.startswith("callscope"):
        import callscope

        # Metrics on: an SDK meter provider (every record aggregates, whatever the reader); the
        # other callscope configs have none, so they measure metrics off.
        # Passed only when set, so the same worker also measures releases without metrics.
        metrics = {"meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()])} if "-metrics" in config else {}
        callscope.instrument(provider, capture_content=config == "callscope-content", **metrics)
        return provider, callscope.CallscopeInstrumentor().handler
    if config == "openllmetry":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)
        return provider, None
    if config == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
        return provider, None
    if config == "otel-genai-official":
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor as Official

        # Without skip_dep_check it instruments nothing when only langchain-core is installed.
        Official().instrument(tracer_provider=provider, skip_dep_check=True)
        return provider, None
    raise SystemExit(f"unknown config {config!r}; one of {', '.join(CONFIGS)}")


def _dead_collector_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with socket.socket() as probe:  # a free loopback port, closed again: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=1)


def _median_ns(call: Callable[[], Any], iterations: int) -> float:
    timings = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        call()
        timings.append(clock() - start)
    return statistics.median(timings)


def build_workloads() -> dict[str, Callable[[], Any]]:
    chain, graph, llm_chain = build_chain(), build_graph(), build_llm_chain()
    model = NamedFakeChatModel(responses=["OpenTelemetry traces LangChain."])
    loop = asyncio.new_event_loop()
    counter = StartCounter()
    return {
        "invoke": lambda: chain.invoke({"topic": "tracing"}),
        "langgraph": lambda: graph.invoke({"topic": "tracing", "answer": ""}),
        "stream": lambda: list(chain.stream({"topic": "tracing"})),
        "ainvoke-llm": lambda: loop.run_until_complete(llm_chain.ainvoke({"topic": "tracing"}, {"callbacks": [counter]})),
        "model": lambda: model.invoke("Tell me about tracing."),
    }


def speed(config: str, iterations: int) -> dict[str, Any]:
    exporter = CountingExporter()
    configure(config, exporter)
    workloads = build_workloads()
    result: dict[str, Any] = {"config": config, "median_us": {}, "spans_per_call": {}}
    for name, call in workloads.items():
        _median_ns(call, max(20, iterations // 10))  # warm-up: caches, lazy imports, JIT-free but cold paths
        before = exporter.count
        result["median_us"][name] = _median_ns(call, iterations) / 1000
        result["spans_per_call"][name] = (exporter.count - before) / iterations
    return result


def instructions(config: str, iterations: int) -> dict[str, Any]:
    """Run each workload ``iterations`` times inside one ``operator.call``, the function
    instructions.py tells callgrind to count in (and to dump a profile after): everything else,
    start-up and warm-up included, is not counted."""
    import operator

    exporter = CountingExporter()
    configure(config, exporter)
    workloads = build_workloads()
    for call in workloads.values():
        for _ in range(30):
            call()
    gc.collect()
    gc.disable()  # a collection landing in one window and not another is not the code's cost

    def repeat(call: Callable[[], Any]) -> None:
        for _ in range(iterations):
            call()

    for call in workloads.values():
        operator.call(repeat, call)
    return {"config": config, "iterations": iterations, "workloads": list(workloads)}


def spin(config: str, workload: str, iterations: int) -> dict[str, Any]:
    """Run one workload in a loop for a sampling profiler (where_time_goes.py), timing it."""
    configure(config, CountingExporter())
    call = build_workloads()[workload]
    for _ in range(200):
        call()
    started = time.perf_counter()
    spin_loop(call, iterations)
    return {"config": config, "workload": workload, "per_call_us": (time.perf_counter() - started) / iterations * 1e6}


def spin_loop(call: Callable[[], Any], iterations: int) -> None:
    """The profiled loop: where_time_goes.py keeps only the samples taken inside it."""
    for _ in range(iterations):
        call()


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory(config: str, invokes: int) -> dict[str, Any]:
    exporter = CountingExporter()
    _, handler = configure(config, exporter)
    chain = build_chain()
    for _ in range(500):
        chain.invoke({"topic": "memory"})
    gc.collect()
    checkpoints = []
    step = max(1, invokes // 10)
    spans_before = exporter.count
    rss_start = _rss_bytes()
    for i in range(1, invokes + 1):
        chain.invoke({"topic": "memory"})
        if i % step == 0:
            gc.collect()
            checkpoints.append(_rss_bytes())
    spans = exporter.count - spans_before
    # Retained Python memory per invoke, measured exactly with tracemalloc over a shorter window
    # (tracemalloc slows every allocation down, so not over the whole run).
    window = min(5000, invokes)
    tracemalloc.start()
    gc.collect()
    traced_start = tracemalloc.get_traced_memory()[0]
    for _ in range(window):
        chain.invoke({"topic": "memory"})
    gc.collect()
    traced_end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "config": config,
        "invokes": invokes,
        "runs": invokes * RUNS_PER_INVOKE,
        "spans_exported": spans,
        "rss_start": rss_start,
        "rss_checkpoints": checkpoints,
        "tracemalloc_window": window,
        "tracemalloc_growth_bytes": traced_end - traced_start,
        "registry_len": len(handler.registry) if handler is not None and hasattr(handler, "registry") else None,
    }


def concurrency(config: str, runs: int) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    _, handler = configure(config, exporter)
    chain = build_chain()

    async def main() -> list[Any]:
        return await asyncio.gather(*(chain.ainvoke({"topic": f"t{i}"}) for i in range(runs)))

    started = time.perf_counter()
    outputs = asyncio.run(main())
    elapsed = time.perf_counter() - started
    spans = exporter.get_finished_spans()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    bad = 0
    for members in by_trace.values():
        ids = {span.context.span_id for span in members}
        roots = [span for span in members if span.parent is None]
        orphans = [span for span in members if span.parent is not None and span.parent.span_id not in ids]
        if len(roots) != 1 or orphans or len(members) != 5:
            bad += 1
    return {
        "config": config,
        "runs": runs,
        "outputs": len(outputs),
        "spans": len(spans),
        "traces": len(by_trace),
        "bad_traces": bad,
        "registry_len": len(handler.registry) if handler is not None else None,
        "seconds": elapsed,
    }


def profile(config: str, iterations: int, top: int) -> dict[str, Any]:
    exporter = CountingExporter()
    configure(config, exporter)
    chain = build_chain()
    for _ in range(200):
        chain.invoke({"topic": "profile"})
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        chain.invoke({"topic": "profile"})
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_package: dict[str, float] = {}
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        package = _package_of(filename)
        by_package[package] = by_package.get(package, 0.0) + tottime
        rows.append((tottime, cumtime, calls, package, f"{Path(filename).name}:{line}({function})"))
    total = sum(by_package.values())
    rows.sort(reverse=True)
    # Where callscope's own callbacks spend their time: callscope's own lines, plus every call
    # they make out of callscope (the OTel SDK, contextvars, ...), by callee.
    inside: dict[str, float] = {}
    for (filename, line, function), (_, _, tottime, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if _package_of(filename) == "callscope":
            inside["callscope's own code"] = inside.get("callscope's own code", 0.0) + tottime
            continue
        for caller, (_, _, _, cumtime) in callers.items():
            if _package_of(caller[0]) == "callscope":
                key = f"{_package_of(filename)} {Path(filename).name}:{line}({function})"
                inside[key] = inside.get(key, 0.0) + cumtime
    handler_entry = [
        (cum, calls, where)
        for tot, cum, calls, package, where in rows
        if package == "callscope" and ("(on_" in where or "(fenced)" in where or "(_enter_step)" in where)
    ]
    return {
        "config": config,
        "iterations": iterations,
        "total_s": total,
        "share_by_package": {k: v / total for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])},
        "top_tottime": [
            {"tottime_us_per_invoke": tot / iterations * 1e6, "cum_us_per_invoke": cum / iterations * 1e6, "calls": calls, "package": package, "where": where}
            for tot, cum, calls, package, where in rows[:top]
        ],
        "callscope_entry_points_cum_us_per_invoke": {where: cum / iterations * 1e6 for cum, calls, where in handler_entry},
        "callscope_breakdown_us_per_invoke": dict(
            sorted(((k, v / iterations * 1e6) for k, v in inside.items()), key=lambda kv: -kv[1])[:top]
        ),
    }


def _package_of(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("callscope", "opentelemetry", "langchain_core", "langgraph", "pydantic", "uuid_utils", "wrapt"):
        if marker in parts:
            return marker
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib/other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "memory", "concurrency", "profile", "instructions", "spin"))
    parser.add_argument("--workload", default="invoke")
    parser.add_argument("--config", required=True, choices=CONFIGS)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--invokes", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.mode == "speed":
        result = speed(args.config, args.iterations)
    elif args.mode == "memory":
        result = memory(args.config, args.invokes)
    elif args.mode == "spin":
        result = spin(args.config, args.workload, args.iterations)
    elif args.mode == "instructions":
        result = instructions(args.config, args.iterations)
    elif args.mode == "concurrency":
        result = concurrency(args.config, args.runs)
    else:
        result = profile(args.config, args.iterations, args.top)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
