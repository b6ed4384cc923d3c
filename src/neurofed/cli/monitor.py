"""``neurofed monitor``: follow a federated run live in a local web page.

``RUN`` follows a run folder (a simulation, or a deployed server's run folder on its machine);
``--job`` follows a deployed job from the study lead's machine through the admin API, with the
admin kit (``--admin-kit``, else ``$NEUROFED_ADMIN_KIT``); ``--site-kit`` is a site custodian's
view from the site's own kit (or site config): that site and the merged curve only, read from
the progress the site keeps (:mod:`~neurofed.evaluate.monitor_site`). Exit status: 0 stopped by
Ctrl-C or SIGTERM, 1 the server or the job cannot be reached, 2 wrong options, an unreadable site
config, or the port is taken.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neurofed.cli.console import console, print_error
from neurofed.cli.study import ADMIN_KIT_ENV

if TYPE_CHECKING:
    import threading

    from neurofed.evaluate.monitor import MonitorServer
    from neurofed.federated.engine.submit import StudyStatus

__all__ = ["monitor"]


class _AdminJob:
    """Asks the server for one job's status through an admin session, opened on first use and
    opened again after a failure (the server restarted, the network broke)."""

    def __init__(self, kit: Path, job_id: str) -> None:
        self.kit, self.job_id = kit, job_id
        self._session: contextlib.ExitStack | None = None
        self._handle: object = None
        self._checked: StudyStatus | None = None

    def check(self) -> None:
        """Ask once now (the first answer is kept for the poller's first ask).

        Raises
        ------
        SubmitError
            The server cannot be reached, or it has no such job.
        """
        self._checked = self()

    def __call__(self) -> StudyStatus:
        from neurofed.federated.engine.submit import admin_session, study_status

        if self._checked is not None:  # a finished job's run is downloaded once, not twice
            checked, self._checked = self._checked, None
            return checked
        try:
            if self._session is None:
                stack = contextlib.ExitStack()
                self._handle = stack.enter_context(admin_session(self.kit))
                self._session = stack
            return study_status(self._handle, self.job_id)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session, self._handle = None, None


def _start_job(
    kit: Path, job_id: str, port: int, host: str, site: str | None
) -> tuple[MonitorServer, threading.Thread, _AdminJob]:
    """Check that the job exists, then serve it; exits with a message when it cannot."""
    from neurofed.evaluate.monitor import start_job_monitor
    from neurofed.federated.engine.submit import SubmitError

    job = _AdminJob(kit, job_id)
    try:
        job.check()
    except SubmitError as exc:
        hint = ""
        if f"no job {job_id}" in str(exc):
            hint = "; give the id `neurofed study submit` printed, with this federation's admin kit"
        print_error(f"{exc}{hint}")
        raise typer.Exit(1) from None
    try:
        server, thread = start_job_monitor(job, port=port, host=host, site=site)
    except OSError as exc:
        job.close()
        print_error(f"cannot serve on {host}:{port}: {exc.strerror or exc}; try --port 0")
        raise typer.Exit(2) from exc
    return server, thread, job


def _start_site(
    kit: Path, study: str | None, port: int, host: str
) -> tuple[MonitorServer, threading.Thread]:
    """Serve a site's own view; exits with a message when its config cannot be read."""
    from neurofed.evaluate.monitor_site import start_site_monitor
    from neurofed.federated.engine.kit import site_config_path
    from neurofed.federated.site.config import SiteConfig, SiteConfigError
    from neurofed.federated.site.progress import PROGRESS_FILE

    path = site_config_path(kit) if kit.is_dir() else kit
    try:
        config = SiteConfig.load(path)
    except SiteConfigError as exc:
        print_error(f"{exc}; give --site-kit the site's kit folder or its site config")
        raise typer.Exit(2) from None
    try:
        return start_site_monitor(
            config.state_root, PROGRESS_FILE, study=study, port=port, host=host
        )
    except OSError as exc:
        print_error(f"cannot serve on {host}:{port}: {exc.strerror or exc}; try --port 0")
        raise typer.Exit(2) from exc


def monitor(
    run: Annotated[
        Path | None,
        typer.Argument(help="The run folder (simulate --out, the server's); or give --job."),
    ] = None,
    job: Annotated[
        str | None,
        typer.Option(
            "--job", help="Follow this deployed job (the id `study submit` printed) instead."
        ),
    ] = None,
    admin_kit: Annotated[
        Path | None,
        typer.Option(
            "--admin-kit",
            envvar=ADMIN_KIT_ENV,
            help=f"With --job: the admin kit (<federation>/admin) [env: ${ADMIN_KIT_ENV}].",
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to bind; 127.0.0.1 keeps the page on this machine.")
    ] = "127.0.0.1",
    site: Annotated[
        str | None,
        typer.Option(help="Show this site only (a custodian's view) with the merged curve."),
    ] = None,
    site_kit: Annotated[
        Path | None,
        typer.Option(
            "--site-kit",
            help="A custodian's view from the site's own kit (or site config JSON): this site "
            "and the merged curve, from the progress the site keeps; no server access needed.",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(help="With --site-kit: this study (name or hash prefix); default the latest."),
    ] = None,
) -> None:
    """Serve a page that follows a run: rounds, each site's state, curves, time left.
    Ctrl-C (or SIGTERM) stops it."""
    import signal
    import threading

    from neurofed.evaluate.monitor import start_monitor

    # SIGTERM stops it cleanly from here on, also while it starts (before it says it serves)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    asking: _AdminJob | None = None
    if sum(x is not None for x in (run, job, site_kit)) != 1:
        print_error(
            "give a run folder (RUN), a deployed job (--job JOB_ID) or a site's kit "
            "(--site-kit KIT), exactly one"
        )
        raise typer.Exit(2)
    if site_kit is not None:
        server, thread = _start_site(site_kit, study, port, host)
        source = f"site kit {site_kit}"
    elif job is not None:
        if admin_kit is None:
            print_error(
                f"--job {job} needs the admin kit: give --admin-kit <federation>/admin or set "
                f"${ADMIN_KIT_ENV}"
            )
            raise typer.Exit(2)
        server, thread, asking = _start_job(admin_kit, job, port, host, site)
        source = f"job {job} through {admin_kit}"
    else:
        assert run is not None
        try:
            server, thread = start_monitor(run, port=port, host=host, site=site)
        except OSError as exc:
            print_error(f"cannot serve on {host}:{port}: {exc.strerror or exc}; try --port 0")
            raise typer.Exit(2) from exc
        source = str(run)
    console.print(
        f"monitoring {source} at {server.url} (Ctrl-C stops)", markup=False, soft_wrap=True
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        console.print("monitor stopped")
    finally:
        server.shutdown()  # the job's poller too
        server.server_close()
        thread.join(timeout=5)
        if asking is not None:
            asking.close()
