"""Mistral's chat completions API (``POST /v1/chat/completions``), as langchain-mistralai speaks it.

A plain request gets a text reply, a request with ``tools`` gets one tool call (Mistral's 9-char
alphanumeric id, arguments as a JSON string), a user message containing ``FAIL`` gets Mistral's
error object with status 400. ``"stream": true`` gets server-sent events (bare ``data:`` lines,
closed by ``data: [DONE]``) with the usage in the last chunk, the one carrying the finish reason,
as Mistral sends it unasked. Mistral's usage has prompt/completion/total tokens only: the API
reports no cached or reasoning token counts.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.loopback import Reply, Request

PATH = "/v1/chat/completions"

# Mistral answers with its own model name; kept distinct from the request's alias so the span
# shows which one it read.
RESPONSE_MODEL = "mistral-small-2506"
RESPONSE_ID = "5c1f0e8a9b7d4c2e8f3a6b1d0e9c7a42"
CREATED = 1_750_000_000

TEXT = "Bonjour from the fake Mistral."
TEXT_PIECES = ("Bonjour", " from the", " fake Mistral.")
USAGE = {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}
TOOL_USAGE = {"prompt_tokens": 83, "completion_tokens": 22, "total_tokens": 105}

TOOL_CALL_ID = "aB3dE5gH7"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}

ERROR_STATUS = 400
ERROR = {
    "object": "error",
    "message": "Prompt contains forbidden content: FAIL",
    "type": "invalid_request_error",
    "param": None,
    "code": "3051",
}


def _user_text(body: dict[str, Any]) -> str:
    texts = []
    for message in body.get("messages") or ():
        if message.get("role") == "user":
            content = message.get("content")
            texts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(texts)


def _tool_call() -> dict[str, Any]:
    return {"id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)}, "index": 0}


def _chunk(delta: dict[str, Any], finish_reason: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": RESPONSE_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def route(request: Request) -> Reply:
    if request.method != "POST" or request.path != PATH:
        return Reply.json({"object": "error", "message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}, status=404)
    body = request.json or {}
    if "FAIL" in _user_text(body):
        return Reply.json(ERROR, status=ERROR_STATUS)
    tools = bool(body.get("tools"))
    if body.get("stream"):
        events: list[tuple[str | None, Any]] = [(None, _chunk({"role": "assistant", "content": ""}))]
        if tools:
            events.append((None, _chunk({"tool_calls": [_tool_call()]}, "tool_calls", TOOL_USAGE)))
        else:
            events += [(None, _chunk({"content": piece})) for piece in TEXT_PIECES]
            events.append((None, _chunk({"content": ""}, "stop", USAGE)))
        events.append((None, "[DONE]"))
        return Reply.sse(events)
    message: dict[str, Any] = {"role": "assistant", "tool_calls": None, "content": TEXT, "prefix": False}
    if tools:
        message.update(content="", tool_calls=[_tool_call()])
    return Reply.json(
        {
            "id": RESPONSE_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": RESPONSE_MODEL,
            "usage": TOOL_USAGE if tools else USAGE,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}],
        }
    )
