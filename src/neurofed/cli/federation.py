"""``neurofed federation init / add-site``: the coordinator creates the federation's kits.

Exit status: 0 done, 1 refused (the message says why and what to do).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neurofed.cli.console import console, print_error

if TYPE_CHECKING:
    from neurofed.federated.engine.provision import Federation

__all__ = ["federation_app"]

federation_app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    help="Coordinator: provision a federation (project CA, mutual TLS kits) and add sites.",
)


def _fail(message: str) -> typer.Exit:
    print_error(message)
    return typer.Exit(1)


def _hand_over(federation: Federation, sites: tuple[str, ...]) -> None:
    from neurofed.federated.engine.provision import bundle_sha256

    root = federation.root
    fingerprint = federation.ca_fingerprint
    console.print("\n[bold]What to hand to whom[/bold]")
    for site in sites:
        bundle = federation.bundle(site)
        console.print(
            f"  custodian of {site}: {bundle}\n"
            f"      by an independent channel (encrypted transfer or in person, never plain "
            f"e-mail: it holds the site's private key); read out its SHA-256 "
            f"{bundle_sha256(bundle)[:16]}… and the CA fingerprint below. They run "
            f"`neurofed site init {bundle.name} --data DIR`.",
            soft_wrap=True,
        )
    console.print(
        f"  server machine: {federation.server_kit}  →  "
        f"`neurofed server start --kit {federation.server_kit}`",
        soft_wrap=True,
    )
    console.print(
        f"  study lead: {federation.admin_kit}  →  "
        f"`neurofed study submit study.toml --admin-kit {federation.admin_kit}`",
        soft_wrap=True,
    )
    console.print(f"  CA fingerprint (SHA-256): {fingerprint}", soft_wrap=True)
    console.print(
        f"  keep {root / 'provision'} secret and backed up: it holds the project CA's key "
        "(needed to add sites later)",
        soft_wrap=True,
    )


@federation_app.command("init")
def init(
    name: Annotated[str, typer.Option("--name", help="Project name (the CA's name).")],
    server: Annotated[
        str,
        typer.Option(
            "--server",
            help="HOST[:FL_PORT[:ADMIN_PORT]] the sites and admins dial (FL port 8002 by "
            "default, admin port the FL port + 1).",
        ),
    ],
    site: Annotated[
        list[str], typer.Option("--site", help="A site's name (repeat for each hospital).")
    ],
    admin: Annotated[str, typer.Option("--admin", help="The coordinator's e-mail.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the federation.")],
    heartbeat_timeout: Annotated[
        float,
        typer.Option(
            "--heartbeat-timeout",
            help="Seconds without a heartbeat before the server declares a site dead "
            "(NVFlare's default is 600).",
        ),
    ] = 60.0,
) -> None:
    """Create the project CA and every kit: the server's, the admin's, one bundle per site."""
    from neurofed.federated.engine.provision import (
        FederationSpec,
        ProvisionError,
        ServerAddress,
        init_federation,
    )

    try:
        spec = FederationSpec(
            name=name,
            server=ServerAddress.parse(server),
            sites=tuple(site),
            admin=admin,
            heartbeat_timeout_s=heartbeat_timeout,
        )
        federation = init_federation(spec, out)
    except ProvisionError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"federation {spec.name!r}: server {spec.server} (mutual TLS), {len(spec.sites)} "
        f"site(s), admin {spec.admin}, dead sites noticed after {spec.heartbeat_timeout_s:g} s "
        f"→ {federation.root}",
        soft_wrap=True,
    )
    _hand_over(federation, spec.sites)


@federation_app.command("add-site")
def add_site(
    name: Annotated[str, typer.Argument(help="The new site's name.")],
    federation: Annotated[
        Path, typer.Option("--federation", help="The folder `federation init` wrote.")
    ],
) -> None:
    """Issue one more site's bundle; every kit issued before stays valid (no restart)."""
    from neurofed.federated.engine.provision import ProvisionError, load_federation
    from neurofed.federated.engine.provision import add_site as provision_site

    try:
        provision_site(federation, name)
        loaded = load_federation(federation)
    except ProvisionError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"site {name!r} added to {loaded.spec.name!r}; the other sites' kits and the server's "
        "are unchanged, and the running server accepts it without a restart",
        soft_wrap=True,
    )
    _hand_over(loaded, (name,))
