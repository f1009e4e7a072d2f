"""Fake LangChain components for tests: real langchain-core classes, no network, no keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from itertools import cycle
from typing import Any

from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult, GenerationChunk
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


class ToolCallingChatModel(BaseChatModel):
    """A chat model for agent loops whose answer depends only on the conversation (not on call
    order, so concurrent runs get the same answers): a tool call for the ``lookup`` tool until
    the conversation holds a tool result, then an answer quoting it."""

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            message = AIMessage(content=f"Answer: {results[-1].content}")
        else:
            city = str(messages[-1].content).split()[-1]
            message = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"city": city}, "id": f"call-{city}"}])
        return ChatResult(generations=[ChatGeneration(message=message)])
