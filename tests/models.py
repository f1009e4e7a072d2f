"""Fake LangChain components for tests: real langchain-core classes, no network, no keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from itertools import cycle
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import LLM, BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
from langchain_core.retrievers import BaseRetriever
from pydantic import SecretStr


class ChatFakeOpenAI(GenericFakeChatModel):
    """Reports what a real provider integration reports: provider, model, request parameters,
    usage and finish reason — and holds an API key, as real integrations do."""

    model: str = "gpt-test"
    temperature: float = 0.2
    max_tokens: int = 64
    top_p: float = 0.9
    api_key: SecretStr = SecretStr("sk-proj-SECRETSECRETSECRET1234")

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        return params

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "top_p": self.top_p}


def answer(text: str = "Paris is the capital.") -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata={"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
        response_metadata={"model_name": "gpt-test-2026", "finish_reason": "stop", "id": "resp-123"},
    )


def chat_model(text: str = "Paris is the capital.") -> ChatFakeOpenAI:
    return ChatFakeOpenAI(messages=cycle([answer(text)]))


class StreamingEchoLLM(LLM):
    """A text-completion model that streams through LangChain's own ``_stream``/``_astream``
    path (so its tokens arrive as ``on_llm_new_token``); it answers with its prompt's last word."""

    @property
    def _llm_type(self) -> str:
        return "streaming-echo"

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))

    def _stream(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        for token in ("echo", ": ", prompt.split()[-1]):
            if run_manager is not None:
                run_manager.on_llm_new_token(token)
            yield GenerationChunk(text=token)

    async def _astream(
        self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[GenerationChunk]:
        for token in ("echo", ": ", prompt.split()[-1]):
            if run_manager is not None:
                await run_manager.on_llm_new_token(token)
            yield GenerationChunk(text=token)


# --- a provider behind an instrumented HTTP client ------------------------------------------------
#
# Provider integrations call their API with an HTTP client from inside ``_generate``, ``_stream``,
# ``_call``, ``_get_relevant_documents``… These fakes do the same against an in-process
# ``httpx.MockTransport`` (no network), so the real httpx instrumentation records the requests.

PROVIDER_URL = "http://provider.test"


def provider_reply(request: Any) -> Any:
    import httpx

    if request.url.path == "/v1/embeddings":
        return httpx.Response(200, json={"data": [{"embedding": [0.1, 0.2]}]})
    if request.url.path == "/v1/search":
        return httpx.Response(200, json={"documents": ["Paris is in France."]})
    return httpx.Response(200, text="hello\nworld\n")


class ProviderChatModel(BaseChatModel):
    """A chat model that calls its provider over HTTP in every code path LangChain uses."""

    client: Any
    aclient: Any

    @property
    def _llm_type(self) -> str:
        return "provider-test"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = self.client.post("/v1/chat").text
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = (await self.aclient.post("/v1/chat")).text
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        with self.client.stream("POST", "/v1/chat") as response:
            for line in response.iter_lines():
                yield ChatGenerationChunk(message=AIMessageChunk(line))

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        async with self.aclient.stream("POST", "/v1/chat") as response:
            async for line in response.aiter_lines():
                yield ChatGenerationChunk(message=AIMessageChunk(line))


class ProviderLLM(LLM):
    """A text-completion model that calls its provider over HTTP."""

    client: Any
    aclient: Any

    @property
    def _llm_type(self) -> str:
        return "provider-test"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        return self.client.post("/v1/completions").text

    async def _acall(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        return (await self.aclient.post("/v1/completions")).text

    def _stream(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        for line in self.client.post("/v1/completions").text.splitlines():
            yield GenerationChunk(text=line)

    async def _astream(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        for line in (await self.aclient.post("/v1/completions")).text.splitlines():
            yield GenerationChunk(text=line)


class ProviderEmbeddings(Embeddings):
    """Embeddings from the provider over HTTP: not a LangChain run, so it has no span of its own."""

    def __init__(self, client: Any, aclient: Any) -> None:
        self.client, self.aclient = client, aclient

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.client.post("/v1/embeddings").json()["data"][0]["embedding"]

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aclient.post("/v1/embeddings")).json()["data"][0]["embedding"]


class ProviderRetriever(BaseRetriever):
    """A vector-store retriever: embeds the query, then searches, both over HTTP."""

    embeddings: Any
    client: Any
    aclient: Any

    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        self.embeddings.embed_query(query)
        return [Document(text) for text in self.client.post("/v1/search").json()["documents"]]

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        await self.embeddings.aembed_query(query)
        return [Document(text) for text in (await self.aclient.post("/v1/search")).json()["documents"]]


class ToolCallingChatModel(GenericFakeChatModel):
    """A fake chat model an agent can bind tools to; it replies with the scripted messages."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def react_agent_model(tool_name: str, args: dict[str, Any]) -> ToolCallingChatModel:
    """The model of a ReAct agent that calls ``tool_name`` once, then answers."""
    call = AIMessage(content="", tool_calls=[{"name": tool_name, "args": args, "id": "call_1", "type": "tool_call"}])
    return ToolCallingChatModel(messages=cycle([call, AIMessage(content="done")]))


class LookupAgentModel(BaseChatModel):
    """A chat model for agent loops whose answer depends only on the conversation (not on call
    order, so concurrent runs get the same answers): a tool call for the ``lookup`` tool until
    the conversation holds a tool result, then an answer quoting it."""

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            message = AIMessage(content=f"Answer: {results[-1].content}")
        else:
            city = str(messages[-1].content).split()[-1]
            message = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"city": city}, "id": f"call-{city}"}])
        return ChatResult(generations=[ChatGeneration(message=message)])
