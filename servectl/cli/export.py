"""`servectl export ...`: the typer group; registered by `cli.main` as `export`.

Parsing only: what is written comes from `plan.py` (the spec's figures) and `k8s.py` /
`kuberay.py` (the objects). Arguments read as `servectl serve` reads them, so a command
line that serves locally exports unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from servectl.cli.common import console, load_deployment_args, print_issues, split_args
from servectl.export.k8s import DEFAULT_IMAGE, HpaMetric, K8sOptions
from servectl.spec import SpecError

export_app = typer.Typer(
    help="Write what runs a spec on existing engines: Kubernetes manifests, KubeRay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@export_app.callback()
def _group() -> None:
    """Write what runs a spec on existing engines: Kubernetes manifests, KubeRay."""


@export_app.command("k8s")
def k8s(
    spec: Annotated[Path, typer.Argument(help="Deployment spec (YAML).")],
    out: Annotated[
        Path, typer.Option(help="Folder to write the manifests to (created if needed; `kubectl apply -f` it).")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="More spec files of the same deployment, then dotlist overrides (as for `serve`): "
            "they are checked here and passed on to `servectl serve` in the pod."
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="Container image: one built from servectl's Dockerfile, holding the handlers.")
    ] = DEFAULT_IMAGE,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Fewest pods (HPA minReplicas). Default: scaling.min_replicas, else 1."),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Most pods (HPA maxReplicas). Default: scaling.max_replicas, else 3x --replicas."),
    ] = None,
    cpu: Annotated[
        str | None,
        typer.Option(
            help="CPU request per pod (2, 500m). Default: 1, or 2 per GPU, plus 1 per API process past the "
            "first. No CPU limit is set."
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(help="Memory request and limit per pod (4Gi). Default: 2Gi, or 8Gi per GPU."),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="nvidia.com/gpu per pod. Default: what the models with devices.accelerator cuda ask for "
            "(devices.ids; 1 for auto); set it to give GPUs to accelerator: auto.",
        ),
    ] = None,
    hpa_metric: Annotated[
        HpaMetric | None,
        typer.Option(
            case_sensitive=False,
            help="What the HPA scales on: cpu (utilisation, the default) or queue-depth (the Pods metric "
            "servectl_queue_depth through a custom metrics adapter such as prometheus-adapter).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the objects. Default: the model's name, or with several the first file's name."),
    ] = None,
) -> None:
    """Write Kubernetes manifests serving SPEC: ConfigMap, Secret template, Deployment, Service, PDB, HPA
    (with runtime.kind ray: a KubeRay RayService). Keys come from the Secret, never the ConfigMap."""
    from servectl.export import k8s as manifests
    from servectl.export.plan import ExportError, plan_export

    paths, settings = split_args(spec, overrides)
    options = K8sOptions(image, replicas, max_replicas, cpu, memory, hpa_metric)
    try:
        plan = plan_export(paths, settings, name, gpus)
        written, stale = manifests.export(plan, options, out)
    except SpecError as exc:
        print_issues(exc.issues)
        raise typer.Exit(1) from None
    except ExportError as exc:
        console.print(f"[bold red]export k8s:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    for path in stale:
        console.print(f"[yellow]removed[/] {escape(str(path))} (an earlier export's; not part of this one)")
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(f"[green]wrote[/] {', '.join(escape(str(p)) for p in written)}", highlight=False)
    if plan.keys.all:
        secret = next(p for p in written if p.name.endswith(".template"))
        console.print(f"next: fill in and apply {escape(str(secret))} (or kubectl create secret), then:")
    console.print(f"  kubectl apply -f {escape(str(out))}", highlight=False)


@export_app.command("ray")
def ray(
    spec: Annotated[Path, typer.Argument(help="Deployment spec (YAML).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="More spec files of the same deployment, then dotlist overrides (as for `serve`)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="The Serve config file to write (`serve deploy` it); - for stdout.")] = Path(
        "serve.yaml"
    ),
    gpus: Annotated[
        float | None,
        typer.Option(min=0, help="GPUs of the cluster, for models with devices.ids auto (default: what ids name)."),
    ] = None,
    spec_dir: Annotated[
        str | None,
        typer.Option(help="Where the spec files are on the cluster (default: where they are here)."),
    ] = None,
) -> None:
    """Write the Ray Serve config (`serve deploy FILE`) of SPEC: an application per model, replicas
    from devices, autoscaling from scaling. Requests then go through Ray's own HTTP proxy, one
    per call, without servectl's keys, limits and batching in front; for those, run `servectl
    serve SPEC runtime.kind=ray runtime.address=auto` on the cluster instead."""
    import yaml

    loaded = load_deployment_args(spec, overrides)
    try:
        from servectl.export.ray import serve_config
    except ModuleNotFoundError as exc:
        console.print(f"[bold red]export ray:[/] needs Ray: pip install 'servectl[ray]' ({escape(str(exc))})")
        raise typer.Exit(1) from None
    try:
        config = serve_config(loaded, gpus, spec_dir)
    except ValueError as exc:
        console.print(f"[bold red]export ray:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    header = (
        f"# Ray Serve config written by `servectl export ray` from {', '.join(loaded.sources)}.\n"
        "# Requests reach the models through Ray's HTTP proxy: no servectl keys, limits or batching in front.\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=False)
    if str(out) == "-":
        typer.echo(text, nl=False)
        return
    out.write_text(text)
    if loaded.auth.named_keys():
        console.print("[yellow]note:[/] the spec's API keys are not checked by Ray's proxy: keep it internal")
    console.print(f"[green]wrote[/] {escape(str(out))}: serve deploy {escape(str(out))}", highlight=False)
