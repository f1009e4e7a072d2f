"""`opentelemetry-instrument python app.py` traces an unmodified LangChain app through the
`callscope` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = textwrap.dedent(
    """
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda
    from opentelemetry import trace

    def step(text):
        with trace.get_tracer("app").start_as_current_span("app.inside_step"):
            return text

    chain = ChatPromptTemplate.from_template("hi {x}") | FakeListChatModel(responses=["ok"]) | RunnableLambda(step)
    print("RESULT", chain.invoke({"x": "there"}).content)
    """
)


def test_opentelemetry_instrument_traces_an_unmodified_app(tmp_path: Path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code-app",
    }
    done = subprocess.run([str(instrument), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RESULT ok" in done.stdout
    spans = _console_spans(done.stdout)
    by_name = {s["name"]: s for s in spans}
    assert {"RunnableSequence", "ChatPromptTemplate", "chat", "step", "app.inside_step"} <= set(by_name)
    sequence_id = by_name["RunnableSequence"]["context"]["span_id"]
    assert by_name["chat"]["parent_id"] == sequence_id
    assert by_name["app.inside_step"]["parent_id"] == by_name["step"]["context"]["span_id"]
    assert {s["context"]["trace_id"] for s in spans} == {by_name["RunnableSequence"]["context"]["trace_id"]}
    assert by_name["chat"]["resource"]["attributes"]["service.name"] == "zero-code-app"
    assert "Error in" not in done.stderr and "Failed to detach" not in done.stderr


def test_opentelemetry_instrument_writes_the_trace_file_the_environment_names(tmp_path: Path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    trace_file = tmp_path / "zero-code.jsonl"
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "CALLSCOPE_TRACE_FILE": str(trace_file),
    }
    done = subprocess.run([str(instrument), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tree = subprocess.run([sys.executable, "-m", "callscope", "tree", str(trace_file)], capture_output=True, text=True, timeout=60)
    assert tree.returncode == 0, tree.stderr
    for name in ("RunnableSequence", "ChatPromptTemplate", "chat", "step", "app.inside_step"):
        assert name in tree.stdout


def _console_spans(stdout: str) -> list[dict]:
    """The console exporter prints one pretty-printed JSON object per span."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := stdout.find("{", index)) != -1:
        try:
            value, index = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(value, dict) and "context" in value:
            spans.append(value)
    return spans


def test_runs_still_open_at_process_exit_are_exported(tmp_path: Path):
    app = tmp_path / "exit_app.py"
    app.write_text(
        textwrap.dedent(
            """
            from langchain_core.callbacks import CallbackManager
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
            import callscope

            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            callscope.instrument(provider)
            CallbackManager.configure().on_chain_start(None, {}, name="never_ends")
            """
        )
    )
    done = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (span,) = [s for s in _console_spans(done.stdout) if s["name"] == "never_ends"]
    assert span["attributes"]["callscope.run.evicted"] is True
    assert "process exited" in span["status"]["description"]


def test_zero_code_with_nothing_listening_exits_at_once_and_says_what_was_lost(tmp_path: Path):
    """The distro's own BatchSpanProcessor and metric reader would retry a refused endpoint until
    their 10 s timeout at exit (8 s measured), saying nothing of the count."""
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = tmp_path / "app.py"
    app.write_text(APP)
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    done = subprocess.run([str(instrument), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "RESULT ok" in done.stdout
    assert "callscope: 5 span(s) were not exported: not sent because the collector refused connections" in done.stderr
    assert "callscope: the last metrics were not sent because the collector refused connections" in done.stderr
    assert "Transient error" not in done.stderr and "Exporter already shutdown" not in done.stderr, done.stderr
    assert elapsed < 5, f"{elapsed:.1f}s: exit waited for the exporter's retries"
