"""The collector tier at fleet shape, on this machine: deploy/pipeline.sh brings up two load
balancers, two tail samplers and Jaeger on Badger (built from their Go modules, as the README
says), four app processes and a server process (tests/integration/fleet_app.py) send thousands
of traces through it, and what arrives in Jaeger is compared with what each process says it sent.

Module-scoped: the fleet runs once and the tests read the round it produced, in file order (the
sampler kill and the Jaeger restart come last, as they change the tier).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import _terminal_line, clean_environment
from tests.integration.fleet_app import KEPT_ALWAYS, KINDS, NAMED
from tests.integration.test_jaeger import callscope as run_callscope

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLEET_APP = Path(__file__).with_name("fleet_app.py")
APPS = 4
TRACES_PER_APP = 1000
KEEP_PERCENT = 10
#: Long enough for a trace's spans from two processes (each exporting every 200 ms) to meet.
DECISION_WAIT_SECONDS = 3
#: pipeline.sh's port offsets from its first port (see its header).
PORT_OFFSETS = (0, 1, 2, 3, 10, 11, 12, 13, 100, 103, 110, 113, 200, 201, 202, 203, 204)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_block() -> int:
    for _ in range(200):
        base = random.randrange(20_000, 59_000)
        if all(_port_is_free(base + offset) for offset in PORT_OFFSETS):
            return base
    raise RuntimeError("no free block of loopback ports for the pipeline")


def _free_query_port(base: int) -> int:
    """A free port for Jaeger's query API, outside the tier's block."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not base <= port <= base + PORT_OFFSETS[-1]:
            return port


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Telemetry:
    """One scrape of a collector's own Prometheus endpoint."""

    samples: list[tuple[str, dict[str, str], float]]

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(key) == wanted for key, wanted in labels.items())
        )  # fmt: skip

    # Jaeger 2.13 is built on an older collector, whose process metrics carry their unit.
    def cpu_seconds(self) -> float:
        return self.total("otelcol_process_cpu_seconds") + self.total("otelcol_process_cpu_seconds_total")

    def accepted_spans(self) -> float:
        return self.total("otelcol_receiver_accepted_spans") + self.total("otelcol_receiver_accepted_spans_total")

    def rss_bytes(self) -> float:
        return self.total("otelcol_process_memory_rss") + self.total("otelcol_process_memory_rss_bytes")


@dataclass
class Pipeline:
    """deploy/pipeline.sh's tier, on a free block of ports, its state in a temporary directory."""

    env: dict[str, str]
    base: int
    query_url: str
    state: Path

    def sh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "deploy" / "pipeline.sh"), command],
            env=self.env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def balancer_otlp(self, k: int) -> str:
        return f"http://127.0.0.1:{self.base + 10 * (k - 1)}"

    def balancer_metrics(self, k: int) -> str:
        return f"http://127.0.0.1:{self.base + 10 * (k - 1) + 2}/metrics"

    def telemetry_port(self, name: str) -> int:
        layer, _, k = name.partition("-")
        if layer == "jaeger":
            return self.base + 204
        first = self.base + (100 if layer == "sampler" else 0)
        return first + 10 * (int(k) - 1) + 3

    def telemetry(self, name: str) -> Telemetry:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry_port(name)}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = []
        for line in text.splitlines():
            matched = _SAMPLE.match(line)
            if matched:
                labels = dict(_LABEL.findall(matched.group(2) or ""))
                samples.append((matched.group(1), labels, float(matched.group(3))))
        return Telemetry(samples)

    def pid(self, name: str) -> int:
        return int((self.state / "pids" / name).read_text())

    def trace(self, trace_id: str) -> list[dict] | None:
        """The spans Jaeger stored for the trace, as stored (``raw_traces``: no dedup), or None."""
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/v3/traces/{trace_id}?raw_traces=true", timeout=10) as response:
                document = json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return [
            {**span, "service": _service(resource)}
            for resource in document["result"]["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]


def _service(resource_spans: dict) -> str:
    for attribute in resource_spans["resource"].get("attributes", []):
        if attribute["key"] == "service.name":
            return attribute["value"]["stringValue"]
    return ""


def _whole(spans: list[dict] | None, expected: int) -> bool:
    """Every span once, one root, every parent present."""
    if spans is None or len(spans) != expected:
        return False
    ids = [span["spanId"] for span in spans]
    roots = [span for span in spans if not span.get("parentSpanId")]
    return len(set(ids)) == len(ids) and len(roots) == 1 and all(
        span["parentSpanId"] in ids for span in spans if span.get("parentSpanId")
    )


@dataclass
class Round:
    """What the apps sent in one run of the fleet: kind and span count per trace id."""

    kinds: dict[str, str] = field(default_factory=dict)
    spans: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def of_kind(self, *kinds: str) -> list[str]:
        return [trace_id for trace_id, kind in self.kinds.items() if kind in kinds]


@pytest.fixture(scope="module")
def pipeline(jaeger_binary: Path, collector_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    assert jaeger_binary.parent == collector_binary.parent  # pipeline.sh finds both in one cache
    state = tmp_path_factory.mktemp("pipeline")
    base = _free_port_block()
    query = _free_query_port(base)
    env = clean_environment(
        CALLSCOPE_CACHE=str(collector_binary.parent), CALLSCOPE_PIPELINE_DIR=str(state),
        CALLSCOPE_PIPELINE_PORT=str(base), CALLSCOPE_PIPELINE_QUERY=str(query),
        CALLSCOPE_DECISION_WAIT=f"{DECISION_WAIT_SECONDS}s", CALLSCOPE_KEEP_MISSED_BY=NAMED,
        CALLSCOPE_KEEP_PERCENT=str(KEEP_PERCENT),
    )  # fmt: skip
    tier = Pipeline(env=env, base=base, query_url=f"http://127.0.0.1:{query}", state=state)
    started = tier.sh("up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT={tier.balancer_otlp(1)}" in started.stdout
        yield tier
    finally:
        stopped = tier.sh("down")
        assert stopped.returncode == 0, stopped.stderr
        assert tier.sh("status").returncode == 3  # nothing left running


@pytest.fixture(scope="module")
def server(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service the clients call: its spans go to the second load balancer."""
    port_file = tmp_path_factory.mktemp("server") / "port"
    process = subprocess.Popen(
        [sys.executable, str(FLEET_APP), "server", pipeline.balancer_otlp(2), str(port_file)],
        env=clean_environment(OTEL_SERVICE_NAME="fleet-server"), stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the fleet server did not start in 60 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        process.terminate()
        process.wait(10)


def _start_apps(pipeline: Pipeline, server: str, directory: Path, seed: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    apps = []
    for k in range(APPS):
        manifest = directory / f"app-{seed}-{k}.json"
        process = subprocess.Popen(
            [sys.executable, str(FLEET_APP), "client", pipeline.balancer_otlp(k % 2 + 1), server,
             str(TRACES_PER_APP), str(seed + k), str(manifest)],
            env=clean_environment(OTEL_SERVICE_NAME=f"fleet-app-{k}"), stderr=subprocess.PIPE,
        )  # fmt: skip
        apps.append((process, manifest))
    return apps


def _finish_apps(apps: list[tuple[subprocess.Popen[bytes], Path]], server: str, sent: Round) -> None:
    for process, manifest in apps:
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors.decode()[-3000:]
        for trace_id, row in json.loads(manifest.read_text()).items():
            sent.kinds[trace_id] = row["kind"]
            sent.spans[trace_id] += row["spans"]
    with urllib.request.urlopen(server + "/manifest", timeout=60) as response:
        served = json.load(response)
    for trace_id in sent.kinds:
        sent.spans[trace_id] += served.get(trace_id, 0)


def _decided(pipeline: Pipeline, samplers: tuple[str, ...] = ("sampler-1", "sampler-2")) -> float:
    return sum(pipeline.telemetry(name).total("otelcol_processor_tail_sampling_global_count_traces_sampled") for name in samplers)


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.25)


def _wait_for_jaeger(pipeline: Pipeline, sent: Round, trace_ids: list[str], timeout: float = 60) -> None:
    """Until every one of ``trace_ids`` is whole in Jaeger, or nothing more arrived for a while."""
    deadline = time.monotonic() + timeout
    pending = list(trace_ids)
    while pending and time.monotonic() < deadline:
        pending = [trace_id for trace_id in pending if not _whole(pipeline.trace(trace_id), sent.spans[trace_id])]
        if pending:
            time.sleep(0.5)


@dataclass
class FirstRound:
    sent: Round
    stored: dict[str, list[dict] | None]
    #: Per layer: spans accepted, CPU seconds and the highest RSS its own telemetry reported.
    layers: dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def first_round(pipeline: Pipeline, server: str, tmp_path_factory: pytest.TempPathFactory) -> FirstRound:
    names = ("balancer-1", "balancer-2", "sampler-1", "sampler-2", "jaeger")
    before = {name: pipeline.telemetry(name) for name in names}
    highest_rss = Counter[str]()
    watching = threading.Event()

    def watch_memory() -> None:
        while not watching.wait(0.5):
            for name in names:
                rss = pipeline.telemetry(name).rss_bytes()
                highest_rss[name] = max(highest_rss[name], rss)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    sent = Round()
    started = time.monotonic()
    apps = _start_apps(pipeline, server, tmp_path_factory.mktemp("round-1"), seed=0)
    _finish_apps(apps, server, sent)
    _wait_until(lambda: _decided(pipeline) >= len(sent.kinds), 120, f"the samplers decide all {len(sent.kinds)} traces")
    sent.seconds = time.monotonic() - started
    watching.set()
    watcher.join()
    _wait_for_jaeger(pipeline, sent, sent.of_kind(*KEPT_ALWAYS))
    time.sleep(1)  # the share policy's traces, after the last of those
    after = {name: pipeline.telemetry(name) for name in names}
    layers = {}
    for name in names:
        layers[name] = {
            "spans": after[name].accepted_spans() - before[name].accepted_spans(),
            "cpu_seconds": after[name].cpu_seconds() - before[name].cpu_seconds(),
            "rss_mib": highest_rss[name] / 2**20,
        }
    stored = {trace_id: pipeline.trace(trace_id) for trace_id in sent.kinds}
    return FirstRound(sent=sent, stored=stored, layers=layers)


# --- what arrives ------------------------------------------------------------------------------


def test_the_apps_sent_thousands_of_traces_of_every_kind(first_round: FirstRound) -> None:
    kinds = Counter(first_round.sent.kinds.values())
    assert sum(kinds.values()) == APPS * TRACES_PER_APP
    assert set(kinds) == set(KINDS)
    remote = first_round.sent.of_kind("remote-error")
    assert all(first_round.sent.spans[trace_id] > 4 for trace_id in remote)  # the server's spans counted in


def test_every_trace_the_policy_must_keep_arrives_whole_and_once(first_round: FirstRound) -> None:
    sent, stored = first_round.sent, first_round.stored
    broken = {
        trace_id: (sent.kinds[trace_id], sent.spans[trace_id], None if stored[trace_id] is None else len(stored[trace_id]))
        for trace_id in sent.of_kind(*KEPT_ALWAYS)
        if not _whole(stored[trace_id], sent.spans[trace_id])
    }
    assert not broken, f"{len(broken)} must-keep traces missing or not whole (kind, sent, stored): {list(broken.items())[:5]}"


def test_a_kept_client_server_trace_joins_both_processes_under_one_root(first_round: FirstRound) -> None:
    for trace_id in first_round.sent.of_kind("remote-error"):
        spans = first_round.stored[trace_id]
        assert spans is not None
        services = {span["service"] for span in spans}
        assert {"fleet-server"} < services and len(services) == 2
        by_id = {span["spanId"]: span for span in spans}
        [server_root] = [span for span in spans if span["name"] == "POST /run"]
        # The server's span hangs under the client's chain step that made the call.
        assert by_id[server_root["parentSpanId"]]["name"] == "ask_server"
        assert any(span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR") for span in spans if span["service"] == "fleet-server")


def test_the_rest_arrive_whole_at_the_configured_share(first_round: FirstRound) -> None:
    sent, stored = first_round.sent, first_round.stored
    rest = sent.of_kind("plain", "missed-unnamed", "remote-plain")
    kept = [trace_id for trace_id in rest if stored[trace_id] is not None]
    assert all(_whole(stored[trace_id], sent.spans[trace_id]) for trace_id in kept)
    share = KEEP_PERCENT / 100
    # Four standard deviations of a binomial share: a false alarm about once in 15 000 runs.
    tolerance = 4 * math.sqrt(share * (1 - share) / len(rest))
    assert abs(len(kept) / len(rest) - share) <= tolerance, f"kept {len(kept)} of {len(rest)}"
    # The named handler's misses are kept, another handler's identical misses are not.
    unnamed = sent.of_kind("missed-unnamed")
    assert sum(stored[trace_id] is not None for trace_id in unnamed) < len(unnamed) / 2


def test_the_load_balancers_accepted_every_span_the_apps_sent(first_round: FirstRound, pipeline: Pipeline) -> None:
    accepted = first_round.layers["balancer-1"]["spans"] + first_round.layers["balancer-2"]["spans"]
    assert accepted == sum(first_round.sent.spans.values())
    # And passed each on to exactly one sampler.
    assert first_round.layers["sampler-1"]["spans"] + first_round.layers["sampler-2"]["spans"] == accepted
    assert min(first_round.layers["sampler-1"]["spans"], first_round.layers["sampler-2"]["spans"]) > accepted / 4
    for name in ("balancer-1", "balancer-2"):
        refused = pipeline.telemetry(name).total("otelcol_receiver_refused_spans")  # memory_limiter's pushback
        assert refused == 0


def test_the_tier_throughput_and_memory_from_its_own_telemetry(first_round: FirstRound, pytestconfig: pytest.Config) -> None:
    """Not a speed goal (those live in benchmarks/): the numbers benchmarks/README.md records,
    printed on every run, and the sanity they must have."""
    spans = sum(first_round.sent.spans.values())
    lines = [f"collector tier: {spans} spans in {first_round.sent.seconds:.1f} s ({spans / first_round.sent.seconds:.0f} spans/s, bounded by {APPS} Python apps on this machine)"]
    for name, layer in first_round.layers.items():
        per_core = layer["spans"] / layer["cpu_seconds"] if layer["cpu_seconds"] else float("inf")
        lines.append(f"  {name:<10} {layer['spans']:>7.0f} spans, {layer['cpu_seconds']:5.2f} CPU s ({per_core:,.0f} spans per CPU second), peak RSS {layer['rss_mib']:.0f} MiB")
        assert layer["spans"] > 0 and 0 < layer["rss_mib"] < 2048
    report = os.environ.get("CALLSCOPE_FLEET_REPORT")
    if report:
        Path(report).write_text(json.dumps({"spans": spans, "seconds": first_round.sent.seconds, "layers": first_round.layers}, indent=2))
    _terminal_line(pytestconfig, "\n".join(lines))


def test_the_apps_genai_metrics_are_served_for_prometheus(pipeline: Pipeline, first_round: FirstRound) -> None:
    with urllib.request.urlopen(pipeline.balancer_metrics(1), timeout=5) as response:
        text = response.read().decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"gen_ai_client_operation_duration_seconds_bucket", "gen_ai_client_operation_duration_seconds_count"} <= names
    assert 'job="fleet-app-0"' in text  # the service, as Prometheus users see it


@pytest.mark.parametrize(
    ("flags", "kinds"),
    [
        (["--errors"], {"error"}),
        (["--handler-failed"], {"failed"}),
        (["--handler-failed", "FlakyLogger"], {"failed"}),
        (["--config-dropped"], {"dropped"}),
        (["--missed-by", NAMED], {"missed-named"}),
    ],
)
def test_the_cli_filters_find_the_kept_traces_in_jaegers_badger_store(
    pipeline: Pipeline, first_round: FirstRound, flags: list[str], kinds: set[str], tmp_path: Path
) -> None:
    done = run_callscope(
        "tree", "--jaeger", pipeline.query_url, "--service", "fleet-app-0", "--limit", "5", "--since", "15m", *flags, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    shown = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("trace ")]
    assert len(shown) == 5
    found = [trace_id for trace_id in first_round.sent.kinds if any(trace_id.startswith(prefix) for prefix in shown)]
    assert len(found) == 5 and {first_round.sent.kinds[trace_id] for trace_id in found} == kinds


def test_the_demos_traces_are_found_with_the_filters_as_the_readme_says(pipeline: Pipeline, tmp_path: Path) -> None:
    demo = run_callscope(
        "demo", cwd=tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=pipeline.balancer_otlp(1), OTEL_SERVICE_NAME="pipeline-demo"
    )
    assert demo.returncode == 0 and "Failed to export" not in demo.stderr, demo.stderr
    for flag in ("--config-dropped", "--handler-failed"):
        deadline = time.monotonic() + DECISION_WAIT_SECONDS + 30
        while True:
            found = run_callscope("tree", "--jaeger", pipeline.query_url, "--service", "pipeline-demo", flag, cwd=tmp_path)
            if found.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found.returncode == 0, found.stderr
        assert "rank_sources" in found.stdout if flag == "--config-dropped" else "FlakyLogger" in found.stdout


# --- the tier changed: Jaeger restarted, then a sampler killed --------------------------------


def test_jaeger_restarted_still_returns_every_stored_trace(pipeline: Pipeline, first_round: FirstRound, tmp_path: Path) -> None:
    stored = {trace_id: len(spans) for trace_id, spans in first_round.stored.items() if spans is not None}
    jaeger = pipeline.pid("jaeger")
    os.kill(jaeger, signal.SIGTERM)
    _wait_until(lambda: not _alive(jaeger), 30, "Jaeger stops")
    assert pipeline.sh("status").returncode == 3
    restarted = pipeline.sh("up")  # starts what is not running: Jaeger, on the same Badger files
    assert restarted.returncode == 0, restarted.stderr
    assert pipeline.pid("jaeger") != jaeger
    after = {trace_id: pipeline.trace(trace_id) for trace_id in stored}
    lost = {trace_id for trace_id, count in stored.items() if after[trace_id] is None or len(after[trace_id]) != count}
    assert not lost, f"{len(lost)} of {len(stored)} stored traces changed across the restart"
    some = next(trace_id for trace_id in stored if first_round.sent.kinds[trace_id] == "remote-error")
    shown = run_callscope("tree", "--jaeger", pipeline.query_url, "--trace", some, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "POST /run" in shown.stdout and "ask_server" in shown.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (the shell that started it is gone, so nothing reaps it at once) counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(")")[-1].split()[0] != "Z"


def test_a_sampler_killed_mid_run_loses_at_most_what_it_held(
    pipeline: Pipeline, server: str, first_round: FirstRound, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> None:
    victim = pipeline.pid("sampler-2")
    received = "otelcol_processor_tail_sampling_new_trace_id_received"
    decided = "otelcol_processor_tail_sampling_global_count_traces_sampled"
    start = pipeline.telemetry("sampler-2").total(received)
    survivor_before = pipeline.telemetry("sampler-1").total(decided)
    sent = Round()
    apps = _start_apps(pipeline, server, tmp_path_factory.mktemp("round-2"), seed=100)
    # Scrape the victim while it works; kill it once it holds this round's traces.
    scrapes: list[Telemetry] = []
    while True:
        scrapes.append(pipeline.telemetry("sampler-2"))
        if scrapes[-1].total(received) - start >= APPS * TRACES_PER_APP / 8:
            break
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    last, previous = scrapes[-1], scrapes[max(0, len(scrapes) - 21)]  # the last scrape, and about 1 s before it
    # What it held: traces in memory at the last scrape, plus what it received or decided in
    # its last second (arrived after that scrape, or still in its batch and export queue).
    held = (
        last.total("otelcol_processor_tail_sampling_sampling_traces_on_memory")
        + last.total(received) - previous.total(received)
        + last.total(decided, sampled="true") - previous.total(decided, sampled="true")
    )
    _finish_apps(apps, server, sent)
    # The rest of the fleet kept going: the other sampler decided its share of this round.
    _wait_until(
        lambda: pipeline.telemetry("sampler-1").total(decided) - survivor_before >= len(sent.kinds) / 3,
        60, "the surviving sampler decides its share of the round",
    )  # fmt: skip
    # The balancers queue the dead sampler's share and retry it. They say so only in their logs:
    # the loadbalancing exporter gives its per-sampler exporters no metrics (a no-op meter).
    victim_endpoint = f'"endpoint": "127.0.0.1:{pipeline.base + 110}"'
    retrying = [
        line for name in ("balancer-1", "balancer-2")
        for line in (pipeline.state / "logs" / f"{name}.log").read_text().splitlines()
        if "Exporting failed. Will retry" in line and victim_endpoint in line
    ]  # fmt: skip
    assert retrying, "the load balancers did not retry the killed sampler's share"
    # Back up: what the load balancers queued for it meanwhile is delivered now.
    restarted = pipeline.sh("up")
    assert restarted.returncode == 0, restarted.stderr
    must_keep = sent.of_kind(*KEPT_ALWAYS)
    _wait_for_jaeger(pipeline, sent, must_keep, timeout=3 * DECISION_WAIT_SECONDS + 30)
    lost = [trace_id for trace_id in must_keep if not _whole(pipeline.trace(trace_id), sent.spans[trace_id])]
    _terminal_line(
        pytestconfig,
        f"sampler killed mid-run: {len(lost)} of {len(must_keep)} must-keep traces lost or partial; "
        f"it held {held:.0f} traces by its own telemetry; the load balancers retried its share {len(retrying)} times",
    )
    assert len(lost) <= held
    assert len(must_keep) - len(lost) > len(must_keep) / 2


def test_up_refuses_a_port_another_program_holds_and_starts_nothing(
    jaeger_binary: Path, collector_binary: Path, tmp_path: Path
) -> None:
    base = _free_port_block()
    query = _free_query_port(base)
    tier = Pipeline(
        env=clean_environment(
            CALLSCOPE_CACHE=str(collector_binary.parent), CALLSCOPE_PIPELINE_DIR=str(tmp_path),
            CALLSCOPE_PIPELINE_PORT=str(base), CALLSCOPE_PIPELINE_QUERY=str(query),
        ),
        base=base, query_url=f"http://127.0.0.1:{query}", state=tmp_path,
    )  # fmt: skip
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 10))  # the second balancer's OTLP port
        squatter.listen()
        started = tier.sh("up")
    assert started.returncode == 1
    assert f"127.0.0.1:{base + 10}, which balancer-2 would listen on, is in use by another program" in started.stderr
    assert tier.sh("status").returncode == 3
    assert not list((tmp_path / "pids").glob("*"))
