"""langchain-mistralai's ChatMistralAI against a loopback Mistral chat completions API
(tests/fakes/mistral_api.py), in the four modes: what the span and metrics say must be what went
over the wire. Span facts are gathered in ``Checks`` so one run lists every mismatch at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.tools import tool
from langchain_mistralai import ChatMistralAI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import (
    Checks,
    chat_request,
    expected_response_id,
    expected_response_model,
)
from tests.fakes import mistral_api as api
from tests.fakes.loopback import LoopbackServer
from tests.modes import MODES, drive

PROVIDER = "mistral_ai"
MODEL = "mistral-small-latest"
PACKAGE = "langchain-mistralai"
# Constructor parameter -> (the key the package sends it as, the span attribute, the value).
PARAMS: dict[str, tuple[str, str, Any]] = {
    "temperature": ("temperature", "gen_ai.request.temperature", 0.3),
    "max_tokens": ("max_tokens", "gen_ai.request.max_tokens", 64),
    "top_p": ("top_p", "gen_ai.request.top_p", 0.9),
    "random_seed": ("random_seed", "gen_ai.request.seed", 42),
    "stop": ("stop", "gen_ai.request.stop_sequences", ["END"]),
}
STREAMED = ("stream", "astream")


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(api.route) as server:
        yield server


def make_model(server: LoopbackServer) -> ChatMistralAI:
    return ChatMistralAI(
        model=MODEL,
        endpoint=server.url + "/v1",
        api_key="test",
        max_retries=0,
        timeout=10,
        **{name: value for name, (_, _, value) in PARAMS.items()},
    )


def check_request(checks: Checks, span: Any, server: LoopbackServer, mode: str) -> None:
    request = server.last()
    wire = request.json
    assert request.path == api.PATH
    assert wire["stream"] is (mode in STREAMED)
    assert wire["model"] == MODEL
    for name, (wire_key, _, value) in PARAMS.items():
        assert wire.get(wire_key) == value, f"the package did not send {name} as {wire_key}"
    checks.equal("span name", span.name, f"chat {wire['model']}")
    checks.equal("span kind", span.kind, SpanKind.CLIENT)
    checks.equal("gen_ai.operation.name", span.attributes.get("gen_ai.operation.name"), "chat")
    checks.equal("gen_ai.provider.name", span.attributes.get("gen_ai.provider.name"), PROVIDER)
    checks.equal("gen_ai.request.model", span.attributes.get("gen_ai.request.model"), wire["model"])
    for wire_key, attribute, _ in PARAMS.values():
        sent = wire[wire_key]
        checks.equal(attribute, span.attributes.get(attribute), tuple(sent) if isinstance(sent, list) else sent)
    checks.equal("server.address", span.attributes.get("server.address"), server.host)
    checks.equal("server.port", span.attributes.get("server.port"), server.port)


def check_response(checks: Checks, span: Any, mode: str, finish_reason: str, usage: dict[str, int]) -> None:
    checks.true("span status is not ERROR", span.status.status_code is not StatusCode.ERROR)
    checks.equal("gen_ai.response.model", span.attributes.get("gen_ai.response.model"), expected_response_model(PACKAGE, mode, api.RESPONSE_MODEL, MODEL))
    checks.equal("gen_ai.response.id", span.attributes.get("gen_ai.response.id"), expected_response_id(PACKAGE, mode, api.RESPONSE_ID))
    checks.equal("gen_ai.response.finish_reasons", span.attributes.get("gen_ai.response.finish_reasons"), (finish_reason,))
    checks.equal("gen_ai.usage.input_tokens", span.attributes.get("gen_ai.usage.input_tokens"), usage["prompt_tokens"])
    checks.equal("gen_ai.usage.output_tokens", span.attributes.get("gen_ai.usage.output_tokens"), usage["completion_tokens"])
    # Mistral reports no cached or reasoning token counts: none may be invented.
    for absent in ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.reasoning.output_tokens"):
        checks.true(f"{absent} set though Mistral reports none", absent not in span.attributes)


@pytest.mark.parametrize("mode", MODES)
def test_plain_reply(traced: Any, server: LoopbackServer, mode: str) -> None:
    message = drive(make_model(server), mode, "Say hello")

    assert message.text == api.TEXT
    checks = Checks()
    span = traced.model_span()
    check_request(checks, span, server, mode)
    check_response(checks, span, mode, "stop", api.USAGE)
    output = json.loads(span.attributes.get("gen_ai.output.messages", "[]"))
    checks.equal("output parts", [part for m in output for part in m["parts"]], [{"type": "text", "content": api.TEXT}])
    checks.done()
    traced.assert_metrics(chat_request(PROVIDER, MODEL, server), response_model=expected_response_model(PACKAGE, mode, api.RESPONSE_MODEL, MODEL))


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_reply(traced: Any, server: LoopbackServer, mode: str) -> None:
    message = drive(make_model(server).bind_tools([get_weather]), mode, "Weather in Paris?")

    assert [(c["name"], c["id"], c["args"]) for c in message.tool_calls] == [(api.TOOL_NAME, api.TOOL_CALL_ID, api.TOOL_ARGUMENTS)]
    assert [t["function"]["name"] for t in server.last().json["tools"]] == ["get_weather"]
    checks = Checks()
    span = traced.model_span()
    check_request(checks, span, server, mode)
    check_response(checks, span, mode, "tool_calls", api.TOOL_USAGE)
    output = json.loads(span.attributes.get("gen_ai.output.messages", "[]"))
    parts = [part for m in output for part in m["parts"]]
    checks.equal(
        "tool_call parts",
        [part for part in parts if part["type"] == "tool_call"],
        [{"type": "tool_call", "id": api.TOOL_CALL_ID, "name": api.TOOL_NAME, "arguments": api.TOOL_ARGUMENTS}],
    )
    checks.equal("other parts repeating the tool call", [p for p in parts if p["type"] != "tool_call" and api.TOOL_NAME in json.dumps(p)], [])
    checks.done()
    traced.assert_metrics(chat_request(PROVIDER, MODEL, server), response_model=expected_response_model(PACKAGE, mode, api.RESPONSE_MODEL, MODEL))


@pytest.mark.parametrize("mode", MODES)
def test_error_reply(traced: Any, server: LoopbackServer, mode: str) -> None:
    with pytest.raises(httpx.HTTPStatusError) as raised:
        drive(make_model(server), mode, "Please FAIL")

    assert raised.value.response.status_code == api.ERROR_STATUS
    assert json.loads(raised.value.response.text) == api.ERROR
    checks = Checks()
    span = traced.model_span()
    check_request(checks, span, server, mode)
    checks.equal("span status", span.status.status_code, StatusCode.ERROR)
    checks.equal("error.type", span.attributes.get("error.type"), type(raised.value).__qualname__)
    checks.done()
    traced.assert_metrics(chat_request(PROVIDER, MODEL, server), error_type=type(raised.value).__qualname__)


@pytest.fixture
def httpx_spans(tracer_provider: Any) -> Iterator[None]:
    """langchain-mistralai posts with ``httpx`` (httpx.Client / httpx.AsyncClient, and httpx_sse
    over them for streams), so HTTPXClientInstrumentor, not HTTPX2ClientInstrumentor, sees it."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


@pytest.mark.parametrize("mode", MODES)
def test_http_post_is_a_child_of_the_chat_span(traced: Any, httpx_spans: None, server: LoopbackServer, mode: str) -> None:
    drive(make_model(server), mode, "Say hello")

    span = traced.model_span()
    posts = [s for s in traced.spans.all if s.kind is SpanKind.CLIENT and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"]
    assert len(posts) == 1, traced.spans.names()
    (post,) = posts
    assert post.attributes.get("url.full", post.attributes.get("http.url")) == server.url + api.PATH
    assert post.parent is not None and post.parent.span_id == span.context.span_id, f"POST's parent is {traced.spans.parent_name(post)!r}"
    assert post.context.trace_id == span.context.trace_id
