"""Groq's OpenAI-compatible chat completions API (``POST /openai/v1/chat/completions``), as the
groq SDK under langchain-groq speaks it.

A plain request gets a text reply, a request with ``tools`` gets one tool call, a user message
containing ``FAIL`` gets Groq's (OpenAI-style) error object with status 400. ``"stream": true``
gets server-sent events (bare ``data:`` lines, closed by ``data: [DONE]``); langchain-groq asks
for no ``stream_options``, so Groq reports the usage in ``x_groq.usage`` of the last chunk, the one
with the finish reason. Usage carries cached prompt tokens and reasoning tokens with distinct
numbers, as Groq reports them (``prompt_tokens_details.cached_tokens``,
``completion_tokens_details.reasoning_tokens``), plus Groq's timing fields.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.loopback import Reply, Request

PATH = "/openai/v1/chat/completions"

# Kept distinct from the request's model so the span shows which one it read.
RESPONSE_MODEL = "llama-3.3-70b-versatile-2412"
RESPONSE_ID = "chatcmpl-7f3c9a1e-4b2d-4e8f-9a6c-1d0e2f3a4b5c"
X_GROQ_ID = "req_01jz8k3m4n5p6q7r8s9t0v1w2x"
SYSTEM_FINGERPRINT = "fp_3f5e8c2a1b"
CREATED = 1_750_000_000

TEXT = "Hello from the fake Groq."
TEXT_PIECES = ("Hello", " from the", " fake Groq.")


def _usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "queue_time": 0.012,
        "prompt_tokens": prompt,
        "prompt_time": 0.004,
        "completion_tokens": completion,
        "completion_time": 0.031,
        "total_tokens": prompt + completion,
        "total_time": 0.035,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


USAGE = _usage(prompt=41, completion=19, cached=11, reasoning=7)
TOOL_USAGE = _usage(prompt=97, completion=23, cached=13, reasoning=5)

TOOL_CALL_ID = "call_k9x2m4p7q1r8"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}

ERROR_STATUS = 400
ERROR = {"error": {"message": "Prompt rejected by the fake Groq: FAIL", "type": "invalid_request_error", "code": "invalid_request"}}


def _user_text(body: dict[str, Any]) -> str:
    texts = []
    for message in body.get("messages") or ():
        if message.get("role") == "user":
            content = message.get("content")
            texts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(texts)


def _tool_call(streamed: bool) -> dict[str, Any]:
    call = {"id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)}}
    return {"index": 0, **call} if streamed else call


def _chunk(delta: dict[str, Any], finish_reason: str | None = None, x_groq: dict[str, Any] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": RESPONSE_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": RESPONSE_MODEL,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if x_groq is not None:
        chunk["x_groq"] = x_groq
    return chunk


def route(request: Request) -> Reply:
    if request.method != "POST" or request.path != PATH:
        return Reply.json({"error": {"message": "Unknown request URL", "type": "invalid_request_error", "code": "unknown_url"}}, status=404)
    body = request.json or {}
    if "FAIL" in _user_text(body):
        return Reply.json(ERROR, status=ERROR_STATUS)
    tools = bool(body.get("tools"))
    if body.get("stream"):
        events: list[tuple[str | None, Any]] = [(None, _chunk({"role": "assistant", "content": ""}, x_groq={"id": X_GROQ_ID}))]
        if tools:
            events.append((None, _chunk({"tool_calls": [_tool_call(streamed=True)]})))
            events.append((None, _chunk({}, "tool_calls", {"id": X_GROQ_ID, "usage": TOOL_USAGE})))
        else:
            events += [(None, _chunk({"content": piece})) for piece in TEXT_PIECES]
            events.append((None, _chunk({}, "stop", {"id": X_GROQ_ID, "usage": USAGE})))
        events.append((None, "[DONE]"))
        return Reply.sse(events)
    message: dict[str, Any] = {"role": "assistant", "content": TEXT}
    if tools:
        message = {"role": "assistant", "tool_calls": [_tool_call(streamed=False)]}
    return Reply.json(
        {
            "id": RESPONSE_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": RESPONSE_MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tools else "stop"}],
            "usage": TOOL_USAGE if tools else USAGE,
            "usage_breakdown": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "x_groq": {"id": X_GROQ_ID},
            "service_tier": "on_demand",
        }
    )
