"""The Helm chart renders, lints clean, and every object it renders is valid for its API.

Core kinds are validated (strictly: unknown fields are errors) against the Kubernetes JSON schemas
of :data:`KUBE_VERSION` (``kubernetes-validate``); KEDA and Prometheus-operator kinds against
their CRDs' OpenAPI schemas (:mod:`tests.unit.deploy.crd_schemas`). A kind neither knows fails.
Then the promises of ``values.yaml``: KEDA's rules, the grace period, secrets only referenced,
the alerts unchanged, GPUs when asked for.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.conftest import (
    CHART,
    DEPLOY,
    KUBE_VERSION,
    VALUE_SETS,
    containers_of,
    helm_command,
    helm_template,
    parse_documents,
    worker_config,
)
from tests.unit.deploy.crd_schemas import CrdCatalog

#: Kinds each value set must render (so a template that silently renders nothing fails).
EXPECTED_KINDS = {
    "default": {
        "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Job",
        "PodDisruptionBudget", "NetworkPolicy",
    },
    "gpu-keda": {
        "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Job",
        "PodDisruptionBudget", "NetworkPolicy", "ScaledObject", "TriggerAuthentication",
        "PodMonitor", "PrometheusRule",
    },
}  # fmt: skip


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_helm_lint_is_clean_for_every_value_set(helm: Path) -> None:
    for name, values in VALUE_SETS.items():
        command = [*helm_command(helm, "lint", *values), "--strict"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"helm lint ({name}):\n{result.stdout}\n{result.stderr}"
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid_for_its_api(
    rendered: dict[str, list[dict[str, Any]]], crds: CrdCatalog, value_set: str
) -> None:
    documents = rendered[value_set]
    assert {d["kind"] for d in documents} == EXPECTED_KINDS[value_set]
    failures = []
    for document in documents:
        name = f"{document['kind']}/{document['metadata']['name']}"
        if crds.knows(document):
            failures += [f"{name}: {error}" for error in crds.errors(document)]
            continue
        try:
            kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{name}: {error.message} at {'/'.join(map(str, error.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{name}: neither Kubernetes {KUBE_VERSION} nor a CRD knows it")
    assert not failures, "\n".join(failures)


def test_the_crd_check_rejects_what_the_api_server_would(crds: CrdCatalog) -> None:
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "triggers": [{"type": "kafka", "metadata": {"lagThreshold": 500}}],
        },
    }
    assert any("500 is not of type 'string'" in e for e in crds.errors(scaled))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = "500"
    assert crds.errors(scaled) == []
    scaled["spec"]["maxReplicas"] = 3  # a typo of maxReplicaCount
    assert any("maxReplicas" in e for e in crds.errors(scaled))


def test_keda_scales_on_the_groups_lag_with_string_metadata(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    values = yaml.safe_load((CHART / "ci" / "gpu-keda-values.yaml").read_text())
    (scaled,) = by_kind(rendered["gpu-keda"], "ScaledObject")
    (deployment,) = by_kind(rendered["gpu-keda"], "Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
    assert trigger["metadata"]["consumerGroup"] == "landmark-workers"
    assert trigger["metadata"]["topic"] == "images"
    assert trigger["metadata"]["lagThreshold"] == "5000"
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] <= values["kafka"]["topics"]["imagesPartitions"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    (auth,) = by_kind(rendered["gpu-keda"], "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {
        "username", "password", "ca", "cert", "key",
    }  # fmt: skip


def test_rendering_refuses_more_replicas_than_partitions(helm: Path) -> None:
    result = helm_template(
        helm,
        sets=("keda.enabled=true", "keda.maxReplicaCount=13", "kafka.topics.imagesPartitions=12"),
    )
    assert result.returncode != 0
    assert "keda.maxReplicaCount (13) exceeds kafka.topics.imagesPartitions (12)" in result.stderr


def test_rendering_refuses_a_grace_period_shorter_than_a_batch(helm: Path) -> None:
    result = helm_template(helm, sets=("worker.terminationGracePeriodSeconds=60",))
    assert result.returncode != 0
    assert "must exceed the longest batch plus its commit" in result.stderr
    assert "= 110" in result.stderr  # 5 + 3 x 30 + 15


def test_sasl_without_a_credentials_secret_is_refused(helm: Path) -> None:
    result = helm_template(helm, sets=("kafka.securityProtocol=SASL_SSL",))
    assert result.returncode != 0 and "credentialsSecret.name is required" in result.stderr


def test_worker_pods_probe_health_and_readiness_and_outlive_a_batch(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for documents in rendered.values():
        (deployment,) = by_kind(documents, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        (worker,) = pod["containers"]
        assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert worker["resources"]["requests"] and worker["resources"]["limits"]
        assert pod["terminationGracePeriodSeconds"] > 5 + 3 * 30
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert worker["securityContext"]["readOnlyRootFilesystem"] is True
        (pdb,) = by_kind(documents, "PodDisruptionBudget")
        assert (
            pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )


def test_gpu_values_ask_for_a_gpu_and_the_gpu_image(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    (gpu,) = by_kind(rendered["gpu-keda"], "Deployment")
    (worker,) = gpu["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["image"].endswith("-gpu")
    (cpu,) = by_kind(rendered["default"], "Deployment")
    (worker,) = cpu["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    assert worker["image"].endswith("-cpu")


def test_the_gpu_decoder_is_a_value_of_gpu_workers(
    helm: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    assert worker_config(rendered["default"])["LANDMARK_DECODER"] == "cpu"
    assert worker_config(rendered["gpu-keda"])["LANDMARK_DECODER"] == "gpu"
    refused = helm_template(helm, sets=("worker.gpu.decoder=gpu",))
    assert refused.returncode != 0
    assert "worker.gpu.decoder=gpu needs worker.gpu.enabled=true" in refused.stderr
    unknown = helm_template(helm, sets=("worker.gpu.enabled=true", "worker.gpu.decoder=tpu"))
    assert unknown.returncode != 0 and 'must be cpu or gpu, not "tpu"' in unknown.stderr


@pytest.mark.parametrize(
    ("assignment", "variable"),
    [
        ("worker.extraEnv.LANDMARK_DECODER=gpu", "worker.extraEnv.LANDMARK_DECODER"),
        ("worker.extraEnv.LANDMARK_WORKER_ID=w", "worker.extraEnv.LANDMARK_WORKER_ID"),
        ("worker.extraEnv.HOME=/root", "worker.extraEnv.HOME"),
        ("trainer.extraEnv.LANDMARK_OUTPUT=/x", "trainer.extraEnv.LANDMARK_OUTPUT"),
        ("galleryLoad.extraEnv.LANDMARK_MILVUS_URI=x", "galleryLoad.extraEnv.LANDMARK_MILVUS_URI"),
    ],
)
def test_extra_env_cannot_set_a_variable_the_chart_sets(
    helm: Path, assignment: str, variable: str
) -> None:
    # As a repeated ConfigMap key the API server would refuse the object without naming the
    # value; in the pod's env, the chart's own entry would silently win.
    result = helm_template(helm, sets=(assignment,))
    assert result.returncode != 0
    assert f"{variable}: the chart sets" in result.stderr


def test_extra_env_of_a_secret_variable_is_refused(helm: Path) -> None:
    sets = (
        "kafka.securityProtocol=SASL_SSL",
        "kafka.credentialsSecret.name=kafka-user",
        "worker.extraEnv.LANDMARK_KAFKA_PASSWORD_FILE=/tmp/password",
    )
    result = helm_template(helm, sets=sets)
    assert result.returncode != 0
    assert "worker.extraEnv.LANDMARK_KAFKA_PASSWORD_FILE: the chart sets" in result.stderr


def test_secrets_are_referenced_never_templated_in(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    secret_variables = {
        "LANDMARK_KAFKA_PASSWORD",
        "LANDMARK_KAFKA_KEY_PASSWORD",
        "LANDMARK_MILVUS_TOKEN",
    }
    for name, documents in rendered.items():
        assert not by_kind(documents, "Secret"), name
        for config in by_kind(documents, "ConfigMap"):
            assert not secret_variables & set(config["data"]), config["metadata"]["name"]
        for document in documents:
            for container in containers_of(document):
                for variable in container.get("env", []):
                    assert variable["name"] not in secret_variables, (name, variable)
    (deployment,) = by_kind(rendered["gpu-keda"], "Deployment")
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in worker["env"]}
    assert env["LANDMARK_KAFKA_PASSWORD_FILE"]["value"].startswith("/var/run/secrets/")
    assert env["LANDMARK_MILVUS_TOKEN_FILE"]["value"].startswith("/var/run/secrets/")
    assert (
        env["LANDMARK_KAFKA_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "landmark-kafka-user"
    )
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-credentials"]["secret"]["secretName"] == "landmark-kafka-user"
    assert volumes["milvus-token"]["secret"]["secretName"] == "landmark-milvus"


def test_the_prometheus_rule_is_the_alerts_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (rule,) = by_kind(rendered["gpu-keda"], "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    link = CHART / "files" / "alerts.yml"
    assert link.is_symlink() and link.resolve() == (DEPLOY / "prometheus" / "alerts.yml").resolve()


def test_the_pod_monitor_scrapes_the_workers_as_job_landmark_worker(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    (monitor,) = by_kind(rendered["gpu-keda"], "PodMonitor")
    (deployment,) = by_kind(rendered["gpu-keda"], "Deployment")
    assert (
        monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in worker["ports"]}
    assert {
        "targetLabel": "job",
        "replacement": "landmark-worker",
        "action": "replace",
    } in endpoint["relabelings"]


def test_gallery_loads_after_training_or_alone(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (train,) = by_kind(rendered["default"], "Job")
    pod = train["spec"]["template"]["spec"]
    assert [c["command"][-1] for c in pod["initContainers"]] == ["landmark-train"]
    assert [c["command"][-1] for c in pod["containers"]] == ["landmark-load-gallery"]
    (reload,) = by_kind(rendered["gpu-keda"], "Job")
    pod = reload["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["command"][-1] for c in pod["containers"]] == ["landmark-load-gallery"]


def test_network_policy_admits_only_the_status_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policies = {p["metadata"]["name"]: p for p in by_kind(rendered["default"], "NetworkPolicy")}
    worker = policies["tagger-landmark-tagger-worker"]
    (ingress,) = worker["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 9108}]
    ports = {p["port"] for rule in worker["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 9092, 19530}


def test_rendered_yaml_with_a_repeated_key_is_refused() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="repeated keys"):
        parse_documents("metadata:\n  labels:\n    app: a\n    app: b\n")
