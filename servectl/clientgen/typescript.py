"""The TypeScript client: types by openapi-typescript (npm, run through npx), then the
runtime in `tsruntime.ts`, then one `fetch`-based class with a method per operation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from servectl.clientgen.copied import copied_runtime
from servectl.clientgen.operations import Group, Operation, deployment_title, group_operations
from servectl.clientgen.source import ClientGenError, Source

OPENAPI_TYPESCRIPT = "openapi-typescript@7.13.0"  # pinned: the same schema gives the same file


def _types(source: Source) -> str:
    npx = shutil.which("npx")
    if npx is None or shutil.which("node") is None:
        raise ClientGenError(
            "--lang typescript needs Node.js 18+ with npx on PATH: it runs "
            f"{OPENAPI_TYPESCRIPT} from npm to write the types (or use --lang python or curl)"
        )
    with tempfile.TemporaryDirectory(prefix="servectl-ts-") as tmp:
        schema, out = Path(tmp) / "openapi.json", Path(tmp) / "types.ts"
        schema.write_text(json.dumps(source.schema))
        try:
            done = subprocess.run(
                # fields with defaults stay optional in requests
                [npx, "--yes", OPENAPI_TYPESCRIPT, str(schema), "-o", str(out), "--default-non-nullable=false"],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            raise ClientGenError(f"npx {OPENAPI_TYPESCRIPT} did not finish in 300 s") from None
        if done.returncode != 0 or not out.exists():
            raise ClientGenError(f"npx {OPENAPI_TYPESCRIPT} failed: {(done.stderr or done.stdout).strip()[-800:]}")
        return out.read_text()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _method(op: Operation, name: str | None = None, fill: str | None = None) -> list[str]:
    """One method (two for a route that streams on request); `fill`: the body's `model` unless
    the caller names one (a model's group of OpenAI calls)."""
    name = name or op.name
    params = [f"{p}: string" for p in op.params]
    if op.body is not None:
        body_type = f'JsonBody<"{op.name}">'
        params.append(f'body: Omit<{body_type}, "model"> & {{ model?: string }}' if fill else f"body: {body_type}")
    path = json.dumps(op.path)
    if op.params:
        path = "`" + re.sub(r"{(\w+)}", r"${encodeURIComponent(\1)}", op.path) + "`"
    sent = f"{{ model: {json.dumps(fill)}, ...body }}" if fill is not None else "body"
    body = f", {sent}" if op.body is not None else ""
    filled = f"; `model` {json.dumps(fill)} unless the body names one" if fill is not None else ""
    doc = f"  /** {op.summary or op.name} ({op.method} {op.path}{filled}). */"
    lines: list[str] = []
    if op.stream is None or op.stream.flag is not None:
        answers = f", {json.dumps(list(op.answers))}" if op.answers else ""
        if answers and not body:
            answers = f", undefined{answers}"
        if op.response is None:
            returns, result = "string", "await response.text()"
        else:
            returns = f'JsonAnswer<"{op.name}">'
            result = f"(await response.json()) as {returns}"
        lines += [
            doc,
            f"  async {_camel(name)}({', '.join(params)}): Promise<{returns}> {{",
            f'    const response = await this.request("{op.method}", {path}{body}{answers});',
            f"    return {result};",
            "  }",
            "",
        ]
    if op.stream is not None:
        s = op.stream
        media = "text/event-stream" if s.format == "sse" else "application/x-ndjson"
        chunk = f'StreamChunk<"{op.name}", "{media}">'
        stream_name = f"{name}_stream" if s.flag else name
        if s.flag and op.body is not None:
            sent = f"{sent[:-2]}, {s.flag}: true }}" if fill is not None else f"{{ ...body, {s.flag}: true }}"
        elif not body:
            sent = "undefined"
        call = f'this.stream("{op.method}", {path}, {sent}, "{s.format}", {json.dumps(s.done)})'
        lines += [
            f"  /** {op.summary or op.name}, streamed: chunks as they arrive ({op.method} {op.path}{filled}). */",
            f"  async *{_camel(stream_name)}({', '.join(params)}): AsyncGenerator<{chunk}> {{",
            f"    for await (const chunk of {call}) yield chunk as {chunk};",
            "  }",
            "",
        ]
    return lines


# the base of a client's model groups: its client's `request` and `stream`, bound
_MODEL_CALLS = """/** Calls of one model of the deployment, over its client's connection, key and retries. */
class ModelCalls {
  constructor(
    protected readonly request: (method: string, path: string, body?: unknown, answers?: number[]) => Promise<Response>,
    protected readonly stream: (
      method: string,
      path: string,
      body: unknown,
      format: "sse" | "ndjson",
      done: string | null,
    ) => AsyncGenerator<unknown>,
  ) {}
}"""


def _class_name(group: Group, taken: set[str]) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in group.attr.split("_")) + "Calls"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _group_class(name: str, group: Group) -> str:
    lines = [
        f"/** Calls of the model {json.dumps(group.model)} (api.kind {group.kind}). */",
        f"export class {name} extends ModelCalls {{",
    ]
    for op in group.operations:
        lines += _method(op, op.call, group.model if op.call in group.prefilled else None)
    return "\n".join([*lines[:-1], "}"] if lines[-1] == "" else [*lines, "}"])


def generate_typescript(source: Source, default_url: str) -> str:
    meta = source.schema.get("x-servectl", {})
    operations, groups = group_operations(source.schema)
    types = _types(source)
    runtime = copied_runtime("tsruntime.ts", default_url)
    title, first_line = deployment_title(meta, groups, json.dumps)
    example = []
    if groups:
        call = f"{_camel(groups[0].attr)}.{_camel(groups[0].operations[0].call)}"
        example = [f"//   await client.{call}(...);  // a group of calls per model"]
    header = [
        f"// Client of {first_line}.",
        f"// Generated by servectl {meta.get('version', '?')} `client-gen` from {source.origin};",
        f"// types by {OPENAPI_TYPESCRIPT}. Do not edit: regenerate.",
        "//",
        "//   const client = new Client({ apiKey: ... });  // base URL: $SERVECTL_URL, else the deployment's",
        *example,
        "//",
        "// Errors throw APIError (status, requestId, body); 429 and 503 are retried, honouring Retry-After.",
        "",
    ]
    taken = {"ModelCalls", "Client", "ClientBase", "APIError", "StreamError", "Events"}
    classes = {group.model: _class_name(group, taken) for group in groups}
    client = [f"/** A client of {title}, over fetch. */", "export class Client extends ClientBase {"]
    for group in groups:
        client += [
            f"  /** The model {json.dumps(group.model)} (api.kind {group.kind}). */",
            f"  readonly {_camel(group.attr)} = new {classes[group.model]}("
            + "this.request.bind(this), this.stream.bind(this));",
            "",
        ]
    for op in operations:
        client += _method(op)
    client = [*client[:-1], "}"] if client[-1] == "" else [*client, "}"]
    calls = [_MODEL_CALLS, *(_group_class(classes[g.model], g) for g in groups)] if groups else []
    parts = ["\n".join(header), types.strip(), "// --- client runtime ---", runtime.strip(), *calls, "\n".join(client)]
    return "\n\n".join(parts) + "\n"
