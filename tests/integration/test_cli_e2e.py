"""The installed ``callscope`` command and ``python -m callscope``, as separate processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Receiver

pytestmark = pytest.mark.integration


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NO_COLOR", "FORCE_COLOR", "COLUMNS"))}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout, check=False)


def _console_script() -> str:
    script = Path(sys.executable).with_name("callscope")
    if not script.exists():
        found = shutil.which("callscope")
        if found is None:
            pytest.fail("the `callscope` console script is not installed; run `pip install -e '.[test]'`")
        return found
    return str(script)


def test_console_script_demo_writes_the_default_file_in_cwd_and_prints_plain_text(tmp_path: Path) -> None:
    done = _run([_console_script(), "demo"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spans_file = tmp_path / "callscope-traces.jsonl"
    assert spans_file.exists()
    assert "wrote 35 spans in 3 traces to callscope-traces.jsonl" in done.stdout
    assert "\x1b[" not in done.stdout  # a pipe: no colour codes
    assert done.stderr == ""
    documents = [json.loads(line) for line in spans_file.read_text().splitlines()]
    services = {
        attr["value"]["stringValue"]
        for doc in documents
        for rs in doc["resourceSpans"]
        for attr in rs["resource"]["attributes"]
        if attr["key"] == "service.name"
    }
    assert services == {"callscope-demo"}

    again = _run([_console_script(), "tree", "callscope-traces.jsonl"], cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("trace ") >= 3


def test_python_dash_m_reports_a_missing_file_in_one_line(tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "callscope", "tree", "nope.jsonl"], cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "callscope: error: nope.jsonl: no such file; run `callscope demo` to write one, or pass the right path"
    ]
    assert done.stdout == ""


def test_forced_colour_and_no_color(tmp_path: Path) -> None:
    coloured = _run([sys.executable, "-m", "callscope", "demo"], cwd=tmp_path, FORCE_COLOR="1")
    assert coloured.returncode == 0 and "\x1b[" in coloured.stdout
    plain = _run([sys.executable, "-m", "callscope", "demo"], cwd=tmp_path, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == 0
    # NO_COLOR removes colour; bold and dim may stay (they are not colour).
    assert "\x1b[32m" not in plain.stdout and "\x1b[1;32m" not in plain.stdout and "\x1b[36m" not in plain.stdout
    assert "\x1b[32m" in coloured.stdout or "\x1b[1;32m" in coloured.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_demo_exports_over_otlp_when_an_endpoint_is_set(rotel_receiver: Receiver, tmp_path: Path, protocol: str) -> None:
    endpoint = rotel_receiver.grpc_endpoint if protocol == "grpc" else rotel_receiver.http_base
    done = _run(
        [sys.executable, "-m", "callscope", "demo", "--output", "out.jsonl"],
        cwd=tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_HEADERS="x-demo-token=abc",
        OTEL_SERVICE_NAME="renamed-demo",
    )
    assert done.returncode == 0, done.stderr
    assert f"sending the spans over OTLP ({protocol}) to {endpoint}" in done.stdout
    rows = rotel_receiver.wait_for(35)
    assert len(rows) == 35
    assert {row["service"] for row in rows} == {"renamed-demo"}
    from_file = {
        span["spanId"]
        for line in (tmp_path / "out.jsonl").read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    }
    assert {row["span_id"] for row in rows} == from_file  # same spans, same hex ids
    chat = [row for row in rows if row["name"] == "chat fake-chat"]
    assert chat and all("ModelLogger" in row["attributes"].get("callscope.handlers.local", []) for row in chat)
    # The metrics go along, under the same service, and agree with the summary printed.
    metrics = rotel_receiver.wait_for_metrics({"gen_ai.client.operation.duration", "gen_ai.client.token.usage"})
    assert {row["service"] for row in metrics} == {"renamed-demo"}
    # The answering model; the chain the demo runs in a worker thread has a model of its own.
    duration = [
        row
        for row in metrics
        if row["name"] == "gen_ai.client.operation.duration" and row["attributes"].get("gen_ai.request.model") == "fake-chat"
    ][-1]
    assert duration["count"] == len(chat) == 3
    summary = next(line for line in done.stdout.splitlines() if line.startswith("chat fake-chat "))
    assert summary.split()[3:5] == ["3", "0"]  # after the model and its provider


def test_demo_with_a_dead_collector_succeeds_without_waiting_for_the_export_timeout(tmp_path: Path) -> None:
    from tests.integration.conftest import free_port

    started = time.monotonic()
    done = _run(
        [sys.executable, "-m", "callscope", "demo"],
        cwd=tmp_path,
        # Nothing listens there: connections are refused. The exporter timeout is the default
        # 10 s, which exit used to wait in full.
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0
    assert "wrote 35 spans" in done.stdout
    assert "Traceback" not in done.stderr
    # One line, one prefix, every lost span with its cause.
    (report,) = [line for line in done.stderr.splitlines() if "not exported" in line]
    assert report.startswith(
        "callscope: WARNING: 35 span(s) were not exported: 35 not sent because the collector refused connections"
    ), report
    assert "callscope: callscope" not in done.stderr
    assert elapsed < 8, f"demo took {elapsed:.1f}s against a collector that refuses connections"
