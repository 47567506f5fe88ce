"""`servectl reload URL MODEL`: ask a running server to reload a model (admin key)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    pass

from servectl.cli.common import console


def reload(
    url: Annotated[str, typer.Argument(help="The running server, e.g. http://127.0.0.1:8000.")],
    model: Annotated[str, typer.Argument(help="The model to reload (its name in the spec).")],
    admin_key: Annotated[
        str | None, typer.Option(envvar="SERVECTL_ADMIN_KEY", help="One of the server's auth.admin_keys.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new workers' setup.")] = 900.0,
) -> None:
    """Re-read MODEL's spec entry and roll its workers to it without dropping a request."""
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    address = f"{url.rstrip('/')}/admin/models/{model}/reload"
    try:
        response = httpx.post(address, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        console.print(f"[bold red]reload:[/] cannot reach {escape(address)}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:300]}}
    if response.status_code != 200:
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        console.print(f"[bold red]reload failed ({response.status_code}):[/] {escape(str(message))}", highlight=False)
        if isinstance(error, dict) and isinstance(error.get("detail"), list):
            for line in error["detail"]:
                console.print(f"  [red]x[/] {escape(str(line))}", highlight=False)
        raise typer.Exit(1)
    console.print(
        f"[green]reloaded[/] {escape(model)}: {body['workers']} worker(s) rolled in {body['seconds']:.2f}s",
        highlight=False,
    )
