"""langchain-google-genai's ChatGoogleGenerativeAI against a loopback Gemini API.

The google-genai SDK (3.x) is pointed at the fake with the model's ``base_url`` (alias
``client_options``); it addresses the Gemini Developer API as ``/v1/models/{model}:...`` and
Vertex AI as ``/v1beta1/[projects/{p}/locations/{l}/]publishers/google/models/{model}:...``.
``max_retries=1`` is the package's "no retry" (0 means the SDK's default of 5 retries).

Every expected value comes from what the fake server received (``server.requests``) or from the
canned reply in ``tests.fakes.gemini_api``, never from callscope's own output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleInvalidRequestError
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import chat_request, expected_response_id
from tests.fakes import gemini_api as api
from tests.fakes.loopback import LoopbackServer, Request
from tests.modes import MODES, drive

MODEL = "gemini-2.5-flash"
API_KEY = "test-gemini-key"
TEMPERATURE = 0.25
MAX_OUTPUT_TOKENS = 321
TOP_P = 0.75
TOP_K = 17
STOP = ["END"]
SEED = 4242
FREQUENCY_PENALTY = 0.125
PRESENCE_PENALTY = 0.5

# Constructor field -> (value, its generationConfig key on the wire, its span attribute).
SENT = {
    "temperature": (TEMPERATURE, "temperature", "gen_ai.request.temperature"),
    "max_output_tokens": (MAX_OUTPUT_TOKENS, "maxOutputTokens", "gen_ai.request.max_tokens"),
    "top_p": (TOP_P, "topP", "gen_ai.request.top_p"),
    "top_k": (TOP_K, "topK", "gen_ai.request.top_k"),
    "seed": (SEED, "seed", "gen_ai.request.seed"),
    "frequency_penalty": (FREQUENCY_PENALTY, "frequencyPenalty", "gen_ai.request.frequency_penalty"),
    "presence_penalty": (PRESENCE_PENALTY, "presencePenalty", "gen_ai.request.presence_penalty"),
    "stop": (STOP, "stopSequences", "gen_ai.request.stop_sequences"),
}

# Ambient configuration the package or the SDK would read instead of the constructor's.
_AMBIENT = (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_HTTP_CLIENT",
    "LANGSMITH_GATEWAY",
    "LANGSMITH_GATEWAY_API_KEY",
)


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "sunny"


@pytest.fixture(autouse=True)
def no_ambient_google_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(api.route) as server:
        yield server


@pytest.fixture
def server(shared_server: LoopbackServer) -> LoopbackServer:
    """The module's server, with only this test's requests recorded."""
    shared_server.requests.clear()
    return shared_server


def chat_model(server: LoopbackServer, **backend: Any) -> ChatGoogleGenerativeAI:
    backend = backend or {"google_api_key": API_KEY}
    return ChatGoogleGenerativeAI(
        model=MODEL,
        base_url=server.url,
        max_retries=1,
        timeout=5,
        **{field: value for field, (value, _, _) in SENT.items()},
        **backend,
    )


def wire(server: LoopbackServer, mode: str, backend: str = "gemini") -> tuple[Request, dict[str, Any]]:
    """The one request the model sent, checked to carry every constructor parameter."""
    assert len(server.requests) == 1, [r.path for r in server.requests]
    request = server.last()
    assert request.method == "POST"
    assert api.backend_of(request) == backend, request.path
    assert api.model_of(request) == MODEL
    streamed = mode in ("stream", "astream")
    assert request.path.endswith(":streamGenerateContent" if streamed else ":generateContent")
    assert request.query == ({"alt": ["sse"]} if streamed else {})
    config = request.json["generationConfig"]
    for value, key, _ in SENT.values():
        assert config[key] == value, key
    return request, request.json


def assert_request_attributes(span: Any, server: LoopbackServer, request: Request, provider: str) -> None:
    assert span.name == f"chat {api.model_of(request)}"
    assert span.kind is SpanKind.CLIENT
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == provider
    assert attributes["gen_ai.request.model"] == api.model_of(request)
    config = request.json["generationConfig"]
    sent = {attribute: config[key] for _, key, attribute in SENT.values()}
    sent["gen_ai.request.top_k"] = float(sent["gen_ai.request.top_k"])  # a double in the registry
    sent["gen_ai.request.stop_sequences"] = tuple(sent["gen_ai.request.stop_sequences"])
    assert {attribute: attributes.get(attribute) for attribute in sent} == sent
    assert attributes.get("server.address") == server.host == "127.0.0.1"
    assert attributes.get("server.port") == server.port


def assert_response_attributes(span: Any, mode: str, finish_reason: str) -> None:
    attributes = span.attributes
    assert attributes.get("gen_ai.response.model") == api.model_version(MODEL)
    assert attributes.get("gen_ai.response.id") == expected_response_id("langchain-google-genai", mode, api.RESPONSE_ID)
    # As on the wire: Gemini's finishReason is an upper-case enum name.
    assert attributes.get("gen_ai.response.finish_reasons") == (finish_reason,)
    # promptTokenCount already includes the cached tokens; thinking tokens are output tokens the
    # API counts apart from candidatesTokenCount.
    assert attributes.get("gen_ai.usage.input_tokens") == api.PROMPT_TOKENS
    assert attributes.get("gen_ai.usage.output_tokens") == api.CANDIDATES_TOKENS + api.THOUGHTS_TOKENS
    assert attributes.get("gen_ai.usage.cache_read.input_tokens") == api.CACHED_TOKENS
    assert attributes.get("gen_ai.usage.reasoning.output_tokens") == api.THOUGHTS_TOKENS
    assert "gen_ai.usage.cache_creation.input_tokens" not in attributes  # Gemini does not report it


def output_messages(span: Any) -> list[dict[str, Any]]:
    return json.loads(span.attributes["gen_ai.output.messages"])


@pytest.mark.parametrize("mode", MODES)
def test_plain_reply(traced, server, mode):
    message = drive(chat_model(server), mode, "Say hello")

    assert message.text == api.REPLY_TEXT
    request, _ = wire(server, mode)
    assert request.headers.get("x-goog-api-key") == API_KEY
    span = traced.model_span()
    assert span.status.status_code is StatusCode.UNSET
    assert_request_attributes(span, server, request, "gcp.gemini")
    assert_response_attributes(span, mode, api.FINISH_STOP)
    [output] = output_messages(span)
    assert output["role"] == "assistant"
    assert output["finish_reason"] == api.FINISH_STOP
    assert [p["type"] for p in output["parts"]] == ["text"]
    assert output["parts"][0]["content"] == api.REPLY_TEXT
    traced.assert_metrics(chat_request("gcp.gemini", MODEL, server), response_model=api.model_version(MODEL))


@pytest.mark.parametrize("mode", MODES)
def test_max_tokens_finish_reason(traced, server, mode):
    message = drive(chat_model(server), mode, "Tell me a LONG story")

    assert message.text == api.LONG_TEXT
    request, _ = wire(server, mode)
    span = traced.model_span()
    assert_request_attributes(span, server, request, "gcp.gemini")
    assert_response_attributes(span, mode, api.FINISH_MAX_TOKENS)


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_reply(traced, server, mode):
    message = drive(chat_model(server).bind_tools([get_weather]), mode, "What is the weather in Paris?")

    assert [(c["name"], c["id"], c["args"]) for c in message.tool_calls] == [(api.TOOL_NAME, api.TOOL_CALL_ID, api.TOOL_ARGUMENTS)]
    request, body = wire(server, mode)
    assert [d["name"] for tool_ in body["tools"] for d in tool_["functionDeclarations"]] == [get_weather.name]
    span = traced.model_span()
    assert_request_attributes(span, server, request, "gcp.gemini")
    assert_response_attributes(span, mode, api.FINISH_STOP)  # Gemini has no tool-call finish reason
    [output] = output_messages(span)
    assert output["finish_reason"] == api.FINISH_STOP
    # The one call and nothing else: the reply has no text, and no part may copy the raw
    # functionCall (additional_kwargs["function_call"]) or its thought signature.
    assert output["parts"] == [{"type": "tool_call", "id": api.TOOL_CALL_ID, "name": api.TOOL_NAME, "arguments": api.TOOL_ARGUMENTS}]
    assert api.THOUGHT_SIGNATURE not in span.attributes["gen_ai.output.messages"]
    traced.assert_metrics(chat_request("gcp.gemini", MODEL, server), response_model=api.model_version(MODEL))


@pytest.mark.parametrize("mode", MODES)
def test_error_reply(traced, server, mode):
    with pytest.raises(GoogleInvalidRequestError) as raised:
        drive(chat_model(server), mode, "Please FAIL now")

    error = raised.value
    assert type(error) is GoogleInvalidRequestError
    assert api.ERROR_MESSAGE in str(error)
    assert error.__cause__.code == api.ERROR_CODE  # the SDK's ClientError, from the wire
    assert error.__cause__.status == api.ERROR_STATUS
    request, _ = wire(server, mode)
    span = traced.model_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes.get("error.type") == type(error).__qualname__
    assert_request_attributes(span, server, request, "gcp.gemini")
    traced.assert_metrics(chat_request("gcp.gemini", MODEL, server), error_type=type(error).__qualname__)


VERTEX_BACKENDS = {
    # Vertex AI express mode: an API key, no project (sent as x-goog-api-key).
    "express": lambda: {"vertexai": True, "google_api_key": API_KEY},
    # Project and location with OAuth credentials (a fixed bearer token: nothing to refresh).
    "project": lambda: {"credentials": Credentials(token="fake-oauth-token"), "project": "proj-x", "location": "europe-west4"},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", sorted(VERTEX_BACKENDS))
def test_vertex_ai_plain_reply(traced, server, mode, backend):
    message = drive(chat_model(server, **VERTEX_BACKENDS[backend]()), mode, "Say hello")

    assert message.text == api.REPLY_TEXT
    request, _ = wire(server, mode, backend="vertex")
    if backend == "project":
        assert "/projects/proj-x/locations/europe-west4/" in request.path
        assert request.headers.get("authorization") == "Bearer fake-oauth-token"
    else:
        assert request.headers.get("x-goog-api-key") == API_KEY
    span = traced.model_span()
    assert_request_attributes(span, server, request, "gcp.vertex_ai")
    assert_response_attributes(span, mode, api.FINISH_STOP)
    traced.assert_metrics(chat_request("gcp.vertex_ai", MODEL, server), response_model=api.model_version(MODEL))


@pytest.fixture
def httpx2_instrumented(tracer_provider) -> Iterator[None]:
    instrumentor = HTTPX2ClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reply", ["plain", "tool_call", "error"])
def test_httpx2_request_span_is_a_child_of_the_chat_span(traced, httpx2_instrumented, server, mode, reply):
    """google-genai sends with httpx2 (its default backend when installed; aiohttp is not): with
    that instrumentation on, the POST span sits under the model span, because callscope makes
    that span current around the provider call."""
    model = chat_model(server)
    if reply == "error":
        with pytest.raises(GoogleInvalidRequestError):
            drive(model, mode, "Please FAIL now")
    else:
        drive(model.bind_tools([get_weather]) if reply == "tool_call" else model, mode, "What is the weather in Paris?")

    request, _ = wire(server, mode)
    chat = traced.model_span()
    posts = [s for s in traced.spans.all if (s.attributes.get("http.request.method") or s.attributes.get("http.method")) == "POST"]
    assert len(posts) == 1, traced.spans.names()
    [post] = posts
    assert post.kind is SpanKind.CLIENT
    url = post.attributes.get("url.full") or post.attributes.get("http.url")
    assert url.split("?")[0] == f"{server.url}{request.path}"
    status = post.attributes.get("http.response.status_code") or post.attributes.get("http.status_code")
    assert status == (api.ERROR_CODE if reply == "error" else 200)
    assert traced.spans.parent_of(post) is not None
    assert traced.spans.parent_of(post).context.span_id == chat.context.span_id
    assert post.context.trace_id == chat.context.trace_id
