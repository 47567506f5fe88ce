"""`runtime.kind: ray`: a KubeRay RayService instead of the Deployment and the HPA. kubernetes-validate
has no schema for the CRD: its structure is checked here, and its pod templates validated as Pods."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from export_helpers import K8S_VERSION, export_k8s, write_yaml

from servectl.export.keys import PLACEHOLDER

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra) validates the manifests")

SECRET_KEY = "sk-ray-test-0123456789"


def ray_spec(tmp_path: Path, **model: Any) -> Path:
    entry = {"name": "square", "handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}, **model}
    return write_yaml(
        tmp_path,
        "ray.yaml",
        {
            "server": {"port": 8100},
            "auth": {"api_keys": "${oc.env:SERVECTL_API_KEYS}"},
            "runtime": {"kind": "ray"},
            "models": [entry, {"name": "other", "handler": "servectl.examples.square"}],
        },
    )


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """servectl.export.ray replaced by a stub: what it is given, and what it answers."""
    seen: dict[str, Any] = {"answer": None}

    def serve_config(deployment: Any, gpus: float | None = None, spec_dir: str | None = None) -> dict[str, Any]:
        seen["deployment"], seen["gpus"], seen["spec_dir"] = deployment, gpus, spec_dir
        return seen["answer"] or {
            "http_options": {"host": "0.0.0.0", "port": deployment.server.port},
            "applications": [{"name": m.name, "route_prefix": m.api.path} for m in deployment.models],
        }

    monkeypatch.setitem(sys.modules, "servectl.export.ray", types.SimpleNamespace(serve_config=serve_config))
    return seen


def _pod(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]}, **template}


def check_rayservice(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    """The RayService's structure as KubeRay's ray.io/v1 CRD has it; its pod templates are valid Pods."""
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    spec = manifest["spec"]
    assert set(spec) == {"serveConfigV2", "rayClusterConfig"}
    config = yaml.safe_load(spec["serveConfigV2"])  # a string holding YAML, as KubeRay wants it
    assert isinstance(config["applications"], list) and config["applications"]
    cluster = spec["rayClusterConfig"]
    assert isinstance(cluster["rayVersion"], str) and isinstance(cluster["enableInTreeAutoscaling"], bool)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # map[string]string
        kv.validate(_pod(group["template"]), K8S_VERSION, strict=True)
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == image and "command" not in container  # KubeRay runs `ray start`
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for worker in cluster["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
        assert worker["groupName"]
    return config


def test_rayservice_replaces_deployment_and_hpa(tmp_path: Path, stub: dict[str, Any]) -> None:
    exported = export_k8s(tmp_path / "out", str(ray_spec(tmp_path)), "--image", "reg.example/servectl:1")
    assert exported.code == 0, exported.output
    assert set(exported.files) == {"configmap.yaml", "secret.yaml.template", "rayservice.yaml"}
    for name in ("configmap.yaml", "secret.yaml.template"):
        kv.validate(exported.doc(name), K8S_VERSION, strict=True)
    manifest = exported.doc("rayservice.yaml")
    config = check_rayservice(manifest, "reg.example/servectl:1")
    assert [a["name"] for a in config["applications"]] == ["square", "other"]
    assert [m.name for m in stub["deployment"].models] == ["square", "other"]
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in head["containers"][0]["ports"]}
    assert ports["serve"] == 8100 and ports["gcs"] == 6379
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert (
        env["SERVECTL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"]
        == exported.doc("secret.yaml.template")["metadata"]["name"]
    )
    assert head["securityContext"]["runAsUser"] == 10001
    assert "without servectl's keys" in exported.output  # Ray's proxy is not servectl's front end: said


def test_scaling_gpus_and_resources(tmp_path: Path, stub: dict[str, Any]) -> None:
    spec = ray_spec(
        tmp_path,
        devices={"accelerator": "cuda", "ids": 2},
        scaling={"min_replicas": 1, "max_replicas": 4},
    )
    exported = export_k8s(tmp_path / "out", str(spec), "--cpu", "3", "--memory", "12Gi")
    assert exported.code == 0, exported.output
    cluster = exported.doc("rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    worker = cluster["workerGroupSpecs"][0]
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 4)
    resources = worker["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "3", "memory": "12Gi"}, "limits": {"memory": "12Gi", "nvidia.com/gpu": 2}}
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    assert "automountServiceAccountToken" not in head  # the autoscaler beside the head asks the API server
    assert stub["gpus"] == 2.0  # the GPUs the fewest workers have, for devices.ids: auto


def test_keys_never_reach_the_serve_config(
    tmp_path: Path, stub: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVECTL_API_KEYS", SECRET_KEY)
    stub["answer"] = None
    exported = export_k8s(tmp_path / "ok", str(ray_spec(tmp_path)))
    assert all(SECRET_KEY not in text for text in exported.files.values())
    assert stub["deployment"].auth.api_keys == [PLACEHOLDER]  # what export loads: never the real keys
    stub["answer"] = {"applications": [{"name": "square", "args": {"keys": stub["deployment"].auth.api_keys}}]}
    leaky = export_k8s(tmp_path / "leaky", str(ray_spec(tmp_path)))
    assert leaky.code == 1 and "holds the API keys" in leaky.output
    assert not (tmp_path / "leaky").exists()


def test_hpa_metric_is_refused_with_ray(tmp_path: Path, stub: dict[str, Any]) -> None:
    exported = export_k8s(tmp_path / "out", str(ray_spec(tmp_path)), "--hpa-metric", "cpu")
    assert exported.code == 1 and "--hpa-metric" in exported.output


def test_with_the_real_serve_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """servectl.export.ray's own config (it imports no Ray to write one)."""
    pytest.importorskip("servectl.export.ray")
    monkeypatch.setenv("SERVECTL_API_KEYS", SECRET_KEY)
    exported = export_k8s(tmp_path / "out", str(ray_spec(tmp_path)))
    assert exported.code == 0, exported.output
    config = check_rayservice(exported.doc("rayservice.yaml"), "servectl:0.1.0")
    assert [a["name"] for a in config["applications"]] == ["square", "other"]
    assert all(SECRET_KEY not in text and PLACEHOLDER not in text for text in exported.files.values())
