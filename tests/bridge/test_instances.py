"""A model LangChain cannot serialize reaches the callbacks as a repr: its endpoint and request
parameters are read from the instance instead (``instances``), on the span and the metrics, in
every mode; a serializable model's fields are never read twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import callscope
from callscope._bridge.instances import streams_its_request
from tests.modes import MODES, drive


class SelfHostedChat(GenericFakeChatModel):
    """Like ChatOllama: its own endpoint and sampling fields, and not serializable."""

    base_url: str | None = None
    num_predict: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None


class SerializableSelfHostedChat(SelfHostedChat):
    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


def _messages() -> Iterator[AIMessage]:
    while True:
        yield AIMessage("Paris")


@pytest.fixture
def metric_reader(tracer_provider) -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield reader
    instrumentor.uninstrument()
    meter_provider.shutdown()


def _durations(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    data = reader.get_metrics_data()
    return [
        dict(point.attributes)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.operation.duration"
        for point in metric.data.data_points
    ]


@pytest.mark.parametrize("mode", MODES)
def test_the_fields_an_unserializable_model_was_built_with_reach_span_and_metrics(mode, span_exporter, metric_reader):
    model = SelfHostedChat(messages=_messages(), base_url="http://10.1.2.3:11434", num_predict=64, top_p=0.5, stop=["END"])
    drive(model, mode, "capital of France?")
    [span] = span_exporter.get_finished_spans()
    assert span.attributes["server.address"] == "10.1.2.3"
    assert span.attributes["server.port"] == 11434
    assert span.attributes["gen_ai.request.max_tokens"] == 64
    assert span.attributes["gen_ai.request.top_p"] == 0.5
    assert span.attributes["gen_ai.request.stop_sequences"] == ("END",)
    [duration] = _durations(metric_reader)
    assert (duration["server.address"], duration["server.port"]) == ("10.1.2.3", 11434)


def test_a_runtime_stop_is_not_overwritten_by_the_models_own(span_exporter, metric_reader):
    model = SelfHostedChat(messages=_messages(), stop=["END"])
    model.invoke("hi", stop=["HALT"])
    [span] = span_exporter.get_finished_spans()
    assert span.attributes["gen_ai.request.stop_sequences"] == ("HALT",)


def test_fields_left_at_their_defaults_say_nothing(span_exporter, metric_reader):
    SelfHostedChat(messages=_messages()).invoke("hi")
    [span] = span_exporter.get_finished_spans()
    assert not {"server.address", "gen_ai.request.max_tokens", "gen_ai.request.top_p"} & set(span.attributes)


def test_a_serializable_model_is_described_by_what_langchain_serialized(span_exporter, metric_reader):
    SerializableSelfHostedChat(messages=_messages(), base_url="http://10.1.2.3:8080", top_p=0.25).invoke("hi")
    [span] = span_exporter.get_finished_spans()
    assert (span.attributes["server.address"], span.attributes["gen_ai.request.top_p"]) == ("10.1.2.3", 0.25)


class RefusesAtOnce(GenericFakeChatModel):
    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        raise ConnectionError("provider down")


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_that_fails_before_its_first_chunk_says_it_was_streamed(mode, span_exporter, metric_reader):
    with pytest.raises(ConnectionError):
        drive(RefusesAtOnce(messages=_messages()), mode, "hi")
    [span] = span_exporter.get_finished_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["error.type"] == "ConnectionError"


def test_only_a_model_with_its_own_stream_streams_its_request():
    from langchain_core.language_models import FakeListChatModel, FakeListLLM

    assert streams_its_request(GenericFakeChatModel)  # implements _stream
    assert streams_its_request(FakeListChatModel)
    assert not streams_its_request(FakeListLLM)  # LangChain's stream() falls back to invoke
