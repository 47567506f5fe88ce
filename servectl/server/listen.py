"""The listening sockets and the file-descriptor budget, settled before any worker starts.

uvicorn binds its port only after the app's start-up, so a port in use was found after
every worker had loaded its model, and reported with a traceback. Binding here first
(and handing the sockets to uvicorn) fails fast, and leaves no window for another
process to take the port in between.
"""

from __future__ import annotations

import logging
import resource
import socket

log = logging.getLogger("servectl")

BACKLOG = 2048  # uvicorn's default
FD_RESERVE = 64  # descriptors the API process needs besides client connections (pipes, logs, files)


class ListenError(Exception):
    """The address cannot be listened on (in use, not local, not allowed)."""


def display_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_group(host: str, port: int, processes: int) -> list[list[socket.socket]]:
    """Each API process's listening sockets. Several processes get one set each on the same
    port with SO_REUSEPORT (the kernel spreads connections over them); the port is first
    bound without it, so a port another server holds is refused rather than shared."""
    if processes == 1:
        return [bind(host, port)]
    probe = bind(host, port)
    port = probe[0].getsockname()[1]  # port 0: the one the kernel picked
    for sock in probe:
        sock.close()
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(processes):
            groups.append(bind(host, port, reuse_port=True))
    except BaseException:
        for sock in (s for group in groups for s in group):
            sock.close()
        raise
    return groups


def bind(host: str, port: int, backlog: int = BACKLOG, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to, as asyncio's create_server
    would make them (SO_REUSEADDR, IPv6 sockets IPv6-only)."""
    where = display_address(host, port)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def raise_fd_limit(max_connections: int) -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one (a common soft default is 1024), and warn
    when `server.max_connections` still cannot fit: beyond the limit, accept() fails and
    clients wait in the backlog instead of getting a 503."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "server.max_connections=%d does not fit the open-file limit (%d, about %d needed besides): "
            "raise `ulimit -n` or lower max_connections",
            max_connections,
            soft,
            FD_RESERVE,
        )
