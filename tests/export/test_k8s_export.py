"""`servectl export k8s`: every manifest valid for a pinned Kubernetes, keys only through the
Secret, the exported spec still valid for `servectl validate`, figures that follow the spec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from export_helpers import K8S_VERSION, ROOT, Exported, export_k8s, write_yaml

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra) validates the manifests")

API_KEY = "sk-export-test-0123456789abcdef"
ADMIN_KEY = "adm-export-test-fedcba9876543210"


def validate_all(exported: Exported) -> dict[str, str]:
    """Every file written, validated strictly (no unknown field) against the pinned Kubernetes: {file: kind}."""
    kinds = {}
    for name, text in exported.files.items():
        manifest = yaml.safe_load(text)
        kv.validate(manifest, K8S_VERSION, strict=True)
        kinds[name] = manifest["kind"]
    return kinds


def small_spec(tmp_path: Path, filename: str = "spec.yaml", **sections: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "small",
        "handler": "servectl.examples.square",
        "devices": {"accelerator": "cpu"},
        "auth": {"api_keys": "${oc.env:SERVECTL_API_KEYS}"},
    }
    spec.update(sections)
    return write_yaml(tmp_path, filename, spec)


def tiny_onnx(folder: Path) -> Path:
    """An ONNX model `validate` accepts (y = x), built without torch: what configs/multi.yaml's
    tiny-onnx entry needs on disk."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["scores"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(folder / "tiny_net.onnx"))
    return folder


@pytest.mark.parametrize("config", ["quickstart.yaml", "multi.yaml"])
def test_every_manifest_validates(tmp_path: Path, config: str) -> None:
    exported = export_k8s(tmp_path / "out", str(ROOT / "configs" / config))
    assert exported.code == 0, exported.output
    assert validate_all(exported) == {
        "configmap.yaml": "ConfigMap",
        "secret.yaml.template": "Secret",
        "deployment.yaml": "Deployment",
        "service.yaml": "Service",
        "pdb.yaml": "PodDisruptionBudget",
        "hpa.yaml": "HorizontalPodAutoscaler",
    }
    assert "kubectl apply -f" in exported.output


def test_the_validator_catches_a_wrong_field(tmp_path: Path) -> None:
    """The validation above means something: a misspelt field fails it."""
    exported = export_k8s(tmp_path / "out", str(ROOT / "configs" / "quickstart.yaml"))
    deployment = exported.doc("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


def test_keys_come_from_the_secret_and_never_appear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVECTL_API_KEYS", API_KEY)  # set where export runs: still never written
    monkeypatch.setenv("SERVECTL_ADMIN_KEYS", ADMIN_KEY)
    monkeypatch.setenv("TEAM_KEYS", API_KEY + "-team")
    monkeypatch.setenv("NAMED_KEY", API_KEY + "-named")
    spec = write_yaml(
        tmp_path,
        "two.yaml",
        {
            "auth": {
                "api_keys": "${oc.env:SERVECTL_API_KEYS,null}",
                "admin_keys": "${oc.env:SERVECTL_ADMIN_KEYS}",
                "keys": [{"key": "${oc.env:NAMED_KEY}", "name": "team", "requests_per_minute": 60}],
            },
            "models": [
                {"name": "a", "handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}},
                {
                    "name": "b",
                    "handler": "servectl.examples.square",
                    "devices": {"accelerator": "cpu"},
                    "auth": {"api_keys": ["${oc.env:TEAM_KEYS}"]},
                },
            ],
        },
    )
    exported = export_k8s(tmp_path / "out", str(spec))
    assert exported.code == 0, exported.output
    for name, text in exported.files.items():
        assert API_KEY not in text and ADMIN_KEY not in text, name
    assert API_KEY not in exported.output and ADMIN_KEY not in exported.output
    secret = exported.doc("secret.yaml.template")
    assert secret["stringData"] == {
        "SERVECTL_API_KEYS": "",
        "NAMED_KEY": "",
        "TEAM_KEYS": "",
        "SERVECTL_ADMIN_KEYS": "",
    }
    env = {e["name"]: e for e in exported.container["env"]}
    for var in secret["stringData"]:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": var}  # required: no Secret, no pod
    assert "TEMPLATE" in exported.files["secret.yaml.template"].splitlines()[0]
    applied = [yaml.safe_load(t)["kind"] for n, t in exported.files.items() if n.endswith(".yaml")]
    assert "Secret" not in applied  # `kubectl apply -f DIR` never applies the unfilled template


@pytest.mark.parametrize(
    ("auth", "overrides", "field"),
    [
        ({"api_keys": ["written-1", "written-2"]}, [], "auth.api_keys"),
        ({"api_keys": "written-1,written-2"}, [], "auth.api_keys"),
        ({"api_keys": "${oc.env:SERVECTL_API_KEYS,written-1}"}, [], "auth.api_keys"),
        ({"admin_keys": "written-1"}, [], "auth.admin_keys"),
        ({}, ["auth.api_keys=written-1"], "auth.api_keys"),
        ({}, ["auth={api_keys: written-1}"], "auth"),
        ({"keys": [{"key": "written-1", "name": "team"}]}, [], "auth.keys.0.key"),
        ({}, ["auth.keys.0.key=written-1"], "auth.keys.0.key"),
    ],
)
def test_a_written_key_is_refused(tmp_path: Path, auth: dict, overrides: list[str], field: str) -> None:
    spec = small_spec(tmp_path, auth=auth)
    exported = export_k8s(tmp_path / "out", str(spec), *overrides)
    assert exported.code == 1
    assert f"{field}: " in exported.output and "${oc.env:SERVECTL_" in exported.output
    assert "written-" not in exported.output  # the error never repeats a key
    assert not (tmp_path / "out").exists()


def test_a_models_own_written_key_is_refused(tmp_path: Path) -> None:
    entry = {"name": "a", "handler": "servectl.examples.square", "auth": {"api_keys": ["own-key"]}}
    spec = write_yaml(tmp_path, "m.yaml", {"models": [entry]})
    exported = export_k8s(tmp_path / "out", str(spec))
    assert exported.code == 1
    assert "m.yaml:5:" in exported.output and "models.0.auth.api_keys" in exported.output
    named_auth = write_yaml(tmp_path, "n.yaml", {"models": [{"name": "auth", "handler": "servectl.examples.square"}]})
    override = export_k8s(tmp_path / "out", str(named_auth), "models.auth.auth.api_keys=own-key")
    assert override.code == 1 and "models.auth.auth.api_keys" in override.output and "own-key" not in override.output


def _serve_args(exported: Exported) -> list[str]:
    container = exported.container
    assert container["command"] == ["servectl"] and container["args"][0] == "serve"
    return list(container["args"][1:])


def _validate_from_configmap(exported: Exported, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`servectl validate` of the ConfigMap's files, with the pod's arguments, as the pod would read them
    (the spec files in one folder, the image's /app, here the repository, as the working directory)."""
    folder.mkdir()
    for key, text in exported.doc("configmap.yaml")["data"].items():
        (folder / key).write_text(text)
    args = [a.replace("/etc/servectl", str(folder)) for a in _serve_args(exported)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SERVECTL_")} | env
    command = [sys.executable, "-m", "servectl", "validate", *args]
    pipe = subprocess.PIPE
    return subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=pipe, stderr=pipe, text=True)


def test_the_exported_spec_validates(tmp_path: Path) -> None:
    """quickstart and multi, each through `validate` as the pod gets them; an unfilled Secret fails closed."""
    models = tiny_onnx(tmp_path)
    env = {"SERVECTL_API_KEYS": API_KEY, "SERVECTL_MODELS": str(models)}
    runs = {}
    for config in ("quickstart.yaml", "multi.yaml"):
        exported = export_k8s(tmp_path / config, str(ROOT / "configs" / config))
        assert exported.code == 0, exported.output
        runs[config] = _validate_from_configmap(exported, tmp_path / f"etc-{config}", env)
    runs["empty"] = _validate_from_configmap(exported, tmp_path / "etc-empty", {"SERVECTL_API_KEYS": ""})
    done = {name: (run.wait(60), *run.communicate()) for name, run in runs.items()}
    for config, models_served in (("quickstart.yaml", 1), ("multi.yaml", 3)):
        code, out, err = done[config]
        assert code == 0, err + out
        assert err.count("ok ") == models_served
    code, _, err = done["empty"]
    assert code == 1 and "auth.api_keys" in err


def test_overrides_are_checked_and_passed_on(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    exported = export_k8s(
        tmp_path / "out", str(spec), "batching.max_batch_size=8", "server.host=127.0.0.1", "server.port=9100"
    )
    assert exported.code == 0, exported.output
    args = _serve_args(exported)
    assert args == ["/etc/servectl/spec.yaml", "batching.max_batch_size=8", "server.host=0.0.0.0", "server.port=9100"]
    assert exported.container["ports"] == [{"name": "http", "containerPort": 9100, "protocol": "TCP"}]
    assert exported.doc("service.yaml")["spec"]["ports"][0]["port"] == 9100
    bad = export_k8s(tmp_path / "bad", str(spec), "batching.max_batch_size=0")
    assert bad.code == 1 and "batching.max_batch_size" in bad.output


def test_gpus_follow_the_devices(tmp_path: Path) -> None:
    def gpus(devices: dict, *options: str) -> tuple[Exported, Any]:
        exported = export_k8s(
            tmp_path / f"out{len(list(tmp_path.iterdir()))}", str(small_spec(tmp_path, devices=devices)), *options
        )
        assert exported.code == 0, exported.output
        validate_all(exported)
        return exported, exported.container["resources"]["limits"].get("nvidia.com/gpu")

    assert gpus({"accelerator": "cpu"})[1] is None
    assert gpus({"accelerator": "auto"})[1] is None
    assert gpus({"accelerator": "auto"}, "--gpus", "2")[1] == 2
    assert gpus({"accelerator": "cuda", "ids": 2})[1] == 2
    exported, count = gpus({"accelerator": "cuda", "ids": [0, 2], "workers_per_device": 2})
    assert count == 3  # GPU 2 of the pod exists only with three
    resources = exported.container["resources"]
    assert resources["requests"] == {"cpu": "6", "memory": "24Gi"}
    tolerations = exported.doc("deployment.yaml")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    exported, count = gpus({"accelerator": "cuda"})
    assert count == 1 and "devices.ids is auto" in exported.output


def test_each_api_process_past_the_first_asks_for_a_cpu_more(tmp_path: Path) -> None:
    exported = export_k8s(tmp_path / "out", str(small_spec(tmp_path, server={"api_processes": 3})))
    assert exported.code == 0, exported.output
    assert exported.container["resources"]["requests"]["cpu"] == "3"
    short = export_k8s(
        tmp_path / "short", str(small_spec(tmp_path, devices={"accelerator": "cuda", "ids": 2})), "--gpus", "1"
    )
    assert short.code == 1 and "--gpus 1" in short.output and "devices.ids" in short.output


def test_probes_and_grace_follow_the_spec(tmp_path: Path) -> None:
    spec = write_yaml(
        tmp_path,
        "slow.yaml",
        {
            "models": [
                {"name": "a", "handler": "servectl.examples.square", "supervisor": {"setup_timeout_s": 1234}},
                {"name": "b", "handler": "servectl.examples.square", "limits": {"drain_s": 77.5}},
            ]
        },
    )
    exported = export_k8s(tmp_path / "out", str(spec))
    assert exported.code == 0, exported.output
    container = exported.container
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 1234
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) > 0
    pod = exported.doc("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + 77.5  # the drain runs after the preStop
    quick = export_k8s(tmp_path / "quick", str(small_spec(tmp_path)))
    quick_startup = quick.container["startupProbe"]
    assert quick_startup["failureThreshold"] < startup["failureThreshold"]
    assert (
        quick.doc("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        < pod["terminationGracePeriodSeconds"]
    )


def test_pod_is_locked_down(tmp_path: Path) -> None:
    exported = export_k8s(tmp_path / "out", str(small_spec(tmp_path)))
    pod = exported.doc("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    security = exported.container["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in exported.container["volumeMounts"]}
    assert mounts == {"/etc/servectl": "spec", "/tmp": "tmp"}
    assert "replicas" not in exported.doc("deployment.yaml")["spec"]  # the HPA's to choose


def test_scaling_sets_the_autoscaler(tmp_path: Path) -> None:
    scaling = {"min_replicas": 2, "max_replicas": 7, "target_ongoing_requests": 2.5, "upscale_delay_s": 15}
    spec = small_spec(tmp_path, scaling=scaling)
    hpa = export_k8s(tmp_path / "a", str(spec)).doc("hpa.yaml")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 15
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    queue = export_k8s(tmp_path / "b", str(spec), "--hpa-metric", "queue-depth", "--replicas", "3")
    validate_all(queue)
    hpa = queue.doc("hpa.yaml")["spec"]
    assert hpa["minReplicas"] == 3
    assert hpa["metrics"][0]["pods"] == {
        "metric": {"name": "servectl_queue_depth"},
        "target": {"type": "AverageValue", "averageValue": "2500m"},
    }
    plain = export_k8s(tmp_path / "c", str(small_spec(tmp_path, "p.yaml")), "--hpa-metric", "queue-depth")
    assert plain.doc("hpa.yaml")["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "16"  # one batch
    assert "behavior" not in plain.doc("hpa.yaml")["spec"]
    zero = export_k8s(tmp_path / "d", str(small_spec(tmp_path, "z.yaml", scaling={"min_replicas": 0})))
    assert zero.doc("hpa.yaml")["spec"]["minReplicas"] == 1 and "min_replicas is 0" in zero.output
    wrong = export_k8s(tmp_path / "e", str(spec), "--max-replicas", "1")
    assert wrong.code == 1 and "--max-replicas 1" in wrong.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad_Name"], "--name 'Bad_Name'"),
        (["server.port=0"], "server.port is 0"),
        (["server.port=80"], "server.port is 80"),
        (["--cpu", "2cores"], "--cpu '2cores'"),
        (["--memory", "lots"], "--memory 'lots'"),
        (["--hpa-metric", "rps"], "--hpa-metric"),
        (["nonsense.key=1"], "nonsense"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, args: list[str], message: str) -> None:
    exported = export_k8s(tmp_path / "out", str(small_spec(tmp_path)), *args)
    assert exported.code != 0 and message in exported.output
    assert not (tmp_path / "out").exists()


def test_names_files_and_a_second_export(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = small_spec(tmp_path / "a", "spec.yaml", name="Big_Model.v2")
    second = write_yaml(tmp_path / "b", "spec.yaml", {"name": "other", "handler": "servectl.examples.square"})
    exported = export_k8s(tmp_path / "out", str(first), str(second))
    assert exported.code == 0, exported.output
    data = exported.doc("configmap.yaml")["data"]
    assert data == {"spec.yaml": first.read_text(), "1-spec.yaml": second.read_text()}  # as written, byte for byte
    assert _serve_args(exported)[:2] == ["/etc/servectl/spec.yaml", "/etc/servectl/1-spec.yaml"]
    assert exported.doc("deployment.yaml")["metadata"]["name"] == "spec"  # several models: the first file's name
    one = export_k8s(tmp_path / "one", str(first))
    assert one.doc("service.yaml")["metadata"]["name"] == "big-model-v2"
    assert one.doc("configmap.yaml")["metadata"]["name"] == "big-model-v2-spec"
    (tmp_path / "one" / "notes.txt").write_text("mine")
    (tmp_path / "one" / "rayservice.yaml").write_text("kind: RayService\n")  # an earlier export's
    again = export_k8s(tmp_path / "one", str(first), "--name", "renamed")
    assert again.code == 0
    assert not (tmp_path / "one" / "rayservice.yaml").exists() and (tmp_path / "one" / "notes.txt").exists()
    assert again.doc("deployment.yaml")["metadata"]["name"] == "renamed"


def test_no_auth_is_said(tmp_path: Path) -> None:
    exported = export_k8s(tmp_path / "out", str(small_spec(tmp_path, auth={})))
    assert exported.code == 0
    assert "secret.yaml.template" not in exported.files and "no auth" in exported.output
    assert [e["name"] for e in exported.container["env"]] == ["HOME"]
