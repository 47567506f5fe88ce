"""Several models in one deployment: `models:` lists, several files, shared sections, overrides,
defaults and uniqueness, each error located by file:line:column and a field path `models.N.…`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servectl.cli import app
from servectl.cli.checks import check_deployment
from servectl.spec import (
    SHARED_SECTIONS,
    DeploymentSpec,
    SharedSpec,
    SpecError,
    SpecIssue,
    issue_at,
    load_deployment,
    load_spec,
)

ROOT = Path(__file__).resolve().parent.parent

TWO = """\
server: {port: 9100}
auth: {api_keys: [k1]}
models:
  - name: a
    handler: h.py
  - name: b
    handler: h.py
    batching: {max_batch_size: 8}
    api: {path: /b}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues(paths: Path | list[Path], overrides: list[str] | None = None) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        load_deployment(paths, overrides)
    return info.value.issues


def test_a_single_model_file_is_a_deployment_of_one_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, "name: one\nhandler: h.py\nserver: {port: 9000}\nbatching: {max_batch_size: 4}\n")
    deployment = load_deployment(path)
    [spec] = deployment.models
    today = load_spec(path)
    assert spec == today and spec.source == today.source and spec.base_dir == today.base_dir
    assert spec.entry == "" and spec.api.path == "/predict" and deployment.server == spec.server
    for override in (
        "batching.max_batch_size=64",
        "models.0.batching.max_batch_size=64",
        "models.one.batching.max_batch_size=64",
    ):
        assert load_deployment(path, [override]).models[0] == load_spec(path, ["batching.max_batch_size=64"])
    assert load_spec(path, ["models.0.batching.max_batch_size=64"]) == load_spec(path, ["batching.max_batch_size=64"])


def test_models_share_server_and_auth_and_get_their_own_path(tmp_path: Path) -> None:
    deployment = load_deployment(write(tmp_path, TWO))
    a, b = deployment.models
    assert (a.name, a.entry, a.api.path) == ("a", "models.0", "/models/a/predict")
    assert (b.name, b.entry, b.api.path, b.batching.max_batch_size) == ("b", "models.1", "/b", 8)
    for spec in deployment.models:
        assert spec.server.port == 9100 and spec.auth.api_keys == ["k1"] and spec.base_dir == tmp_path.resolve()
    assert deployment.server.port == 9100 and deployment.model("b") is b
    public = deployment.public_dict()
    assert "k1" not in str(public) and [m["name"] for m in public["models"]] == ["a", "b"]
    assert "server" not in public["models"][0] and public["server"]["port"] == 9100


def test_a_list_of_one_model_keeps_the_one_model_path(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: solo\n    handler: h.py\n")
    [spec] = load_deployment(path).models
    assert spec.api.path == "/predict" and spec.entry == "models.0"
    assert load_spec(path) == spec


def test_load_spec_refuses_several_models(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, TWO))
    [issue] = info.value.issues
    assert issue.field == "models" and "2 models here (a, b)" in issue.message and "load_deployment" in issue.message


def test_model_keys_beside_models_are_named(tmp_path: Path) -> None:
    text = "handler: h.py\nmodels:\n  - name: a\n    handler: h.py\nbatching: {max_batch_size: 4}\nservr: {}\n"
    found = {i.field: i for i in issues(write(tmp_path, text))}
    assert set(found) == {"handler", "batching", "servr"}
    assert found["handler"].line == 1 and "'handler' is a model's key" in found["handler"].message
    assert found["batching"].line == 5 and "belongs in each entry" in found["batching"].message
    assert found["servr"].line == 6 and "did you mean 'server'" in found["servr"].message


def test_shared_sections_inside_an_entry_are_an_error(tmp_path: Path) -> None:
    text = "models:\n  - name: a\n    handler: h.py\n    server: {port: 1}\n"
    [issue] = issues(write(tmp_path, text))
    assert (issue.field, issue.line, issue.column) == ("models.0.server", 4, 5)
    assert "top level" in issue.message


def test_models_must_be_a_list_of_mappings(tmp_path: Path) -> None:
    [issue] = issues(write(tmp_path, "models: []\n"))
    assert (issue.field, issue.line) == ("models", 1) and "at least one" in issue.message
    [issue] = issues(write(tmp_path, "models:\n  - name: a\n    handler: h.py\n  - just-a-name\n"))
    assert (issue.field, issue.line, issue.column) == ("models.1", 4, 5) and "mapping" in issue.message


def test_entry_errors_are_located_within_their_entry(tmp_path: Path) -> None:
    text = TWO.replace("{max_batch_size: 8}", "{max_batch_sise: 8}")
    text += "  - name: c\n    handler: h.py\n    devices: {ids: [1, 1]}\n  - name: d\n"
    found = {i.field: i for i in issues(write(tmp_path, text))}
    assert set(found) == {"models.1.batching.max_batch_sise", "models.2.devices.ids", "models.3"}
    typo = found["models.1.batching.max_batch_sise"]
    assert (typo.line, typo.column) == (8, 16) and "did you mean 'max_batch_size'" in typo.message
    assert str(typo).startswith(f"{tmp_path / 'spec.yaml'}:8:16: models.1.batching.max_batch_sise:")
    assert found["models.2.devices.ids"].line == 12 and "distinct" in found["models.2.devices.ids"].message
    assert found["models.3"].line == 13 and "needs a handler" in found["models.3"].message


def test_model_names_must_be_unique_naming_both_entries(tmp_path: Path) -> None:
    text = TWO.replace("name: b", "name: a")
    [issue] = issues(write(tmp_path, text))
    assert (issue.field, issue.line, issue.column) == ("models.1.name", 6, 5)
    assert f"'a' is already the name of models.0.name at {tmp_path / 'spec.yaml'}:4:5" in issue.message


def test_paths_must_be_unique_explicit_or_by_default(tmp_path: Path) -> None:
    text = TWO.replace("path: /b", "path: /models/a/predict")
    [issue] = issues(write(tmp_path, text))
    assert (issue.field, issue.line, issue.column) == ("models.1.api.path", 9, 11)
    assert "'/models/a/predict' is already the api.path of models.0.api.path" in issue.message
    assert f"{tmp_path / 'spec.yaml'}:4:5" in issue.message  # entry a: its path is the default


def test_overrides_by_index_and_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    a, b = load_deployment(path, ["models.0.batching.max_batch_size=3", "models.b.limits={timeout_s: 2}"]).models
    assert a.batching.max_batch_size == 3 and b.limits.timeout_s == 2 and b.batching.max_batch_size == 8
    deployment = load_deployment(path, ["server.port=9200", "auth.api_keys=k2"])
    assert all(m.server.port == 9200 and m.auth.api_keys == ["k2"] for m in deployment.models)


def test_overrides_that_name_no_one_model_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    [issue] = issues(path, ["batching.max_batch_size=64"])
    assert issue.field == "batching.max_batch_size" and "2 models here" in issue.message
    assert "models.a.batching.max_batch_size" in issue.message and "override 'batching" in issue.file
    [issue] = issues(path, ["models.zz.batching.max_batch_size=1"])
    assert "0 (a), 1 (b)" in issue.message
    [issue] = issues(path, ["models.1.batching.max_batch_size=0"])
    assert issue.field == "models.1.batching.max_batch_size" and issue.line is None
    assert issue.file == f"{path} (override 'models.1.batching.max_batch_size=0')"
    [issue] = issues(path, ["bogus=1"])
    assert issue.field == "bogus" and "override 'bogus=1'" in issue.file


def test_files_together_the_first_files_server_applies(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\nhandler: h.py\nserver: {port: 9001, log_format: json}\n", "a.yaml")
    b = write(tmp_path, "name: b\nhandler: h.py\nserver: {port: 9001}\n", "b.yaml")  # repeats: fine
    deployment = load_deployment([a, b])
    assert [m.api.path for m in deployment.models] == ["/models/a/predict", "/models/b/predict"]
    assert all(m.server.port == 9001 and m.server.log_format == "json" for m in deployment.models)
    assert [m.source for m in deployment.models] == [str(a), str(b)] == deployment.sources
    assert load_deployment([a, b], ["models.1.batching.max_batch_size=2"]).models[1].batching.max_batch_size == 2


def test_files_together_a_conflicting_shared_setting_names_both_files(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\nhandler: h.py\nserver: {port: 9001}\n", "a.yaml")
    b = write(tmp_path, "name: b\nhandler: h.py\n\nserver:\n  port: 9002\n  host: 0.0.0.0\n", "b.yaml")
    found = {i.field: i for i in issues([a, b])}
    assert set(found) == {"server.port", "server.host"}
    port = found["server.port"]
    assert (port.file, port.line, port.column) == (str(b), 5, 3)
    assert f"9002 here, but {a}:3:10 sets 9001" in port.message
    assert f"{a} leaves it at its default '127.0.0.1'" in found["server.host"].message
    deployment = load_deployment([a, b], ["server.port=9005", "server.host=0.0.0.0"])  # an override settles it
    assert deployment.server.port == 9005 and deployment.server.host == "0.0.0.0"


def test_conflicting_keys_are_not_shown(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\nhandler: h.py\nauth: {api_keys: [first-secret]}\n", "a.yaml")
    b = write(tmp_path, "name: b\nhandler: h.py\nauth: {api_keys: second-secret}\n", "b.yaml")
    [issue] = issues([a, b])
    assert issue.field == "auth.api_keys" and issue.file == str(b) and str(a) in issue.message
    assert "secret" not in issue.message


def test_a_later_files_invalid_shared_section_is_located_there(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\nhandler: h.py\n", "a.yaml")
    b = write(tmp_path, "name: b\nhandler: h.py\nserver:\n  port: -1\n", "b.yaml")
    [issue] = issues([a, b])
    assert (issue.file, issue.line, issue.field) == (str(b), 4, "server.port")


def test_same_name_in_two_files_names_both(tmp_path: Path) -> None:
    a = write(tmp_path, "handler: h.py\n", "a.yaml")
    b = write(tmp_path, "\nname: servectl\nhandler: h.py\n", "b.yaml")
    [issue] = issues([a, b])
    assert (issue.file, issue.line, issue.field) == (str(b), 2, "name")
    assert f"'servectl' is already the name of name at {a}" in issue.message


def test_issue_at_locates_a_field_within_its_entry(tmp_path: Path) -> None:
    _, b = load_deployment(write(tmp_path, TWO)).models
    issue = issue_at(b, "batching.max_batch_size", "too big")
    assert (issue.field, issue.line, issue.column) == ("models.1.batching.max_batch_size", 8, 16)
    assert issue_at(b, "server.port", "taken").field == "server.port"  # shared: at the top level


def test_check_deployment_names_each_entrys_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])  # handler loading adds the spec's folders
    (tmp_path / "multi_check_ok.py").write_text("def predict(batch):\n    return batch\n")
    text = "models:\n  - name: a\n    handler: multi_check_ok.py\n  - name: b\n    handler: missing_module_xyz.py\n"
    issues_found, handlers = check_deployment(load_deployment(write(tmp_path, text)))
    [issue] = issues_found
    assert (issue.field, issue.line, issue.column) == ("models.1.handler", 5, 5)
    assert handlers[0] is not None and handlers[1] is None


def test_the_example_serves_three_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVECTL_API_KEYS", raising=False)
    deployment = load_deployment(ROOT / "configs" / "multi.yaml")
    assert [(m.name, m.api.kind, m.model.backend) for m in deployment.models] == [
        ("text-stats", "predict", "python"),
        ("echo-llm", "openai", "python"),
        ("tiny-onnx", "v2", "onnx"),
    ]
    assert [m.api.path for m in deployment.models] == [f"/models/{m.name}/predict" for m in deployment.models]


def test_deployment_spec_keeps_its_invariants() -> None:
    assert tuple(SharedSpec.model_fields) == SHARED_SECTIONS
    spec = load_spec(None)
    with pytest.raises(ValueError, match="share a name"):
        DeploymentSpec(models=[spec, spec])
    with pytest.raises(ValueError, match="carry the deployment's server"):
        DeploymentSpec(server={"port": 1}, models=[spec])


def test_cli_validate_names_entries(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = write(tmp_path, TWO.replace("{max_batch_size: 8}", "{max_batch_size: 0}"), "bad.yaml")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1 and f"{bad}:8:16: models.1.batching.max_batch_size:" in result.output
    a = write(tmp_path, "name: a\nhandler: h.py\nserver: {port: 1}\n", "a.yaml")
    b = write(tmp_path, "name: b\nhandler: h.py\nserver: {port: 2}\n", "b.yaml")
    result = runner.invoke(app, ["validate", str(a), str(b), "server.port=3"])
    assert result.exit_code == 1 and "h.py" in result.output  # the files load together; the handler is missing
    assert "server.port" not in result.output
