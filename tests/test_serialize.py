"""Safe, bounded serialization: odd payloads never raise, secrets never pass, sizes are capped."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import BaseModel, SecretStr

from callscope._serialize import REDACTED, bound_text, encodable, scrub_text, to_json, to_jsonable


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
