"""An API process that does not own the workers (`server.api_processes` > 1): the same HTTP
front end on its own SO_REUSEPORT socket, reaching the first process's workers directly.

It ignores stop signals (a signal to the process group must not cut its requests short):
it drains when the first API process says so, and dies with it.
"""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from servectl.logs import configure
from servectl.metrics_share import SharedCounts
from servectl.processes.deployment import Deployment
from servectl.processes.server import build_server
from servectl.runtime.remote import OwnerLink
from servectl.server.listen import raise_fd_limit
from servectl.server.streams import CutStreamsAreExpected
from servectl.spec import DeploymentSpec
from servectl.worker.devices import WorkerSlot
from servectl.worker.process import tie_to_parent

log = logging.getLogger("servectl")


def api_process_main(
    spec: DeploymentSpec,
    reload_from: tuple[Sequence[Path], Sequence[str]] | None,
    index: int,
    origin: int,
    sockets: list[socket.socket],
    link: Connection,
    slots: dict[str, tuple[list[WorkerSlot], str]],
    share_dir: str,
    owner_pid: int,
) -> None:
    tie_to_parent(owner_pid, own_group=False)
    configure(spec.server.log_level, spec.server.log_format)
    logging.getLogger("uvicorn.error").addFilter(CutStreamsAreExpected())
    raise_fd_limit(spec.server.max_connections)
    owner = OwnerLink(index, origin, slots, link)
    deployment = Deployment(spec, reload_from=reload_from, owner=owner)
    deployment.metrics.shared = SharedCounts(share_dir, index, deployment.counts)
    server = build_server(deployment)
    owner.on_drain = server.drain
    gc.collect()
    gc.freeze()  # as the first process does: what lives for the whole run stays out of full passes
    server.run(sockets=sockets)
