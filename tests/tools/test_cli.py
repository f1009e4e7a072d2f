"""The callscope CLI, in process: ``main(argv)`` with captured streams."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callscope.cli import Exit, main

DATA = Path(__file__).parents[1] / "data"
#: Recorded from Jaeger v2.13.0, byte for byte: `deploy/jaeger.sh`, then
#: `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_METRICS_EXPORTER=none callscope demo`, then
#: `curl -s localhost:16686/api/v3/traces/<the demo's first trace id>`.
#: tests/integration/test_jaeger.py checks that a live server still answers in this shape.
JAEGER_RESPONSE = DATA / "jaeger_v3_trace.json"
JAEGER_TRACE_ID = "64acdd44fd838c66faf553f621e6b09b"
#: What Jaeger v2.13.0 answers for an unknown trace id (HTTP 404, text/plain like every answer).
JAEGER_NOT_FOUND = b'{"error":{"httpCode":404,"message":"No traces found"}}\n'
#: Its GET /api/v3/services after that demo.
JAEGER_SERVICES = b'{"services":["callscope-demo"]}'



@pytest.fixture(autouse=True)
def no_otlp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("callscope: error: ")
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def demo_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    output = tmp_path / "out" / "traces.jsonl"
    assert main(["demo", "--output", str(output)]) == Exit.OK
    capsys.readouterr()
    return output


def test_demo_writes_the_file_and_prints_the_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "demo.jsonl"
    assert main(["demo", "--output", str(output)]) == Exit.OK
    out, err = capsys.readouterr()
    assert f"wrote 35 spans in 3 traces to {output}" in out
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert lines and all("resourceSpans" in line for line in lines)
    for root in ("answer", "answer-streamed", "answer-strict"):
        assert any(line.startswith(root + " ") for line in out.splitlines()), root
    assert "\x1b[" not in out  # captured output is not a terminal: plain text
    lines = out.splitlines()
    strict_at = next(i for i, line in enumerate(lines) if line.startswith("└─ strict_parse"))
    assert "error" in lines[strict_at].split() and "ValueError: expected a JSON object" in lines[strict_at + 1]
    assert "callscope: error" not in err


def test_demo_prints_a_per_model_metrics_summary_after_the_trees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "demo.jsonl"
    assert main(["demo", "--output", str(output)]) == Exit.OK
    out = capsys.readouterr().out.splitlines()
    title = [line.strip() for line in out].index("GenAI client metrics per model (gen_ai.client.*)")
    assert title > next(i for i, line in enumerate(out) if line.startswith("see it again"))
    header = out[title + 1].split()
    row = next(line for line in out[title + 2 :] if line.startswith("chat fake-chat ")).split()
    assert header[:4] == ["model", "provider", "runs", "errors"]
    # The model ran three times (answer, answer-streamed, answer-strict), as the spans say; the
    # strict step failed after it, not the model. Usage comes only from the two runs not streamed.
    model_spans = [line for line in json_spans(output) if line["name"] == "chat fake-chat"]
    assert row[:5] == ["chat", "fake-chat", "demochatmodel", str(len(model_spans)), "0"] and len(model_spans) == 3
    p50, p95 = float(row[5]), float(row[7])
    assert 0 < p50 <= p95
    assert row[-2:] == ["35", "10"]


def json_spans(path: Path) -> list[dict]:
    return [
        span
        for line in path.read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def test_demo_tree_shows_each_handler_scope_and_each_reason_for_a_miss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--output", str(tmp_path / "d.jsonl")]) == Exit.OK
    out = capsys.readouterr().out.splitlines()
    headers = [i for i, line in enumerate(out) if line.lstrip().startswith("span ")]
    labels = out[headers[0]].split()[3:]
    assert labels == ["RuntimeLogger", "ToolLogger", "ModelsOnlyLogger", "ModelLogger", "FormatAudit"]
    first_trace = out[headers[0] : headers[1]]

    def cells(prefix: str) -> dict[str, str]:
        row = next(line for line in first_trace if line.startswith(prefix))
        return dict(zip(labels, row.split()[-len(labels) :], strict=True))

    assert cells("answer ") == {
        "RuntimeLogger": "inherited",
        "ToolLogger": "scope",
        "ModelsOnlyLogger": "filtered",
        "ModelLogger": "scope",
        "FormatAudit": "subtree",
    }
    assert cells("│  │  └─ execute_tool lookup")["ToolLogger"] == "local"
    assert cells("├─ chat")["ModelLogger"] == "local" and cells("├─ chat")["ModelsOnlyLogger"] == "inherited"
    assert cells("└─ StrOutputParser")["FormatAudit"] == "inherited"
    assert cells("│        └─ rank_sources")["RuntimeLogger"] == "dropped"
    assert cells("│           └─ chat")["ModelsOnlyLogger"] == "dropped"
    # The third trace: a handler that raised from on_llm_end, under the model's span.
    strict = out[headers[2] :]
    strict_labels = strict[0].split()[3:]
    chat_row = next(line for line in strict if line.startswith("├─ chat"))
    assert dict(zip(strict_labels, chat_row.split()[-3:], strict=True))["FlakyLogger"] == "failed"
    assert strict[strict.index(chat_row) + 1].split()[:5] == ["│", "✗", "FlakyLogger.on_llm_end", "raised", "RuntimeError:"]
    assert any(line.startswith("LangChain logged, and went on: Error in FlakyLogger.on_llm_end callback:") for line in out)


def test_tree_of_the_demo_file(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file)]) == Exit.OK
    out, err = capsys.readouterr()
    assert out.count("trace ") >= 3 and err == ""


def test_tree_picks_one_trace_by_id_or_prefix(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file)]) == Exit.OK
    titles = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("trace ")]
    assert len(titles) == 3
    assert main(["tree", str(demo_file), "--trace", titles[1][:12].upper()]) == Exit.OK
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("trace ")] == [titles[1]]


def test_unknown_trace_id_names_the_known_ones(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file), "--trace", "f" * 32]) == Exit.BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert f"trace {'f' * 32} is not in {demo_file} (it has 3 traces:" in line
    assert "pass one of those ids" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file; run `callscope demo`"),
        ("just some text\n", "is not OTLP/JSON"),
        ('{"resourceSpans": [{"scopeSp\n', "is not OTLP/JSON (line 1: not JSON"),
        ('{"data": [{"traceID": "abc"}]}\n', "is not OTLP/JSON (line 1: no resourceSpans list)"),
    ],
)
def test_bad_files_give_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "in.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["tree", str(path)]) == Exit.BAD_INPUT
    assert expected in _one_error_line(capsys.readouterr().err)


def test_partly_broken_file_renders_the_rest_and_says_what_it_skipped(
    demo_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = demo_file.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines, "garbage", lines[0][:40]]) + "\n")
    assert main(["tree", str(broken)]) == Exit.OK
    out, err = capsys.readouterr()
    assert out.count("\ntrace ") + out.startswith("trace ") >= 1 and "answer" in out
    [warning] = [line for line in err.splitlines() if line.strip()]
    assert warning.startswith(f"callscope: warning: skipped 2 of {len(lines) + 2} lines of {broken}")


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv, expected in [
        ([], "no command given"),
        (["frobnicate"], "invalid choice"),
        (["tree"], "give either FILE or --jaeger URL"),
        (["tree", "x.jsonl", "--jaeger", "http://127.0.0.1:9"], "give either FILE or --jaeger URL"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--trace", "a" * 32, "--service", "s"], "not both"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--limit", "3"], "--limit and --since go with --service NAME"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--service", "s", "--limit", "0"], "not a whole number above 0"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--service", "s", "--limit", "x"], "not a whole number above 0"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--service", "s", "--since", "15"], "not an age"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--service", "s", "--since", "0m"], "not an age"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--service", " "], "--service needs a name"),
        (["tree", "x.jsonl", "--service", "s"], "--service goes with --jaeger URL"),
        (["tree", "x.jsonl", "--since", "1h"], "--since goes with --jaeger URL"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--trace", "abc"], "not a 32-digit hex trace id"),
        (["tree", "--jaeger", "localhost:16686", "--trace", "a" * 32], "is not an http(s) URL"),
        (["tree", "x.jsonl", "--trace", "xyz!"], "is not a hex trace id"),
        (["tree", "x.jsonl", "--trace", "abc", "--limit", "2"], "give --trace ID or --limit N, not both"),
        (["tree", "x.jsonl", "--limit", "0"], "'0' is not a whole number above 0"),
        (["tree", "x.jsonl", "--depth", "two"], "'two' is not a whole number above 0"),
        (["tree", "--jaeger", "http://127.0.0.1:9", "--trace", "a" * 32, "--limit", "2"], "--limit and --since go with --service NAME"),
    ]:
        assert main(argv) == Exit.USAGE, argv
        assert expected in _one_error_line(capsys.readouterr().err), argv


def test_traceback_flag_reraises_a_bug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from callscope._tools import cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli.SpansFile, "open", broken)
    with pytest.raises(RuntimeError):
        main(["--traceback", "tree", str(tmp_path / "x.jsonl")])
    with pytest.raises(RuntimeError):
        main(["tree", str(tmp_path / "x.jsonl"), "--traceback"])


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_flag_leaves_a_users_mistake_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    missing = str(tmp_path / "missing.jsonl")
    argv = ["--traceback", "tree", missing] if where == "before" else ["tree", missing, "--traceback"]
    assert main(argv) == Exit.BAD_INPUT
    assert "no such file" in _one_error_line(capsys.readouterr().err)


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from callscope._tools import cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.SpansFile, "open", interrupted)
    assert main(["tree", "whatever.jsonl"]) == Exit.INTERRUPTED == 130
    assert "Traceback" not in capsys.readouterr().err


def test_an_unexpected_bug_is_one_line_with_the_way_to_report_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from callscope._tools import cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli.SpansFile, "open", broken)
    assert main(["tree", "whatever.jsonl"]) == Exit.ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert "unexpected RuntimeError: kaboom; rerun with --traceback" in line


def _titles(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("trace ")]


def test_the_missed_summary_is_printed_under_each_trace(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file)]) == Exit.OK
    out = capsys.readouterr().out
    blocks = [block for block in out.split("\n\n") if block.startswith("trace ")]
    assert len(blocks) == 3
    for block, root in zip(blocks, ["answer", "answer-streamed", "answer-strict"], strict=True):
        start = min(at for at in (block.find("\nmissed: "), block.find("\nfailed: ")) if at != -1)
        summary = " ".join(block[start:].split())
        if root == "answer-strict":
            assert "missed: ModelLogger saw 1 of 5 runs; scope: missed answer-strict," in summary
            # A handler that saw every run and raised in one is headed by that, not "missed".
            assert summary.startswith("failed: FlakyLogger saw 5 of 5 runs; failed: raised in on_llm_end of chat fake-chat (RuntimeError)")
        else:
            assert summary.startswith(f"missed: RuntimeLogger saw 12 of 15 runs; dropped: missed rank_sources,")
            for line in ("ToolLogger saw 1 of 15 runs; scope:", "ModelsOnlyLogger saw 2 of 15 runs; filtered:", "FormatAudit saw 1 of 15 runs; subtree:"):
                assert line in summary, line


def test_limit_shows_the_traces_written_last(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file)]) == Exit.OK
    every = _titles(capsys.readouterr().out)
    assert main(["tree", str(demo_file), "--limit", "2"]) == Exit.OK
    assert _titles(capsys.readouterr().out) == every[-2:]
    assert main(["tree", str(demo_file), "--limit", "50"]) == Exit.OK
    assert _titles(capsys.readouterr().out) == every


def test_errors_only_and_depth(demo_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file), "--errors-only"]) == Exit.OK
    out = capsys.readouterr().out
    assert len(_titles(out)) == 1
    rows = [line for line in out.splitlines() if line.startswith(("answer", "└─", "├─"))]
    # The failing step, and the model run where a handler raised (no span of it is ERROR).
    assert [row.split()[0] if row.startswith("answer") else row.split()[1] for row in rows] == ["answer-strict", "chat", "strict_parse"]
    assert "✗ FlakyLogger.on_llm_end raised RuntimeError" in out
    assert main(["tree", str(demo_file), "--depth", "1"]) == Exit.OK
    out = capsys.readouterr().out
    assert "answer (+14 below)" in out and "─ chat" not in out


def test_errors_only_on_a_healthy_file_says_so(demo_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", str(demo_file), "--limit", "2"]) == Exit.OK
    healthy = _titles(capsys.readouterr().out)[0]  # the streamed answer; the strict one fails
    assert main(["tree", str(demo_file), "--trace", healthy, "--errors-only"]) == Exit.OK
    assert capsys.readouterr().out.strip() == f"no failing spans in the 1 trace of {demo_file}"


@pytest.mark.parametrize("width", [40, 60, 80, 160])
def test_the_demo_tree_fits_every_width(
    demo_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["tree", str(demo_file)]) == Exit.OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    for name in ["answer-streamed", "RunnableParallel<topic,facts", "execute_tool lookup", "StrOutputParser", "strict_parse"]:
        assert any(name in line for line in lines), name
    strict_at = next(i for i, line in enumerate(lines) if line.startswith("└─") and "strict_parse" in line)
    assert "ValueError: expected a JSON object" in lines[strict_at + 1]
    tool = next(line for line in lines if "execute_tool lookup" in line)
    # Each trace takes the widest layout it fits: words and a status column, or one-letter marks.
    assert "error" in lines[strict_at].split() or "✗ strict_parse" in lines[strict_at]
    # Columns: RuntimeLogger, ToolLogger, ModelsOnlyLogger (ignore_chain: tools still reach it),
    # ModelLogger, FormatAudit.
    if width >= 160:
        assert "error" in lines[strict_at].split()
        assert tool.split()[-5:] == ["inherited", "local", "inherited", "scope", "subtree"]
    else:
        assert tool.split()[-5:] == ["I", "L", "I", "S", "T"]
        assert "1 RuntimeLogger" in out and "local (L)" in out
    if width <= 60:
        assert "✗ strict_parse" in lines[strict_at]


def test_a_file_without_spans_says_so_for_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"resourceSpans": []}\n')
    assert main(["tree", str(empty), "--trace", "abc"]) == Exit.BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert f"{empty} holds no spans, so no trace abc; export some first" in line and "0 traces" not in line


def test_a_file_of_malformed_spans_says_how_many_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    spans = [{"traceId": "not-an-id", "spanId": "b7ad6b7169203331", "name": "x"}] * 3
    bad.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}) + "\n")
    assert main(["tree", str(bad)]) == Exit.BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad} holds no usable spans: skipped 3 malformed spans" in line
    assert 'line 1: a span with traceId "not-an-id" (not a 16-byte hex or base64 id)' in line


@pytest.mark.integration
def test_standard_input_with_a_byte_order_mark(demo_file: Path) -> None:
    """`-` reads standard input, and a UTF-8 BOM (PowerShell, Notepad) is accepted."""
    import os
    import subprocess
    import sys

    data = b"\xef\xbb\xbf" + demo_file.read_bytes().replace(b"\n", b"\r\n")
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "callscope", "tree", "-", "--limit", "1"], input=data, capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert len(_titles(out)) == 1 and "answer-strict" in out
    assert done.stderr == b""
    bom_file = demo_file.with_name("bom.jsonl")
    bom_file.write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "callscope", "tree", str(bom_file)], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0 and len(_titles(done.stdout.decode())) == 3 and done.stderr == b""


# --- Jaeger ------------------------------------------------------------------------------------


class _JaegerStub(http.server.BaseHTTPRequestHandler):
    """Answers like Jaeger v2's query service: the recorded trace, its 404 for any other id."""

    routes: dict[str, tuple[int, bytes]] = {}
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        status, body = self.routes.get(self.path.partition("?")[0], (404, JAEGER_NOT_FOUND))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class JaegerStub:
    url: str
    routes: dict[str, tuple[int, bytes]]  # path (without query) -> status, body
    requests: list[str]  # every path asked for, with its query


@pytest.fixture
def jaeger_stub() -> Iterator[JaegerStub]:
    routes = {
        f"/api/v3/traces/{JAEGER_TRACE_ID}": (200, JAEGER_RESPONSE.read_bytes()),
        # A search answers in the same envelope as one trace.
        "/api/v3/traces": (200, JAEGER_RESPONSE.read_bytes()),
        "/api/v3/services": (200, JAEGER_SERVICES),
    }
    requests: list[str] = []
    handler = type("Stub", (_JaegerStub,), {"routes": routes, "requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield JaegerStub(f"http://127.0.0.1:{server.server_address[1]}", routes, requests)
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_tree_from_a_jaeger_v3_response(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    url = jaeger_stub.url
    assert main(["tree", "--jaeger", url + "/", "--trace", JAEGER_TRACE_ID]) == Exit.OK
    out, err = capsys.readouterr()
    assert f"trace {JAEGER_TRACE_ID}  callscope-demo · 15 spans" in out
    assert any(line.startswith("answer ") for line in out.splitlines())
    assert err == ""


def test_services_are_listed_from_jaeger(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    url, routes = jaeger_stub.url, jaeger_stub.routes
    assert main(["tree", "--jaeger", url]) == Exit.OK
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"services in Jaeger at {url}:",
        "  callscope-demo",
        f"show one: callscope tree --jaeger {url} --service callscope-demo",
    ]
    routes["/api/v3/services"] = (200, b'{"services":[]}')
    assert main(["tree", "--jaeger", url]) == Exit.BAD_INPUT
    assert f"Jaeger at {url} holds no traces yet" in _one_error_line(capsys.readouterr().err)


def test_service_search_asks_for_a_window_and_more_traces_than_shown(
    jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timedelta
    from urllib.parse import parse_qs, urlsplit

    url = jaeger_stub.url
    assert main(["tree", "--jaeger", url, "--service", "callscope-demo", "--since", "15m", "--limit", "2"]) == Exit.OK
    assert f"trace {JAEGER_TRACE_ID}  callscope-demo · 15 spans" in capsys.readouterr().out
    [search] = [path for path in jaeger_stub.requests if path.startswith("/api/v3/traces?")]
    query = {key: value for key, [value] in parse_qs(urlsplit(search).query).items()}
    assert query["query.service_name"] == "callscope-demo"
    # RFC 3339 in UTC, as Jaeger parses it (Go's time.RFC3339Nano needs the zone).
    assert query["query.start_time_min"].endswith("Z") and query["query.start_time_max"].endswith("Z")
    window = datetime.fromisoformat(query["query.start_time_max"]) - datetime.fromisoformat(query["query.start_time_min"])
    assert window == timedelta(minutes=15)
    assert int(query["query.num_traces"]) >= 50  # deeper than --limit: see Jaeger.search


def test_an_empty_search_names_the_unknown_service_or_the_empty_window(
    jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]
) -> None:
    url, routes = jaeger_stub.url, jaeger_stub.routes
    assert main(["tree", "--jaeger", url, "--service", "nope"]) == Exit.OK  # the stub finds anything...
    capsys.readouterr()
    del routes["/api/v3/traces"]  # ...now it finds nothing, with Jaeger's own 404
    assert main(["tree", "--jaeger", url, "--service", "nope"]) == Exit.BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == (
        f"callscope: error: Jaeger at {url} has no service 'nope' (it has: callscope-demo); pass one of those"
    )
    assert main(["tree", "--jaeger", url, "--service", "callscope-demo", "--since", "2h"]) == Exit.BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == (
        f"callscope: error: no traces of 'callscope-demo' started in the last 2h in Jaeger at {url}; "
        "widen the window with --since, e.g. --since 24h"
    )


def _tag_searches(requests: list[str]) -> list[dict[str, str]]:
    from urllib.parse import parse_qs, urlsplit

    return [{key: value for key, [value] in parse_qs(urlsplit(path).query).items()} for path in requests if path.startswith("/api/traces?")]


#: The tags each filter has Jaeger search: one search per tag.
FILTER_TAGS = [
    (["--errors"], [{"callscope.error": "true"}]),
    (["--handler-failed"], [{"callscope.handler.failed": "true"}]),
    (["--handler-failed", "RequestLogger#2"], [{"callscope.handler": "RequestLogger#2"}]),
    (["--config-dropped"], [{"callscope.config.dropped": "true"}]),
    (["--missed-by", "RuntimeLogger"], [{"callscope.missed_by.RuntimeLogger": "true"}]),
    (
        ["--config-dropped", "--missed-by", "RuntimeLogger", "--handler-failed"],
        [{"callscope.handler.failed": "true"}, {"callscope.config.dropped": "true"}, {"callscope.missed_by.RuntimeLogger": "true"}],
    ),
]


@pytest.mark.parametrize(("flags", "tags"), FILTER_TAGS)
def test_a_filter_is_jaegers_tag_search_then_each_trace_found_is_read_whole(
    jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str], flags: list[str], tags: list[dict[str, str]]
) -> None:
    from datetime import timedelta

    url, routes = jaeger_stub.url, jaeger_stub.routes
    found = {"traceID": JAEGER_TRACE_ID, "spans": [{"startTime": 1796045244674175}]}
    routes["/api/traces"] = (200, json.dumps({"data": [found], "errors": None}).encode())
    argv = ["tree", "--jaeger", url, "--service", "callscope-demo", "--since", "15m", "--limit", "2", *flags]
    assert main(argv) == Exit.OK
    assert f"trace {JAEGER_TRACE_ID}  callscope-demo · 15 spans" in capsys.readouterr().out
    searches = _tag_searches(jaeger_stub.requests)
    assert [json.loads(search["tags"]) for search in searches] == tags
    for search in searches:
        assert search["service"] == "callscope-demo"
        # Microseconds since the epoch, as the UI's API takes them; as deep as the unfiltered search.
        assert timedelta(microseconds=int(search["end"]) - int(search["start"])) == timedelta(minutes=15)
        assert int(search["limit"]) >= 50
    # The trace is read as without a filter, from /api/v3, and /api/v3's own search is not used.
    assert [path for path in jaeger_stub.requests if path.startswith("/api/v3/traces")] == [f"/api/v3/traces/{JAEGER_TRACE_ID}"]


def test_a_filter_reads_only_the_newest_traces_found_by_their_full_ids(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    # The stub answers every search alike: filters combined are tested on a real Jaeger
    # (tests/integration/test_jaeger_filters.py).
    url, routes = jaeger_stub.url, jaeger_stub.routes
    # Jaeger's own trace ids drop a zero high half; /api/v3 is asked with the full 32 digits.
    older, newer, short = "1" * 32, "2" * 32, "00000000000000003333333333333333"
    found = [
        {"traceID": older, "spans": [{"startTime": 20}, {"startTime": 10}]},
        {"traceID": "3333333333333333", "spans": [{"startTime": 30}]},
        {"traceID": newer, "spans": [{"startTime": 25}]},
    ]
    routes["/api/traces"] = (200, json.dumps({"data": found, "errors": None}).encode())
    assert main(["tree", "--jaeger", url, "--service", "callscope-demo", "--errors", "--limit", "2"]) == Exit.BAD_INPUT
    fetched = [path.removeprefix("/api/v3/traces/") for path in jaeger_stub.requests if path.startswith("/api/v3/traces/")]
    assert fetched == [short, newer]  # newest start first, at most --limit, and no more reads
    # Neither is stored any more (the stub's 404): gone since the search, like finding none.
    assert "no traces of 'callscope-demo' with callscope.error=true" in _one_error_line(capsys.readouterr().err)


def test_a_filtered_search_that_finds_nothing_says_what_it_searched_and_how_to_widen_it(
    jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]
) -> None:
    url, routes = jaeger_stub.url, jaeger_stub.routes
    # What Jaeger v2.13.0 answers a search that matches nothing, unknown service included.
    routes["/api/traces"] = (200, b'{"data":[],"total":0,"limit":0,"offset":0,"errors":null}')
    argv = ["tree", "--jaeger", url, "--service", "callscope-demo", "--since", "2h", "--config-dropped", "--missed-by", "Audit"]
    assert main(argv) == Exit.BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == (
        f"callscope: error: no traces of 'callscope-demo' with callscope.config.dropped=true and "
        f"callscope.missed_by.Audit=true started in the last 2h in Jaeger at {url}; widen the window with --since, e.g. --since 24h"
    )
    assert main(["tree", "--jaeger", url, "--service", "nope", "--errors"]) == Exit.BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == (
        f"callscope: error: Jaeger at {url} has no service 'nope' (it has: callscope-demo); pass one of those"
    )


def test_a_filtered_search_jaeger_refuses_names_jaegers_reason(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    url, routes = jaeger_stub.url, jaeger_stub.routes
    # Jaeger v2.13.0's answer to a search deeper than its in-memory store's max_traces.
    routes["/api/traces"] = (
        500,
        b'{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":500,"msg":"search depth must be greater than 0 and less than max traces"}]}\n',
    )
    assert main(["tree", "--jaeger", url, "--service", "callscope-demo", "--errors"]) == Exit.UNAVAILABLE
    line = _one_error_line(capsys.readouterr().err)
    assert f"Jaeger at {url} answered HTTP 500" in line and "(search depth must be greater than 0 and less than max traces)" in line
    routes["/api/traces"] = (200, b'{"result": {"resourceSpans": []}}')  # not the UI API's shape
    assert main(["tree", "--jaeger", url, "--service", "callscope-demo", "--errors"]) == Exit.UNAVAILABLE
    assert f"{url}/api/traces did not answer like Jaeger v2's API" in _one_error_line(capsys.readouterr().err)


def test_trace_filters_need_a_service_and_a_label(capsys: pytest.CaptureFixture[str]) -> None:
    jaeger = ["tree", "--jaeger", "http://127.0.0.1:9"]
    for argv, expected in [
        ([*jaeger, "--errors"], "--errors searches one service's traces in Jaeger; add --jaeger URL --service NAME"),
        ([*jaeger, "--trace", "a" * 32, "--handler-failed"], "--handler-failed searches one service's traces in Jaeger"),
        (["tree", "x.jsonl", "--config-dropped"], "--config-dropped searches one service's traces in Jaeger"),
        (["tree", "x.jsonl", "--missed-by", "Audit"], "--missed-by searches one service's traces in Jaeger"),
        ([*jaeger, "--service", "s", "--missed-by", " "], "--missed-by needs a handler label, e.g. --missed-by RequestLogger"),
        ([*jaeger, "--service", "s", "--handler-failed", ""], "--handler-failed needs a handler label"),
        ([*jaeger, "--service", "s", "--missed-by"], "argument --missed-by: expected one argument"),
    ]:
        assert main(argv) == Exit.USAGE, argv
        assert expected in _one_error_line(capsys.readouterr().err), argv


def test_jaeger_unknown_trace_is_named(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    url = jaeger_stub.url
    assert main(["tree", "--jaeger", url, "--trace", "1" * 32]) == Exit.BAD_INPUT
    assert f"trace {'1' * 32} not found in Jaeger at {url}" in _one_error_line(capsys.readouterr().err)


def test_jaeger_answering_something_else(jaeger_stub: JaegerStub, capsys: pytest.CaptureFixture[str]) -> None:
    url, routes = jaeger_stub.url, jaeger_stub.routes
    routes[f"/api/v3/traces/{'2' * 32}"] = (200, b"<html>not jaeger</html>")
    routes[f"/api/v3/traces/{'3' * 32}"] = (500, b"{}")
    routes[f"/api/v3/traces/{'4' * 32}"] = (200, b'{"data": []}')
    assert main(["tree", "--jaeger", url, "--trace", "2" * 32]) == Exit.UNAVAILABLE
    assert "did not return JSON" in _one_error_line(capsys.readouterr().err)
    assert main(["tree", "--jaeger", url, "--trace", "3" * 32]) == Exit.UNAVAILABLE
    assert "answered HTTP 500" in _one_error_line(capsys.readouterr().err)
    assert main(["tree", "--jaeger", url, "--trace", "4" * 32]) == Exit.UNAVAILABLE
    assert "did not answer like Jaeger v2's API" in _one_error_line(capsys.readouterr().err)


def test_unreachable_jaeger_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again on exit: nothing listens there
    url = f"http://127.0.0.1:{port}"
    for what in (["--trace", "a" * 32], ["--service", "callscope-demo"], []):  # a trace, a search, the services
        assert main(["tree", "--jaeger", url, *what]) == Exit.UNAVAILABLE, what
        line = _one_error_line(capsys.readouterr().err)
        assert f"cannot reach Jaeger at {url}" in line and "docker compose up -d" in line and "deploy/jaeger.sh" in line


def test_jaeger_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from callscope._tools import cli

    monkeypatch.setattr(cli, "JAEGER_TIMEOUT_SECONDS", 0.3)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts into the backlog, never reads or answers
        port = server.getsockname()[1]
        assert main(["tree", "--jaeger", f"http://127.0.0.1:{port}", "--trace", "a" * 32]) == Exit.UNAVAILABLE
    assert "did not answer within 0.3s" in _one_error_line(capsys.readouterr().err)


def _serve(status: int, body: bytes) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    """A server answering every GET with ``status`` and ``body`` (HTML for an error without a body)."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not body:
                self.send_error(status)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def answering() -> Iterator[object]:
    started = []

    def start(status: int, body: bytes = b"") -> str:
        server, thread = _serve(status, body)
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def plain_http_server(answering) -> str:
    """Any HTTP server that is not Jaeger (say, the wrong port): HTML 404 for every path."""
    return answering(404)


def test_a_jaeger_answer_without_spans_says_so(answering, capsys: pytest.CaptureFixture[str]) -> None:
    url = answering(200, b'{"result": {"resourceSpans": []}}')
    assert main(["tree", "--jaeger", url, "--trace", "a" * 32]) == Exit.BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert f"Jaeger at {url} returned no spans of trace {'a' * 32}; retry in a few seconds" in line
    assert "0 traces" not in line


def test_a_404_from_something_that_is_not_jaeger_says_so(plain_http_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", "--jaeger", plain_http_server, "--trace", "a" * 32]) == Exit.UNAVAILABLE
    line = _one_error_line(capsys.readouterr().err)
    assert f"{plain_http_server} is not Jaeger v2's query API" in line and "not found" not in line


def test_the_jaeger_time_limit_holds_for_the_whole_response(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import time

    from callscope._tools import cli

    monkeypatch.setattr(cli, "JAEGER_TIMEOUT_SECONDS", 0.5)
    stop = threading.Event()

    def trickle(server: socket.socket) -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.05):  # a byte every 50 ms: every read succeeds well within 0.5 s
                try:
                    connection.sendall(b" ")
                except OSError:
                    return

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        thread = threading.Thread(target=trickle, args=(server,), daemon=True)
        thread.start()
        started = time.monotonic()
        assert main(["tree", "--jaeger", f"http://127.0.0.1:{server.getsockname()[1]}", "--trace", "a" * 32]) == Exit.UNAVAILABLE
        elapsed = time.monotonic() - started
        stop.set()
        thread.join(5)
    assert "did not answer within 0.5s" in _one_error_line(capsys.readouterr().err)
    assert elapsed < 5  # the trickle would take 50 s to finish


def test_reading_traces_loads_neither_langchain_nor_the_sdk(demo_file: Path) -> None:
    # The tools never import the bridge: callscope tree starts printing a large file at once.
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from callscope.cli import main\n"
        f"main(['tree', {str(demo_file)!r}])\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules if m.startswith(('langchain', 'opentelemetry', 'google'))})\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "RunnableSequence" in done.stdout or "answer" in done.stdout
    assert "LOADED []" in done.stderr, done.stderr


def test_a_reader_that_stops_early_ends_the_tree_quietly(demo_file: Path, tmp_path: Path) -> None:
    """`callscope tree FILE | head -1`: no BrokenPipeError, no traceback, the shell's SIGPIPE status."""
    import subprocess
    import sys

    big = tmp_path / "big.jsonl"
    big.write_bytes(demo_file.read_bytes() * 40)  # far more than a pipe holds
    done = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -m callscope tree "{big}" | head -1'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("trace "), done.stdout
    assert done.stderr == "", done.stderr
    reader_gone = subprocess.Popen([sys.executable, "-m", "callscope", "tree", str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader_gone.stdout.readline().startswith(b"trace ")
    reader_gone.stdout.close()
    _, stderr = reader_gone.communicate(timeout=120)
    assert reader_gone.returncode == Exit.BROKEN_PIPE == 141
    assert stderr == b""


def test_other_libraries_log_lines_are_named_after_them_not_callscope() -> None:
    import logging

    from callscope._tools.cli import _LogLineFormatter

    formatter = _LogLineFormatter()

    def line(name: str, message: str) -> str:
        return formatter.format(logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, None))

    assert line("opentelemetry.sdk.metrics._internal.export", "Exception while exporting metrics") == (
        "opentelemetry.sdk.metrics._internal.export: ERROR: Exception while exporting metrics"
    )
    assert line("callscope", "callscope: 3 span(s) were not exported") == "callscope: ERROR: 3 span(s) were not exported"


@pytest.mark.parametrize("width", [160, 60, 40])
def test_the_metrics_summary_fits_any_width_and_names_models_as_the_tree_does(
    width: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["demo", "--output", str(tmp_path / "demo.jsonl")]) == Exit.OK
    out = capsys.readouterr().out
    section = out[out.index("GenAI client metrics per model") :]
    assert "…" not in section  # no header or value cut short
    assert not re.search(r"\d\s*\n\s*m?s\b", section)  # no number wrapped away from its unit
    assert all(len(line.rstrip()) <= width for line in section.splitlines())
    spans = {span["name"] for span in json_spans(tmp_path / "demo.jsonl")}
    assert "chat" in spans and "chat fake-chat" in spans  # the worker thread's unnamed model, and the named one
    assert re.search(r"^chat\b(?! fake-chat)", section, re.M)  # the unnamed one as its span is named
    assert "fakelistchatmodel" in section  # its provider, beside it, not in its name
    assert not re.search(r"^chat fakelistchatmodel", section, re.M)
