"""langchain-ollama against a loopback Ollama API (tests/fakes/ollama_api.py), traced by callscope.

``ChatOllama`` streams ``/api/chat`` as NDJSON in every mode (invoke included: it aggregates the
stream itself), through the ``ollama`` client, which uses httpx. ``OllamaEmbeddings`` posts to
``/api/embed``; embeddings make no LangChain run, so they are seen through a vector store
retriever's ``retrieval`` span and, with the httpx instrumentation, the HTTP span under it.

Every expected value is read from what the fake server received or from its canned reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import pytest
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_ollama import ChatOllama, OllamaEmbeddings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.fakes import ollama_api
from tests.fakes.loopback import LoopbackServer, Request
from tests.modes import MODES, drive

MODEL = "llama3.2"
EMBED_MODEL = "nomic-embed-text"
PROVIDER = "ollama"  # no member of gen_ai.provider.name's registry for Ollama
TIMEOUT = {"timeout": 5.0}  # the ollama client has no retries to turn off


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(ollama_api.route) as running:
        yield running


def chat_model(server: LoopbackServer) -> ChatOllama:
    return ChatOllama(
        model=MODEL,
        base_url=server.url,
        temperature=0.25,
        num_predict=77,
        top_p=0.8,
        top_k=33,
        stop=["END"],
        seed=1234,
        repeat_penalty=1.3,
        client_kwargs=TIMEOUT,
    )


@tool
def get_weather(city: str, unit: str) -> str:
    """The weather in a city."""
    return "sunny"


def chat_requests(server: LoopbackServer, since: int) -> list[Request]:
    return [r for r in server.requests[since:] if r.path == "/api/chat"]


def one_chat_request(server: LoopbackServer, since: int) -> dict[str, Any]:
    found = chat_requests(server, since)
    assert len(found) == 1, [r.path for r in server.requests[since:]]
    return found[0].json


def assert_request_attributes(span: ReadableSpan, wire: dict[str, Any]) -> None:
    """The span names the model and every option the package put on the wire that has a GenAI
    attribute (``repeat_penalty`` has none)."""
    options = wire["options"]
    # What was set on the constructor really went out, under Ollama's option names.
    assert options == {"temperature": 0.25, "num_predict": 77, "top_p": 0.8, "top_k": 33, "stop": ["END"], "seed": 1234, "repeat_penalty": 1.3}
    attributes = span.attributes
    assert span.name == f"chat {wire['model']}"
    assert span.kind is SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == PROVIDER
    assert attributes["gen_ai.request.model"] == wire["model"]
    assert attributes.get("gen_ai.request.temperature") == options["temperature"]
    assert attributes.get("gen_ai.request.max_tokens") == options["num_predict"]
    assert attributes.get("gen_ai.request.top_p") == options["top_p"]
    assert attributes.get("gen_ai.request.top_k") == options["top_k"]
    assert attributes.get("gen_ai.request.seed") == options["seed"]
    assert attributes.get("gen_ai.request.stop_sequences") == tuple(options["stop"])


def assert_stream_flag(span: ReadableSpan, wire: dict[str, Any]) -> None:
    # Conditionally required iff the request streamed; ChatOllama asks for a stream by default.
    assert span.attributes.get("gen_ai.request.stream") is (True if wire["stream"] else None)


def assert_server(attributes: Any, server: LoopbackServer) -> None:
    assert attributes.get("server.address") == server.host
    assert attributes.get("server.port") == server.port


def assert_response_attributes(span: ReadableSpan, wire: dict[str, Any], done_reason: str) -> None:
    attributes = span.attributes
    # Ollama's reply echoes the requested model; it carries no response id (LangChain's own
    # "lc_run-…" message id is not one).
    assert attributes.get("gen_ai.response.model") == wire["model"]
    assert "gen_ai.response.id" not in attributes
    assert attributes.get("gen_ai.response.finish_reasons") == (done_reason,)
    assert attributes.get("gen_ai.usage.input_tokens") == ollama_api.PROMPT_EVAL_COUNT
    assert attributes.get("gen_ai.usage.output_tokens") == ollama_api.EVAL_COUNT
    # Ollama reports no cache or reasoning counts.
    for absent in ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.reasoning.output_tokens"):
        assert absent not in attributes


def assert_metrics(traced: Any, server: LoopbackServer, wire: dict[str, Any], *, error_type: str | None = None) -> None:
    durations = traced.metrics("gen_ai.client.operation.duration")
    assert len(durations) == 1, durations
    point = durations[0]
    assert point.get("gen_ai.operation.name") == "chat"
    assert point.get("gen_ai.provider.name") == PROVIDER
    assert point.get("gen_ai.request.model") == wire["model"]
    assert_server(point, server)
    if error_type is None:
        assert point.get("gen_ai.response.model") == wire["model"]
        assert "error.type" not in point
        tokens = traced.metrics("gen_ai.client.token.usage")
        assert sorted(p.get("gen_ai.token.type") for p in tokens) == ["input", "output"]
        for token_point in tokens:
            assert token_point.get("gen_ai.provider.name") == PROVIDER
            assert token_point.get("gen_ai.request.model") == wire["model"]
            assert token_point.get("gen_ai.response.model") == wire["model"]
            assert_server(token_point, server)
    else:
        assert point.get("error.type") == error_type


@pytest.mark.parametrize("mode", MODES)
def test_plain_reply(server, traced, mode):
    since = len(server.requests)
    reply = drive(chat_model(server), mode, "What is the capital of France?")
    assert reply.text == ollama_api.REPLY_TEXT
    wire = one_chat_request(server, since)
    assert wire["stream"] is True  # ChatOllama streams in every mode
    span = traced.model_span()
    assert_request_attributes(span, wire)
    assert_stream_flag(span, wire)
    assert_server(span.attributes, server)
    assert_response_attributes(span, wire, "stop")
    assert span.status.status_code is StatusCode.UNSET
    output = json.loads(span.attributes["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": ollama_api.REPLY_TEXT}], "finish_reason": "stop"}]
    assert_metrics(traced, server, wire)


@pytest.mark.parametrize("mode", MODES)
def test_non_streamed_reply(server, traced, mode):
    """``stream=False`` at call time: Ollama answers with one JSON object."""
    since = len(server.requests)
    reply = drive(chat_model(server), mode, "What is the capital of France?", stream=False)
    assert reply.text == ollama_api.REPLY_TEXT
    wire = one_chat_request(server, since)
    assert wire["stream"] is False
    span = traced.model_span()
    assert_request_attributes(span, wire)
    # Not gen_ai.request.stream: ChatOllama reports its one reply through on_llm_new_token as if
    # streamed, and a call's stream=False cannot be told apart from the stream=False every
    # ChatOpenAI call carries in its invocation params (README, Providers).
    assert_server(span.attributes, server)
    assert_response_attributes(span, wire, "stop")
    assert_metrics(traced, server, wire)


@pytest.mark.parametrize("mode", MODES)
def test_truncated_reply_reports_length(server, traced, mode):
    since = len(server.requests)
    drive(chat_model(server), mode, "TRUNCATE a long answer")
    wire = one_chat_request(server, since)
    span = traced.model_span()
    assert span.attributes.get("gen_ai.response.finish_reasons") == ("length",)
    output = json.loads(span.attributes["gen_ai.output.messages"])
    assert [message["finish_reason"] for message in output] == ["length"]
    assert_response_attributes(span, wire, "length")


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_reply(server, traced, mode):
    since = len(server.requests)
    reply = drive(chat_model(server).bind_tools([get_weather]), mode, "Weather in Paris?")
    wire = one_chat_request(server, since)
    assert [t["function"]["name"] for t in wire["tools"]] == [get_weather.name]
    span = traced.model_span()
    assert_request_attributes(span, wire)
    assert_server(span.attributes, server)
    # Ollama ends a tool-calling turn with done_reason "stop".
    assert_response_attributes(span, wire, "stop")
    # Ollama's tool call has no id: langchain-ollama makes one (a uuid4), the one the caller gets.
    [call] = reply.tool_calls
    sent = ollama_api.tool_call()["function"]
    assert (call["name"], call["args"]) == (sent["name"], sent["arguments"])
    output = json.loads(span.attributes["gen_ai.output.messages"])
    assert len(output) == 1
    parts = output[0]["parts"]
    assert parts == [{"type": "tool_call", "id": call["id"], "name": sent["name"], "arguments": sent["arguments"]}]
    assert output[0]["finish_reason"] == "stop"
    assert_metrics(traced, server, wire)


@pytest.mark.parametrize("mode", MODES)
def test_error_reply(server, traced, mode):
    since = len(server.requests)
    with pytest.raises(ollama.ResponseError) as raised:
        drive(chat_model(server), mode, "FAIL please")
    assert type(raised.value) is ollama.ResponseError
    assert raised.value.status_code == ollama_api.ERROR_STATUS
    assert raised.value.error == ollama_api.ERROR_MESSAGE
    wire = one_chat_request(server, since)
    span = traced.model_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes.get("error.type") == type(raised.value).__qualname__
    assert_request_attributes(span, wire)
    if mode in ("stream", "astream"):
        # invoke streams on the wire too (ChatOllama's default), but with no chunk before the
        # error nothing a callback carries says so (README, Providers).
        assert_stream_flag(span, wire)
    assert_server(span.attributes, server)
    assert_metrics(traced, server, wire, error_type=type(raised.value).__qualname__)


# --- embeddings, through a retriever --------------------------------------------------------------

DOCUMENTS = ["Paris is in France.", "Berlin is in Germany.", "Madrid is in Spain."]


def retriever(server: LoopbackServer):
    embeddings = OllamaEmbeddings(model=EMBED_MODEL, base_url=server.url, client_kwargs=TIMEOUT)
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_texts(DOCUMENTS)
    return store.as_retriever(search_kwargs={"k": 1})


def embed_requests(server: LoopbackServer, since: int) -> list[dict[str, Any]]:
    return [r.json for r in server.requests[since:] if r.path == "/api/embed"]


@pytest.mark.parametrize("mode", MODES)
def test_retrieval_with_ollama_embeddings(server, traced, mode):
    search = retriever(server)
    since = len(server.requests)
    found = drive(search, mode, DOCUMENTS[1])
    [request] = embed_requests(server, since)
    assert request["model"] == EMBED_MODEL and request["input"] == [DOCUMENTS[1]]
    assert [d.page_content for d in found] == [DOCUMENTS[1]]
    span = traced.spans.one("retrieval InMemoryVectorStore")
    assert span.kind is SpanKind.CLIENT
    assert span.attributes["gen_ai.operation.name"] == "retrieval"
    assert span.attributes["gen_ai.data_source.id"] == "InMemoryVectorStore"
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("mode", MODES)
def test_retrieval_error_from_ollama_embeddings(server, traced, mode):
    search = retriever(server)
    since = len(server.requests)
    with pytest.raises(ollama.ResponseError) as raised:
        drive(search, mode, "FAIL to embed")
    assert raised.value.status_code == ollama_api.ERROR_STATUS
    assert [r["input"] for r in embed_requests(server, since)] == [["FAIL to embed"]]
    span = traced.spans.one("retrieval InMemoryVectorStore")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes.get("error.type") == type(raised.value).__qualname__


# --- the ollama client's httpx requests nest under the run that made them -------------------------


@pytest.fixture
def httpx_traced(traced, httpx_spans) -> Any:
    return traced


def http_spans(traced: Any, path: str) -> list[ReadableSpan]:
    return [
        s
        for s in traced.spans.all
        if s.kind is SpanKind.CLIENT and str(s.attributes.get("url.full") or s.attributes.get("http.url") or "").endswith(path)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_chat_post_nests_under_the_chat_span(server, httpx_traced, mode):
    drive(chat_model(server), mode, "What is the capital of France?")
    chat = httpx_traced.model_span()
    [post] = http_spans(httpx_traced, "/api/chat")
    assert httpx_traced.spans.parent_of(post) is not None
    assert httpx_traced.spans.parent_of(post).context.span_id == chat.context.span_id
    assert post.context.trace_id == chat.context.trace_id


@pytest.mark.parametrize("mode", MODES)
def test_embed_post_nests_under_the_retrieval_span(server, httpx_traced, mode):
    search = retriever(server)  # its documents' embed POST happens here, outside any run
    httpx_traced.spans.clear()
    drive(search, mode, DOCUMENTS[0])
    retrieval = httpx_traced.spans.one("retrieval InMemoryVectorStore")
    [post] = http_spans(httpx_traced, "/api/embed")
    assert httpx_traced.spans.parent_of(post) is not None
    assert httpx_traced.spans.parent_of(post).context.span_id == retrieval.context.span_id
