"""A real OTLP receiver for the export tests: rotel (a Rust OpenTelemetry collector shipped as a
PyPI wheel), started on free 127.0.0.1 ports and stopped by the fixture.

rotel's binary links ``libpython3.11.so.1.0`` (it embeds Python for trace processors, which is
how the received spans are read back here: ``dump_spans.py`` writes them as JSON lines). When the
dynamic loader cannot find that library, the set-up first points ``LD_LIBRARY_PATH`` at the
running interpreter's library directory if it holds it, then tries Debian's ``libpython3.11``
package, and only then skips, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LIBPYTHON = "libpython3.11.so.1.0"
PROCESSOR = Path(__file__).with_name("dump_spans.py")
METRICS_PROCESSOR = Path(__file__).with_name("dump_metrics.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rotel exited with status {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"rotel did not listen on 127.0.0.1:{port} within {timeout}s")


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

