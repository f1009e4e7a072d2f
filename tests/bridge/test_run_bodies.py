"""The code of a model, LLM or retriever run sees that run's span (issue 11, point 1): a
provider's HTTP request, made by a real instrumented httpx client, nests under the run that made
it, in every execution mode, and the caller's context is untouched afterwards."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry import context as otel_context
from opentelemetry import trace

from tests.bridge.test_steps import MODES, expected_runs, run_mode


@pytest.fixture
def provider(tracer_provider):
    """HTTP clients to an in-process fake provider, traced by the real httpx instrumentation."""
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from tests.models import PROVIDER_URL, provider_reply

    client = httpx.Client(transport=httpx.MockTransport(provider_reply), base_url=PROVIDER_URL)
    aclient = httpx.AsyncClient(transport=httpx.MockTransport(provider_reply), base_url=PROVIDER_URL)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
    HTTPXClientInstrumentor.instrument_client(aclient, tracer_provider=tracer_provider)
    yield {"client": client, "aclient": aclient}
    HTTPXClientInstrumentor.uninstrument_client(client)
    HTTPXClientInstrumentor.uninstrument_client(aclient)
    client.close()


def http_spans(spans) -> list:
    return [s for s in spans.all if s.instrumentation_scope.name == "opentelemetry.instrumentation.httpx"]


def assert_requests_nest_under(spans, run_prefix: str, expected_requests: int) -> None:
    requests = http_spans(spans)
    assert len(requests) == expected_requests, spans.names()
    for request in requests:
        parent = spans.parent_name(request)
        assert parent is not None and parent.startswith(run_prefix), (request.name, parent, spans.names())
    assert len(spans.trace_ids()) == 1


MODEL_MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]


@pytest.mark.parametrize("mode", MODEL_MODES + ["astream_events"])
def test_provider_request_of_a_bare_chat_model_nests_under_its_chat_span(mode, spans, user_tracer, provider, no_detach_errors):
    from tests.models import ProviderChatModel

    with user_tracer.start_as_current_span("caller") as caller:
        before = otel_context.get_current()
        run_mode(ProviderChatModel(**provider), "hi", mode)
        assert otel_context.get_current() is before
        assert trace.get_current_span() is caller
    assert_requests_nest_under(spans, "chat", expected_runs(mode))


@pytest.mark.parametrize("mode", MODES)
def test_provider_request_inside_a_chain_nests_under_the_chat_span_not_the_sequence(mode, spans, user_tracer, provider, no_detach_errors):
    from tests.models import ProviderChatModel

    chain = ChatPromptTemplate.from_template("say {x}") | ProviderChatModel(**provider) | StrOutputParser()
    with user_tracer.start_as_current_span("caller") as caller:
        run_mode(chain, {"x": "hi"}, mode)
        assert trace.get_current_span() is caller
    assert_requests_nest_under(spans, "chat", expected_runs(mode))
    for request in http_spans(spans):
        assert spans.ancestors(request)[1:] == ["RunnableSequence", "caller"]


def test_bare_model_without_a_caller_span_puts_its_request_in_its_own_trace(spans, provider):
    from tests.models import ProviderChatModel

    for _ in ProviderChatModel(**provider).stream("hi"):
        pass
    assert_requests_nest_under(spans, "chat", 1)
    assert otel_context.get_current() == otel_context.Context()


@pytest.mark.parametrize("mode", MODEL_MODES)
def test_provider_request_of_a_text_completion_model_nests_under_its_span(mode, spans, user_tracer, provider, no_detach_errors):
    from tests.models import ProviderLLM

    with user_tracer.start_as_current_span("caller") as caller:
        run_mode(ProviderLLM(**provider), "hi", mode)
        assert trace.get_current_span() is caller
    if "batch" in mode:
        # LangChain's LLM.batch is one generate() call: one _generate for every prompt, given the
        # first prompt's run manager, so both requests belong to the first run's span.
        first_run = spans.parent_of(http_spans(spans)[0])
        assert all(spans.parent_of(request) is first_run for request in http_spans(spans))
    assert_requests_nest_under(spans, "text_completion", expected_runs(mode))


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch", "astream_events"])
def test_vector_store_and_embeddings_requests_of_a_retriever_nest_under_retrieval(mode, spans, user_tracer, provider, no_detach_errors):
    from tests.models import ProviderEmbeddings, ProviderRetriever

    retriever = ProviderRetriever(embeddings=ProviderEmbeddings(**provider), **provider)
    with user_tracer.start_as_current_span("caller") as caller:
        run_mode(retriever, "capital of France", mode)
        assert trace.get_current_span() is caller
    # Two requests per run: the query embedding and the search.
    assert_requests_nest_under(spans, "retrieval", 2 * expected_runs(mode))


@pytest.mark.parametrize("how", ["break", "close"])
def test_abandoned_sync_model_stream_keeps_its_request_under_the_chat_span(how, spans, user_tracer, provider, instrumented, no_detach_errors):
    from tests.models import ProviderChatModel

    with user_tracer.start_as_current_span("caller") as caller:
        stream = ProviderChatModel(**provider).stream("hi")
        next(stream)
        # Between chunks the consumer is in its own context, not the model's.
        assert trace.get_current_span() is caller
        if how == "close":
            stream.close()
        else:
            del stream
        assert trace.get_current_span() is caller
    assert len(instrumented.handler.registry) == 0
    assert_requests_nest_under(spans, "chat", 1)
    assert spans.one("chat").attributes["callscope.stream.abandoned"] is True


@pytest.mark.parametrize("how", ["break", "aclose"])
def test_abandoned_async_model_stream_keeps_its_request_under_the_chat_span(how, spans, user_tracer, provider, instrumented, no_detach_errors):
    from tests.models import ProviderChatModel

    async def drive() -> None:
        stream = ProviderChatModel(**provider).astream("hi")
        async for _ in stream:
            assert trace.get_current_span() is caller
            break
        if how == "aclose":
            await stream.aclose()

    with user_tracer.start_as_current_span("caller") as caller:
        asyncio.run(drive())
        assert trace.get_current_span() is caller
    assert len(instrumented.handler.registry) == 0
    assert_requests_nest_under(spans, "chat", 1)
    chat = spans.one("chat")
    assert chat.status.is_unset
    # aclose() reaches the model's generator; a plain break leaves it to asyncio.run's clean-up,
    # which cancels the pending close: abandoned or cancelled, never failed.
    assert chat.attributes.get("callscope.stream.abandoned") or chat.attributes.get("callscope.run.cancelled")


def test_model_stream_passes_values_and_thrown_exceptions_through_unchanged(spans, provider):
    from tests.models import ProviderChatModel

    stream = ProviderChatModel(**provider).stream("hi")
    assert next(stream).content == "hello"
    with pytest.raises(KeyError, match="consumer"):
        stream.throw(KeyError("consumer"))
    # LangChain reports the thrown exception as the model run's error, as it does without callscope.
    assert spans.one("chat").attributes["error.type"] == "KeyError"


def test_each_of_many_concurrent_model_calls_nests_its_request_under_its_own_span(spans, user_tracer, provider):
    from tests.models import ProviderChatModel

    model = ProviderChatModel(**provider)

    async def one(i: int) -> None:
        with user_tracer.start_as_current_span(f"request {i}"):
            async for _ in model.astream("hi"):
                await asyncio.sleep(0)
            await model.ainvoke("hi")

    async def many() -> None:
        await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(many())
    for request in http_spans(spans):
        chat = spans.parent_of(request)
        assert chat.name == "chat"
        assert spans.parent_of(chat).name.startswith("request ")
        assert chat.context.trace_id == request.context.trace_id
    assert len(http_spans(spans)) == 16
    assert len(spans.trace_ids()) == 8


@pytest.mark.parametrize("mode", ["ainvoke", "astream", "abatch"])
def test_text_completion_request_nests_with_a_non_inline_async_user_handler(mode, spans, user_tracer, provider):
    # AsyncCallbackManager.on_llm_start dispatches inline and non-inline handlers differently;
    # the model's span must be current for its provider call either way.
    from langchain_core.callbacks import AsyncCallbackHandler

    from tests.models import ProviderLLM

    class Recorder(AsyncCallbackHandler):
        async def on_llm_end(self, response, **kwargs) -> None:
            pass

    llm = ProviderLLM(**provider)
    config = {"callbacks": [Recorder()]}

    async def drive() -> None:
        if mode == "ainvoke":
            await llm.ainvoke("hi", config)
        elif mode == "abatch":
            await llm.abatch(["hi", "hi"], config)
        else:
            async for _ in llm.astream("hi", config):
                pass

    with user_tracer.start_as_current_span("caller") as caller:
        asyncio.run(drive())
        assert trace.get_current_span() is caller
    assert_requests_nest_under(spans, "text_completion", expected_runs(mode))
