"""Pinned tools for checking ``deploy/`` without a cluster: Helm, and the CRDs of KEDA and the
Prometheus operator.

``python deploy/check/tools.py`` (``make deploy-tools``, run by ``make test``) makes sure that

* ``.cache/tools/helm-<version>/helm`` exists: Helm built from its Go module with this machine's
  Go toolchain (``go install helm.sh/helm/v3/cmd/helm@<version>``; Go checks the module
  against its checksum database); about a minute the first time, nothing afterwards;
* ``.cache/tools/crds/`` holds the CRD files of KEDA and of the Prometheus operator, taken from
  their Go module zips on the Go module proxy (``$GOPROXY``, default proxy.golang.org), each zip
  checked against the SHA-256 pinned here.

It prints the paths it made sure of. Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / ".cache" / "tools"
HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.19.0"
HELM_BINARY = TOOLS_DIR / f"helm-{HELM_VERSION}" / "helm"
CRD_DIR = TOOLS_DIR / "crds"


@dataclass(frozen=True)
class CrdSource:
    """CRD files inside one Go module version, and the SHA-256 of the module's zip."""

    module: str
    version: str
    sha256: str
    files: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return CRD_DIR / f"{self.module.replace('/', '_')}@{self.version}"


CRD_SOURCES = (
    CrdSource(
        module="github.com/kedacore/keda/v2",
        version="v2.18.3",
        sha256="b3c0e7f536dea4d06689155be2e81cdbafb7cb8c8bfa03f2a67308967b757bcf",
        files=(
            "config/crd/bases/keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_triggerauthentications.yaml",
        ),
    ),
    CrdSource(
        module="github.com/prometheus-operator/prometheus-operator",
        version="v0.85.0",
        sha256="0bdb88ed823d0f2e86cf909638439b6ad1da744a228172c7411d9987527dc5d1",
        files=(
            "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ),
    ),
)


class ToolUnavailable(RuntimeError):
    """A tool cannot be built or downloaded here; the message says what to do."""


def ensure_helm() -> Path:
    """The pinned Helm binary, built with ``go install`` when missing."""
    if HELM_BINARY.is_file():
        return HELM_BINARY
    go = shutil.which("go")
    if go is None:
        raise ToolUnavailable(
            f"Helm {HELM_VERSION} is built from its Go module, and no 'go' is on PATH: install Go "
            f"(1.24 or newer), or put a helm binary of that version at {HELM_BINARY}"
        )
    environment = dict(os.environ, GOBIN=str(HELM_BINARY.parent), GOFLAGS="-buildvcs=false")
    print(f"building Helm {HELM_VERSION} with {go} (about a minute, once) ...", file=sys.stderr)
    result = subprocess.run(
        [go, "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not HELM_BINARY.is_file():
        tail = " | ".join(result.stderr.strip().splitlines()[-5:])
        raise ToolUnavailable(f"go install of Helm {HELM_VERSION} failed: {tail}")
    return HELM_BINARY


def _proxy() -> str:
    for entry in os.environ.get("GOPROXY", "https://proxy.golang.org").split(","):
        entry = entry.strip().split("|")[0]
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def ensure_crds(source: CrdSource) -> list[Path]:
    """The CRD files of ``source``, downloaded, checked and extracted when missing."""
    wanted = [source.folder / Path(name).name for name in source.files]
    if all(path.is_file() for path in wanted):
        return wanted
    url = f"{_proxy()}/{source.module}/@v/{source.version}.zip"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            content = response.read()
    except OSError as error:
        raise ToolUnavailable(f"cannot download {url}: {error}") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != source.sha256:
        raise ToolUnavailable(
            f"{url} has SHA-256 {digest}, not the pinned {source.sha256}: refusing to use it"
        )
    source.folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{source.module}@{source.version}/"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name, path in zip(source.files, wanted, strict=True):
            partial = path.with_suffix(".partial")
            partial.write_bytes(archive.read(prefix + name))
            partial.replace(path)
    return wanted


def crd_files() -> list[Path]:
    """Every pinned CRD file, fetched when missing."""
    return [path for source in CRD_SOURCES for path in ensure_crds(source)]


def main() -> int:
    """Make sure of Helm and the CRDs; print their paths (exit 1 with the reason otherwise)."""
    try:
        print(ensure_helm())
        for path in crd_files():
            print(path)
    except ToolUnavailable as error:
        print(f"deploy tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
