"""Real servers for the integration tests, each started on free 127.0.0.1 ports and stopped by
its fixture:

- rotel, an OTLP receiver (a Rust OpenTelemetry collector shipped as a PyPI wheel), for the
  export tests;
- Jaeger v2 and an OpenTelemetry Collector, built from their Go modules by ``deploy/jaeger.sh``
  once (cached outside the repository, ~/.cache/callscope) and started once per session. Where
  no Go toolchain is present and nothing is cached, their tests skip with one loud line.

rotel's binary links ``libpython3.11.so.1.0`` (it embeds Python for trace processors, which is
how the received spans are read back here: ``dump_spans.py`` writes them as JSON lines). When the
dynamic loader cannot find that library, the set-up first points ``LD_LIBRARY_PATH`` at the
running interpreter's library directory if it holds it, then tries Debian's ``libpython3.11``
package, and only then skips, saying why.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LIBPYTHON = "libpython3.11.so.1.0"
PROCESSOR = Path(__file__).with_name("dump_spans.py")
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: Jaeger's own tests allow a minute; here it is ready in about a second.
START_TIMEOUT_SECONDS = 60.0
#: A cold build on two shared cores, with module downloads; a cached one takes a second.
BUILD_TIMEOUT_SECONDS = 45 * 60
METRICS_PROCESSOR = Path(__file__).with_name("dump_metrics.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0, what: str = "rotel") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def _missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    if shutil.which("ldd") is None:
        return []  # cannot tell in advance; starting it will
    found = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=False)
    return [line.split()[0] for line in found.stdout.splitlines() if "not found" in line]


def _rotel_environment() -> tuple[Path, dict[str, str]]:
    """The rotel binary and an environment in which its libraries load, or pytest.skip."""
    try:
        import rotel
    except ImportError:
        pytest.skip("OTLP RECEIVER UNAVAILABLE: rotel is not installed; run `pip install -e '.[test]'`")
    binary = Path(rotel.__file__).parent / "rotel-agent"
    if not binary.exists():
        pytest.skip(f"OTLP RECEIVER UNAVAILABLE: the rotel wheel has no binary at {binary} (platform not supported?)")
    env = dict(os.environ)
    if LIBPYTHON not in _missing_libraries(binary, env):
        return binary, env
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / LIBPYTHON).exists():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
        if LIBPYTHON not in _missing_libraries(binary, env):
            return binary, env
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "libpython3.11"],
            capture_output=True, text=True, env=apt_env, check=False, timeout=300,
        )
        if installed.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=apt_env, check=False, timeout=300)
            installed = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "libpython3.11"],
                capture_output=True, text=True, env=apt_env, check=False, timeout=300,
            )
        if LIBPYTHON not in _missing_libraries(binary, env):
            return binary, env
        pytest.skip(
            f"OTLP RECEIVER UNAVAILABLE: rotel needs {LIBPYTHON}; `apt-get install -y libpython3.11` "
            f"failed: {installed.stderr.strip().splitlines()[-1:] or installed.returncode}"
        )
    pytest.skip(
        f"OTLP RECEIVER UNAVAILABLE: rotel needs {LIBPYTHON}, which is not on this machine; install "
        f"Debian's libpython3.11 (or run on a Python 3.11 built with --enable-shared). Python: {sys.executable}"
    )


@pytest.fixture(scope="session")
def rotel_environment() -> tuple[Path, dict[str, str]]:
    return _rotel_environment()


@dataclass
class Receiver:
    """A running rotel: where to send, and how to read back what it received."""

    grpc_endpoint: str  # for the gRPC exporter: http://127.0.0.1:PORT
    http_base: str  # OTEL_EXPORTER_OTLP_ENDPOINT form for HTTP: http://127.0.0.1:PORT
    dump: Path
    process: subprocess.Popen[bytes]
    metrics_dump: Path

    @property
    def http_traces_endpoint(self) -> str:
        return f"{self.http_base}/v1/traces"

    def received(self) -> list[dict]:
        if not self.dump.exists():
            return []
        return [json.loads(line) for line in self.dump.read_text().splitlines() if line.strip()]

    def received_metrics(self) -> list[dict]:
        """Every histogram point received so far (one row per point per export)."""
        if not self.metrics_dump.exists():
            return []
        return [json.loads(line) for line in self.metrics_dump.read_text().splitlines() if line.strip()]

    def wait_for_metrics(self, names: set[str], timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.received_metrics()
            if names <= {row["name"] for row in rows} or time.monotonic() > deadline:
                assert names <= {row["name"] for row in rows}, f"rotel received metrics {rows}, expected {names}"
                return rows
            time.sleep(0.05)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.received()
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) >= count, f"rotel received {len(rows)} spans, expected {count}: {rows}"
                return rows
            time.sleep(0.05)


@pytest.fixture
def rotel_receiver(rotel_environment: tuple[Path, dict[str, str]], tmp_path: Path) -> Iterator[Receiver]:
    binary, env = rotel_environment
    grpc_port, http_port = free_port(), free_port()
    dump = tmp_path / "received.jsonl"
    metrics_dump = tmp_path / "received-metrics.jsonl"
    log = (tmp_path / "rotel.log").open("wb")
    process = subprocess.Popen(
        [
            str(binary), "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--exporter", "blackhole",
            "--pid-file", str(tmp_path / "rotel.pid"),
            "--otlp-with-trace-processor", str(PROCESSOR),
            "--otlp-with-metrics-processor", str(METRICS_PROCESSOR),
        ],
        env={**env, "CALLSCOPE_SPAN_DUMP": str(dump), "CALLSCOPE_METRIC_DUMP": str(metrics_dump)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for_port(grpc_port, process)
            wait_for_port(http_port, process)
        except RuntimeError as error:
            pytest.skip(f"OTLP RECEIVER UNAVAILABLE: {error}; log: {(tmp_path / 'rotel.log').read_text()[-500:]}")
        yield Receiver(f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", dump, process, metrics_dump)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    return free_port()


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    server.settimeout(0.05)
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()



# --- Jaeger v2 and the OpenTelemetry Collector, built from their Go modules ------------------


def _terminal_line(config: pytest.Config, line: str) -> None:
    """A line on pytest's terminal even while output is captured (a skip reason alone is easy to miss)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line, yellow=True, bold=True)
        return
    # Fixtures run with stdout captured at the file-descriptor level: step outside it.
    with capture.global_and_fixture_disabled():
        reporter.write("\n")  # off the line of progress dots
        reporter.write_line(line, yellow=True, bold=True)


_NO_GO_REPORTED = pytest.StashKey[bool]()


def _go_binary(config: pytest.Config, command: str) -> Path:
    """Build (or find cached) a binary with ``deploy/jaeger.sh COMMAND``; skip, saying so once, without Go."""
    started = time.monotonic()
    process = subprocess.Popen(
        ["bash", str(DEPLOY / "jaeger.sh"), command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    assert process.stderr is not None and process.stdout is not None
    # Reading its output blocks until the script and its go processes end: a hung download must
    # not hang the run, so the whole group is killed after the timeout.
    watchdog = threading.Timer(BUILD_TIMEOUT_SECONDS, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    errors: list[str] = []
    for line in process.stderr:
        errors.append(line.rstrip())
        if line.startswith("deploy/jaeger.sh: buil"):  # a (long) build starts, or ends
            _terminal_line(config, line.rstrip())
    out = process.stdout.read()
    status = process.wait()
    watchdog.cancel()
    if status == 127:  # the script's "no Go toolchain" status
        reason = (
            "JAEGER AND COLLECTOR TESTS SKIPPED: no Go toolchain on PATH to build them; install Go 1.24 or "
            "newer (https://go.dev/dl/) and the tests build them once with deploy/jaeger.sh (minutes, cached)"
        )
        if not config.stash.get(_NO_GO_REPORTED, False):
            config.stash[_NO_GO_REPORTED] = True
            _terminal_line(config, reason)
        pytest.skip(reason)
    if status != 0:
        pytest.fail(
            f"`deploy/jaeger.sh {command}` failed (exit {status}) after {time.monotonic() - started:.0f}s:\n"
            + "\n".join(errors[-30:]),
            pytrace=False,
        )
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def jaeger_binary(pytestconfig: pytest.Config) -> Path:
    return _go_binary(pytestconfig, "build")


@pytest.fixture(scope="session")
def collector_binary(pytestconfig: pytest.Config) -> Path:
    return _go_binary(pytestconfig, "build-collector")


def clean_environment(**extra: str) -> dict[str, str]:
    # Both binaries are collectors: OTEL_* from the test run would configure their own telemetry.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(extra)
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: both shut down cleanly
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_until_healthy(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll the health check extension's ``/status`` until it says StatusOK (about 0.2 s for Jaeger)."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}/status"
    while time.monotonic() - started < START_TIMEOUT_SECONDS:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if b"StatusOK" in response.read():
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while components start
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not healthy within {START_TIMEOUT_SECONDS:g}s; log:\n{log.read_text()[-3000:]}")


@dataclass
class JaegerServer:
    """A running Jaeger v2 (deploy/jaeger.yaml, in-memory storage) on free loopback ports."""

    query_url: str  # http://127.0.0.1:PORT, what `callscope tree --jaeger` takes
    otlp_grpc: str  # http://127.0.0.1:PORT
    otlp_http: str  # http://127.0.0.1:PORT (the SDK appends /v1/traces)
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.query_url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_for_trace(self, trace_id: str, spans: int, timeout: float = 20.0) -> dict:
        """The ``/api/v3/traces/{id}`` answer once it holds ``spans`` spans (404 until stored)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get(f"/api/v3/traces/{trace_id}")
            if status == 200:
                document = json.loads(body)
                held = sum(len(ss.get("spans", [])) for rs in document["result"]["resourceSpans"] for ss in rs["scopeSpans"])
                if held >= spans:
                    return document
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Jaeger holds no complete trace {trace_id} after {timeout:g}s: HTTP {status} {body[:300]!r}; "
                    f"its log ends:\n{self.log.read_text()[-2000:]}"
                )
            time.sleep(0.1)


@pytest.fixture(scope="session")
def jaeger(jaeger_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerServer]:
    """One Jaeger for the session: tests tell their data apart by service name and trace id."""
    ports = {name: free_port() for name in ("OTLP_GRPC", "OTLP_HTTP", "QUERY", "QUERY_GRPC", "HEALTH")}
    log = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    command = [str(jaeger_binary), "--config", str(DEPLOY / "jaeger.yaml")]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=clean_environment(**{f"CALLSCOPE_JAEGER_{name}": str(port) for name, port in ports.items()}),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until_healthy(ports["HEALTH"], process, log, "Jaeger")
        except RuntimeError as error:
            pytest.fail(f"{shlex.join(command)}: {error}", pytrace=False)
        yield JaegerServer(
            query_url=f"http://127.0.0.1:{ports['QUERY']}",
            otlp_grpc=f"http://127.0.0.1:{ports['OTLP_GRPC']}",
            otlp_http=f"http://127.0.0.1:{ports['OTLP_HTTP']}",
            log=log,
        )
    finally:
        stop(process)
