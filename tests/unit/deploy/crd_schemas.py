"""Validation of custom resources against the OpenAPI v3 schemas of their CRDs.

``kubernetes-validate`` knows only the core kinds and skips the others silently, so the KEDA and
Prometheus-operator objects the chart renders are checked here against the CRD files of the
pinned operator versions (``deploy/check/tools.py``). The CRD schema is turned into a JSON
Schema the way the API server reads it: ``x-kubernetes-int-or-string`` is "an integer or a
string", ``nullable`` admits null, and unknown fields are errors (what ``kubectl apply`` does
with strict field validation) unless the schema preserves unknown fields.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def to_json_schema(node: Any) -> Any:
    """A JSON Schema (draft 7) equivalent of a structural OpenAPI v3 CRD schema."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: to_json_schema(value) for key, value in node.items()}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    preserve = schema.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in schema if k.startswith("x-kubernetes-")]:
        schema.pop(key)
    if schema.get("format") == "int-or-string":
        schema.pop("format")
    if schema.get("type") == "object" and "properties" in schema and not preserve:
        schema.setdefault("additionalProperties", False)
    return schema


class CrdCatalog:
    """The schemas of every version of every kind in some CRD files."""

    def __init__(self, files: Iterable[Path]) -> None:
        self._schemas: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            crd = yaml.safe_load(path.read_text())
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = to_json_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # metadata is the API server's, checked by it, not by the CRD.
                schema.get("properties", {})["metadata"] = {"type": "object"}
                self._schemas[(f"{group}/{version['name']}", kind)] = schema

    def knows(self, document: dict[str, Any]) -> bool:
        return (document.get("apiVersion"), document.get("kind")) in self._schemas

    def errors(self, document: dict[str, Any]) -> list[str]:
        """What is wrong with ``document`` (empty when it is valid)."""
        schema = self._schemas[(document["apiVersion"], document["kind"])]
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        ]
