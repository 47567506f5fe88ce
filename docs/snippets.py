"""Run the docs' code blocks as tests (Sybil): every `bash`, `console`, `python` and `yaml` block
of README.md and docs/ runs, in order, page by page, in one scratch folder that holds copies
of the repository's `configs/` and `handlers/`; `<!-- skip: next "why" -->` skips one, with its reason.

- `bash`: the commands run in bash (`set -e`); each `servectl serve ...` line instead starts that
  server in the background on a free port and waits for `/ready`. Its spec's port is then
  rewritten to the free one in the page's later blocks (`localhost:8000` -> the real port). A
  server keeps running for later pages that serve the same command in the same environment;
  all stop at the session's end. `export`s carry over to the page's later blocks.
- `console`: lines `$ command` run as in `bash`; the lines under one are its expected output
  (`...` matches anything; spaces are not compared).
- `python`: run in the page's namespace, in the scratch folder. With `title="path"` the block is
  written to that file instead (a handler the next blocks serve) and only compiled.
- `yaml`: a deployment spec, loaded and validated as `servectl validate` does (written to its
  `title="path"` when it has one, so later blocks can serve it).
- A block whose only line is `--8<-- "file"` (MkDocs' snippets) stands for that file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("bash", "console", "python", "yaml")
_INFO = re.compile(r"(?P<language>[\w-]*)(?P<info>[^\n]*)$\n", re.MULTILINE)
_TITLE = re.compile(r'title="([^"]+)"')
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')
_SERVE = re.compile(r"^(?:python -m )?servectl serve\b")
_READY_S = 180.0
_COMMAND_S = 300.0


class SnippetFailed(AssertionError):
    """A code block of the docs did not do what the page says."""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


_SERVERS: dict[tuple[object, ...], tuple[int, Server]] = {}  # (command, environment) -> (its spec's port, server)


@dataclass
class Page:
    """One page's state: its environment and the real ports of the servers it started."""

    work: Path
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)  # the port a page names -> the real one

    def rewrite(self, text: str) -> str:
        for said, real in self.ports.items():
            text = re.sub(rf"(?<=(localhost|127\.0\.0\.1):){said}\b", str(real), text)
        return text


def stop_servers() -> None:
    """Stop every server the pages started (pages that serve the same spec share its server)."""
    for _, server in _SERVERS.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
    for _, server in _SERVERS.values():
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    _SERVERS.clear()


_WORK: Path | None = None


def scratch() -> Path:
    """The scratch folder every page runs in (made once per test session)."""
    global _WORK
    if _WORK is None:
        _WORK = Path(tempfile.mkdtemp(prefix="servectl-docs-"))
        for folder in ("configs", "handlers"):
            shutil.copytree(ROOT / folder, _WORK / folder)
        build = [sys.executable, "-m", "servectl.examples.build", "--out", "models"]  # as docs/getting-started says
        subprocess.run(build, cwd=_WORK, env=_env(_WORK), capture_output=True, check=True, timeout=_COMMAND_S)
    return _WORK


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(work)
    env.pop("SERVECTL_API_KEYS", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _source(example: Example) -> str:
    text = str(example.parsed)
    found = _INCLUDE.match(text.strip())
    if found:
        return (ROOT / found.group(1)).read_text()
    return textwrap.dedent(text)


def _lines(source: str) -> Iterator[str]:
    """Commands, with `\\` continuations joined."""
    pending = ""
    for line in source.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _run(page: Page, script: str, where: str) -> str:
    """`script` in bash, in the scratch folder; exports carry over to the page's next blocks."""
    env_file = page.work / f".env-{os.getpid()}"
    full = f"set -e\n{page.rewrite(script)}\nenv -0 > {shlex.quote(str(env_file))}\n"
    try:
        done = subprocess.run(
            ["bash", "-c", full],
            cwd=page.work,
            env=page.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as a terminal shows them
            timeout=_COMMAND_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SnippetFailed(f"{where}: still running after {_COMMAND_S:.0f} s:\n{script}") from exc
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise SnippetFailed(f"{where}: exit {done.returncode}:\n{script}\n--- output\n{out}")
    if env_file.exists():
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        page.env = {k: v for k, v in pairs}
        env_file.unlink()
    return out


def _declared_port(page: Page, args: list[str]) -> int:
    """The port the spec (after its overrides, in the page's environment) asks for."""
    from servectl.spec import load_deployment

    files = [a for a in args if "=" not in a and not a.startswith("-")]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.clear()
        os.environ.update(page.env)
        os.chdir(page.work)
        deployment = load_deployment(files or None, overrides)
        return int(deployment.server.port)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def _serve(page: Page, line: str, where: str) -> None:
    words = shlex.split(page.rewrite(line), comments=True)
    changed = frozenset(item for item in page.env.items() if os.environ.get(item[0]) != item[1])
    running = _SERVERS.get((*words, changed))
    if running is not None and running[1].process.poll() is None:
        page.ports[running[0]] = running[1].port
        return
    at = words.index("serve") + 1
    said = _declared_port(page, words[at:])
    port = _free_port()
    log = page.work / f"serve-{port}.log"
    command = [*words, f"server.port={port}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=page.work, env=page.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _SERVERS[(*words, changed)] = (said, Server(process, port, log))
    page.ports[said] = port
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SnippetFailed(f"{where}: `{line}` exited {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SnippetFailed(f"{where}: `{line}` not ready after {_READY_S:.0f} s:\n{log.read_text()[-4000:]}")


def _shell(page: Page, source: str, where: str) -> str:
    script: list[str] = []
    out = ""
    for line in _lines(source):
        if _SERVE.match(line.strip()):
            if script:
                out += _run(page, "\n".join(script), where)
                script = []
            _serve(page, line.strip(), where)
        else:
            script.append(line)
    if any(s.strip() and not s.strip().startswith("#") for s in script):
        out += _run(page, "\n".join(script), where)
    return out


def _matches(expected: str, got: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in re.sub(r"\s+", "", expected).split("..."))
    return re.fullmatch(pattern, re.sub(r"\s+", "", got), re.DOTALL) is not None


def evaluate(example: Example) -> None:
    page: Page = example.namespace["page"]
    language, info = example.region.lexemes["language"], example.region.lexemes["info"]
    where = f"{example.path}:{example.line}"
    source = _source(example)
    title = _TITLE.search(info)
    if title is not None:
        target = page.work / title.group(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    if language == "bash":
        _shell(page, source, where)
    elif language == "console":
        for command, expected in _console(source):
            got = _shell(page, command, where)
            if expected.strip() and not _matches(expected, got):
                raise SnippetFailed(f"{where}: `{command}` printed:\n{got}\nthe page says:\n{expected}")
    elif language == "python":
        code = compile(page.rewrite(source), where, "exec")
        if title is None:
            saved = os.getcwd()
            os.chdir(page.work)
            sys.path.insert(0, str(page.work))  # modules the page wrote (a generated client)
            try:
                exec(code, example.namespace)
            finally:
                sys.path.remove(str(page.work))
                os.chdir(saved)
    elif language == "yaml":
        included = _INCLUDE.match(str(example.parsed).strip())
        copy = page.work / included.group(1) if included else None  # the scratch folder's copy
        path = target if title is not None else copy if copy is not None and copy.exists() else None
        _validate(page, path, source, where)


def _console(source: str) -> Iterator[tuple[str, str]]:
    command: str | None = None
    expected: list[str] = []
    for line in _lines(source):
        if line.startswith("$ "):
            if command is not None:
                yield command, "\n".join(expected)
            command, expected = line[2:], []
        else:
            expected.append(line)
    if command is not None:
        yield command, "\n".join(expected)


def _validate(page: Page, path: Path | None, source: str, where: str) -> None:
    if path is None:
        path = page.work / f".spec-{abs(hash(where))}.yaml"
        path.write_text(source)
    done = subprocess.run(
        ["servectl", "validate", str(path)], cwd=page.work, env=page.env, capture_output=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise SnippetFailed(f"{where}: not a valid spec:\n{source}\n{done.stdout.decode()}{done.stderr.decode()}")


class CodeBlocks:
    """Sybil parser: the fenced blocks of LANGUAGES; a fence without a language is an error
    (it might be a command nobody runs)."""

    def __init__(self) -> None:
        self.lexer = RawFencedCodeBlockLexer(info_pattern=_INFO)

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            language = region.lexemes["language"]
            if language in LANGUAGES:
                region.parsed = region.lexemes["source"]
                region.evaluator = evaluate
                yield region
            elif not language:
                region.parsed = None
                region.evaluator = _unlabelled
                yield region


def _unlabelled(example: Example) -> None:
    raise SnippetFailed(f"{example.path}:{example.line}: a code block without a language (```text, ```bash...)")


def _setup(namespace: dict[str, Any]) -> None:
    work = scratch()
    namespace["page"] = Page(work, _env(work))


def collector() -> Any:
    """pytest's `pytest_collect_file` for README.md and docs/**/*.md."""
    return Sybil(
        parsers=[SkipParser(), CodeBlocks()],
        patterns=["README.md", "docs/*.md", "docs/*/*.md"],
        excludes=["benchmarks/*", "tests/*"],
        path=str(ROOT),
        setup=_setup,
    ).pytest()
