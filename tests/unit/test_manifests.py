"""The Kubernetes manifests validate strictly against the Kubernetes schemas
(kubernetes-validate), the kustomization names only files that exist, and
what the agent is told in them is what it accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
RESOURCES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
VALIDATE = shutil.which("kubernetes-validate") or str(Path(sys.executable).with_name("kubernetes-validate"))


@pytest.mark.parametrize("manifest", RESOURCES, ids=lambda p: p.name)
def test_each_manifest_validates_strictly(manifest):
    proc = subprocess.run([VALIDATE, "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout


def test_the_kustomization_names_existing_resources():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization" and all((K8S / r).exists() for r in k["resources"])


def _containers():
    for manifest in RESOURCES:
        doc = yaml.safe_load(manifest.read_text())
        if doc["kind"] not in ("DaemonSet", "Pod"):
            continue
        spec = doc["spec"].get("template", {}).get("spec", doc["spec"])
        for c in spec["containers"]:
            if c["image"].startswith("otel-fsnotify"):
                yield manifest.name, spec, c


@pytest.mark.parametrize("name, spec, container", list(_containers()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_agent_containers_are_least_privilege_probed_and_bounded(name, spec, container):
    sc = container["securityContext"]
    assert sc["privileged"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/usr/src" not in mounts, "the image's kernel headers, not the node's"
    env = [e["name"] for e in container.get("env", [])]
    for i, e in enumerate(container.get("env", [])):
        for ref in ("$(NODE_NAME)", "$(POD_NAME)", "$(POD_NAMESPACE)"):
            if ref in str(e.get("value", "")):
                assert ref[2:-1] in env[:i], f"{name}: {ref} used before it is defined"
    # the agent accepts its own arguments (parsed, not run)
    from otel_fsnotify.cli import build_parser

    args = build_parser().parse_args(container["args"])
    assert args.command == "run" and args.health_listen


def test_the_daemonset_runs_on_every_node():
    doc = yaml.safe_load((K8S / "daemonset.yaml").read_text())
    assert {"operator": "Exists"} in doc["spec"]["template"]["spec"]["tolerations"]
