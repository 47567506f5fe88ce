"""The Python client: pydantic models by datamodel-code-generator, then the runtime in
`pyruntime.py`, then a sync and an async class with one typed method per operation."""

from __future__ import annotations

import ast
import json
import warnings
from importlib.metadata import version
from typing import Any

from servectl.clientgen.copied import copied_runtime
from servectl.clientgen.operations import (
    Group,
    Operation,
    deployment_title,
    group_operations,
    read_operations,
    ref_name,
)
from servectl.clientgen.source import ClientGenError, Source

_CLIENT_IMPORTS = "from collections.abc import AsyncIterator, Iterator, Mapping\nfrom typing import Any\n"
_THIRD_PARTY = frozenset({"httpx", "pydantic"})


def _fold_nullable(node: Any) -> Any:
    """`anyOf: [X, null]` (pydantic's `X | None`) as `type: [X, "null"]`: the generator then
    writes `X | None` with X's constraints instead of a root model per constrained field."""
    if isinstance(node, list):
        return [_fold_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fold_nullable(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        if isinstance(other.get("type"), str) and not other.keys() & {"$ref", "const", "enum"}:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return {**other, **rest, "type": [other["type"], "null"]}
    return node


def _models(schema: dict[str, Any]) -> str:
    """The component schemas as pydantic v2 models (datamodel-code-generator's output)."""
    try:
        from datamodel_code_generator import InputFileType, LiteralType, generate
        from datamodel_code_generator.format import Formatter
    except ImportError:
        raise ClientGenError(
            "--lang python needs datamodel-code-generator: pip install 'servectl[clientgen]'"
        ) from None
    components = _fold_nullable(schema.get("components", {}).get("schemas", {}))
    document = {"openapi": "3.1.0", "info": {"title": "models", "version": "1"}, "paths": {}}
    document["components"] = {"schemas": components}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = generate(
            json.dumps(document),
            input_file_type=InputFileType.OpenAPI,
            disable_timestamp=True,
            field_constraints=True,
            use_annotated=True,
            strict_nullable=True,
            enum_field_as_literal=LiteralType.All,
            use_schema_description=True,
            use_field_description=True,
            formatters=[Formatter.BUILTIN],
        )
    if not isinstance(code, str):
        raise ClientGenError("datamodel-code-generator returned several modules; expected one")
    return code


def _split_imports(code: str) -> tuple[list[ast.stmt], str]:
    """A module's leading import statements (parsed) and the code after them."""
    tree = ast.parse(code)
    imports: list[ast.stmt] = []
    end_line = 0
    for node in tree.body:
        if not isinstance(node, ast.Import | ast.ImportFrom):
            break
        imports.append(node)
        end_line = node.end_lineno or node.lineno
    return imports, "\n".join(code.splitlines()[end_line:]).strip("\n")


def _merge_imports(groups: list[list[ast.stmt]]) -> str:
    """One sorted import block from several, each name once; `__future__` first."""
    plain: set[str] = set()
    names: dict[str, set[str]] = {}
    for group in groups:
        for node in group:
            if isinstance(node, ast.Import):
                plain.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.setdefault(node.module, set()).update(alias.name for alias in node.names)
    future = names.pop("__future__", set())
    lines = [f"from __future__ import {', '.join(sorted(future))}", ""] if future else []
    for third_party in (False, True):
        lines += [f"import {m}" for m in sorted(plain) if (m in _THIRD_PARTY) == third_party]
        lines += [
            f"from {m} import {', '.join(sorted(n))}"
            for m, n in sorted(names.items())
            if (m.split(".")[0] in _THIRD_PARTY) == third_party
        ]
        lines.append("")
    return "\n".join(lines).strip()


class _Types:
    """Python types for schemas: named components are the generated models."""

    def __init__(self, models: str) -> None:
        self.classes = {n.name for n in ast.parse(models).body if isinstance(n, ast.ClassDef)}

    def of(self, schema: dict[str, Any] | None) -> str:
        schema = schema or {}
        name = ref_name(schema)
        if name is not None:
            if name not in self.classes:
                raise ClientGenError(f"component {name!r} has no generated model")
            return name
        if schema.get("type") == "array":
            item = self.of(schema.get("items"))
            return f"list[{item}]" if item in self.classes else "list[Any]"
        return "Any"

    def parse(self, type_: str, value: str) -> str:
        """Code that turns parsed JSON `value` into `type_`."""
        if type_ in self.classes:
            return f"{type_}.model_validate({value})"
        if type_.startswith("list[") and type_[5:-1] in self.classes:
            return f"[{type_[5:-1]}.model_validate(item) for item in {value}]"
        return value

    def body(self, schema: dict[str, Any] | None) -> str:
        model = self.of(schema)
        return f"{model} | Mapping[str, Any]" if model in self.classes else "Any"


def _literal(value: str | None) -> str:
    return "None" if value is None else json.dumps(value)


def _method(
    op: Operation, types: _Types, is_async: bool, name: str | None = None, fill: str | None = None
) -> list[str]:
    """One client method (two for a route that streams on request: `name` and `name_stream`);
    `fill`: the body's `model` unless the caller names one (a model's group of OpenAI calls)."""
    params = [f"{p}: str" for p in op.params]
    if op.body is not None:
        params.append(f"body: {types.body(op.body)}")
    signature = ", ".join(["self", *params])
    path = op.path
    if op.params:
        path = "f" + json.dumps(op.path).replace("{", "{quote(").replace("}", ", safe='')}")
    else:
        path = json.dumps(path)
    prefix = f"{{{json.dumps('model')}: {json.dumps(fill)}, **" if fill is not None else ""
    body = f", {prefix}dump(body){'}' if prefix else ''}" if op.body is not None else ""
    await_, def_, iter_, for_ = (
        ("await ", "async def", "AsyncIterator", "async for") if is_async else ("", "def", "Iterator", "for")
    )
    filled = f"; `model` {json.dumps(fill)} unless the body names one" if fill is not None else ""
    where = f"({op.method} {op.path}{filled})"
    doc = f'        """{op.summary or op.name} {where}."""'
    name = name or op.name
    methods: list[list[str]] = []
    if op.stream is None or op.stream.flag is not None:
        returns = types.of(op.response) if op.response is not None else "str"
        answers = f", answers={op.answers!r}" if op.answers else ""
        result = types.parse(returns, "response.json()") if op.response is not None else "response.text"
        methods.append(
            [
                f"    {def_} {name}({signature}) -> {returns}:",
                doc,
                f'        response = {await_}self.request("{op.method}", {path}{body}{answers})',
                f"        return {result}",
            ]
        )
    if op.stream is not None:
        s = op.stream
        chunk = types.of(s.chunk)
        stream_name = f"{name}_stream" if s.flag else name
        stream_body = f"dump(body, {json.dumps(s.flag)})" if s.flag and op.body is not None else "dump(body)"
        stream_body = f"{prefix}{stream_body}}}" if prefix else stream_body
        call = f'self.stream("{op.method}", {path}, {stream_body}, {json.dumps(s.format)}, {_literal(s.done)})'
        methods.append(
            [
                f"    {def_} {stream_name}({signature}) -> {iter_}[{chunk}]:",
                f'        """{op.summary or op.name}, streamed: chunks as they arrive {where}."""',
                f"        {for_} chunk in {call}:",
                f"            yield {types.parse(chunk, 'chunk')}",
            ]
        )
    return [line for m in methods for line in [*m, ""]]


_CALLS_BASES = {
    False: ("_SyncCalls", "SyncClientBase"),
    True: ("_AsyncCalls", "AsyncClientBase"),
}


def _calls_base(is_async: bool) -> str:
    """The base of a client's model groups: its client's `request` and `stream`, so a group's
    methods are written as the client's own are."""
    name, client = _CALLS_BASES[is_async]
    return "\n".join(
        [
            f"class {name}:",
            '    """Calls of one model of the deployment, over its client\'s connection, key and retries."""',
            "",
            f"    def __init__(self, client: {client}) -> None:",
            "        self.request = client.request",
            "        self.stream = client.stream",
        ]
    )


def _class_names(groups: list[Group], taken: set[str]) -> dict[str, tuple[str, str]]:
    """Each group's (sync, async) class: `TextStatsCalls`, `AsyncTextStatsCalls`."""
    names: dict[str, tuple[str, str]] = {}
    for group in groups:
        name = "".join(part[:1].upper() + part[1:] for part in group.attr.split("_")) + "Calls"
        while name in taken or f"Async{name}" in taken:
            name += "_"
        taken |= {name, f"Async{name}"}
        names[group.model] = (name, f"Async{name}")
    return names


def _group_class(name: str, group: Group, types: _Types, is_async: bool) -> str:
    kind = "Asynchronous" if is_async else "Synchronous"
    base = _CALLS_BASES[is_async][0]
    lines = [
        f"class {name}({base}):",
        f'    """{kind} calls of the model {group.model!r} (api.kind {group.kind})."""',
        "",
    ]
    for op in group.operations:
        fill = group.model if op.call in group.prefilled else None
        lines += _method(op, types, is_async, op.call, fill)
    return "\n".join(lines).rstrip() + "\n"


def _client_class(
    name: str,
    base: str,
    ops: list[Operation],
    types: _Types,
    is_async: bool,
    title: str,
    groups: dict[str, tuple[Group, str]] | None = None,
) -> str:
    """A client class: a `cached_property` per model group (`groups`: attribute -> (group, class)),
    then its own methods."""
    kind = "Asynchronous" if is_async else "Synchronous"
    lines = [f"class {name}({base}):", f'    """{kind} client of {title}."""', ""]
    for attr, (group, class_name) in (groups or {}).items():
        lines += [
            "    @cached_property",
            f"    def {attr}(self) -> {class_name}:",
            f'        """The model {group.model!r} (api.kind {group.kind})."""',
            f"        return {class_name}(self)",
            "",
        ]
    for op in ops:
        lines += _method(op, types, is_async)
    return "\n".join(lines).rstrip() + "\n"


def _clients(operations: list[Operation], groups: list[Group], types: _Types, title: str) -> list[str]:
    """The client classes (code parts): with several models, each model's group classes first."""
    if not groups:
        return [
            _client_class("Client", "SyncClientBase", operations, types, False, title),
            _client_class("AsyncClient", "AsyncClientBase", operations, types, True, title),
        ]
    names = _class_names(groups, set(types.classes))
    parts: list[str] = []
    for is_async, client, base in ((False, "Client", "SyncClientBase"), (True, "AsyncClient", "AsyncClientBase")):
        parts.append(_calls_base(is_async))
        parts += [_group_class(names[g.model][is_async], g, types, is_async) for g in groups]
        attrs = {g.attr: (g, names[g.model][is_async]) for g in groups}
        parts.append(_client_class(client, base, operations, types, is_async, title, attrs))
    return parts


def generate_python(source: Source, default_url: str) -> str:
    schema = source.schema
    meta = schema.get("x-servectl", {})
    operations, groups = group_operations(schema)
    models = _models(schema)
    types = _Types(models)
    runtime = copied_runtime("pyruntime.py", default_url)
    model_imports, model_code = _split_imports(models)
    runtime_imports, runtime_code = _split_imports(runtime)
    client_imports, _ = _split_imports(_CLIENT_IMPORTS)
    if any(op.params for op in read_operations(schema)):
        client_imports += _split_imports("from urllib.parse import quote\n")[0]
    if groups:
        client_imports += _split_imports("from functools import cached_property\n")[0]
    title, first_line = deployment_title(meta, groups, repr)
    example = (
        f"client.{groups[0].attr}.{groups[0].operations[0].call}(...)  # a group of calls per model"
        if groups
        else "..."
    )
    header = [
        f'"""Client of {first_line}.',
        "",
        f"Generated by servectl {meta.get('version', '?')} `client-gen` from {source.origin};",
        f"models by datamodel-code-generator {version('datamodel-code-generator')}. Do not edit: regenerate.",
        "",
        "    with Client(api_key=...) as client:  # base URL: $SERVECTL_URL, else the deployment's",
        f"        {example}",
        "",
        "Errors raise APIError (status, request_id, body); 429 and 503 are retried, honouring Retry-After.",
        '"""',
        "",
    ]
    parts = [
        "\n".join(header),
        _merge_imports([model_imports, runtime_imports, client_imports]),
        "# --- models ---",
        model_code,
        "# --- runtime ---",
        runtime_code,
        "# --- clients ---",
        *_clients(operations, groups, types, title),
    ]
    return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"
