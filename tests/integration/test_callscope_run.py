"""`callscope run -- COMMAND` on real commands: a script, a failing script, `python -m`, a pytest
run with xdist workers, a uvicorn server stopped with SIGTERM, and a script terminated mid-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHAIN = """
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate


class CostTracker(BaseCallbackHandler):
    def on_llm_end(self, *args, **kwargs):
        pass


model = FakeListChatModel(responses=["hello there"], callbacks=[CostTracker()])
chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
"""


def callscope_run(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callscope", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def spans_in(path: Path) -> list[dict]:
    spans = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans.extend(scope["spans"])
    return spans


def test_a_script_keeps_its_output_and_status_and_its_tree_goes_to_stderr(tmp_path: Path):
    (tmp_path / "app.py").write_text(CHAIN + textwrap.dedent(
        """
        import sys
        print(chain.invoke({"q": "hi"}))
        print("done", file=sys.stderr)
        sys.exit(3)
        """
    ))
    done = callscope_run("--", sys.executable, "app.py", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stdout == "hello there\n"  # the command's own stdout, untouched
    trace_file = tmp_path / "callscope-run.jsonl"
    assert f"callscope run: spans go to {trace_file}" in done.stderr
    assert "done\n" in done.stderr
    tree = done.stderr[done.stderr.index("trace ") :]
    assert "app · 4 spans" in tree
    for name in ("RunnableSequence", "ChatPromptTemplate", "chat", "StrOutputParser"):
        assert name in tree
    assert "CostTracker saw 1 of 4 runs" in tree
    assert f"again: callscope tree {trace_file} --limit 1" in done.stderr
    assert {s["name"] for s in spans_in(trace_file)} == {"RunnableSequence", "ChatPromptTemplate", "chat", "StrOutputParser"}


def test_a_failing_script_shows_its_error_span_and_exits_as_it_did(tmp_path: Path):
    (tmp_path / "broken.py").write_text(textwrap.dedent(
        """
        from langchain_core.runnables import RunnableLambda

        def explode(x):
            raise ValueError("no luck")

        (RunnableLambda(lambda x: x) | RunnableLambda(explode)).invoke(1)
        """
    ))
    (tmp_path / "out").mkdir()
    done = callscope_run("--file", "out/spans.jsonl", "--", sys.executable, "broken.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "ValueError: no luck" in done.stderr  # Python's own traceback, as without callscope
    assert "explode" in done.stderr and "error" in done.stderr
    assert any(s["status"].get("code") == 2 for s in spans_in(tmp_path / "out" / "spans.jsonl"))


def test_python_dash_m_and_an_existing_file_keeps_its_earlier_traces(tmp_path: Path):
    package = tmp_path / "job"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(CHAIN + "\nprint(chain.invoke({'q': 'x'}))\n")
    first = callscope_run("--", sys.executable, "-m", "job", cwd=tmp_path)
    second = callscope_run("--no-tree", "--", sys.executable, "-m", "job", cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    assert "job · 4 spans" in first.stderr
    assert "trace " not in second.stderr  # --no-tree: the file only
    assert "4 spans in 1 trace" in second.stderr  # this run's, not the file's 8
    spans = spans_in(tmp_path / "callscope-run.jsonl")
    assert len(spans) == 8 and len({s["traceId"] for s in spans}) == 2


def test_a_pytest_run_with_xdist_workers_is_traced_in_every_worker(tmp_path: Path):
    (tmp_path / "test_chains.py").write_text(CHAIN + textwrap.dedent(
        """
        import pytest

        @pytest.mark.parametrize("q", ["a", "b", "c", "d"])
        def test_chain(q):
            assert chain.invoke({"q": q}) == "hello there"
        """
    ))
    done = callscope_run("--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "test_chains.py", cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert "16 spans in 4 traces" in done.stderr
    assert done.stderr.count("CostTracker saw 1 of 4 runs") == 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_uvicorn_server_shows_each_trace_live_and_stops_with_sigterm(tmp_path: Path):
    pytest.importorskip("uvicorn", reason="install uvicorn (the test extra has it) to run callscope run against a server")
    (tmp_path / "service.py").write_text(CHAIN + textwrap.dedent(
        """
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            answer = await chain.ainvoke({"q": scope["path"]})
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": answer.encode()})
        """
    ))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "callscope", "run", "--live", "--", sys.executable, "-m", "uvicorn", "service:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(iter(server.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        answer = None
        for _ in range(200):
            try:
                answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/ask", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert answer == "hello there"
        deadline = time.monotonic() + 20
        while not any("uvicorn · 4 spans" in line for line in stderr_lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("uvicorn · 4 spans" in line for line in stderr_lines), "".join(stderr_lines)  # shown while serving
    finally:
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=60)
        reader.join(timeout=10)
    assert returncode in (0, 128 + signal.SIGTERM)  # uvicorn's own status after its graceful stop
    assert "1 trace" in "".join(stderr_lines)


def test_a_script_terminated_mid_run_keeps_its_finished_and_open_runs(tmp_path: Path):
    (tmp_path / "slow.py").write_text(CHAIN + textwrap.dedent(
        """
        import time
        from langchain_core.runnables import RunnableLambda
        chain.invoke({"q": "first"})
        print("ready", flush=True)
        RunnableLambda(lambda x: time.sleep(60), name="waiting").invoke(1)
        """
    ))
    runner = subprocess.Popen(
        [sys.executable, "-m", "callscope", "run", "--", sys.executable, "slow.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert runner.stdout.readline() == "ready\n"
    time.sleep(0.5)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM  # died by the signal, as it would untraced
    assert "terminated (SIGTERM) before this run ended" in stderr
    names = {s["name"] for s in spans_in(tmp_path / "callscope-run.jsonl")}
    assert {"RunnableSequence", "chat", "waiting"} <= names


def test_an_application_that_sets_its_own_provider_is_told_once(tmp_path: Path):
    (tmp_path / "own.py").write_text(CHAIN + textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
        trace.set_tracer_provider(TracerProvider())
        print(chain.invoke({"q": "x"}))
        """
    ))
    done = callscope_run("--", sys.executable, "own.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the application set its own OpenTelemetry tracer provider") == 1
    assert "own · 4 spans" in done.stderr


def test_a_command_that_does_not_exist(tmp_path: Path):
    done = callscope_run("--", "no-such-command-here", cwd=tmp_path)
    assert done.returncode == 127
    assert "callscope: error: cannot run no-such-command-here" in done.stderr


def test_a_python_that_cannot_import_callscope_says_so_and_runs_untraced(tmp_path: Path):
    shadow = tmp_path / "shadow" / "callscope"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed in this Python')\n")
    (tmp_path / "app.py").write_text("print('ran')\n")
    # Appended to the command's PYTHONPATH: after callscope run's bootstrap, before site-packages.
    command = f'PYTHONPATH="$PYTHONPATH:{tmp_path / "shadow"}" exec "{sys.executable}" app.py'
    done = callscope_run("--", "sh", "-c", command, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "ran\n"
    assert "cannot import callscope (not installed in this Python), so this process runs untraced" in done.stderr
    assert "wrote no spans" in done.stderr


def test_the_readme_example_prints_what_the_readme_shows(tmp_path: Path):
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## See your own app: `callscope run`") :]
    app = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python\n"))]
    (tmp_path / "app.py").write_text(app)
    assert "    callscope run -- python app.py\n" in section
    shown = section[section.index("```\ncallscope run:") + 4 :]
    expected = shown[: shown.index("\n```")]
    bin_dir = str(Path(sys.executable).parent)
    done = callscope_run("--", "python", "app.py", cwd=tmp_path, env={"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "COLUMNS": "160"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n"

    def normal(text: str) -> list[str]:
        text = text.replace(str(tmp_path), "/home/you/app")
        text = re.sub(r"trace [0-9a-f]{32}", "trace <id>", text)
        return [re.sub(r"[0-9.]+ m?s", "<duration>", line).rstrip() for line in text.strip().splitlines()]

    assert normal(done.stderr)[: len(normal(expected))] == normal(expected)


def test_with_an_otlp_endpoint_spans_go_to_the_file_and_the_collector(tmp_path: Path, rotel_receiver) -> None:
    (tmp_path / "app.py").write_text(CHAIN + "\nprint(chain.invoke({'q': 'hi'}))\n")
    done = callscope_run(
        "--no-tree", "--", sys.executable, "app.py", cwd=tmp_path,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": rotel_receiver.http_base, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
             "OTEL_METRICS_EXPORTER": "none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    in_file = {s["spanId"] for s in spans_in(tmp_path / "callscope-run.jsonl")}
    received = rotel_receiver.wait_for(4)
    assert len(in_file) == 4 and len(received) == 4
    assert {row["name"] for row in received} == {"RunnableSequence", "ChatPromptTemplate", "chat", "StrOutputParser"}


def test_without_an_otlp_endpoint_nothing_is_sent_anywhere(tmp_path: Path) -> None:
    """No endpoint variable: the trace file only; the child's environment says so too."""
    (tmp_path / "probe.py").write_text(
        CHAIN
        + textwrap.dedent(
            """
            import os
            from opentelemetry import trace
            processors = trace.get_tracer_provider()._active_span_processor._span_processors
            print(sorted(type(p.span_exporter).__name__ for p in processors))
            print(chain.invoke({'q': 'hi'}))
            """
        )
    )
    env = {key: "" for key in os.environ if key.startswith("OTEL_EXPORTER_OTLP")}
    done = callscope_run("--no-tree", "--", sys.executable, "probe.py", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "['OTLPJsonLinesExporter']"


def test_ctrl_c_reaches_the_command_and_its_spans_are_kept(tmp_path: Path) -> None:
    """Ctrl-C sends SIGINT to the terminal's whole process group: the command stops as it would
    without callscope (KeyboardInterrupt, exit status 130), and callscope run shows what it wrote."""
    (tmp_path / "waits.py").write_text(CHAIN + textwrap.dedent(
        """
        import time
        from langchain_core.runnables import RunnableLambda
        chain.invoke({"q": "first"})
        print("ready", flush=True)
        RunnableLambda(lambda x: time.sleep(60), name="waiting").invoke(1)
        """
    ))
    runner = subprocess.Popen(
        [sys.executable, "-m", "callscope", "run", "--depth", "1", "--", sys.executable, "waits.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"}, start_new_session=True,
    )  # fmt: skip
    assert runner.stdout.readline() == "ready\n"
    time.sleep(0.5)
    os.killpg(runner.pid, signal.SIGINT)  # as the terminal does on Ctrl-C
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    assert "KeyboardInterrupt" in stderr  # the command's own traceback, as without callscope
    assert "RunnableSequence (+3 below)" in stderr  # --depth 1, as in callscope tree
    names = {s["name"] for s in spans_in(tmp_path / "callscope-run.jsonl")}
    assert {"RunnableSequence", "chat", "waiting"} <= names
