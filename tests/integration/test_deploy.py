"""docker-compose.yml and the collector config: checked against the compose spec offline (no
Docker engine here), and the collector config loaded and run by a real collector build."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from callscope._tools.otlp_json import read_spans_file
from tests.integration.conftest import JaegerServer, clean_environment, free_port, stop, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR = ROOT / "deploy" / "otel-collector.yaml"


def _check_jsonschema() -> str:
    found = Path(sys.executable).with_name("check-jsonschema")
    if found.exists():
        return str(found)
    on_path = shutil.which("check-jsonschema")
    if on_path is None:
        pytest.fail("check-jsonschema is not installed; run `pip install -e '.[test]'`")
    return on_path


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    ports:\n", "    portz:\n", 1))
    done = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1 and "portz" in done.stdout


def test_jaeger_is_v2_pinned_and_published_on_loopback_only() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    jaeger = compose["services"]["jaeger"]
    image, _, tag = jaeger["image"].partition(":")
    assert image == "jaegertracing/jaeger" and tag.startswith("2.") and tag.count(".") == 2
    published = {port.split(":")[1]: port for port in jaeger["ports"]}
    assert set(published) == {"16686", "4317", "4318"}
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def _script_setting(name: str) -> str:
    [value] = re.findall(rf"^{name}=(\S+)$", (ROOT / "deploy" / "jaeger.sh").read_text(), flags=re.MULTILINE)
    return value


def test_images_are_pinned_to_the_versions_the_tests_build() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    jaeger = f"jaegertracing/jaeger:{_script_setting('JAEGER_RELEASE')}"
    collector = f"otel/opentelemetry-collector-contrib:{_script_setting('COLLECTOR_VERSION').removeprefix('v')}"
    images = {name: service["image"] for name, service in services.items()}
    assert images == {
        "jaeger": jaeger, "jaeger-badger": jaeger, "otel-collector": collector,
        "balancer-1": collector, "balancer-2": collector, "sampler-1": collector, "sampler-2": collector,
    }


def test_the_pipeline_profile_runs_the_configs_pipeline_sh_runs() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    tier = {name: service for name, service in services.items() if service.get("profiles") == ["pipeline"]}
    assert set(tier) == {"balancer-1", "balancer-2", "sampler-1", "sampler-2", "jaeger-badger"}
    for service in tier.values():
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source
    samplers = yaml.safe_load(tier["balancer-1"]["environment"]["CALLSCOPE_SAMPLERS"])
    assert samplers == ["sampler-1:4317", "sampler-2:4317"]
    assert tier["sampler-1"]["environment"]["CALLSCOPE_JAEGER_OTLP"] == "jaeger-badger:4317"
    assert [port.split(":", 1)[1] for port in tier["jaeger-badger"]["ports"]] == ["26686:16686"]


def test_collector_is_optional_and_forwards_otlp_to_jaeger() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    collector = compose["services"]["otel-collector"]
    assert collector["profiles"] == ["collector"]
    assert "./deploy/otel-collector.yaml:" in collector["volumes"][0]
    assert (ROOT / collector["volumes"][0].split(":")[0]).resolve() == COLLECTOR

    config = yaml.safe_load(COLLECTOR.read_text())
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    [to_jaeger] = [name for name in pipeline["exporters"] if name.split("/")[0] in ("otlp_grpc", "otlp")]
    assert config["exporters"][to_jaeger]["endpoint"] == "jaeger:4317"
    assert config["exporters"][to_jaeger]["tls"]["insecure"] is True
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline.get(kind, []):
            assert name in config[kind], f"pipeline uses undefined {kind[:-1]} {name}"


# --- the collector config, loaded by a real collector ------------------------------------------


def test_a_real_collector_accepts_the_collector_config(collector_binary: Path) -> None:
    done = subprocess.run(
        [str(collector_binary), "validate", "--config", str(COLLECTOR)],
        env=clean_environment(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("service", ["balancer-1", "sampler-1"])
def test_a_real_collector_accepts_each_pipeline_config_with_the_environment_compose_gives_it(
    collector_binary: Path, service: str
) -> None:
    """Every ${env:...} a tier config needs is set by its compose service (an unset one without
    a default is an empty string, which the collector refuses as an endpoint or port)."""
    declared = yaml.safe_load(COMPOSE.read_text())["services"][service]
    config = ROOT / declared["volumes"][0].split(":")[0]
    environment = {name: str(value) for name, value in declared["environment"].items()}
    # Compose fills these from the user's shell; here their defaults.
    environment["CALLSCOPE_KEEP_PERCENT"], environment["CALLSCOPE_KEEP_MISSED_BY"] = "10", ""
    done = subprocess.run(
        [str(collector_binary), "validate", "--config", str(config)],
        env=clean_environment(**environment), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_jaeger_accepts_its_badger_overlay_with_the_environment_compose_gives_it(jaeger_binary: Path) -> None:
    declared = yaml.safe_load(COMPOSE.read_text())["services"]["jaeger-badger"]
    environment = {name: str(value) for name, value in declared["environment"].items()}
    done = subprocess.run(
        [str(jaeger_binary), "validate", "--config", str(ROOT / "deploy" / "jaeger.yaml"),
         "--config", str(ROOT / "deploy" / "pipeline" / "jaeger-badger.yaml")],
        env=clean_environment(**environment), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_real_collector_rejects_an_unknown_exporter(collector_binary: Path, tmp_path: Path) -> None:
    # The check above must be able to fail: a misspelt component type is refused by name.
    broken = tmp_path / "otel-collector.yaml"
    config = yaml.safe_load(COLLECTOR.read_text())
    [to_jaeger] = [name for name in config["exporters"] if name != "debug"]
    misspelt = "otlpp/" + to_jaeger.partition("/")[2]
    config["exporters"][misspelt] = config["exporters"].pop(to_jaeger)
    config["service"]["pipelines"]["traces"]["exporters"] = [misspelt, "debug"]
    broken.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(collector_binary), "validate", "--config", str(broken)],
        env=clean_environment(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode != 0
    assert "otlpp" in done.stderr


def test_the_demo_goes_through_the_loopback_collector_into_jaeger(
    collector_binary: Path, jaeger: JaegerServer, tmp_path: Path
) -> None:
    """demo → collector → Jaeger → tree, the collector started as the README says without Docker:
    `deploy/jaeger.sh collector` (deploy/otel-collector.yaml with the loopback overlay), its ports
    moved to free ones through the overlay's variables."""
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path / "collector.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(ROOT / "deploy" / "jaeger.sh"), "collector"],
            env=clean_environment(
                CALLSCOPE_COLLECTOR_OTLP_GRPC=str(grpc_port),
                CALLSCOPE_COLLECTOR_OTLP_HTTP=str(http_port),
                CALLSCOPE_JAEGER_OTLP_GRPC=jaeger.otlp_grpc.rsplit(":", 1)[1],
                CALLSCOPE_CACHE=str(collector_binary.parent),
            ),
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(grpc_port, process, timeout=30, what="the collector")
        service = "callscope-via-collector"
        done = subprocess.run(
            [sys.executable, "-m", "callscope", "demo", "--output", "out.jsonl"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
            env=clean_environment(
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{grpc_port}", OTEL_SERVICE_NAME=service
            ),
        )
        assert done.returncode == 0 and "Failed to export" not in done.stderr, done.stderr
        written = read_spans_file(tmp_path / "out.jsonl").spans
        for trace_id in dict.fromkeys(span.trace_id for span in written):
            count = sum(span.trace_id == trace_id for span in written)
            jaeger.wait_for_trace(trace_id, count)
            tree = [sys.executable, "-m", "callscope", "tree"]
            from_jaeger = subprocess.run(
                [*tree, "--jaeger", jaeger.query_url, "--trace", trace_id],
                cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=clean_environment(),
            )
            from_file = subprocess.run(
                [*tree, "out.jsonl", "--trace", trace_id],
                cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=clean_environment(),
            )
            assert from_jaeger.returncode == 0, from_jaeger.stderr
            assert from_jaeger.stdout == from_file.stdout
            assert f"{service} · {count} spans" in from_jaeger.stdout
        # The debug exporter on the same pipeline saw them too.
        assert "Traces" in log.read_text()
        assert f"OTLP on 127.0.0.1:{grpc_port}" in log.read_text()  # what the script said it would do
    finally:
        stop(process)
def test_the_loopback_overlay_binds_loopback_only_and_forwards_to_local_jaeger() -> None:
    overlay = yaml.safe_load((ROOT / "deploy" / "otel-collector.loopback.yaml").read_text())
    protocols = overlay["receivers"]["otlp"]["protocols"]
    assert all(p["endpoint"].startswith("127.0.0.1:") for p in protocols.values())
    base = yaml.safe_load(COLLECTOR.read_text())
    assert set(overlay["exporters"]) <= set(base["exporters"])  # overrides, adds no exporter
    assert overlay["exporters"]["otlp_grpc/jaeger"]["endpoint"].startswith("127.0.0.1:")


def test_the_collector_accepts_the_metrics_jaeger_cannot_store() -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline.get(kind, []):
            assert name in config[kind], f"pipeline uses undefined {kind[:-1]} {name}"
