"""`python -m servectl.cli.healthcheck`: the container HEALTHCHECK, probing the port the server really uses.

The port is wherever the spec, its overrides and its environment put it, so the check
reads the running `servectl serve`'s own command line, working directory and environment
from /proc and resolves the spec exactly as that process did. Whatever spec or overrides
`docker run` was given, the probe follows; nothing needs the spec to read `$SERVECTL_PORT`.

Exit 0 when `/health` answers 200 (saying where), else 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

PROC = Path("/proc")


def serve_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after `serve` of a `servectl serve ...` command line; None for another command.

    Matches the console script (`.../servectl serve`, also run by a python) and `python -m servectl serve`.
    """
    for i, arg in enumerate(argv[:-1]):
        launcher = Path(arg).name == "servectl" or (arg == "servectl" and i > 0 and argv[i - 1] == "-m")
        if launcher and argv[i + 1] == "serve":
            return argv[i + 2 :]
    return None


def _argv(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_server() -> int | None:
    """The container's `servectl serve`: PID 1, or a child of PID 1 (behind `docker run --init`)."""
    if serve_arguments(_argv(1)) is not None:
        return 1
    for entry in sorted(PROC.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == 1 and serve_arguments(_argv(int(entry.name))) is not None:
            return int(entry.name)
    return None


def server_url(pid: int) -> str:
    """`http://HOST:PORT` of the server `pid` runs, resolved from its spec files, overrides and environment."""
    from servectl.cli.common import split_args
    from servectl.spec import load_deployment

    args = serve_arguments(_argv(pid))
    if args is None:
        raise LookupError(f"process {pid} is not a `servectl serve`")
    proc = PROC / str(pid)
    try:  # its environment and directory: `${oc.env:...}` and relative paths resolve as they did for it
        pairs = [p.decode(errors="replace").partition("=") for p in (proc / "environ").read_bytes().split(b"\0")]
        os.environ.clear()
        os.environ.update({name: value for name, _, value in pairs if name})
        os.chdir(proc / "cwd")
    except OSError:
        pass  # another user's process: this process's own environment and directory
    spec = args[0] if args else None
    paths, settings = split_args(Path(spec) if spec else None, args[1:])
    server = load_deployment(paths, settings).server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{server.port}"


def check(url: str, timeout_s: float) -> str | None:
    """None when `url`/health answers 200, else why not."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{url}/health: {exc}"
    return None if status == 200 else f"{url}/health answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servectl.cli.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, help="the `servectl serve` process (default: PID 1 or its child)")
    parser.add_argument("--url", help="probe this base URL instead of resolving the server's spec")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for /health to answer")
    options = parser.parse_args(argv)
    url = options.url
    if url is None:
        pid = options.pid or find_server()
        if pid is None:
            print("healthcheck: no `servectl serve` process found", file=sys.stderr)
            return 1
        try:
            url = server_url(pid)
        except Exception as exc:  # a spec that no longer loads, a process gone: unhealthy, said why
            print(f"healthcheck: cannot tell the server's address: {exc}", file=sys.stderr)
            return 1
    problem = check(url.rstrip("/"), options.timeout)
    if problem:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: {url.rstrip('/')}/health")  # `docker inspect` shows which port was probed
    return 0


if __name__ == "__main__":
    sys.exit(main())
