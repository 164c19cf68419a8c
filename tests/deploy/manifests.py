"""Render the Helm chart and validate Kubernetes manifests offline.

Built-in kinds are checked with ``kubernetes-validate`` (strict: unknown fields fail);
the custom resources the chart can render (ServiceMonitor, PrometheusRule, ScaledObject) are checked
against the subset schemas shipped in ``crd-schemas/``. Any other kind is an error, so
a new template cannot slip past validation unnoticed.

CLI (used by devtools/validate_deploy.sh): ``python -m tests.deploy.manifests FILE...``
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
CHART = REPO_ROOT / "helm" / "xconv"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd-schemas"
KUBE_VERSION = "1.37.0"
"""Kubernetes version for both `helm template --kube-version` and the schemas."""

CUSTOM_RESOURCES: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.keda.sh-v1alpha1.json",
}

Manifest = dict[str, Any]


class HelmMissingError(RuntimeError):
    """helm is not installed where the tests look for it."""


@dataclass(frozen=True, slots=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def manifests(self) -> list[Manifest]:
        return parse_documents(self.stdout)


def helm(*args: str, timeout: float = 60.0) -> HelmResult:
    """Run .tools/bin/helm; a missing binary is an error, never a reason to skip."""
    if not HELM.is_file():
        raise HelmMissingError(f"{HELM} is missing: run devtools/install_tools.sh")
    proc = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def render(*values_files: Path, sets: Sequence[str] = (), release: str = "xc") -> HelmResult:
    """``helm template`` of the chart with values files and ``--set`` pairs.

    A pair starting with ``json:`` goes through ``--set-json`` (typed: 12.5 stays a number).
    """
    args = ["template", release, str(CHART), "--namespace", "conv", "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["-f", str(path)]
    for item in sets:
        if item.startswith("json:"):
            args += ["--set-json", item.removeprefix("json:")]
        else:
            args += ["--set", item]
    return helm(*args)


def parse_documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    if len(found) != 1:
        raise AssertionError(f"expected exactly one {kind}, found {len(found)}")
    return found[0]


@cache
def _crd_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CRD_SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def validate_manifest(manifest: Manifest, kube_version: str = KUBE_VERSION) -> None:
    """Raise if the manifest is invalid for its kind (see the module docstring)."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    if key in CUSTOM_RESOURCES:
        schema = _crd_schema(CUSTOM_RESOURCES[key])
        jsonschema.Draft202012Validator(schema).validate(manifest)
        return
    kubernetes_validate.validate(manifest, kube_version, strict=True)


def validate_all(manifests: Iterable[Manifest]) -> list[str]:
    """Validate every manifest; return one line per resource (kind/name) checked."""
    checked: list[str] = []
    for manifest in manifests:
        validate_manifest(manifest)
        checked.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return checked


def main(argv: Sequence[str]) -> int:
    failures = 0
    for name in argv:
        for manifest in parse_documents(Path(name).read_text(encoding="utf-8")):
            label = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
            try:
                validate_manifest(manifest)
            except (
                jsonschema.ValidationError,
                kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError,
            ) as exc:
                failures += 1
                print(f"INVALID {name}: {label}: {str(exc).splitlines()[0]}")
            else:
                print(f"valid   {name}: {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
