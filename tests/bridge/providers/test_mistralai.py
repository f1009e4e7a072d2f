"""langchain-mistralai's ChatMistralAI against a loopback Mistral chat completions API
(tests/fakes/mistral_api.py), with the suite every chat completions package runs
(tests/bridge/providers/chat_completions.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from langchain_mistralai import ChatMistralAI

from tests.bridge.providers.chat_completions import ChatCompletionsSuite
from tests.bridge.providers.conftest import Checks
from tests.fakes import mistral_api
from tests.fakes.loopback import LoopbackServer


class TestChatMistralAI(ChatCompletionsSuite):
    api = mistral_api
    PROVIDER = "mistral_ai"
    MODEL = "mistral-small-latest"
    PACKAGE = "langchain-mistralai"
    PARAMS = {
        "temperature": ("temperature", "gen_ai.request.temperature", 0.3),
        "max_tokens": ("max_tokens", "gen_ai.request.max_tokens", 64),
        "top_p": ("top_p", "gen_ai.request.top_p", 0.9),
        "random_seed": ("random_seed", "gen_ai.request.seed", 42),
        "stop": ("stop", "gen_ai.request.stop_sequences", ["END"]),
    }
    # langchain-mistralai posts with httpx itself and raises httpx's own error.
    error_class = httpx.HTTPStatusError

    def make_model(self, server: LoopbackServer) -> ChatMistralAI:
        return ChatMistralAI(
            model=self.MODEL,
            endpoint=server.url + "/v1",
            api_key="test",
            max_retries=0,
            timeout=10,
            **{name: value for name, (_, _, value) in self.PARAMS.items()},
        )

    def check_usage_details(self, checks: Checks, span: Any, usage: dict[str, Any]) -> None:
        # Mistral reports no cached or reasoning token counts: none may be invented.
        for absent in ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.reasoning.output_tokens"):
            checks.true(f"{absent} set though Mistral reports none", absent not in span.attributes)

    def check_error(self, error: BaseException) -> None:
        assert isinstance(error, httpx.HTTPStatusError)
        assert error.response.status_code == mistral_api.ERROR_STATUS
        assert json.loads(error.response.text) == mistral_api.ERROR
