"""langchain-aws's ChatBedrockConverse against a loopback Bedrock Runtime (tests/fakes/bedrock_api):
botocore signs and sends real Converse / ConverseStream requests to ``endpoint_url`` and parses
the JSON and event-stream answers; every assertion compares the span with what went over the wire.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from langchain_aws import ChatBedrockConverse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.bridge.providers.conftest import Traced
from tests.fakes import bedrock_api
from tests.fakes.loopback import LoopbackServer, Request
from tests.modes import MODES, drive

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TEMPERATURE, MAX_TOKENS, TOP_P, STOP = 0.25, 77, 0.875, ["END", "###"]
PROVIDER = "aws.bedrock"
STREAMED = ("stream", "astream")


def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(bedrock_api.route) as server:
        yield server


@pytest.fixture
def model(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> ChatBedrockConverse:
    # Nothing from the machine's AWS setup: no profile, no config file, no instance metadata.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "LANGSMITH_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return ChatBedrockConverse(
        model=MODEL,
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="test",
        temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS,
        top_p=TOP_P,
        stop_sequences=STOP,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=5),
    )


def _sent(server: LoopbackServer, mode: str) -> Request:
    """The one Converse (or, streamed, ConverseStream) request, checked to carry every parameter
    set on the constructor."""
    request = server.last()
    operation = "converse-stream" if mode in STREAMED else "converse"
    assert request.path == f"/model/{quote(MODEL, safe='')}/{operation}"
    assert request.json["inferenceConfig"] == {"maxTokens": MAX_TOKENS, "temperature": TEMPERATURE, "topP": TOP_P, "stopSequences": STOP}
    return request


def _assert_request_side(span: ReadableSpan, server: LoopbackServer, request: Request) -> None:
    model = bedrock_api.model_of(request)
    inference = request.json["inferenceConfig"]
    assert span.name == f"chat {model}"
    assert span.kind is SpanKind.CLIENT
    attributes = span.attributes
    assert attributes["gen_ai.provider.name"] == PROVIDER
    assert attributes["gen_ai.request.model"] == model
    assert attributes.get("gen_ai.request.temperature") == inference["temperature"]
    assert attributes.get("gen_ai.request.max_tokens") == inference["maxTokens"]
    assert attributes.get("gen_ai.request.top_p") == inference["topP"]
    assert attributes.get("gen_ai.request.stop_sequences") == tuple(inference["stopSequences"])
    assert attributes.get("server.address") == server.host
    assert attributes.get("server.port") == server.port


def _assert_response_side(span: ReadableSpan, request: Request, finish_reason: str) -> None:
    attributes = span.attributes
    usage = bedrock_api.USAGE
    # Bedrock reports no model of its own: the model that answered is the one in the request path.
    assert attributes.get("gen_ai.response.model") == bedrock_api.model_of(request)
    # Bedrock identifies no response; its request id (``x-amzn-requestid``) is the AWS
    # conventions' aws.request_id, as the botocore instrumentation records it.
    assert "gen_ai.response.id" not in attributes
    assert attributes.get("aws.request_id") == bedrock_api.REQUEST_ID
    assert attributes.get("gen_ai.response.finish_reasons") == (finish_reason,)
    # Bedrock's inputTokens leaves out cache reads and writes; the semconv input count includes them.
    assert attributes.get("gen_ai.usage.input_tokens") == usage["inputTokens"] + usage["cacheReadInputTokens"] + usage["cacheWriteInputTokens"]
    assert attributes.get("gen_ai.usage.output_tokens") == usage["outputTokens"]
    assert attributes.get("gen_ai.usage.cache_read.input_tokens") == usage["cacheReadInputTokens"]
    assert attributes.get("gen_ai.usage.cache_creation.input_tokens") == usage["cacheWriteInputTokens"]


def _assert_metrics(traced: Traced, server: LoopbackServer, request: Request, *, error_type: str | None = None) -> None:
    model = bedrock_api.model_of(request)
    expected = {"gen_ai.provider.name": PROVIDER, "gen_ai.request.model": model, "server.address": server.host, "server.port": server.port}
    if error_type is None:
        expected["gen_ai.response.model"] = model
    else:
        expected["error.type"] = error_type
    durations = traced.metrics("gen_ai.client.operation.duration")
    assert len(durations) == 1, durations
    assert {key: durations[0].get(key) for key in expected} == expected
    if error_type is not None:
        return
    tokens = traced.metrics("gen_ai.client.token.usage")
    assert sorted(point.get("gen_ai.token.type") for point in tokens) == ["input", "output"]
    for point in tokens:
        assert {key: point.get(key) for key in expected} == expected


def _output_messages(span: ReadableSpan) -> list[dict[str, Any]]:
    return json.loads(span.attributes["gen_ai.output.messages"])


@pytest.mark.parametrize("mode", MODES)
def test_plain_reply(mode: str, model: ChatBedrockConverse, server: LoopbackServer, traced: Traced) -> None:
    reply = drive(model, mode, "Say hello in French.")

    assert reply.text == bedrock_api.TEXT
    request = _sent(server, mode)
    span = traced.model_span()
    _assert_request_side(span, server, request)
    _assert_response_side(span, request, "end_turn")
    messages = _output_messages(span)
    assert [part["type"] for part in messages[0]["parts"]] == ["text"]
    assert "".join(part["content"] for part in messages[0]["parts"]) == bedrock_api.TEXT
    assert messages[0]["finish_reason"] == "end_turn"
    _assert_metrics(traced, server, request)


@pytest.mark.parametrize("mode", MODES)
def test_max_tokens_reply(mode: str, model: ChatBedrockConverse, server: LoopbackServer, traced: Traced) -> None:
    drive(model, mode, "Write a LONG essay.")

    request = _sent(server, mode)
    span = traced.model_span()
    _assert_request_side(span, server, request)
    _assert_response_side(span, request, "max_tokens")


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_reply(mode: str, model: ChatBedrockConverse, server: LoopbackServer, traced: Traced) -> None:
    reply = drive(model.bind_tools([get_weather]), mode, "What is the weather in Paris?")

    request = _sent(server, mode)
    [tool] = request.json["toolConfig"]["tools"]
    name = tool["toolSpec"]["name"]
    assert name == get_weather.__name__
    assert [(call["name"], call["id"], call["args"]) for call in reply.tool_calls] == [(name, bedrock_api.TOOL_USE_ID, bedrock_api.TOOL_INPUT)]
    span = traced.model_span()
    _assert_request_side(span, server, request)
    _assert_response_side(span, request, "tool_use")
    [message] = _output_messages(span)
    # Exactly the one call, once: no copy of Bedrock's raw toolUse content block beside it.
    assert message["parts"] == [{"type": "tool_call", "id": bedrock_api.TOOL_USE_ID, "name": name, "arguments": bedrock_api.TOOL_INPUT}]
    assert message["finish_reason"] == "tool_use"
    _assert_metrics(traced, server, request)


@pytest.mark.parametrize("mode", MODES)
def test_error_reply(mode: str, model: ChatBedrockConverse, server: LoopbackServer, traced: Traced) -> None:
    sent_before = len(server.requests)

    with pytest.raises(model.client.exceptions.ValidationException) as caught:
        drive(model, mode, "Please FAIL now.")

    assert len(server.requests) == sent_before + 1, "botocore retried the 400"
    error = caught.value.response["Error"]
    assert (error["Code"], error["Message"]) == (bedrock_api.ERROR_TYPE, bedrock_api.ERROR_MESSAGE)
    request = _sent(server, mode)
    span = traced.model_span()
    _assert_request_side(span, server, request)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes.get("error.type") == bedrock_api.ERROR_TYPE
    _assert_metrics(traced, server, request, error_type=bedrock_api.ERROR_TYPE)


def test_event_stream_framing_matches_botocore() -> None:
    """The fake's event-stream messages, fed to botocore's own parser in uneven slices, come back
    as the events written; a flipped payload byte fails botocore's CRC check."""
    events = [("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}}), ("messageStop", {"stopReason": "end_turn"})]
    wire = b"".join(bedrock_api.event(name, payload) for name, payload in events)
    buffer = EventStreamBuffer()
    parsed = []
    for start in range(0, len(wire), 7):
        buffer.add_data(wire[start : start + 7])
        parsed.extend(buffer)
    assert [(m.headers, json.loads(m.payload)) for m in parsed] == [
        ({":event-type": name, ":content-type": "application/json", ":message-type": "event"}, payload) for name, payload in events
    ]
    first = bedrock_api.event(*events[0])
    total_length, headers_length = struct.unpack(">II", first[:8])
    assert total_length == len(first)
    corrupt = bytearray(first)
    corrupt[12 + headers_length] ^= 0x01
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(buffer)
