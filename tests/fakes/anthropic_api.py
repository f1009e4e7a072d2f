"""The Anthropic Messages API (``POST /v1/messages``) as langchain-anthropic's SDK calls it.

A request with ``"stream": true`` gets the server-sent events Anthropic sends (``message_start``
with the input usage, ``content_block_start`` / ``ping`` / ``content_block_delta`` /
``content_block_stop`` per block, ``message_delta`` with the stop reason and the cumulative
usage, ``message_stop``); any other request gets one message JSON. A request with tools gets a
text block then a ``tool_use`` block (``stop_reason`` ``tool_use``); a user message containing
``FAIL`` gets Anthropic's error JSON with status 400.

Anthropic's ``input_tokens`` excludes cached tokens: the canned usage has distinct uncached,
cache-read and cache-creation counts (the latter split by TTL, as the API reports it), so a test
can tell which one ended up where.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.loopback import Reply, Request

RESPONSE_MODEL = "claude-sonnet-4-5-20250929"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
REQUEST_ID = "req_011CSHoEeqs5C35K2UUqR7Fy"

TEXT = "Hello from the fake Claude."
TOOL_TEXT = "I'll look up the weather in Paris."
TOOL_USE_ID = "toolu_01A09q90qw90lq917835lq9"
TOOL_NAME = "get_weather"
TOOL_INPUT = {"city": "Paris"}
ERROR_MESSAGE = "messages: the fake server was told to FAIL"

# Uncached input, cache read, cache creation (5-minute + 1-hour TTL), output: all distinct.
INPUT_TOKENS = 11
CACHE_READ_INPUT_TOKENS = 300
CACHE_CREATION_5M_INPUT_TOKENS = 25
CACHE_CREATION_1H_INPUT_TOKENS = 15
CACHE_CREATION_INPUT_TOKENS = CACHE_CREATION_5M_INPUT_TOKENS + CACHE_CREATION_1H_INPUT_TOKENS
OUTPUT_TOKENS = 23
# What the GenAI conventions call gen_ai.usage.input_tokens for Anthropic: all input, cached included.
TOTAL_INPUT_TOKENS = INPUT_TOKENS + CACHE_READ_INPUT_TOKENS + CACHE_CREATION_INPUT_TOKENS


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": CACHE_CREATION_INPUT_TOKENS,
        "cache_read_input_tokens": CACHE_READ_INPUT_TOKENS,
        "cache_creation": {
            "ephemeral_5m_input_tokens": CACHE_CREATION_5M_INPUT_TOKENS,
            "ephemeral_1h_input_tokens": CACHE_CREATION_1H_INPUT_TOKENS,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _delta_usage() -> dict[str, Any]:
    """``message_delta``'s usage: cumulative counts, without the TTL split or service tier."""
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": CACHE_CREATION_INPUT_TOKENS,
        "cache_read_input_tokens": CACHE_READ_INPUT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
    }


def _blocks(tools: bool) -> list[dict[str, Any]]:
    if not tools:
        return [{"type": "text", "text": TEXT}]
    return [{"type": "text", "text": TOOL_TEXT}, {"type": "tool_use", "id": TOOL_USE_ID, "name": TOOL_NAME, "input": TOOL_INPUT}]


def _message(content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": RESPONSE_MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _events(tools: bool) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": _message([], None, _usage(1))})]
    for index, block in enumerate(_blocks(tools)):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = json.dumps(block["input"])
            cut = len(arguments) // 2
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in ("", arguments[:cut], arguments[cut:])]
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop_reason = "tool_use" if tools else "end_turn"
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": _delta_usage()}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _user_text(body: dict[str, Any]) -> str:
    texts = []
    for message in body.get("messages") or ():
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [block.get("text", "") for block in content or () if isinstance(block, dict)]
    return "\n".join(texts)


def route(request: Request) -> Reply:
    if request.method != "POST" or request.path != "/v1/messages":
        return _with_request_id(Reply.json({"type": "error", "error": {"type": "not_found_error", "message": f"Not found: {request.path}"}}, status=404))
    body = request.json or {}
    if "FAIL" in _user_text(body):
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": ERROR_MESSAGE}, "request_id": REQUEST_ID}
        return _with_request_id(Reply.json(error, status=400))
    tools = bool(body.get("tools"))
    if body.get("stream"):
        return _with_request_id(Reply.sse(_events(tools)))
    stop_reason = "tool_use" if tools else "end_turn"
    return _with_request_id(Reply.json(_message(_blocks(tools), stop_reason, _usage(OUTPUT_TOKENS))))


def _with_request_id(reply: Reply) -> Reply:
    reply.headers["request-id"] = REQUEST_ID
    return reply
