"""Spec loading: defaults, interpolation, overrides, and errors located by file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from servectl.spec import DEFAULT_SPEC, SpecError, load_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def issues(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text), overrides)
    return info.value.issues


def test_defaults_fill_missing_sections(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "handler: handlers/x.py\n"))
    assert spec.batching.max_batch_size == 16 and spec.batching.max_wait_ms == 5
    assert spec.limits.timeout_s == 30 and spec.limits.max_queue == 1024 and spec.limits.max_body_mb == 16
    assert spec.api.path == "/predict" and spec.server.port == 8000 and spec.auth.api_keys is None
    assert spec.base_dir == tmp_path.resolve()


def test_env_interpolation_and_dotlist_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEYS", "a, b,,c")
    text = "handler: h.py\nauth:\n  api_keys: ${oc.env:MY_KEYS,null}\nbatching:\n  max_batch_size: 4\n"
    spec = load_spec(write(tmp_path, text), ["batching.max_batch_size=64", "server.port=9000"])
    assert spec.auth.api_keys == ["a", "b", "c"]
    assert spec.batching.max_batch_size == 64 and spec.server.port == 9000
    monkeypatch.delenv("MY_KEYS")
    assert load_spec(write(tmp_path, text)).auth.api_keys is None


def test_unknown_key_names_line_column_and_suggests(tmp_path: Path) -> None:
    text = "handler: h.py\nbatching:\n  max_batch_sise: 8\n"
    [issue] = issues(tmp_path, text)
    assert (issue.line, issue.column, issue.field) == (3, 3, "batching.max_batch_sise")
    assert "did you mean 'max_batch_size'" in issue.message
    assert str(issue).startswith(f"{tmp_path / 'spec.yaml'}:3:3: batching.max_batch_sise:")


def test_every_error_is_listed_with_its_line(tmp_path: Path) -> None:
    text = "handler: h.py\ndevices:\n  accelerator: tpu\nbatching:\n  max_batch_size: 0\nlimits:\n  timeout_s: fast\n"
    found = {i.field: i for i in issues(tmp_path, text)}
    assert set(found) == {"devices.accelerator", "batching.max_batch_size", "limits.timeout_s"}
    assert found["devices.accelerator"].line == 3 and "'auto', 'cpu' or 'cuda'" in found["devices.accelerator"].message
    assert (
        found["batching.max_batch_size"].line == 5
        and "greater than or equal to 1" in found["batching.max_batch_size"].message
    )
    assert found["limits.timeout_s"].line == 7


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    [issue] = issues(tmp_path, "handler: h.py\nbatching:\n  max_batch_size: [1, 2\n")
    assert issue.line is not None and issue.line >= 3 and "YAML syntax error" in issue.message


def test_bad_override_is_named(tmp_path: Path) -> None:
    [issue] = issues(tmp_path, "handler: h.py\n", ["batching.max_batch_size=-1"])
    assert "override 'batching.max_batch_size=-1'" in issue.file and issue.field == "batching.max_batch_size"


def test_missing_env_without_default_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    [issue] = issues(tmp_path, "handler: h.py\nname: ${oc.env:NOT_SET_ANYWHERE}\n")
    assert issue.field == "name" and issue.line == 2 and "cannot resolve" in issue.message


def test_device_ids_forms(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, "handler: h.py\ndevices:\n  ids: [0, 3]\n")).devices.ids == [0, 3]
    assert load_spec(write(tmp_path, "handler: h.py\ndevices:\n  ids: 2\n")).devices.ids == 2
    [issue] = issues(tmp_path, "handler: h.py\ndevices:\n  ids: [1, 1]\n")
    assert issue.field == "devices.ids" and issue.line == 3 and "distinct" in issue.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    [issue] = issues(tmp_path, "- a\n- b\n")
    assert "mapping" in issue.message


def test_public_dict_hides_keys(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "handler: h.py\nauth:\n  api_keys: [secret-one]\n"))
    assert "secret-one" not in str(spec.public_dict())


def test_builtin_default_loads() -> None:
    spec = load_spec(None)
    assert spec.handler == "servectl.examples.square" and spec.source == str(DEFAULT_SPEC)


def test_backend_needs_its_fields(tmp_path: Path) -> None:
    [issue] = issues(tmp_path, "model:\n  backend: onnx\n")
    assert issue.field == "model" and issue.line == 1 and "needs model.path" in issue.message
    [issue] = issues(tmp_path, "model:\n  backend: python\n")
    assert "needs a handler" in issue.message
    [issue] = issues(tmp_path, "model:\n  backend: transformers\n  path: m\n  task: summarization\n")
    assert issue.field == "model.task" and issue.line == 4 and "feature-extraction" in issue.message


def test_pkg_resolver_finds_installed_package_paths(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "handler: h.py\nmodel:\n  path: ${pkg:servectl,examples}\n"))
    assert spec.model_path() == Path(__file__).resolve().parent.parent / "servectl" / "examples"
    [issue] = issues(tmp_path, "handler: h.py\nmodel:\n  path: ${pkg:no_such_pkg_xyz}\n")
    assert issue.field == "model.path" and "not installed" in issue.message


def test_tensor_declarations_take_names_or_objects_and_name_bad_shapes(tmp_path: Path) -> None:
    from servectl.spec import ModelSpec

    model = ModelSpec.model_validate(
        {"backend": "pytorch", "factory": "m:f", "inputs": ["a", {"name": "b", "shape": [-1, 3], "dtype": "int64"}]}
    )
    assert [(d.name, d.shape, d.dtype) for d in model.inputs or []] == [("a", None, None), ("b", [-1, 3], "int64")]
    for bad, words in (
        ({"inputs": [{"name": "a", "shape": [0, 3]}]}, "shape"),
        ({"inputs": ["a", "a"]}, "distinct"),
        ({"outputs": ["y"], "backend": "onnx", "path": "m.onnx"}, "model.outputs"),
    ):
        with pytest.raises(ValueError, match=words):
            ModelSpec.model_validate({"backend": "pytorch", "factory": "m:f", **bad})


def test_several_api_processes_need_the_local_runtime(tmp_path: Path) -> None:
    text = "handler: h.py\nruntime: {kind: ray}\nserver:\n  api_processes: 2\n"
    [issue] = issues(tmp_path, text)
    assert (issue.line, issue.field) == (4, "server.api_processes") and "runtime.kind 'local'" in issue.message
    [issue] = issues(tmp_path, "handler: h.py\nserver:\n  api_processes: 0\n")
    assert issue.field == "server.api_processes" and "greater than or equal to 1" in issue.message
    text = "handler: h.py\nlimits:\n  rate:\n    requests_per_minute: 60\nserver:\n  api_processes: 2\n"
    [issue] = issues(tmp_path, text)
    assert issue.field == "limits.rate.backend" and "use backend 'redis'" in issue.message
    spec = load_spec(write(tmp_path, text.replace("60\n", "60\n    backend: redis\n")))
    assert spec.server.api_processes == 2 and spec.limits.rate.backend == "redis"


def test_true_or_false_is_not_a_number(tmp_path: Path) -> None:
    text = "handler: h.py\nbatching:\n  max_batch_size: true\nserver:\n  api_processes: false\napi:\n  stream: true\n"
    found = {i.field: i for i in issues(tmp_path, text)}
    assert set(found) == {"batching.max_batch_size", "server.api_processes"}  # api.stream is a boolean
    assert (
        found["batching.max_batch_size"].line == 3
        and "a number, not true or false" in found["server.api_processes"].message
    )
