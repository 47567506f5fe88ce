"""servectl's ASGI app (the tuned deployment of servectl.yaml) served by granian instead of
uvicorn, for `compare.py --apps servectl-granian`: the HTTP engine's share of the cost. A
measurement only: under granian, servectl's connection limits, header caps and drain policy
(which live in its uvicorn protocol and server) are not applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servectl.processes.deployment import Deployment
from servectl.server.app import build_app
from servectl.server.edge import build_edge
from servectl.spec import load_deployment


def app() -> Any:
    spec = load_deployment([Path(__file__).with_name("servectl.yaml")], [])
    deployment = Deployment(spec)
    return build_edge(deployment, build_app(deployment))
