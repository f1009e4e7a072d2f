"""langchain-anthropic's ChatAnthropic against a loopback Anthropic Messages API.

Every expected value comes from what the fake server received (``server.requests``) or from the
canned reply in ``tests.fakes.anthropic_api``, never from callscope's own output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_anthropic.chat_models import AnthropicInvalidRequestError
from langchain_core.tools import tool
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import chat_request, expected_response_id
from tests.fakes import anthropic_api as api
from tests.fakes.loopback import LoopbackServer
from tests.modes import MODES, drive

MODEL = "claude-sonnet-4-5"
TEMPERATURE = 0.25
MAX_TOKENS = 321
TOP_P = 0.75
TOP_K = 17
STOP_SEQUENCES = ["END"]
RUNTIME_STOP = ["HALT", "DONE"]


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    with LoopbackServer(api.route) as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    """One server for the module (stopping one takes half a second); each test sees only the
    requests it made."""
    loopback.requests.clear()
    return loopback


@pytest.fixture(autouse=True)
def no_sdk_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The anthropic SDK (2.x) opens its own ``anthropic.messages.create`` CLIENT span on the
    *global* tracer provider around each call; keep it out so the HTTP span's parent does not
    depend on whatever global provider another test left behind."""
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")


def chat_model(server: LoopbackServer) -> ChatAnthropic:
    return ChatAnthropic(
        model=MODEL,
        base_url=server.url,
        api_key="sk-ant-test",
        max_retries=0,
        timeout=5,
        temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS,
        top_p=TOP_P,
        top_k=TOP_K,
        stop_sequences=STOP_SEQUENCES,
        stream_usage=True,
    )


def wire(server: LoopbackServer, mode: str) -> dict[str, Any]:
    """The one request the model sent, checked to carry every constructor parameter."""
    assert len(server.requests) == 1, [r.path for r in server.requests]
    request = server.last()
    assert (request.method, request.path) == ("POST", "/v1/messages")
    body = request.json
    assert body["model"] == MODEL
    assert body["temperature"] == TEMPERATURE
    assert body["max_tokens"] == MAX_TOKENS
    assert body["top_p"] == TOP_P
    assert body["top_k"] == TOP_K
    assert bool(body.get("stream")) is (mode in ("stream", "astream"))
    return body


def assert_request_attributes(span: Any, server: LoopbackServer, body: dict[str, Any]) -> None:
    assert span.name == f"chat {body['model']}"
    assert span.kind is SpanKind.CLIENT
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.model"] == body["model"]
    assert attributes["gen_ai.request.temperature"] == body["temperature"]
    assert attributes["gen_ai.request.max_tokens"] == body["max_tokens"]
    assert attributes["gen_ai.request.top_p"] == body["top_p"]
    assert attributes["gen_ai.request.top_k"] == float(body["top_k"])  # a double in the registry
    assert attributes.get("gen_ai.request.stop_sequences") == tuple(body["stop_sequences"])
    assert attributes["server.address"] == server.host == "127.0.0.1"
    assert attributes["server.port"] == server.port


def assert_response_attributes(span: Any, mode: str, stop_reason: str) -> None:
    attributes = span.attributes
    assert attributes.get("gen_ai.response.model") == api.RESPONSE_MODEL
    assert attributes.get("gen_ai.response.id") == expected_response_id("langchain-anthropic", mode, api.MESSAGE_ID)
    assert attributes.get("gen_ai.response.finish_reasons") == (stop_reason,)
    # Anthropic's input_tokens excludes cached tokens; the conventions' input_tokens includes them.
    assert attributes.get("gen_ai.usage.input_tokens") == api.TOTAL_INPUT_TOKENS
    assert attributes.get("gen_ai.usage.output_tokens") == api.OUTPUT_TOKENS
    assert attributes.get("gen_ai.usage.cache_read.input_tokens") == api.CACHE_READ_INPUT_TOKENS
    assert attributes.get("gen_ai.usage.cache_creation.input_tokens") == api.CACHE_CREATION_INPUT_TOKENS


def output_messages(span: Any) -> list[dict[str, Any]]:
    return json.loads(span.attributes["gen_ai.output.messages"])


@pytest.mark.parametrize("mode", MODES)
def test_plain_reply(traced, server, mode):
    message = drive(chat_model(server), mode, "Say hello")

    assert message.text == api.TEXT
    body = wire(server, mode)
    assert body["stop_sequences"] == STOP_SEQUENCES  # the constructor's own stop sequences
    span = traced.model_span()
    assert span.status.status_code is StatusCode.UNSET
    assert_request_attributes(span, server, body)
    assert_response_attributes(span, mode, "end_turn")
    [output] = output_messages(span)
    assert output["role"] == "assistant"
    assert output["finish_reason"] == "end_turn"
    assert [p["type"] for p in output["parts"]] == ["text"]
    assert "".join(p["content"] for p in output["parts"]) == api.TEXT
    traced.assert_metrics(chat_request("anthropic", MODEL, server), response_model=api.RESPONSE_MODEL)


@pytest.mark.parametrize("mode", MODES)
def test_runtime_stop_replaces_the_constructor_stop_sequences(traced, server, mode):
    drive(chat_model(server), mode, "Say hello", stop=RUNTIME_STOP)

    body = wire(server, mode)
    assert body["stop_sequences"] == RUNTIME_STOP
    span = traced.model_span()
    assert_request_attributes(span, server, body)
    assert_response_attributes(span, mode, "end_turn")


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_reply(traced, server, mode):
    message = drive(chat_model(server).bind_tools([get_weather]), mode, "What is the weather in Paris?")

    assert [(c["name"], c["id"], c["args"]) for c in message.tool_calls] == [(api.TOOL_NAME, api.TOOL_USE_ID, api.TOOL_INPUT)]
    body = wire(server, mode)
    assert [t["name"] for t in body["tools"]] == [get_weather.name]
    span = traced.model_span()
    [output] = output_messages(span)
    assert output["finish_reason"] == "tool_use"
    calls = [p for p in output["parts"] if p["type"] == "tool_call"]
    assert calls == [{"type": "tool_call", "id": api.TOOL_USE_ID, "name": api.TOOL_NAME, "arguments": api.TOOL_INPUT}]
    # The reply's text block, then the one call: no second part copied from the raw tool_use
    # content block (on a stream that copy would carry `input: {}`, `index`, `partial_json`).
    assert [p["type"] for p in output["parts"]] == ["text", "tool_call"], output["parts"]
    assert output["parts"][0]["content"] == api.TOOL_TEXT
    assert api.TOOL_USE_ID not in json.dumps(output["parts"][0])
    assert "partial_json" not in span.attributes["gen_ai.output.messages"]
    assert_request_attributes(span, server, body)
    assert_response_attributes(span, mode, "tool_use")
    traced.assert_metrics(chat_request("anthropic", MODEL, server), response_model=api.RESPONSE_MODEL)


@pytest.mark.parametrize("mode", MODES)
def test_error_reply(traced, server, mode):
    with pytest.raises(AnthropicInvalidRequestError) as raised:
        drive(chat_model(server), mode, "Please FAIL now")

    error = raised.value
    assert error.status_code == 400
    assert error.body["error"] == {"type": "invalid_request_error", "message": api.ERROR_MESSAGE}
    body = wire(server, mode)
    span = traced.model_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == type(error).__qualname__
    assert_request_attributes(span, server, body)
    traced.assert_metrics(chat_request("anthropic", MODEL, server), error_type=type(error).__qualname__)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reply", ["plain", "tool_call", "error"])
def test_httpx2_request_span_is_a_child_of_the_chat_span(traced, tracer_provider, server, mode, reply):
    """The anthropic SDK sends with httpx2: with its instrumentation on, the POST span sits under
    the model span, because callscope makes that span current around the provider call."""
    instrumentor = HTTPX2ClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        model = chat_model(server)
        runnable = model.bind_tools([get_weather]) if reply == "tool_call" else model
        if reply == "error":
            with pytest.raises(AnthropicInvalidRequestError):
                drive(runnable, mode, "Please FAIL now")
        else:
            drive(runnable, mode, "What is the weather in Paris?")
    finally:
        instrumentor.uninstrument()

    wire(server, mode)
    chat = traced.model_span()
    # The instrumentation's default (old) HTTP conventions: http.method / http.status_code.
    posts = [s for s in traced.spans.all if s.attributes.get("http.method") == "POST"]
    assert len(posts) == 1, traced.spans.names()
    [post] = posts
    assert post.kind is SpanKind.CLIENT
    assert post.attributes.get("http.url") == f"{server.url}/v1/messages"
    assert post.attributes.get("http.status_code") == (400 if reply == "error" else 200)
    assert traced.spans.parent_of(post) is not None
    assert traced.spans.parent_of(post).context.span_id == chat.context.span_id
    assert post.context.trace_id == chat.context.trace_id
