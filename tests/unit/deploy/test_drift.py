"""Drift between deploy/ and the code: variables, commands and metrics must be the code's own.

* Every ``LANDMARK_*`` variable a container gets (the chart, for each value set, and the compose
  stack) is a variable of the settings class of the command that container runs, and the
  variables together parse with that class's own code (``*_FILE`` secrets and mounted
  certificates stand in as temporary files).
* Every command an image, a chart container or a compose service runs is a console script of
  ``pyproject.toml``.
* Every metric the Grafana dashboard, the alerts and the KEDA trigger name is one the worker
  exports, and KEDA watches the group and topic the workers use.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from client.follow import FollowSettings
from client.publish import PublishSettings
from configuration.base import (
    SECRET_FILE_SUFFIX,
    CommandSettings,
    env_name,
    is_positional,
    is_secret,
)
from tests.unit.deploy.conftest import (
    DEPLOY,
    DOCKERFILE,
    REPO_ROOT,
    containers_of,
    worker_config,
)
from trainer.cli.evaluate import EvaluateSettings
from trainer.cli.gallery import GalleryLoaderSettings
from trainer.cli.train import TrainSettings
from worker.observability.metrics import WorkerMetrics
from worker.settings import WorkerSettings

#: Each console script's settings class (a new script must be added here).
SETTINGS_OF: dict[str, type[CommandSettings]] = {
    "landmark-train": TrainSettings,
    "landmark-evaluate": EvaluateSettings,
    "landmark-load-gallery": GalleryLoaderSettings,
    "landmark-worker": WorkerSettings,
    "landmark-publish": PublishSettings,
    "landmark-follow": FollowSettings,
}
SECRET_MOUNTS = "/var/run/secrets/landmark/"
LANDMARK_IMAGES = ("landmark-tagger",)


def console_scripts() -> set[str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"])


def variables_of(cls: type[CommandSettings]) -> set[str]:
    """Every variable ``cls`` reads: one a field, plus ``<VARIABLE>_FILE`` for secrets."""
    names = set()
    for name, field in cls.model_fields.items():
        if is_positional(field):
            continue
        names.add(env_name(cls, name))
        if is_secret(field):
            names.add(env_name(cls, name) + SECRET_FILE_SUFFIX)
    return names


def command_of(entry: list[str]) -> str:
    """The program of an exec-form command, past ``tini --``."""
    if entry[:2] == ["tini", "--"]:
        entry = entry[2:]
    return entry[0]


def parse_with_settings(
    cls: type[CommandSettings],
    variables: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> CommandSettings:
    """``cls`` built from ``variables`` alone (secret files and certificates made up)."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("LANDMARK_")]:
            patch.delenv(name)
        for name, value in variables.items():
            if value.startswith(SECRET_MOUNTS):
                stand_in = tmp_path / value.removeprefix(SECRET_MOUNTS).replace("/", "_")
                stand_in.write_text("made-up-secret\n")
                value = str(stand_in)
            patch.setenv(name, value)
        # Positional arguments come from the command line (``compose run publish /photos``).
        given = {
            name: ["/photos"] if (field.json_schema_extra or {}).get("nargs") else "x"  # type: ignore[union-attr]
            for name, field in cls.model_fields.items()
            if is_positional(field) and field.is_required()
        }
        return cls(**given)


def chart_containers(
    rendered: dict[str, list[dict[str, Any]]],
) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(where, container, its LANDMARK_* variables) for every container the chart renders."""
    for value_set, documents in rendered.items():
        config_maps = {
            d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"
        }
        for document in documents:
            for container in containers_of(document):
                variables: dict[str, str] = {}
                for source in container.get("envFrom", []):
                    variables.update(config_maps[source["configMapRef"]["name"]])
                for variable in container.get("env", []):
                    # A secretKeyRef or fieldRef value is filled in by Kubernetes: a stand-in.
                    variables[variable["name"]] = variable.get("value", "from-the-cluster")
                where = f"{value_set}: {document['kind']}/{document['metadata']['name']}/{container['name']}"
                yield (
                    where,
                    container,
                    {k: v for k, v in variables.items() if k.startswith("LANDMARK_")},
                )


def compose_containers(
    compose: dict[str, Any],
) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("${LANDMARK_IMAGE"):
            continue
        environment = {k: _defaulted(str(v)) for k, v in service.get("environment", {}).items()}
        yield f"compose: {name}", service, environment


def _defaulted(value: str) -> str:
    """A value as compose gives it with no variable set: ``${NAME:-default}`` is ``default``."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_every_console_script_has_its_settings_class_here() -> None:
    assert set(SETTINGS_OF) == console_scripts()


def check_container(
    where: str,
    entry: list[str],
    variables: dict[str, str],
    mounts: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> str:
    """Check one container's command and variables; returns its command."""
    command = command_of(entry)
    assert command in console_scripts(), f"{where}: {command} is not a console script"
    cls = SETTINGS_OF[command]
    unknown = set(variables) - variables_of(cls)
    assert not unknown, f"{where}: {command} reads no {sorted(unknown)}"
    for name, value in variables.items():
        if value.startswith(SECRET_MOUNTS):
            assert any(value.startswith(m + "/") for m in mounts), f"{where}: {name} not mounted"
    parse_with_settings(cls, variables, monkeypatch, tmp_path)
    return command


def test_chart_containers_get_only_variables_their_command_reads_and_accepts(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = {
        check_container(
            where,
            container["command"],
            variables,
            [m["mountPath"] for m in container.get("volumeMounts", [])],
            monkeypatch,
            tmp_path,
        )
        for where, container, variables in chart_containers(rendered)
    }
    assert seen == {"landmark-worker", "landmark-train", "landmark-load-gallery"}


@pytest.mark.parametrize("stack", ["compose", "compose_gpu"])
def test_compose_services_get_only_variables_their_command_reads_and_accepts(
    stack: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services: dict[str, Any] = request.getfixturevalue(stack)
    seen = {
        check_container(where, service["entrypoint"], variables, [], monkeypatch, tmp_path)
        for where, service, variables in compose_containers(services)
    }
    assert seen == {
        "landmark-worker", "landmark-train", "landmark-load-gallery", "landmark-publish",
        "landmark-follow",
    }  # fmt: skip


def test_the_drift_check_catches_a_misspelt_or_bad_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert "LANDMARK_BATCH_MAX_RECORD" not in variables_of(WorkerSettings)
    assert "LANDMARK_KAFKA_PASSWORD_FILE" in variables_of(WorkerSettings)
    with pytest.raises(ValueError, match="batch_max_records"):
        parse_with_settings(
            WorkerSettings,
            {
                "LANDMARK_MODEL_DIR": "/m",
                "LANDMARK_MILVUS_URI": "http://m:19530",
                "LANDMARK_BATCH_MAX_RECORDS": "0",
            },
            monkeypatch,
            tmp_path,
        )


def image_instructions() -> dict[str, list[tuple[str, str]]]:
    """(instruction, arguments) of each stage of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            current = [("FROM", arguments)]
            stages[arguments.split(" AS ")[-1].strip()] = current
        else:
            current.append((instruction.upper(), arguments.strip()))
    return stages


def image_of(target: str) -> list[tuple[str, str]]:
    """The instructions that make ``target``: its own after those of the stages it builds on."""
    stages = image_instructions()
    chain = [stages[target]]
    while (parent := chain[-1][0][1].split()[0]) in stages:
        chain.append(stages[parent])
    return [instruction for stage in reversed(chain) for instruction in stage]


def test_every_image_entrypoint_is_a_console_script_and_its_variables_are_read() -> None:
    stages = image_instructions()
    readers = set().union(*(variables_of(cls) for cls in SETTINGS_OF.values()))
    for target in ("client", "cpu", "gpu"):
        (entrypoint,) = [json.loads(a) for i, a in image_of(target) if i == "ENTRYPOINT"]
        assert command_of(entrypoint) in console_scripts(), target
    for stage, instructions in stages.items():
        for instruction, arguments in instructions:
            if instruction == "ENV":
                for name in re.findall(r"(LANDMARK_\w+)=", arguments):
                    assert name in readers, f"stage {stage}: no command reads {name}"


def exported_metric_names() -> set[str]:
    names = set()
    for family in WorkerMetrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def metric_names_in(expression: str) -> set[str]:
    return set(re.findall(r"\blandmark_[a-z0-9_]+\b", expression))


def test_dashboards_and_alerts_name_only_metrics_the_worker_exports() -> None:
    exported = exported_metric_names()
    expressions = []
    for path in (DEPLOY / "grafana").glob("*.json"):
        stack = list(json.loads(path.read_text())["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            expressions += [t["expr"] for t in panel.get("targets", [])]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    named = set().union(*(metric_names_in(e) for e in expressions))
    assert named, "no landmark_* metric found in the dashboards and alerts"
    assert named <= exported, f"not exported by the worker: {sorted(named - exported)}"
    assert "landmark_worker_consumer_lag" in named  # the lag the KEDA trigger also scales on
    assert not metric_names_in("rate(landmark_worker_image_total[5m])") <= exported


def test_keda_watches_the_group_and_topic_the_workers_use(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["gpu-keda"]
    (scaled,) = [d for d in documents if d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    config = worker_config(documents)
    assert trigger["metadata"]["consumerGroup"] == config["LANDMARK_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["LANDMARK_IMAGES_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["LANDMARK_KAFKA_BOOTSTRAP"]
