"""The OTLP/JSON reader, on files the real exporter wrote from real SDK spans."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from callscope._bridge.trace_file import to_otlp_json
from callscope._tools.otlp_json import SpansFile, TraceDataError, parse_document, read_spans_file, read_spans_lines
from tests.spans import emit_small_tree


def test_round_trip_through_the_reader(provider_with_file) -> None:
    provider, path, memory = provider_with_file
    emit_small_tree(provider)
    read = read_spans_file(path)
    assert (read.lines, read.skipped_lines, read.skipped_spans) == (2, 0, 0)
    records = {r.name: r for r in read.spans}
    sdk = {s.name: s for s in memory.get_finished_spans()}
    root, child = records["root"], records["child"]
    assert root.trace_id == child.trace_id == format(sdk["root"].context.trace_id, "032x")
    assert root.parent_id is None
    assert child.parent_id == root.span_id
    assert (child.status_code, child.status_message) == ("ERROR", "boom")
    assert root.status_code == "UNSET"
    assert (root.start_ns, root.end_ns) == (sdk["root"].start_time, sdk["root"].end_time)
    assert root.attributes["callscope.handlers.inherited"] == ["runtime-logger", "audit"]
    assert root.attributes["big"] == 2**40 and root.attributes["ratio"] == 0.5 and root.attributes["flag"] is True
    assert root.service_name == "svc-under-test"


def test_base64_ids_from_stock_protobuf_json_are_accepted(provider_with_file) -> None:
    provider, path, memory = provider_with_file
    emit_small_tree(provider)
    document = to_otlp_json(memory.get_finished_spans())
    hex_records = parse_document(document).spans
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    b64_records = parse_document(document).spans
    assert [(r.trace_id, r.span_id, r.parent_id) for r in b64_records] == [
        (r.trace_id, r.span_id, r.parent_id) for r in hex_records
    ]


def test_jaeger_v3_envelope_and_enum_names_are_accepted() -> None:
    document = {
        "result": {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "jaeger-svc"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203331",
                                    "parentSpanId": "",
                                    "name": "root",
                                    "kind": "SPAN_KIND_INTERNAL",
                                    "startTimeUnixNano": 1000,
                                    "endTimeUnixNano": "3000",
                                    "status": {"code": "STATUS_CODE_ERROR", "message": "bad"},
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    }
    [record] = parse_document(document).spans
    assert record.parent_id is None
    assert (record.status_code, record.duration_ns, record.service_name) == ("ERROR", 2000, "jaeger-svc")


def test_bad_and_truncated_lines_are_skipped_and_counted(provider_with_file) -> None:
    provider, path, _ = provider_with_file
    emit_small_tree(provider)
    good = path.read_text().splitlines()
    lines = [good[0], "", "not json at all", '{"something": "else"}', good[1][: len(good[1]) // 2]]
    read = read_spans_lines(lines)
    assert [r.name for r in read.spans] == ["child"]
    assert (read.lines, read.skipped_lines) == (4, 3)
    assert "line 3" in read.problems[0] and "truncated" in read.problems[2]


def test_spans_with_bad_ids_are_skipped_not_fatal() -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "ok"}
    bad = [dict(span, traceId="xyz"), dict(span, spanId="00" * 8), dict(span, spanId="abc"), "not a span"]
    read = parse_document({"resourceSpans": [{"scopeSpans": [{"spans": [span, *bad]}]}]})
    assert [r.name for r in read.spans] == ["ok"]
    assert read.skipped_spans == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "is empty"),
        ("hello\nworld\n", "is not OTLP/JSON"),
        ('{"resourceSpans": [{"scopeSpans"', "is not OTLP/JSON"),
    ],
)
def test_unreadable_files_raise_one_named_problem(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TraceDataError, match=message):
        read_spans_file(path)


def test_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(TraceDataError, match="is a directory"):
        read_spans_file(tmp_path)


def test_a_pretty_printed_document_reads_as_one(tmp_path: Path, provider_with_file) -> None:
    provider, _, memory = provider_with_file
    emit_small_tree(provider)
    path = tmp_path / "jaeger.json"
    path.write_text(json.dumps({"result": to_otlp_json(memory.get_finished_spans())}, indent=2))
    read = read_spans_file(path)
    assert sorted(r.name for r in read.spans) == ["child", "root"]
    assert read.skipped_lines == 0


def _line(*spans: tuple[str, str, str | None]) -> str:
    """One export batch: spans as (trace id digit, span id digit, parent span id digit)."""
    records = [
        {"traceId": t * 32, "spanId": sid * 16, "name": f"{t}{sid}", **({"parentSpanId": parent * 16} if parent else {})}
        for t, sid, parent in spans
    ]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"scope": {"name": "callscope"}, "spans": records}]}]}) + "\n"


def test_a_trace_is_handed_over_once_the_last_line_naming_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "interleaved.jsonl"
    lines = [_line(("a", "1", "2"), ("b", "1", "2")), _line(("a", "2", None)), _line(("b", "2", None))]
    path.write_text("".join(lines))
    with SpansFile.open(path) as source:
        assert source.index().lines_by_trace == {"a" * 32: [1, 2], "b" * 32: [1, 3]}
        handed = []
        for spans in source.traces():
            handed.append(([span.name for span in spans], source.file.tell()))
    assert handed == [(["a1", "a2"], len(lines[0]) + len(lines[1])), (["b1", "b2"], path.stat().st_size)]


def test_wanted_traces_parse_only_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "three.jsonl"
    path.write_text(_line(("a", "1", None)) + "this line is never parsed\n" + _line(("b", "1", None)) + _line(("c", "1", None)))
    with SpansFile.open(path) as source:
        assert source.index().newest(2) == ["b" * 32, "c" * 32]
        assert [[span.name for span in spans] for spans in source.traces(["c" * 32])] == [["c1"]]
        assert source.read.skipped_lines == 0
        assert len(list(source.traces())) == 3 and source.read.skipped_lines == 1


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "powershell.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (_line(("a", "1", None)) + _line(("a", "2", "1"))).replace("\n", "\r\n").encode())
    read = read_spans_file(path)
    assert sorted(span.name for span in read.spans) == ["a1", "a2"] and read.skipped_lines == 0


def test_utf16_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(_line(("a", "1", None)).encode("utf-16"))
    with pytest.raises(TraceDataError, match="is UTF-16 text; save it as UTF-8"):
        read_spans_file(path)


def test_malformed_spans_say_why() -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "ok"}
    read = parse_document({"resourceSpans": [{"scopeSpans": [{"spans": [dict(span, spanId="xyz"), dict(span, startTimeUnixNano="soon")]}]}]})
    assert read.problems == [
        'a span with spanId "xyz" (not an 8-byte hex or base64 id)',
        'a span with startTimeUnixNano "soon" (not a whole number)',
    ]
