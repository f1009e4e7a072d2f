"""docker-compose.yml and the collector config, validated offline (no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def test_the_collector_accepts_the_metrics_jaeger_cannot_store() -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline.get(kind, []):
            assert name in config[kind], f"pipeline uses undefined {kind[:-1]} {name}"
