"""``neurofed monitor``: follow a federated run live in a local web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, print_error

__all__ = ["monitor"]


def monitor(
    run: Annotated[Path, typer.Argument(help="The run folder (simulate --out, the server's).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to bind; 127.0.0.1 keeps the page on this machine.")
    ] = "127.0.0.1",
    site: Annotated[
        str | None,
        typer.Option(help="Show this site only (a custodian's view) with the merged curve."),
    ] = None,
) -> None:
    """Serve a page that follows a run: rounds, each site's state, curves, time left.
    Ctrl-C (or SIGTERM) stops it."""
    import signal
    import threading

    from neurofed.evaluate.monitor import start_monitor

    try:
        server, thread = start_monitor(run, port=port, host=host, site=site)
    except OSError as exc:
        print_error(f"cannot serve on {host}:{port}: {exc.strerror or exc}; try --port 0")
        raise typer.Exit(2) from exc
    console.print(f"monitoring {run} at {server.url} (Ctrl-C stops)", markup=False, soft_wrap=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        console.print("monitor stopped")
    finally:
        server.shutdown()
        thread.join(timeout=5)
