"""langchain-openai's ChatOpenAI, AzureChatOpenAI and OpenAIEmbeddings against a loopback OpenAI
API (tests/fakes/openai_api.py), in the four modes: what the span and metrics say must be what
went over the wire.

The span checks are collected and reported together (``Checks``), so one failing attribute does
not hide the state of the others.

The openai SDK (>= 3) sends its requests with ``httpx2``, not ``httpx``: only
``HTTPX2ClientInstrumentor`` sees them, as the last tests show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import AzureChatOpenAI, ChatOpenAI, OpenAIEmbeddings
from langchain_openai.chat_models.base import OpenAIInvalidRequestError
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import expected_response_id, http_posts, url_of
from tests.fakes import openai_api as api
from tests.fakes.loopback import LoopbackServer, Request
from tests.modes import MODES, drive

MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
DEPLOYMENT = "my-deployment"
API_VERSION = "2024-10-21"
STREAMED = ("stream", "astream")

# Constructor parameter -> (its value, the key the package sends it as, the span attribute).
# langchain-openai sends max_tokens as max_completion_tokens.
PARAMS: dict[str, tuple[Any, str, str]] = {
    "temperature": (0.3, "temperature", "gen_ai.request.temperature"),
    "max_tokens": (77, "max_completion_tokens", "gen_ai.request.max_tokens"),
    "top_p": (0.9, "top_p", "gen_ai.request.top_p"),
    "stop": (["END"], "stop", "gen_ai.request.stop_sequences"),
    "seed": (42, "seed", "gen_ai.request.seed"),
    "frequency_penalty": (0.25, "frequency_penalty", "gen_ai.request.frequency_penalty"),
    "presence_penalty": (0.5, "presence_penalty", "gen_ai.request.presence_penalty"),
}
AZURE_PARAMS = {name: PARAMS[name] for name in ("temperature", "max_tokens")}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(api.route) as server:
        yield server


def chat_openai(server: LoopbackServer) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=server.url + "/v1",
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        stream_usage=True,
        **{name: value for name, (value, _, _) in PARAMS.items()},
    )


def azure_chat(server: LoopbackServer, **model: Any) -> AzureChatOpenAI:
    return AzureChatOpenAI(
        azure_endpoint=server.url,
        azure_deployment=DEPLOYMENT,
        api_version=API_VERSION,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        **model,
        **{name: value for name, (value, _, _) in AZURE_PARAMS.items()},
    )


class Checks:
    """Soft assertions: every mismatch is collected, the test fails once with all of them."""

    def __init__(self, span: ReadableSpan) -> None:
        self.span = span
        self.failures: list[str] = []

    def eq(self, what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            self.failures.append(f"{what}: got {actual!r}, expected {expected!r}")

    def attr(self, key: str, expected: Any) -> None:
        self.eq(key, self.span.attributes.get(key), expected)

    def verify(self) -> None:
        assert not self.failures, f"span {self.span.name!r}:\n  " + "\n  ".join(self.failures)


def check_request(checks: Checks, wire: Request, params: dict[str, tuple[Any, str, str]], mode: str, *, request_model: str) -> None:
    """The wire request carried the constructor's parameters, and the span says the same."""
    body = wire.json
    stream = mode in STREAMED
    assert body["stream"] is stream
    if stream:
        # stream_usage=True (AzureChatOpenAI's default): LangChain asks for the usage chunk.
        assert body["stream_options"] == {"include_usage": True}
    for name, (value, wire_key, attribute) in params.items():
        assert body[wire_key] == value, f"{name} was not sent as {wire_key}"
        checks.attr(attribute, tuple(body[wire_key]) if isinstance(value, list) else body[wire_key])
    checks.eq("span.name", checks.span.name, f"chat {request_model}")
    checks.eq("span.kind", checks.span.kind, SpanKind.CLIENT)
    checks.attr("gen_ai.operation.name", "chat")
    checks.attr("gen_ai.request.model", request_model)
    checks.attr("gen_ai.request.stream", True if stream else None)


def check_server(checks: Checks, server: LoopbackServer) -> None:
    checks.attr("server.address", server.host)
    checks.attr("server.port", server.port)


def check_response(checks: Checks, mode: str, *, response_model: str, finish_reason: str) -> None:
    checks.attr("gen_ai.response.model", response_model)
    checks.attr("gen_ai.response.id", expected_response_id("langchain-openai", mode, api.RESPONSE_ID))
    checks.attr("gen_ai.response.finish_reasons", (finish_reason,))
    checks.attr("gen_ai.usage.input_tokens", api.PROMPT_TOKENS)
    checks.attr("gen_ai.usage.output_tokens", api.COMPLETION_TOKENS)
    checks.attr("gen_ai.usage.cache_read.input_tokens", api.CACHED_TOKENS)
    checks.attr("gen_ai.usage.reasoning.output_tokens", api.REASONING_TOKENS)
    # The Chat Completions API reports no cache writes.
    checks.attr("gen_ai.usage.cache_creation.input_tokens", None)


def check_metrics(checks: Checks, traced: Any, server: LoopbackServer, *, provider: str, request_model: str, response_model: str | None, error_type: str | None = None) -> None:
    expected = {
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request_model,
        "server.address": server.host,
        "server.port": server.port,
    }
    if response_model is not None:
        expected["gen_ai.response.model"] = response_model
    if error_type is not None:
        expected["error.type"] = error_type
    durations = traced.metrics("gen_ai.client.operation.duration")
    checks.eq("operation.duration point count", len(durations), 1)
    for point in durations:
        checks.eq("operation.duration point", {k: point.get(k) for k in expected}, expected)
    if error_type is not None:
        return
    usage = traced.metrics("gen_ai.client.token.usage")
    checks.eq("token.usage token types", sorted(p.get("gen_ai.token.type") for p in usage), ["input", "output"])
    for point in usage:
        checks.eq(f"token.usage {point.get('gen_ai.token.type')} point", {k: point.get(k) for k in expected}, expected)


# --- ChatOpenAI --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_chat_openai_reply(traced: Any, server: LoopbackServer, mode: str) -> None:
    reply = drive(chat_openai(server), mode, "What is the capital of France?")

    assert reply.content == api.REPLY_TEXT
    wire = server.last()
    assert wire.path == "/v1/chat/completions"
    requested = wire.json["model"]
    assert requested == MODEL and api.response_model(requested) != requested
    checks = Checks(traced.model_span())
    check_request(checks, wire, PARAMS, mode, request_model=requested)
    checks.attr("gen_ai.provider.name", "openai")
    check_server(checks, server)
    check_response(checks, mode, response_model=api.response_model(requested), finish_reason="stop")
    check_metrics(checks, traced, server, provider="openai", request_model=requested, response_model=api.response_model(requested))
    checks.verify()


@pytest.mark.parametrize("mode", MODES)
def test_chat_openai_openai_specific_attributes(traced: Any, server: LoopbackServer, mode: str) -> None:
    """spans.yaml's span.openai.inference.client: openai.response.system_fingerprint
    (recommended) and openai.response.service_tier (required when the response has one)."""
    drive(chat_openai(server), mode, "What is the capital of France?")

    checks = Checks(traced.model_span())
    checks.attr("openai.response.system_fingerprint", api.SYSTEM_FINGERPRINT)
    checks.attr("openai.response.service_tier", "default")
    checks.verify()


@pytest.mark.parametrize("mode", MODES)
def test_chat_openai_tool_call(traced: Any, server: LoopbackServer, mode: str) -> None:
    reply = drive(chat_openai(server).bind_tools([get_weather]), mode, "Weather in Paris?")

    assert [(c["name"], c["id"], c["args"]) for c in reply.tool_calls] == [(api.TOOL_NAME, api.TOOL_CALL_ID, api.TOOL_ARGUMENTS)]
    wire = server.last()
    assert [t["function"]["name"] for t in wire.json["tools"]] == [api.TOOL_NAME]
    span = traced.model_span()
    checks = Checks(span)
    check_request(checks, wire, PARAMS, mode, request_model=wire.json["model"])
    checks.attr("gen_ai.provider.name", "openai")
    check_server(checks, server)
    check_response(checks, mode, response_model=api.response_model(wire.json["model"]), finish_reason="tool_calls")
    output = json.loads(span.attributes.get("gen_ai.output.messages", "[]"))
    parts = [part for message in output for part in message["parts"]]
    checks.eq(
        "gen_ai.output.messages tool_call parts",
        [part for part in parts if part.get("type") == "tool_call"],
        [{"type": "tool_call", "id": api.TOOL_CALL_ID, "name": api.TOOL_NAME, "arguments": api.TOOL_ARGUMENTS}],
    )
    checks.eq("gen_ai.output.messages other parts", [part for part in parts if part.get("type") != "tool_call"], [])
    checks.eq("gen_ai.output.messages finish_reason", [m.get("finish_reason") for m in output], ["tool_calls"])
    checks.verify()


@pytest.mark.parametrize("mode", MODES)
def test_chat_openai_error(traced: Any, server: LoopbackServer, mode: str) -> None:
    with pytest.raises(OpenAIInvalidRequestError) as raised:
        drive(chat_openai(server), mode, "Please FAIL now")

    # The package's own exception reaches the caller unchanged, with the API's error body.
    assert type(raised.value) is OpenAIInvalidRequestError
    assert raised.value.status_code == 400
    assert raised.value.body == {"message": api.ERROR_MESSAGE, "type": api.ERROR_TYPE, "param": "messages", "code": api.ERROR_CODE}
    wire = server.last()
    span = traced.model_span()
    checks = Checks(span)
    check_request(checks, wire, PARAMS, mode, request_model=wire.json["model"])
    checks.attr("gen_ai.provider.name", "openai")
    check_server(checks, server)
    checks.eq("status", span.status.status_code, StatusCode.ERROR)
    checks.attr("error.type", type(raised.value).__qualname__)
    check_metrics(checks, traced, server, provider="openai", request_model=wire.json["model"], response_model=None, error_type=type(raised.value).__qualname__)
    checks.verify()


# --- AzureChatOpenAI ---------------------------------------------------------------------------
#
# The request goes to /openai/deployments/{deployment}/chat/completions. With model= the body's
# "model" is that name and LangChain's ls_model_name is it too; without model= the body says
# "model": null and ls_model_name is the deployment. gen_ai.request.model is "the name of the
# GenAI model a request is being made to": the model named on the wire, else the deployment the
# request is addressed to (the only model name the request carries). The API answers with the
# model the deployment runs.


@pytest.mark.parametrize("mode", MODES)
def test_azure_chat_with_model(traced: Any, server: LoopbackServer, mode: str) -> None:
    reply = drive(azure_chat(server, model=MODEL), mode, "What is the capital of France?")

    assert reply.content == api.REPLY_TEXT
    wire = server.last()
    assert api.deployment_of(wire) == DEPLOYMENT and wire.query == {"api-version": [API_VERSION]}
    assert wire.json["model"] == MODEL
    checks = Checks(traced.model_span())
    check_request(checks, wire, AZURE_PARAMS, mode, request_model=wire.json["model"])
    checks.attr("gen_ai.provider.name", "azure.ai.openai")
    check_server(checks, server)
    check_response(checks, mode, response_model=api.AZURE_DEPLOYMENT_MODEL, finish_reason="stop")
    check_metrics(checks, traced, server, provider="azure.ai.openai", request_model=wire.json["model"], response_model=api.AZURE_DEPLOYMENT_MODEL)
    checks.verify()


@pytest.mark.parametrize("mode", MODES)
def test_azure_chat_without_model(traced: Any, server: LoopbackServer, mode: str) -> None:
    reply = drive(azure_chat(server), mode, "What is the capital of France?")

    assert reply.content == api.REPLY_TEXT
    wire = server.last()
    assert wire.json["model"] is None
    deployment = api.deployment_of(wire)
    assert deployment == DEPLOYMENT
    checks = Checks(traced.model_span())
    check_request(checks, wire, AZURE_PARAMS, mode, request_model=deployment)
    checks.attr("gen_ai.provider.name", "azure.ai.openai")
    check_server(checks, server)
    check_response(checks, mode, response_model=api.AZURE_DEPLOYMENT_MODEL, finish_reason="stop")
    check_metrics(checks, traced, server, provider="azure.ai.openai", request_model=deployment, response_model=api.AZURE_DEPLOYMENT_MODEL)
    checks.verify()


# --- HTTP client spans: the openai SDK uses httpx2 ----------------------------------------------


@pytest.fixture
def httpx2_spans(tracer_provider: Any) -> Iterator[None]:
    """``instrument(tracer_provider=...)`` wraps httpx2's HTTPTransport.handle_request and
    AsyncHTTPTransport.handle_async_request (class methods: clients made earlier are seen too)."""
    instrumentor = HTTPX2ClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


@pytest.mark.parametrize("mode", MODES)
def test_http_post_is_a_child_of_the_chat_span(traced: Any, httpx2_spans: None, server: LoopbackServer, mode: str) -> None:
    drive(chat_openai(server), mode, "What is the capital of France?")

    span = traced.model_span()
    posts = http_posts(traced)
    assert [url_of(p) for p in posts] == [server.url + server.last().path]
    (post,) = posts
    assert post.parent is not None and post.parent.span_id == span.context.span_id
    assert post.context.trace_id == span.context.trace_id


@pytest.mark.parametrize("mode", MODES)
def test_httpx_instrumentation_does_not_see_the_openai_sdk(traced: Any, httpx_spans: None, server: LoopbackServer, mode: str) -> None:
    """Instrumenting ``httpx`` alone records nothing for ChatOpenAI: users need HTTPX2ClientInstrumentor."""
    drive(chat_openai(server), mode, "What is the capital of France?")
    traced.model_span()
    assert http_posts(traced) == []

    # The httpx instrumentation is live: a plain httpx request is recorded.
    with httpx.Client(timeout=10) as client:
        client.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert [url_of(p) for p in http_posts(traced)] == [server.url + "/v1/chat/completions"]


# --- OpenAIEmbeddings inside a retriever -------------------------------------------------------
#
# LangChain embeddings run no callbacks, so callscope sees only the retriever run: its metadata
# names the embeddings class (ls_embedding_provider) and nothing else; the embeddings model and
# its usage are on the OpenAIEmbeddings instance and the wire only. With httpx2 instrumented the
# SDK's POST /v1/embeddings nests under the retrieval span.

DOCUMENTS = ["Paris is the capital of France", "Berlin is the capital of Germany", "Cats sleep most of the day"]
QUERY = "capital of France"


@pytest.mark.parametrize("mode", MODES)
def test_openai_embeddings_in_a_retriever(traced: Any, httpx2_spans: None, server: LoopbackServer, mode: str) -> None:
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING_MODEL, base_url=server.url + "/v1", api_key="sk-test", check_embedding_ctx_length=False, max_retries=0, timeout=10
    )
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_texts(DOCUMENTS)
    traced.spans.clear()
    retriever = store.as_retriever(search_kwargs={"k": 1})

    found = drive(retriever, mode, QUERY)

    assert [d.page_content for d in found] == [DOCUMENTS[0]]
    wire = server.last()
    assert wire.path == "/v1/embeddings"
    assert wire.json["model"] == EMBEDDING_MODEL and wire.json["input"] == [QUERY]
    retrievals = [s for s in traced.spans.all if s.attributes.get("gen_ai.operation.name") == "retrieval"]
    assert len(retrievals) == 1, traced.spans.names()
    (retrieval,) = retrievals
    assert retrieval.name == f"retrieval {type(store).__name__}"
    assert retrieval.attributes.get("gen_ai.data_source.id") == type(store).__name__
    (post,) = http_posts(traced)
    assert url_of(post) == server.url + "/v1/embeddings"
    assert post.parent is not None and post.parent.span_id == retrieval.context.span_id
