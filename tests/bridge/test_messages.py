"""GenAI message content: scrubbed, bounded, cut like payloads, and valid per the schemas."""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from callscope._bridge.messages import input_messages, output_messages
from tests.bridge.test_semconv import jsonschema, schema


def test_message_content_is_scrubbed_bounded_and_encodable_without_a_second_pass():
    secret = "sk-proj-abcdefghijklmnopqrstu"
    messages = [
        SystemMessage(f"use {secret}"),
        HumanMessage(["half \ud83d an emoji", {"type": "image_url", "image_url": {"url": "x", "api_key": "k"}}, {"type": object(), "text": 1}]),
        AIMessage("", tool_calls=[{"id": "c1", "name": "f", "args": {"password": "p", "note": f"key {secret}"}}]),
        ToolMessage("z" * 5000, tool_call_id="c1"),
    ]
    attributes = input_messages([messages], 10_000)
    text = json.dumps(attributes, ensure_ascii=False)
    assert secret not in text and '"p"' not in text and '"k"' not in text and "\ud83d" not in text
    inputs = json.loads(attributes[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool"]
    # A block's type that is no string is not str()-ed: it is a generic block.
    assert [p["type"] for p in inputs[0]["parts"]] == ["text", "image_url", "generic"]
    assert inputs[1]["parts"][0]["arguments"] == {"password": "[REDACTED]", "note": "key [REDACTED]"}
    assert inputs[2]["parts"][0]["response"] == "z" * 5000
    assert json.loads(attributes[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "use [REDACTED]"}]
    cut = input_messages([messages], 100)[gen_ai.GEN_AI_INPUT_MESSAGES]
    assert len(cut) == 100 and cut.endswith("…[truncated]")


def test_output_messages_of_text_and_chat_generations():
    from langchain_core.outputs import ChatGeneration, Generation, LLMResult

    class Custom(Generation):  # not LangChain's: asked for a message like any object
        @property
        def message(self):
            return AIMessage("from a property")

    result = LLMResult(
        generations=[[Generation(text="done", generation_info={"finish_reason": "length"})], [ChatGeneration(message=AIMessage("hi"))], [Custom(text="t")]]
    )
    outputs = json.loads(output_messages(result, 1000)[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert outputs == [
        {"role": "assistant", "parts": [{"type": "text", "content": "done"}], "finish_reason": "length"},
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"},
        {"role": "assistant", "parts": [{"type": "text", "content": "from a property"}], "finish_reason": "stop"},
    ]
    jsonschema.validate(outputs, schema("gen-ai-output-messages.json"))


def test_long_conversations_and_block_lists_are_cut_as_payloads_are():
    conversation = [HumanMessage(f"m{i}") for i in range(100)]
    conversation[0] = HumanMessage([f"b{i}" for i in range(1000)])
    inputs = json.loads(input_messages([conversation], 1_000_000)[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert len(inputs) == 65 and inputs[-1] == "…36 more"
    assert len(inputs[0]["parts"]) == 65 and inputs[0]["parts"][-1] == "…936 more"
