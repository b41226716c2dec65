"""The Dockerfile: hadolint-clean, pinned, unprivileged, tini as PID 1, locks that fit pyproject.

No Docker engine runs here, so the images are not built: the file is linted (``hadolint``),
read stage by stage, and its package locks are checked against ``pyproject.toml``.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.deploy.conftest import BIN, DEPLOY, DOCKERFILE, REPO_ROOT
from tests.unit.deploy.test_drift import image_instructions, image_of

LOCKS = DEPLOY / "docker" / "requirements"
FINAL_TARGETS = ("client", "cpu", "gpu")
#: The extras each lock must satisfy, and packages it must not hold.
LOCK_CONTENT = {
    "client.txt": (("client",), {"keras", "tensorflow-cpu", "pymilvus", "jax"}),
    "cpu.txt": (("worker", "trainer"), {"jax"}),
    "gpu.txt": (("worker", "trainer", "jax", "gpu-decode"), {"tensorflow-cpu", "tensorflow"}),
}


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run(
        [str(BIN / "hadolint"), str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3008" in result.stdout


def test_the_base_image_is_pinned_to_a_patch_release() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    for instruction, arguments in [i for s in image_instructions().values() for i in s]:
        if instruction == "FROM":
            image = arguments.split()[0]
            assert image.startswith("${PYTHON_IMAGE}") or image in image_instructions(), image


def test_final_images_run_unprivileged_under_tini_with_no_build_tools() -> None:
    stages = image_instructions()
    for target in FINAL_TARGETS:
        instructions = image_of(target)
        assert instructions[0] == ("FROM", "${PYTHON_IMAGE} AS runtime"), target
        (user,) = [a for i, a in instructions if i == "USER"]
        assert user == "10001:10001" and instructions[-1] in {("USER", user), ("CMD", '["--help"]')}
        (entrypoint,) = [json.loads(a) for i, a in instructions if i == "ENTRYPOINT"]
        assert entrypoint[:2] == ["tini", "--"], target
        runs = [a for i, a in instructions if i == "RUN"]
        assert runs == [a for i, a in stages["runtime"] if i == "RUN"], f"{target} runs more"
        copies = [a for i, a in instructions if i == "COPY"]
        assert copies == [f"--from=venv-{target} /opt/venv /opt/venv"], copies
    runtime_runs = " ".join(a for i, a in stages["runtime"] if i == "RUN")
    assert "tini=" in runtime_runs and "rm -rf /var/lib/apt/lists/*" in runtime_runs
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", runtime_runs)


def test_worker_images_check_their_health_with_the_probe() -> None:
    for target in ("cpu", "gpu"):
        (check,) = [a for i, a in image_of(target) if i == "HEALTHCHECK"]
        assert '["python", "-m", "worker.observability.probe", "healthz"]' in check
        env = " ".join(a for i, a in image_of(target) if i == "ENV")
        assert "LANDMARK_HTTP_HOST=0.0.0.0" in env
    assert "KERAS_BACKEND=jax" in " ".join(a for i, a in image_of("gpu") if i == "ENV")
    assert "KERAS_BACKEND=tensorflow" in " ".join(a for i, a in image_of("cpu") if i == "ENV")


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    admitted = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert (REPO_ROOT / ".dockerignore").read_text().splitlines()[3] == "**"
    copied = set()
    for instruction, arguments in [i for s in image_instructions().values() for i in s]:
        if instruction == "COPY" and not arguments.startswith("--from"):
            copied.update(part.rstrip("/") for part in arguments.split()[:-1])
    assert copied == admitted
    assert all((REPO_ROOT / path).exists() for path in copied)


def pins(lock: str) -> dict[str, str]:
    text = (LOCKS / lock).read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, flags=re.M))
    assert found, lock
    # Every pin carries hashes, so pip install --require-hashes accepts the lock.
    assert len(re.findall(r"^[A-Za-z0-9_.\-]+==", text, flags=re.M)) == len(found)
    assert text.count("--hash=sha256:") >= len(found)
    return {canonicalize_name(name): version for name, version in found.items()}


@pytest.mark.parametrize("lock", sorted(LOCK_CONTENT))
def test_each_lock_satisfies_the_extras_of_its_image(lock: str) -> None:
    extras, excluded = LOCK_CONTENT[lock]
    pinned = pins(lock)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    environment = {"platform_machine": "x86_64", "sys_platform": "linux", "python_version": "3.11"}
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        if lock == "gpu.txt" and name == "tensorflow-cpu":
            continue  # left out on purpose: the GPU image runs Keras on JAX
        assert name in pinned, f"{lock} lacks {requirement}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement}"
        )
    assert not {canonicalize_name(n) for n in excluded} & set(pinned), lock
    if lock == "gpu.txt":
        assert {"jax-cuda12-plugin", "nvidia-nvimgcodec-cu12", "cupy-cuda12x"} <= set(pinned)
