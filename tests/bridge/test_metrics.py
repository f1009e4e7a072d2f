"""GenAI client metrics (issue 15): read with the SDK's InMemoryMetricReader over real LangChain
runs in every mode, and checked against the semantic-conventions registry files (v1.41.1:
model/gen-ai/metrics.yaml for names, units, instruments and attributes; docs/gen-ai/
gen-ai-metrics.md for the bucket boundaries)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

import callscope
from tests.models import StreamingEchoLLM, chat_model
from tests.spans import SpanTree

yaml = pytest.importorskip("yaml")

#: semantic-conventions v1.41.1's files, copied with its license into tests/data (see test_semconv).
SEMCONV = Path(__file__).resolve().parents[1] / "data" / "semconv" / "v1.41.1"
DURATION = "gen_ai.client.operation.duration"
TOKENS = "gen_ai.client.token.usage"
FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
PER_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
CLIENT_METRICS = (DURATION, TOKENS, FIRST_CHUNK, PER_CHUNK)


# --- the registry, read from its files ---------------------------------------------------------


def _registry_file(relative: str) -> Path:
    return SEMCONV / relative


@pytest.fixture(scope="module")
def registry() -> dict[str, dict[str, Any]]:
    """Per client metric: instrument, unit, value type, attributes with requirement levels, and
    the bucket boundaries of the human-readable page."""
    groups = {g["id"]: g for g in yaml.safe_load(_registry_file("model/gen-ai/metrics.yaml").read_text())["groups"]}
    page = _registry_file("docs/gen-ai/gen-ai-metrics.md").read_text()

    def attributes(group: dict[str, Any]) -> dict[str, Any]:
        inherited = attributes(groups[group["extends"]]) if "extends" in group else {}
        return {**inherited, **{a["ref"]: a.get("requirement_level", "recommended") for a in group.get("attributes", ())}}

    out = {}
    for name in CLIENT_METRICS:
        group = groups[f"metric.{name}"]
        section = page.split(f"### Metric: `{name}`", 1)[1]
        bounds = re.search(r"\[ExplicitBucketBoundaries\] of\s*\[([^\]]*)\]", section)
        assert bounds is not None, name
        out[name] = {
            "instrument": group["instrument"],
            "unit": group["unit"],
            "value_type": group["annotations"]["code_generation"]["metric_value_type"],
            "attributes": attributes(group),
            "buckets": tuple(float(b) for b in bounds.group(1).split(",")),
        }
    token_type = next(
        a for a in yaml.safe_load(_registry_file("model/gen-ai/registry.yaml").read_text())["groups"][0]["attributes"]
        if a["id"] == "gen_ai.token.type"
    )
    out[TOKENS]["token_types"] = {m["value"] for m in token_type["type"]["members"] if "deprecated" not in m}
    return out


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def measured(tracer_provider, meter_provider) -> Iterator[callscope.CallscopeInstrumentor]:
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


class Points:
    """The histogram points the reader holds, by metric name: [(attributes, point)]."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.metrics: dict[str, Any] = {}
        self.by_name: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                assert scope_metrics.scope.name == "callscope"
                for metric in scope_metrics.metrics:
                    self.metrics[metric.name] = metric
                    self.by_name[metric.name] = [(dict(p.attributes), p) for p in metric.data.data_points]

    def __getitem__(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        return self.by_name.get(name, [])

    def count(self, name: str, **match: Any) -> int:
        return sum(p.count for attributes, p in self[name] if _matches(attributes, match))

    def total(self, name: str, **match: Any) -> float:
        return sum(p.sum for attributes, p in self[name] if _matches(attributes, match))

    def operations(self, name: str = DURATION) -> set[str]:
        return {attributes["gen_ai.operation.name"] for attributes, _ in self[name]}


def _matches(attributes: dict[str, Any], match: dict[str, Any]) -> bool:
    return all(attributes.get(key.replace("__", ".")) == value for key, value in match.items())


def check_against_registry(points: Points, registry: dict[str, dict[str, Any]]) -> None:
    """Every recorded metric as the registry defines it: instrument, unit, value type, bucket
    boundaries; attributes only from its list, each required one present, error.type only on
    the metrics that have it."""
    assert points.metrics, "nothing was recorded"
    for name, metric in points.metrics.items():
        spec = registry[name]
        assert spec["instrument"] == "histogram" and isinstance(metric.data, Histogram), name
        assert metric.unit == spec["unit"], name
        allowed = spec["attributes"]
        for attributes, point in points[name]:
            assert tuple(point.explicit_bounds) == spec["buckets"], name
            assert set(attributes) <= set(allowed), (name, set(attributes) - set(allowed))
            model_run = attributes["gen_ai.operation.name"] in ("chat", "text_completion")
            for key, level in allowed.items():
                if level == "required" and (key != "gen_ai.provider.name" or model_run):
                    # A tool or retriever has no GenAI provider: the one documented exception.
                    assert key in attributes, (name, key, attributes)
            # server.port is conditionally required "if server.address is set"
            assert ("server.address" in attributes) == ("server.port" in attributes), attributes
            if spec["value_type"] == "int":
                assert isinstance(point.sum, int), (name, point.sum)
            if name == TOKENS:
                assert attributes["gen_ai.token.type"] in spec["token_types"]


# --- components ---------------------------------------------------------------------------------


class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=f"about {query}")]


class ModelDown(RuntimeError):
    pass


class FailingChat(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise ModelDown("the provider is down")


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city}: sunny"


@tool
def broken(city: str) -> str:
    """Always fails."""
    raise LookupError(city)


def chain() -> Any:
    return ChatPromptTemplate.from_template("Capital of {country}?") | chat_model() | StrOutputParser()


# --- every execution mode -----------------------------------------------------------------------


def test_invoke_records_duration_and_tokens_per_model(measured, metric_reader, registry):
    chain().invoke({"country": "France"})
    points = Points(metric_reader)
    check_against_registry(points, registry)
    # Only the model run is measured: the sequence, prompt and parser are not GenAI operations.
    [(attributes, duration)] = points[DURATION]
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-2026",
    }
    assert duration.count == 1 and 0 < duration.sum < 5
    assert points.total(TOKENS, gen_ai__token__type="input") == 11
    assert points.total(TOKENS, gen_ai__token__type="output") == 5
    # Not streamed: no chunk metrics.
    assert not points[FIRST_CHUNK] and not points[PER_CHUNK]


async def test_ainvoke_and_abatch_are_measured(measured, metric_reader, registry):
    await chain().ainvoke({"country": "France"})
    await chain().abatch([{"country": c} for c in ("Peru", "Chile")])
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert points.count(DURATION, gen_ai__operation__name="chat") == 3
    assert points.total(TOKENS, gen_ai__token__type="input") == 33


def test_batch_aggregates_one_point_per_attribute_set(measured, metric_reader, registry):
    chain().batch([{"country": c} for c in ("Peru", "Chile", "Japan", "Kenya")])
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert len(points[DURATION]) == 1 and points.count(DURATION) == 4
    assert points.total(TOKENS, gen_ai__token__type="output") == 20


def test_streaming_records_first_chunk_and_each_later_chunk(measured, metric_reader, registry, span_exporter):
    pieces = list(chain().stream({"country": "France"}))
    points = Points(metric_reader)
    check_against_registry(points, registry)
    chunks = SpanTree(span_exporter).one("chat gpt-test").attributes["callscope.stream.chunks"]
    assert chunks == len(pieces) > 2
    assert points.count(FIRST_CHUNK) == 1
    # "recorded for each chunk received after the first one"
    assert points.count(PER_CHUNK) == chunks - 1
    [(attributes, first)] = points[FIRST_CHUNK]
    assert attributes == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-test"}
    duration = points.total(DURATION)
    assert 0 < first.sum <= duration and points.total(PER_CHUNK) <= duration
    # The first chunk links to the model's span; the per-chunk points skip the exemplar search.
    assert first.exemplars and not points[PER_CHUNK][0][1].exemplars


async def test_astream_of_a_text_completion_model(measured, metric_reader, registry):
    model = StreamingEchoLLM()
    pieces = [piece async for piece in model.astream("say hello")]
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert points.operations() == {"text_completion"}
    assert points.count(FIRST_CHUNK) == 1 and points.count(PER_CHUNK) == len(pieces) - 1


def test_tools_and_retrievers_are_measured_without_a_provider(measured, metric_reader, registry):
    lookup.invoke({"city": "Oslo"})
    Shelf().invoke("otel")
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert {tuple(sorted(a.items())) for a, _ in points[DURATION]} == {
        (("gen_ai.operation.name", "execute_tool"),),
        (("gen_ai.operation.name", "retrieval"),),
    }
    assert not points[TOKENS]


# --- errors -------------------------------------------------------------------------------------


def test_a_failed_run_records_its_duration_with_error_type(measured, metric_reader, registry):
    with pytest.raises(ModelDown):
        (ChatPromptTemplate.from_template("{q}") | FailingChat()).invoke({"q": "hi"})
    with pytest.raises(LookupError):
        broken.invoke({"city": "Oslo"})
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert points.count(DURATION, gen_ai__operation__name="chat", error__type="ModelDown") == 1
    assert points.count(DURATION, gen_ai__operation__name="execute_tool", error__type="LookupError") == 1
    assert not points[TOKENS]


def test_a_failure_does_not_leak_error_type_into_later_runs(measured, metric_reader):
    with pytest.raises(LookupError):
        broken.invoke({"city": "Oslo"})
    lookup.invoke({"city": "Oslo"})
    points = Points(metric_reader)
    assert points.count(DURATION, gen_ai__operation__name="execute_tool") == 2
    assert points.count(DURATION, error__type=None) == 1


def test_an_abandoned_stream_is_measured_without_error_type(measured, metric_reader):
    stream = chat_model("one two three four five").stream("count")
    next(stream)
    stream.close()
    points = Points(metric_reader)
    [(attributes, _)] = points[DURATION]
    assert "error.type" not in attributes
    assert points.count(FIRST_CHUNK) == 1


async def test_a_cancelled_model_run_is_measured_without_error_type(measured, metric_reader):
    class SlowModel(FakeListChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)
            raise AssertionError("never reached")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(SlowModel(responses=["x"]).ainvoke("hi"), timeout=0.05)
    [(attributes, _)] = Points(metric_reader)[DURATION]
    assert "error.type" not in attributes  # cancelled by its caller, as the span says: not a failure


# --- LangGraph ----------------------------------------------------------------------------------


def test_langgraph_nodes_are_not_measured_their_model_and_tool_runs_are(measured, metric_reader, registry):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        city: str
        answer: str

    model = chat_model()

    def think(state: State) -> dict[str, str]:
        return {"answer": str(model.invoke(state["city"]).content)}

    def act(state: State) -> dict[str, str]:
        return {"answer": lookup.invoke({"city": state["city"]})}

    builder = StateGraph(State)
    builder.add_node("think", think)
    builder.add_node("act", act)
    builder.add_edge(START, "think")
    builder.add_edge("think", "act")
    builder.add_edge("act", END)
    builder.compile().invoke({"city": "Oslo", "answer": ""})
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert points.operations() == {"chat", "execute_tool"}
    assert points.count(DURATION) == 2


# --- sampling, suppression, switches ------------------------------------------------------------


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, ParentBased(ALWAYS_OFF), TraceIdRatioBased(0.0)], ids=repr)
def test_a_sampled_out_run_is_still_measured(sampler, meter_provider, metric_reader, registry):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    callscope.instrument(tracer_provider, meter_provider=meter_provider)
    try:
        # The model is a child of an unsampled run (callscope's fast path: no span started at
        # all); the tool and the bare model are unsampled roots.
        chain().invoke({"country": "France"})
        list(chain().stream({"country": "Peru"}))
        lookup.invoke({"city": "Oslo"})
        chat_model().invoke("hi")
    finally:
        callscope.uninstrument()
    assert exporter.get_finished_spans() == ()
    points = Points(metric_reader)
    check_against_registry(points, registry)
    assert points.count(DURATION, gen_ai__operation__name="chat") == 3
    assert points.count(DURATION, gen_ai__operation__name="execute_tool") == 1
    assert points.total(TOKENS, gen_ai__token__type="input") == 22
    assert points.count(FIRST_CHUNK) == 1


def test_suppressed_instrumentation_records_nothing(measured, metric_reader):
    with suppress_instrumentation():
        chain().invoke({"country": "France"})
    assert not Points(metric_reader).metrics


def test_metrics_false_turns_them_off_and_spans_stay(tracer_provider, meter_provider, metric_reader, span_exporter):
    callscope.instrument(tracer_provider, meter_provider=meter_provider, metrics=False)
    try:
        assert callscope.CallscopeInstrumentor().handler._metrics is None
        chain().invoke({"country": "France"})
    finally:
        callscope.uninstrument()
    assert not Points(metric_reader).metrics
    assert "chat gpt-test" in SpanTree(span_exporter).names()


def test_the_environment_switch_turns_them_off(tracer_provider, meter_provider, metric_reader, monkeypatch):
    monkeypatch.setenv("CALLSCOPE_METRICS", "false")
    callscope.instrument(tracer_provider, meter_provider=meter_provider)
    try:
        assert callscope.CallscopeInstrumentor().handler._metrics is None
        chain().invoke({"country": "France"})
    finally:
        callscope.uninstrument()
    assert not Points(metric_reader).metrics


def test_an_invalid_switch_value_warns_and_keeps_them_on(tracer_provider, meter_provider, metric_reader, monkeypatch, caplog):
    monkeypatch.setenv("CALLSCOPE_METRICS", "nope")
    callscope.instrument(tracer_provider, meter_provider=meter_provider)
    try:
        chain().invoke({"country": "France"})
    finally:
        callscope.uninstrument()
    assert "CALLSCOPE_METRICS='nope' is not true or false" in caplog.text
    assert Points(metric_reader).count(DURATION) == 1


def test_an_explicit_bad_switch_raises(tracer_provider):
    with pytest.raises(callscope.ConfigError, match="metrics must be True or False"):
        callscope.instrument(tracer_provider, metrics="yes")  # type: ignore[arg-type]


def test_a_noop_meter_provider_means_no_metric_work(tracer_provider):
    callscope.instrument(tracer_provider, meter_provider=NoOpMeterProvider())
    try:
        assert callscope.CallscopeInstrumentor().handler._metrics is None
    finally:
        callscope.uninstrument()


def test_uninstrument_stops_measuring(measured, metric_reader):
    measured.uninstrument()
    chain().invoke({"country": "France"})
    assert not Points(metric_reader).metrics


def test_the_global_meter_provider_is_used_once_set_even_after_instrument():
    """None means the global provider, as in the contrib instrumentations. Unset, it costs no
    instrument and records nothing; set later, the next runs are measured. (A subprocess: the
    global provider can be set only once per process.)"""
    script = textwrap.dedent(
        """
        from langchain_core.language_models import FakeListChatModel
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        import callscope

        callscope.instrument(TracerProvider())
        handler = callscope.CallscopeInstrumentor().handler
        model = FakeListChatModel(responses=["a"])
        model.invoke("before")
        assert handler._metrics is not None and not handler._metrics._bound
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        model.invoke("after")
        model.invoke("after again")
        [metric] = [m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        print(metric.name, sum(p.count for p in metric.data.data_points))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gen_ai.client.operation.duration", "2"]


def test_chain_runs_get_no_metric_state(measured):
    seen = []
    handler = measured.handler

    def peek(text: str) -> str:
        # Inside the lambda's step: its own run (a chain run) is open.
        seen.extend(record.metric_attributes for record in handler.registry._runs.values())
        return text

    (RunnableLambda(peek) | StrOutputParser()).invoke("x")
    assert seen and all(attributes is None for attributes in seen)


def test_exemplars_point_at_the_model_span(measured, metric_reader, span_exporter):
    chat_model().invoke("hi")
    span = SpanTree(span_exporter).one("chat gpt-test")
    [(_, point)] = Points(metric_reader)[DURATION]
    assert [e.span_id for e in point.exemplars] == [span.context.span_id]


def test_metric_failures_never_reach_the_chain(measured, metric_reader, caplog, monkeypatch):
    handler = measured.handler

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("histogram broke")

    monkeypatch.setattr(handler._metrics._duration, "record", explode)
    assert chain().invoke({"country": "France"}) == "Paris is the capital."
    assert "failed in GenAI metrics; the chain is unaffected" in caplog.text
    assert "Error in" not in caplog.text


def test_fake_list_model_without_usage_records_no_tokens(measured, metric_reader):
    FakeListChatModel(responses=["a"]).invoke("hi")
    points = Points(metric_reader)
    assert points.count(DURATION) == 1 and not points[TOKENS]
    [(attributes, _)] = points[DURATION]
    # No model name known: gen_ai.request.model is conditionally required "if available".
    assert "gen_ai.request.model" not in attributes and attributes["gen_ai.provider.name"]


def test_concurrent_async_runs_each_measured_once(measured, metric_reader):
    async def many() -> None:
        await asyncio.gather(*(chain().ainvoke({"country": str(i)}) for i in range(50)))

    asyncio.run(many())
    assert Points(metric_reader).count(DURATION) == 50


def test_a_disabled_sdk_means_no_metric_work(tracer_provider, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    callscope.instrument(tracer_provider, meter_provider=MeterProvider())
    try:
        assert callscope.CallscopeInstrumentor().handler._metrics is None
    finally:
        callscope.uninstrument()


class SelfHostedChat(FakeListChatModel):
    """A model constructed with its own endpoint, serialized by LangChain as provider
    integrations are (langchain-openai keeps it in ``openai_api_base``)."""

    openai_api_base: str | None = None

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


def test_a_model_given_an_endpoint_reports_its_server_without_credentials(measured, metric_reader, registry, span_exporter):
    SelfHostedChat(responses=["a"], openai_api_base="https://user:s3cret@llm.internal:8443/v1?key=k").invoke("hi")
    points = Points(metric_reader)
    check_against_registry(points, registry)
    [(attributes, _)] = points[DURATION]
    assert (attributes["server.address"], attributes["server.port"]) == ("llm.internal", 8443)
    assert "s3cret" not in repr(attributes) and "key=k" not in repr(attributes)
    span = SpanTree(span_exporter).one("chat")
    assert (span.attributes["server.address"], span.attributes["server.port"]) == ("llm.internal", 8443)


def test_a_model_on_its_default_endpoint_reports_no_server(measured, metric_reader):
    SelfHostedChat(responses=["a"]).invoke("hi")
    [(attributes, _)] = Points(metric_reader)[DURATION]
    assert "server.address" not in attributes and "server.port" not in attributes
