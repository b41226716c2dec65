"""The compose stack: valid against the Compose Specification, and wired the way it promises.

No Docker engine runs here: ``docker compose up`` is not run. The file is validated with the
Compose Specification's JSON schema (vendored by ``check-jsonschema``), and its wiring is read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.conftest import BIN, COMPOSE_FILE, COMPOSE_GPU_FILE, DEPLOY

ONE_SHOT = {"kafka-topics", "trainer", "gallery-load"}
LONG_RUNNING = {"kafka", "milvus-etcd", "milvus-minio", "milvus", "worker", "prometheus", "grafana"}


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("path", [COMPOSE_FILE, COMPOSE_GPU_FILE], ids=lambda p: p.name)
def test_the_compose_files_follow_the_compose_specification(path: Path) -> None:
    result = check_compose_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: service_up", 1)
    )
    assert check_compose_schema(broken).returncode != 0


def test_services_start_in_order_on_health_and_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= ONE_SHOT | LONG_RUNNING
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition == {"condition": expected}, (name, dependency)
    for name in LONG_RUNNING - {"worker"}:
        assert services[name]["healthcheck"]["test"], name
    assert set(services["worker"]["depends_on"]) == {"kafka-topics", "gallery-load", "milvus"}
    assert set(services["gallery-load"]["depends_on"]) == {"trainer", "milvus"}
    assert services["worker"]["build"]["target"] == "cpu"  # whose image has a HEALTHCHECK


def test_workers_scale_and_state_lives_in_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker"]["deploy"]["replicas"] == "${LANDMARK_WORKERS:-2}"
    mounts = {
        name: [v.split(":")[0] for v in service.get("volumes", [])]
        for name, service in services.items()
    }
    assert "kafka-data" in mounts["kafka"]
    assert "milvus-data" in mounts["milvus"] and "milvus-etcd" in mounts["milvus-etcd"]
    assert "prometheus-data" in mounts["prometheus"]
    assert set(compose["volumes"]) >= {"kafka-data", "milvus-data", "prometheus-data", "models"}


def test_the_gpu_override_runs_the_landmark_commands_on_the_gpu_image_with_gpus(
    compose: dict[str, Any], compose_gpu: dict[str, Any]
) -> None:
    on_gpu = {"trainer", "gallery-load", "worker"}
    for name, service in compose_gpu["services"].items():
        if name not in on_gpu:
            assert service == compose["services"][name], name
            continue
        assert service["image"].endswith("-gpu") and service["build"]["target"] == "gpu", name
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        # Everything else of the service is the base file's: command, volumes, order.
        for key in ("entrypoint", "volumes", "depends_on"):
            assert service.get(key) == compose["services"][name].get(key), (name, key)
    worker = compose_gpu["services"]["worker"]
    assert worker["deploy"]["replicas"] == "${LANDMARK_WORKERS:-2}"
    assert worker["environment"]["LANDMARK_DECODER"] == "${LANDMARK_DECODER:-cpu}"
    assert worker["environment"]["LANDMARK_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_versions_are_pinned_as_the_issue_asks(compose: dict[str, Any]) -> None:
    images = {name: service.get("image", "") for name, service in compose["services"].items()}
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", images["kafka"])
    assert re.fullmatch(r"milvusdb/milvus:v2\.[56]\.\d+", images["milvus"])
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), name


def test_grafana_and_prometheus_are_provisioned_from_deploy(compose: dict[str, Any]) -> None:
    folder = COMPOSE_FILE.parent
    for service in ("prometheus", "grafana"):
        for volume in compose["services"][service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (folder / source).exists(), f"{service} mounts missing {source}"
    grafana = compose["services"]["grafana"]
    assert "../grafana:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / Path(home).name).is_file()


@pytest.mark.integration
def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool comes with Debian's prometheus package (make test installs it)")
    config = (COMPOSE_FILE.parent / "prometheus" / "prometheus.yml").read_text()
    # The rules file is mounted at /etc/prometheus/alerts.yml in the container.
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/alerts.yml", "alerts.yml")
    )
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rules found" not in result.stdout and "rules found" in result.stdout
