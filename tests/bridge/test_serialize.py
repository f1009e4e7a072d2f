"""Safe, bounded serialization: odd payloads never raise, secrets never pass, sizes are capped."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import BaseModel, SecretStr

from callscope._bridge.serialize import REDACTED, bound_text, encodable, scrub_text, to_json, to_jsonable


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("repr bomb")

    __str__ = __repr__


class Config(BaseModel):
    model: str = "m"
    api_key: SecretStr = SecretStr("s3cr3t-value")


def test_odd_values_become_plain_json():
    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    value = {"cyc": cyclic, 1: "int key", None: "none key", b"k": "bytes key", "nan": math.nan, "inf": -math.inf, "raw": b"\x00" * 10, "obj": Hostile()}
    data = to_jsonable(value)
    json.dumps(data, allow_nan=False)  # valid JSON, no NaN
    assert data["cyc"]["self"] == "<cycle>"
    assert data["1"] == "int key" and data["null"] == "none key" and data["<1 bytes>"] == "bytes key"
    assert data["nan"] == "nan" and data["inf"] == "-inf"
    assert data["raw"] == "<10 bytes>" and data["obj"] == "<Hostile>"


def test_depth_and_width_are_bounded():
    deep: list = []
    node = deep
    for _ in range(50):
        node.append([])
        node = node[0]
    text = json.dumps(to_jsonable(deep))
    assert "too deep" in text
    wide = to_jsonable(list(range(1000)))
    assert len(wide) == 65 and wide[-1] == "…936 more"
    wide_map = to_jsonable({str(i): i for i in range(1000)})
    assert len(wide_map) == 65 and wide_map["…"] == "936 more" and wide_map["63"] == 63


@pytest.mark.parametrize(
    "text",
    [
        "key sk-proj-abcdefghijklmnopqrstu",
        "Authorization: Bearer abc.def.ghijkl",
        "{'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}",
        "password=hunter2hunter2",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwx",
    ],
)
def test_credential_shapes_in_text_are_redacted(text):
    scrubbed = scrub_text(text)
    assert REDACTED in scrubbed
    for secret in ("abcdefghijklmnopqrstu", "abc.def.ghijkl", "dXNlcjpwYXNzd29yZA", "hunter2hunter2", "ABCDEFGHIJKLMNOP", "abcdefghijklmnopqrstuvwx"):
        assert secret not in scrubbed


def test_token_counts_are_not_mistaken_for_secrets():
    assert scrub_text("max_tokens=100, input_tokens: 5") == "max_tokens=100, input_tokens: 5"
    assert to_jsonable({"max_tokens": 100, "output_tokens": 5}) == {"max_tokens": 100, "output_tokens": 5}


def test_secret_fields_and_secret_types_are_redacted():
    data = to_jsonable({"openai_api_key": "plain", "client_secret": "x", "nested": Config()})
    assert data == {"openai_api_key": REDACTED, "client_secret": REDACTED, "nested": {"model": "m", "api_key": REDACTED}}


def test_lengths_are_bounded_and_cuts_are_marked():
    assert len(bound_text("x" * 100_000, 500)) == 500 and bound_text("x" * 100_000, 500).endswith("…[truncated]")
    assert bound_text("short", 500) == "short"
    out = to_json({"a": "y" * 10_000}, 300)
    assert len(out) <= 300
    # a secret straddling the cut is still recognised
    assert "sk-proj" not in bound_text("a" * 490 + " sk-proj-abcdefghijklmnopqrstu", 500)


# --- every string that leaves encodes as UTF-8 ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ascii", "plain ascii"),
        ("déjà vu 模型 😀", "déjà vu 模型 😀"),
        ("half \ud83d an emoji", "half \ufffd an emoji"),
        ("\udc00lone low", "\ufffdlone low"),
        ("a pair \ud83d\ude00 in a str", "a pair \U0001F600 in a str"),  # what the halves stood for
        ("\ud800\ud800", "\ufffd\ufffd"),
        ("ctrl \x00\x1b ok", "ctrl \x00\x1b ok"),  # control characters are valid UTF-8: kept
    ],
)
def test_encodable_replaces_only_what_utf8_cannot_carry(text, expected):
    assert encodable(text) == expected
    encodable(text).encode("utf-8")


def test_clean_text_is_returned_as_is():
    for text in ("ascii", "模型 😀 é"):
        assert encodable(text) is text


def test_bounded_and_json_text_is_encodable_wherever_the_surrogate_sits():
    for text in ("\ud83d" + "x" * 100, "x" * 50 + "\ud83d\ude00" + "x" * 100, "é" * 10_000 + "\udfff"):
        for limit in (20, 51, 52, 64, 20_000):
            bounded = bound_text(text, limit)
            assert len(bounded) <= limit
            bounded.encode("utf-8")
            dumped = to_json({"k\ud800": [text, "\ud800"]}, limit)
            assert len(dumped) <= limit
            dumped.encode("utf-8")
    assert json.loads(to_json({"k\ud800": "v\udc00"}, 100)) == {"k\ufffd": "v\ufffd"}


# --- fast paths give what the general rules give ------------------------------------------------

import re  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue  # noqa: E402

from callscope._bridge import serialize as _serialize  # noqa: E402

# Pieces of every credential shape, so drawn text often holds a hint, and now and then a secret.
_SECRET_PIECES = ["sk-", "proj-", "AIza", "AKIA", "ghp_", "xoxb_", "Bearer ", "earer", "token", "Password", "api_key", "x-api-key", "cookie", ":", "=", "'", '"', " ", "_", "-", "k"]
_secretish_text = st.lists(st.sampled_from(_SECRET_PIECES) | st.text(alphabet="aZ09k-_.:= \ud800", max_size=24), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(_secretish_text)
def test_text_without_a_hint_is_what_the_pattern_leaves_it(text):
    # The hints only decide whether the pattern runs: the result is always the pattern's.
    assert scrub_text(text) == _serialize._SECRET_TEXT.sub(REDACTED, text)


def test_shorter_text_than_any_credential_shape_is_not_scrubbed_and_longer_is():
    assert re._parser.parse(_serialize._SECRET_TEXT.pattern).getwidth()[0] == _serialize._SHORTEST_SECRET_TEXT
    assert to_jsonable({"note": "token=abcdef"}) == {"note": REDACTED}


def test_key_verdicts_are_cached_for_short_exact_keys_only(monkeypatch):
    monkeypatch.setattr(_serialize, "_KEY_VERDICTS", {})

    class Key(str):
        pass

    for _ in range(2):
        assert _serialize.is_secret_key("openai_api_key") and not _serialize.is_secret_key("max_tokens")
        assert _serialize.is_secret_key(Key("password")) and _serialize.is_secret_key("x" * 100 + "_password")
    assert _serialize._KEY_VERDICTS == {"openai_api_key": True, "max_tokens": False}
    for i in range(_serialize._MAX_KEY_VERDICTS + 10):
        _serialize.is_secret_key(f"k{i}")
    assert len(_serialize._KEY_VERDICTS) == _serialize._MAX_KEY_VERDICTS


def _messages_with_odd_content() -> list:
    cyclic: dict = {"type": "text"}
    cyclic["self"] = cyclic
    return [
        SystemMessage("You are terse."),
        HumanMessage("my key is sk-proj-abcdefghijklmnopqrstu, half \ud83d an emoji"),
        HumanMessage(["token=hunter2hunter2", {"type": "image_url", "image_url": {"url": "data:...", "api_key": "k"}}, cyclic]),
        AIMessage("", tool_calls=[{"id": "c1", "name": "f", "args": {"password": "p", "q": "x" * 5000}}]),
        AIMessageChunk(content="chunk"),
        ToolMessage("12C", tool_call_id="c1"),
        HumanMessage("y" * 100_000),
    ]


def test_langchain_messages_convert_as_their_message_form_does():
    for message in _messages_with_odd_content():
        fast = to_jsonable(message, 1000)
        assert fast == to_jsonable(_serialize._message_dict(message), 1000)
        json.dumps(fast, allow_nan=False).encode("utf-8")
    dumped = json.dumps([to_jsonable(m, 1000) for m in _messages_with_odd_content()], ensure_ascii=False)
    for secret in ("abcdefghijklmnopqrstu", "hunter2hunter2", '"p"', '"k"'):
        assert secret not in dumped
    assert "<cycle>" in dumped and "…[truncated]" in dumped and "\ud83d" not in to_json(_messages_with_odd_content(), 100_000)


def test_prompt_values_and_documents_are_read_from_their_fields():
    messages = [SystemMessage("be brief"), HumanMessage("Authorization: Bearer abcdefghijkl")]
    assert to_jsonable(ChatPromptValue(messages=messages)) == {
        "messages": [{"type": "system", "content": "be brief"}, {"type": "human", "content": REDACTED}]
    }
    assert to_jsonable(StringPromptValue(text="Tell me about tracing.")) == {"text": "Tell me about tracing.", "type": "StringPromptValue"}
    document = Document(page_content="about otel", metadata={"source": "a", "password": "p"})
    assert to_jsonable(document) == {"page_content": "about otel", "metadata": {"source": "a", "password": REDACTED}}


def test_a_langchain_object_that_cannot_be_read_becomes_its_class_name():
    unvalidated = HumanMessage.model_construct(type="human")  # no content field at all
    assert to_jsonable({"m": unvalidated}) == {"m": "<HumanMessage>"}
    deep: list = [HumanMessage("x")]
    for _ in range(10):
        deep = [deep]
    assert "too deep" in to_json(deep, 10_000)


def test_containers_and_classes_that_misbehave_are_named_not_raised():
    class Exploding(list):
        def __iter__(self):
            raise RuntimeError("iteration exploded")

    class Meta(type):
        def __eq__(cls, other):  # and so no __hash__: the class cannot key a cache
            return cls is other

    class Unhashable(metaclass=Meta):
        pass

    class Lying(dict):
        def items(self):
            raise RuntimeError("items exploded")

    assert to_jsonable({"a": Exploding([1]), "b": Unhashable(), "c": Lying(x=1), "d": [1, "ok"]}) == {
        "a": "<Exploding>",
        "b": "<Unhashable>",
        "c": "<Lying>",
        "d": [1, "ok"],
    }
