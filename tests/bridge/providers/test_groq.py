"""langchain-groq's ChatGroq against a loopback Groq chat completions API (tests/fakes/groq_api.py),
with the suite every chat completions package runs (tests/bridge/providers/chat_completions.py)."""

from __future__ import annotations

from typing import Any

import groq
import pytest
from langchain_groq import ChatGroq

from tests.bridge.providers.chat_completions import ChatCompletionsSuite
from tests.bridge.providers.conftest import Checks
from tests.fakes import groq_api
from tests.fakes.loopback import LoopbackServer


class TestChatGroq(ChatCompletionsSuite):
    api = groq_api
    PROVIDER = "groq"
    MODEL = "llama-3.3-70b-versatile"
    PACKAGE = "langchain-groq"
    # ChatGroq has no top_p or seed field: it moves them to model_kwargs (with a UserWarning) and
    # sends them as they are.
    PARAMS = {
        "temperature": ("temperature", "gen_ai.request.temperature", 0.3),
        "max_tokens": ("max_tokens", "gen_ai.request.max_tokens", 64),
        "top_p": ("top_p", "gen_ai.request.top_p", 0.9),
        "seed": ("seed", "gen_ai.request.seed", 42),
        "stop": ("stop", "gen_ai.request.stop_sequences", ["END"]),
    }
    error_class = groq.BadRequestError

    def make_model(self, server: LoopbackServer) -> ChatGroq:
        with pytest.warns(UserWarning, match="transferred to model_kwargs"):
            return ChatGroq(
                model=self.MODEL,
                base_url=server.url,
                api_key="gsk_test",
                max_retries=0,
                timeout=10,
                **{name: value for name, (_, _, value) in self.PARAMS.items()},
            )

    def check_usage_details(self, checks: Checks, span: Any, usage: dict[str, Any]) -> None:
        checks.equal(
            "gen_ai.usage.cache_read.input_tokens",
            span.attributes.get("gen_ai.usage.cache_read.input_tokens"),
            usage["prompt_tokens_details"]["cached_tokens"],
        )
        checks.equal(
            "gen_ai.usage.reasoning.output_tokens",
            span.attributes.get("gen_ai.usage.reasoning.output_tokens"),
            usage["completion_tokens_details"]["reasoning_tokens"],
        )
        # Groq reports no cache writes: none may be invented.
        checks.true("gen_ai.usage.cache_creation.input_tokens set though Groq reports none", "gen_ai.usage.cache_creation.input_tokens" not in span.attributes)

    def check_error(self, error: BaseException) -> None:
        assert isinstance(error, groq.BadRequestError)
        assert error.status_code == groq_api.ERROR_STATUS
        assert error.response.json() == groq_api.ERROR
