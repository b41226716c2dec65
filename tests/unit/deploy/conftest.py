"""Fixtures of the deploy/ checks: the pinned tools, the rendered chart, the compose file.

Helm and the CRDs come from ``deploy/check/tools.py`` (``make deploy-tools``; built or fetched
on first use, cached in ``.cache/tools``). Nothing here needs a cluster or a Docker engine.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import yaml

from tests.unit.deploy.crd_schemas import CrdCatalog

REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "landmark-tagger"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
#: The GPU override, used as ``docker compose -f compose.yaml -f compose.gpu.yaml``.
COMPOSE_GPU_FILE = DEPLOY / "compose" / "compose.gpu.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
#: The Kubernetes version the chart is rendered for and its objects validated against.
KUBE_VERSION = "1.33.0"
#: Value sets the tests render: the defaults, and a GPU + KEDA + secured-Kafka cluster profile.
VALUE_SETS = {"default": (), "gpu-keda": (CHART / "ci" / "gpu-keda-values.yaml",)}
BIN = Path(sys.executable).parent
T = TypeVar("T")


def load_tools() -> ModuleType:
    """``deploy/check/tools.py`` as a module (``deploy`` is not a Python package)."""
    spec = importlib.util.spec_from_file_location(
        "deploy_check_tools", DEPLOY / "check" / "tools.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tools() -> ModuleType:
    return load_tools()


def needed(tools: ModuleType, what: str, make: Callable[[], T]) -> T:
    """``make()``, or the test fails saying which tool is missing and why."""
    try:
        return make()
    except tools.ToolUnavailable as error:
        pytest.fail(f"{what} is needed to check deploy/: {error}")


@pytest.fixture(scope="session")
def helm(tools: ModuleType) -> Path:
    return Path(needed(tools, "Helm", tools.ensure_helm))


@pytest.fixture(scope="session")
def crds(tools: ModuleType) -> CrdCatalog:
    return CrdCatalog(needed(tools, "The CRD files", tools.crd_files))


def helm_command(helm: Path, verb: str, *values: Path, sets: tuple[str, ...] = ()) -> list[str]:
    """``helm <verb>`` of the chart for :data:`KUBE_VERSION` with value files and ``--set``s."""
    command = [str(helm), verb, *(["tagger"] if verb == "template" else []), str(CHART)]
    command += ["--namespace", "landmarks", "--kube-version", KUBE_VERSION]
    for path in values:
        command += ["--values", str(path)]
    for assignment in sets:
        command += ["--set", assignment]
    return command


def helm_template(
    helm: Path, *values: Path, sets: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart (release ``tagger``, namespace ``landmarks``)."""
    command = helm_command(helm, "template", *values, sets=sets)
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key twice in one mapping (the API server refuses it too,
    where PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = {key for key in keys if keys.count(key) > 1}
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"repeated keys {sorted(map(str, repeated))}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def parse_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream (repeated keys refused)."""
    return [document for document in yaml.load_all(text, Loader=UniqueKeyLoader) if document]


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """Every object the chart renders, for each value set of :data:`VALUE_SETS`."""
    objects = {}
    for name, values in VALUE_SETS.items():
        result = helm_template(helm, *values)
        assert result.returncode == 0, f"helm template ({name}) failed: {result.stderr}"
        objects[name] = parse_documents(result.stdout)
    return objects


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def merge_compose(base: Any, override: Any) -> Any:
    """``override`` laid over ``base`` as compose merges files: mappings key by key, all else
    replaced (compose appends some sequences, e.g. ports; neither file overrides one)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_compose(base[key], value) if key in base else value
        return merged
    return override


@pytest.fixture(scope="session")
def compose_gpu(compose: dict[str, Any]) -> dict[str, Any]:
    """The stack as ``compose.yaml`` with ``compose.gpu.yaml`` over it."""
    override = yaml.safe_load(COMPOSE_GPU_FILE.read_text())
    merged: dict[str, Any] = merge_compose(compose, override)
    return merged


def worker_config(documents: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the worker's ConfigMap among a rendering's documents."""
    (config,) = [
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-worker")
    ]
    data: dict[str, str] = config["data"]
    return data


def containers_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers and init containers of a workload object (empty for other kinds)."""
    spec = document.get("spec", {})
    if document["kind"] == "Job" or document["kind"] == "Deployment":
        pod = spec["template"]["spec"]
        return [*pod.get("initContainers", []), *pod.get("containers", [])]
    return []
