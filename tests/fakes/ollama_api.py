"""Ollama's native API, as much as langchain-ollama's ``ChatOllama`` and ``OllamaEmbeddings`` use.

``POST /api/chat``: ``"stream": true`` (what ChatOllama sends in every mode, invoke included) gets
NDJSON, one ``{"model", "created_at", "message", "done": false}`` object per piece and a last one
with ``"done": true``, ``done_reason`` and the counters (``prompt_eval_count`` / ``eval_count``
are Ollama's only token counts: no cache or reasoning counts exist in its API); ``"stream":
false`` gets that last object with the whole message. A request with ``tools`` gets one tool call
in Ollama's form (``{"function": {"index", "name", "arguments": {...}}}``, arguments an object,
no call id). A user message containing ``"TRUNCATE"`` ends with ``done_reason: "length"``.
``POST /api/embed``: ``{"model", "embeddings": [[...] per input], ...}``. A user message / input
containing ``"FAIL"`` gets Ollama's error body ``{"error": "..."}`` with status 400 (before any
stream starts, so as JSON even for a streamed request). ``ChatOllama`` calls nothing else (no
``/api/show``; ``/api/tags`` only with ``validate_model_on_init=True``, not used here).
"""

from __future__ import annotations

import hashlib
from typing import Any

from tests.fakes.loopback import Reply, Request

CREATED_AT = "2025-01-02T03:04:05.678901Z"
REPLY_TEXT = "Paris is the capital of France."
PROMPT_EVAL_COUNT = 31  # input tokens
EVAL_COUNT = 17  # output tokens
TOTAL_DURATION = 1_234_567_890
LOAD_DURATION = 12_345_678
PROMPT_EVAL_DURATION = 23_456_789
EVAL_DURATION = 345_678_901
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris", "unit": "celsius"}
ERROR_MESSAGE = 'invalid request: "FAIL" is not allowed here'
ERROR_STATUS = 400
EMBED_PROMPT_EVAL_COUNT = 9
EMBEDDING_SIZE = 8


def _user_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


def _final(model: str, done_reason: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": CREATED_AT,
        "message": message,
        "done": True,
        "done_reason": done_reason,
        "total_duration": TOTAL_DURATION,
        "load_duration": LOAD_DURATION,
        "prompt_eval_count": PROMPT_EVAL_COUNT,
        "prompt_eval_duration": PROMPT_EVAL_DURATION,
        "eval_count": EVAL_COUNT,
        "eval_duration": EVAL_DURATION,
    }


def tool_call() -> dict[str, Any]:
    return {"function": {"index": 0, "name": TOOL_NAME, "arguments": dict(TOOL_ARGUMENTS)}}


def chat(request: Request) -> Reply:
    body = request.json
    model = body["model"]
    text = _user_text(body.get("messages") or [])
    if "FAIL" in text:
        return Reply.json({"error": ERROR_MESSAGE}, status=ERROR_STATUS)
    done_reason = "length" if "TRUNCATE" in text else "stop"
    stream = body.get("stream", True)  # Ollama streams unless told not to
    if body.get("tools"):
        message = {"role": "assistant", "content": "", "tool_calls": [tool_call()]}
        if not stream:
            return Reply.json(_final(model, done_reason, message))
        pieces = [message]
    else:
        if not stream:
            return Reply.json(_final(model, done_reason, {"role": "assistant", "content": REPLY_TEXT}))
        words = REPLY_TEXT.split(" ")
        pieces = [{"role": "assistant", "content": w if i == 0 else " " + w} for i, w in enumerate(words)]
    chunks = [{"model": model, "created_at": CREATED_AT, "message": piece, "done": False} for piece in pieces]
    chunks.append(_final(model, done_reason, {"role": "assistant", "content": ""}))
    return Reply.ndjson(chunks)


def embedding(text: str) -> list[float]:
    """A deterministic unit-free vector per text, so equal texts are nearest."""
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 for b in digest[:EMBEDDING_SIZE]]


def embed(request: Request) -> Reply:
    body = request.json
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if any("FAIL" in text for text in inputs):
        return Reply.json({"error": ERROR_MESSAGE}, status=ERROR_STATUS)
    return Reply.json(
        {
            "model": body["model"],
            "embeddings": [embedding(text) for text in inputs],
            "total_duration": TOTAL_DURATION,
            "load_duration": LOAD_DURATION,
            "prompt_eval_count": EMBED_PROMPT_EVAL_COUNT,
        }
    )


def route(request: Request) -> Reply:
    if request.method == "POST" and request.path == "/api/chat":
        return chat(request)
    if request.method == "POST" and request.path == "/api/embed":
        return embed(request)
    return Reply.json({"error": f"404 page not found: {request.method} {request.path}"}, status=404)
