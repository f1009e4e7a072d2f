"""The tests of a provider package that speaks an OpenAI-style chat completions API (langchain-groq,
langchain-mistralai) against its loopback fake, in the four modes: what the span and metrics say
must be what went over the wire. Span facts are gathered in ``Checks`` so one run lists every
mismatch at once.

A test module subclasses ``ChatCompletionsSuite`` as ``Test<Package>`` and says what differs: the
model it builds, the parameters it sends, the usage details the API reports, the error it raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from langchain_core.tools import tool
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import (
    STREAMED,
    Checks,
    chat_request,
    expected_response_id,
    expected_response_model,
    http_posts,
    url_of,
)
from tests.fakes.loopback import LoopbackServer
from tests.modes import MODES, drive


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class ChatCompletionsSuite:
    #: The fake API module (tests/fakes/…_api.py).
    api: ModuleType
    PROVIDER: str
    MODEL: str
    PACKAGE: str
    #: Constructor parameter -> (the key the package sends it as, the span attribute, the value).
    PARAMS: dict[str, tuple[str, str, Any]]
    #: What the package raises for the API's error reply.
    error_class: type[BaseException]

    def make_model(self, server: LoopbackServer) -> Any:
        raise NotImplementedError

    def check_usage_details(self, checks: Checks, span: Any, usage: dict[str, Any]) -> None:
        """The cache and reasoning token counts, as this API reports them (or that it reports none)."""
        raise NotImplementedError

    def check_error(self, error: BaseException) -> None:
        """The package's exception carries the API's error status and object."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls) -> Iterator[LoopbackServer]:
        with LoopbackServer(cls.api.route) as server:
            yield server

    def response_model(self, mode: str) -> str:
        return expected_response_model(self.PACKAGE, mode, self.api.RESPONSE_MODEL, self.MODEL)

    def check_request(self, checks: Checks, span: Any, server: LoopbackServer, mode: str) -> None:
        request = server.last()
        wire = request.json
        assert request.path == self.api.PATH
        assert wire["stream"] is (mode in STREAMED)
        assert wire["model"] == self.MODEL
        for name, (wire_key, _, value) in self.PARAMS.items():
            assert wire.get(wire_key) == value, f"the package did not send {name} as {wire_key}"
        checks.equal("span name", span.name, f"chat {wire['model']}")
        checks.equal("span kind", span.kind, SpanKind.CLIENT)
        checks.equal("gen_ai.operation.name", span.attributes.get("gen_ai.operation.name"), "chat")
        checks.equal("gen_ai.provider.name", span.attributes.get("gen_ai.provider.name"), self.PROVIDER)
        checks.equal("gen_ai.request.model", span.attributes.get("gen_ai.request.model"), wire["model"])
        for wire_key, attribute, _ in self.PARAMS.values():
            sent = wire[wire_key]
            checks.equal(attribute, span.attributes.get(attribute), tuple(sent) if isinstance(sent, list) else sent)
        checks.equal("server.address", span.attributes.get("server.address"), server.host)
        checks.equal("server.port", span.attributes.get("server.port"), server.port)

    def check_response(self, checks: Checks, span: Any, mode: str, finish_reason: str, usage: dict[str, Any]) -> None:
        checks.true("span status is not ERROR", span.status.status_code is not StatusCode.ERROR)
        checks.equal("gen_ai.response.model", span.attributes.get("gen_ai.response.model"), self.response_model(mode))
        checks.equal("gen_ai.response.id", span.attributes.get("gen_ai.response.id"), expected_response_id(self.PACKAGE, mode, self.api.RESPONSE_ID))
        checks.equal("gen_ai.response.finish_reasons", span.attributes.get("gen_ai.response.finish_reasons"), (finish_reason,))
        checks.equal("gen_ai.usage.input_tokens", span.attributes.get("gen_ai.usage.input_tokens"), usage["prompt_tokens"])
        checks.equal("gen_ai.usage.output_tokens", span.attributes.get("gen_ai.usage.output_tokens"), usage["completion_tokens"])
        self.check_usage_details(checks, span, usage)

    @pytest.mark.parametrize("mode", MODES)
    def test_plain_reply(self, traced: Any, server: LoopbackServer, mode: str) -> None:
        message = drive(self.make_model(server), mode, "Say hello")

        assert message.text == self.api.TEXT
        checks = Checks()
        span = traced.model_span()
        self.check_request(checks, span, server, mode)
        self.check_response(checks, span, mode, "stop", self.api.USAGE)
        output = json.loads(span.attributes.get("gen_ai.output.messages", "[]"))
        checks.equal("output parts", [part for m in output for part in m["parts"]], [{"type": "text", "content": self.api.TEXT}])
        checks.done()
        traced.assert_metrics(chat_request(self.PROVIDER, self.MODEL, server), response_model=self.response_model(mode))

    @pytest.mark.parametrize("mode", MODES)
    def test_tool_call_reply(self, traced: Any, server: LoopbackServer, mode: str) -> None:
        api = self.api
        message = drive(self.make_model(server).bind_tools([get_weather]), mode, "Weather in Paris?")

        assert [(c["name"], c["id"], c["args"]) for c in message.tool_calls] == [(api.TOOL_NAME, api.TOOL_CALL_ID, api.TOOL_ARGUMENTS)]
        assert [t["function"]["name"] for t in server.last().json["tools"]] == ["get_weather"]
        checks = Checks()
        span = traced.model_span()
        self.check_request(checks, span, server, mode)
        self.check_response(checks, span, mode, "tool_calls", api.TOOL_USAGE)
        output = json.loads(span.attributes.get("gen_ai.output.messages", "[]"))
        parts = [part for m in output for part in m["parts"]]
        checks.equal(
            "tool_call parts",
            [part for part in parts if part["type"] == "tool_call"],
            [{"type": "tool_call", "id": api.TOOL_CALL_ID, "name": api.TOOL_NAME, "arguments": api.TOOL_ARGUMENTS}],
        )
        checks.equal("other parts repeating the tool call", [p for p in parts if p["type"] != "tool_call" and api.TOOL_NAME in json.dumps(p)], [])
        checks.done()
        traced.assert_metrics(chat_request(self.PROVIDER, self.MODEL, server), response_model=self.response_model(mode))

    @pytest.mark.parametrize("mode", MODES)
    def test_error_reply(self, traced: Any, server: LoopbackServer, mode: str) -> None:
        with pytest.raises(self.error_class) as raised:
            drive(self.make_model(server), mode, "Please FAIL")

        self.check_error(raised.value)
        checks = Checks()
        span = traced.model_span()
        self.check_request(checks, span, server, mode)
        checks.equal("span status", span.status.status_code, StatusCode.ERROR)
        checks.equal("error.type", span.attributes.get("error.type"), type(raised.value).__qualname__)
        checks.done()
        traced.assert_metrics(chat_request(self.PROVIDER, self.MODEL, server), error_type=type(raised.value).__qualname__)

    @pytest.mark.parametrize("mode", MODES)
    def test_http_post_is_a_child_of_the_chat_span(self, traced: Any, httpx_spans: None, server: LoopbackServer, mode: str) -> None:
        drive(self.make_model(server), mode, "Say hello")

        span = traced.model_span()
        posts = http_posts(traced)
        assert len(posts) == 1, traced.spans.names()
        (post,) = posts
        assert url_of(post) == server.url + self.api.PATH
        assert post.parent is not None and post.parent.span_id == span.context.span_id, f"POST's parent is {traced.spans.parent_name(post)!r}"
        assert post.context.trace_id == span.context.trace_id
