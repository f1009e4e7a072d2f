"""Fake LangChain components for tests: real langchain-core classes, no network, no keys."""

from __future__ import annotations

from itertools import cycle
from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
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
