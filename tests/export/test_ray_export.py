"""`servectl export ray`: the Serve config of a deployment, valid for Ray's own schema, with
replicas, GPU shares and autoscaling from the spec, and no key in it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from servectl.cli import app
from servectl.spec import load_deployment

from support.servers import write_spec
from support.specs import toolbox_spec

schema = pytest.importorskip("ray.serve.schema", reason="ray[serve] is not installed (the `ray` extra)")


def test_the_config_follows_the_spec_and_ray_accepts_it(tmp_path: Path) -> None:
    from servectl.export.ray import serve_config

    entry = {k: v for k, v in toolbox_spec().items() if k != "server"}
    gpu = {**entry, "name": "gpu", "devices": {"accelerator": "cuda", "ids": [0, 1], "workers_per_device": 2}}
    scaled = {**entry, "name": "scaled", "scaling": {"min_replicas": 1, "max_replicas": 4}}
    spec = {"auth": {"api_keys": "${oc.env:SERVECTL_API_KEYS,null}"}, "models": [gpu, scaled]}
    path = write_spec(tmp_path, spec)
    config = serve_config(load_deployment([path]), spec_dir="/etc/servectl")
    schema.ServeDeploySchema.model_validate(config)  # Ray's own schema of `serve deploy` files
    first, second = config["applications"]
    deployment = first["deployments"][0]
    assert first["route_prefix"] == "/models/gpu/predict" and deployment["name"] == "gpu"
    assert deployment["num_replicas"] == 4 and deployment["ray_actor_options"]["num_gpus"] == 0.5
    assert first["args"]["base_dir"] == "/etc/servectl" and first["args"]["source"] == "/etc/servectl/spec.yaml"
    assert "auth" not in first["args"]["spec_data"]
    auto = second["deployments"][0]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 4) and "num_replicas" not in second["deployments"][0]


def test_the_command_writes_it_and_never_a_key(tmp_path: Path) -> None:
    path = write_spec(tmp_path, toolbox_spec(auth={"api_keys": ["very-secret-key"]}))
    out = tmp_path / "serve.yaml"
    result = CliRunner().invoke(app, ["export", "ray", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "very-secret-key" not in text and "servectl.processes.ray_replica:build" in text
    assert yaml.safe_load(text)["applications"][0]["name"] == "toolbox"
    assert "not checked by Ray's proxy" in result.output
