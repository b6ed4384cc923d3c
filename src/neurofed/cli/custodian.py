"""``neurofed site init / doctor / approve / revoke / list / allow-dataset / allow-condensed /
public-dataset / privacy-budget / audit``.

The data custodian's control over a deployed site (registered on ``neurofed site``; the library
side is :mod:`neurofed.federated.engine.kit`, the site config and
:mod:`neurofed.federated.site.audit`).
Every command but ``init`` works on an installed kit, found as ``--kit KIT``, else the
``NEUROFED_SITE_KIT`` environment variable, else the current folder when it is a kit
(:func:`resolve_kit`, for other ``neurofed site`` commands too).

Exit status: 0 done, 1 refused or a check failed (the message says why and what to do),
2 the input could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from neurofed.cli.console import console, err_console, print_error
from neurofed.cli.site import site_app

__all__ = ["KIT_ENV", "KitOption", "resolve_kit"]

#: The environment variable naming the site's kit folder (read by the CLI only).
KIT_ENV = "NEUROFED_SITE_KIT"

KitOption = Annotated[
    Path | None,
    typer.Option(
        "--kit",
        envvar=KIT_ENV,
        help=f"The site's kit folder [default: ${KIT_ENV}, or the current folder].",
    ),
]

_MARK = {"ok": "[green]✓[/green]", "warning": "[yellow]![/yellow]", "error": "[red]✗[/red]"}


def _fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def resolve_kit(kit: Path | None) -> Path:
    """``kit``, or the current folder when it holds ``local/neurofed_site.json``."""
    from neurofed.federated.engine.kit import site_config_path

    if kit is not None:
        return Path(kit)
    if site_config_path(Path.cwd()).is_file():
        return Path.cwd()
    raise _fail(
        f"which site? give --kit KIT (the folder `neurofed site init` made) or set {KIT_ENV}"
    )


def _print_checks(checks: list[object]) -> bool:
    """Print one line per check; returns whether none is an error."""
    from neurofed.federated.engine.kit import CheckStatus, KitCheck

    ok = True
    for check in checks:
        assert isinstance(check, KitCheck)
        console.print(f"  {_MARK[check.status.value]} {check.line()}", soft_wrap=True)
        ok = ok and check.status is not CheckStatus.ERROR
    return ok


@site_app.command("init")
def init(
    bundle: Annotated[
        Path, typer.Argument(help="The enrolment bundle (the site's startup kit: folder or zip).")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="The site's data folder (checked by `site check`).")
    ],
    kit_dir: Annotated[
        Path | None,
        typer.Option("--kit-dir", help="Where to install the kit [default: ./neurofed-site-NAME]."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:<n>.")] = "auto",
    allow_dataset: Annotated[
        list[str] | None,
        typer.Option("--allow-dataset", help="Only run studies on this dataset (repeat)."),
    ] = None,
    stream_logs: Annotated[
        bool,
        typer.Option(help="Let NVFlare stream this site's error log to the server."),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 3.0,
) -> None:
    """Install this site's startup kit, lock it down and check it before starting.

    Only approved studies run, jobs may not carry code, and only neurofed's executor is built.
    """
    from neurofed.federated.engine.kit import KitCheckError, KitError, init_site
    from neurofed.federated.site.config import SiteConfigError

    try:
        done = init_site(
            bundle,
            data,
            kit_dir=kit_dir,
            device=device,
            allowed_datasets=tuple(allow_dataset or ()),
            stream_logs=stream_logs,
            timeout=timeout,
        )
    except KitCheckError as exc:
        _print_checks(list(exc.checks))
        raise _fail(str(exc)) from None
    except (KitError, SiteConfigError) as exc:
        raise _fail(str(exc)) from None
    kit = done.kit.root
    console.print(f"[bold]site {done.kit.site_name}[/bold] installed in {kit}", soft_wrap=True)
    _print_checks(list(done.checks))
    console.print(
        "studies need your approval; none is approved yet. Next:\n"
        f"  neurofed site approve STUDY.toml --kit {kit}\n"
        f"  neurofed site start --kit {kit}",
        soft_wrap=True,
    )


@site_app.command("doctor")
def doctor(
    kit_arg: Annotated[
        Path | None, typer.Argument(help="The kit folder.", show_default=False)
    ] = None,
    kit: KitOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 3.0,
) -> None:
    """Check an installed kit again: certificates, settings, data folder, audit log, server."""
    from neurofed.federated.engine.kit import doctor as run_checks

    root = resolve_kit(kit_arg or kit)
    console.print(f"[bold]{root}[/bold]", soft_wrap=True)
    if not _print_checks(list(run_checks(root, timeout=timeout))):
        raise typer.Exit(1)


def _load(kit: Path | None) -> tuple[Path, object]:
    from neurofed.federated.engine.kit import KitError, load_kit_config

    root = resolve_kit(kit)
    try:
        return root, load_kit_config(root)
    except KitError as exc:
        raise _fail(str(exc), 2) from None


@site_app.command("approve")
def approve(
    study_file: Annotated[Path, typer.Argument(help="The study (study.toml) to approve.")],
    kit: KitOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Show a study and approve it at this site (by its content hash)."""
    from neurofed.federated.engine.kit import save_kit_config
    from neurofed.federated.site.config import SiteConfig
    from neurofed.federated.study import StudyError, load_study

    root, config = _load(kit)
    assert isinstance(config, SiteConfig)
    try:
        study = load_study(study_file)
    except StudyError as exc:
        raise _fail(str(exc), 2) from None
    console.print(study.describe(), soft_wrap=True, markup=False)
    if config.allowed_datasets and study.dataset not in config.allowed_datasets:
        console.print(
            f"[yellow]![/yellow] this site only runs studies on "
            f"{', '.join(config.allowed_datasets)}; this study names "
            f"{study.dataset or 'no dataset'} and will still be refused",
            soft_wrap=True,
        )
    if config.approval(study.content_hash) is not None:
        console.print(f"already approved (sha256:{study.content_hash[:16]})")
        return
    if not yes and not typer.confirm("Approve this study at this site?", default=False):
        raise _fail("not approved")
    save_kit_config(root, config.with_approval(study.content_hash, study.name))
    console.print(
        f"approved {study.name!r} sha256:{study.content_hash} — the running site accepts it "
        "from its next task",
        soft_wrap=True,
    )


@site_app.command("revoke")
def revoke(
    study: Annotated[
        str, typer.Argument(help="The study's hash, a unique prefix of it, or its study.toml.")
    ],
    kit: KitOption = None,
) -> None:
    """Withdraw an approval; the running site refuses the study from its next task on."""
    from neurofed.federated.engine.kit import save_kit_config
    from neurofed.federated.site.config import SiteConfig
    from neurofed.federated.study import StudyError, load_study

    root, config = _load(kit)
    assert isinstance(config, SiteConfig)
    prefix = study
    if study.endswith(".toml") or Path(study).is_file():
        try:
            prefix = load_study(Path(study)).content_hash
        except StudyError as exc:
            raise _fail(str(exc), 2) from None
    matches = config.find_approvals(prefix)
    if not matches:
        raise _fail(f"no approved study matches {study!r}; see `neurofed site list`")
    if len(matches) > 1:
        names = ", ".join(f"{a.study_hash[:16]} ({a.name})" for a in matches)
        raise _fail(f"{study!r} matches several approved studies: {names}; give more digits")
    (found,) = matches
    save_kit_config(root, config.without_approval(found.study_hash))
    console.print(f"revoked {found.name!r} sha256:{found.study_hash}", soft_wrap=True)


@site_app.command("list")
def list_studies(
    kit: KitOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The studies approved at this site, and which datasets it allows."""
    from neurofed.federated.site.config import SiteConfig

    _, config = _load(kit)
    assert isinstance(config, SiteConfig)
    if as_json:
        typer.echo(json.dumps(config.to_json(), indent=2))
        return
    rule = "required" if config.require_approval else "NOT required (any study runs)"
    datasets = ", ".join(config.allowed_datasets) or "any"
    console.print(f"approval {rule}; datasets allowed: {datasets}", soft_wrap=True)
    condensed = ", ".join(config.allow_condensed) or "none"
    console.print(f"condensed volumes (strategy distill) allowed for: {condensed}", soft_wrap=True)
    for name, folder in config.public_datasets.items():
        console.print(f"public dataset {name}: {folder}", soft_wrap=True, markup=False)
    for line in _privacy_lines(config):
        console.print(line, soft_wrap=True, markup=False)
    if not config.approved_studies:
        console.print("no study approved yet (neurofed site approve STUDY.toml)")
        return
    for entry in sorted(config.approved_studies, key=lambda a: a.approved_at):
        console.print(f"  {entry.study_hash[:16]}  {entry.approved_at}  {entry.name}")


def _edit_datasets(kit: Path | None, field: str, names: list[str], remove: bool) -> list[str]:
    """Add ``names`` to (or ``remove`` them from) the site config's dataset list ``field``;
    returns the new list."""
    from dataclasses import replace

    from neurofed.federated.engine.kit import save_kit_config
    from neurofed.federated.site.config import SiteConfig

    root, config = _load(kit)
    assert isinstance(config, SiteConfig)
    current = set(getattr(config, field))
    wanted = current - set(names) if remove else current | set(names)
    changes: dict[str, Any] = {field: tuple(wanted)}
    save_kit_config(root, replace(config, **changes))
    return sorted(wanted)


@site_app.command("allow-dataset")
def allow_dataset(
    names: Annotated[list[str], typer.Argument(help="Dataset names (a study's `dataset`).")],
    kit: KitOption = None,
    remove: Annotated[bool, typer.Option(help="Stop allowing these datasets.")] = False,
) -> None:
    """Allow studies on these datasets only (an empty list allows any dataset)."""
    wanted = _edit_datasets(kit, "allowed_datasets", names, remove)
    console.print(f"datasets allowed: {', '.join(wanted) or 'any'}")


@site_app.command("allow-condensed")
def allow_condensed(
    names: Annotated[list[str], typer.Argument(help="Dataset names (a study's `dataset`).")],
    kit: KitOption = None,
    remove: Annotated[bool, typer.Option(help="Stop allowing these datasets.")] = False,
) -> None:
    """Let studies on these datasets receive synthetic volumes condensed from this site's cases
    (strategy distill). They are derived patient data: published work finds condensation gives
    no dependable privacy. Each volume is checked against the site's cases before it leaves."""
    wanted = _edit_datasets(kit, "allow_condensed", names, remove)
    console.print(f"condensed volumes allowed for: {', '.join(wanted) or 'no dataset'}")


@site_app.command("public-dataset")
def public_dataset(
    name: Annotated[str, typer.Argument(help="The public dataset's name (a study's `proxy`).")],
    folder: Annotated[
        Path | None,
        typer.Argument(help="This site's copy: a site folder checked with `neurofed site check`."),
    ] = None,
    kit: KitOption = None,
    remove: Annotated[bool, typer.Option(help="Forget this public dataset.")] = False,
) -> None:
    """Name where this site holds a public dataset every party holds (the distill strategy's
    proxy mode distils on it: only the model's logits on its cases leave the site)."""
    from dataclasses import replace

    from neurofed.data.manifest import ManifestError, load_manifest
    from neurofed.federated.engine.kit import save_kit_config
    from neurofed.federated.site.config import SiteConfig

    root, config = _load(kit)
    assert isinstance(config, SiteConfig)
    public = dict(config.public_datasets)
    if remove:
        public.pop(name, None)
    elif folder is None:
        print_error(f"give the folder of this site's copy of {name!r} (or --remove)")
        raise typer.Exit(2)
    else:
        folder = folder.resolve()
        try:
            cases = len(load_manifest(folder).subjects)
        except ManifestError as exc:
            print_error(f"public dataset {name!r}: {exc}")
            raise typer.Exit(1) from None
        public[name] = folder
        console.print(f"public dataset {name}: {folder} ({cases} cases)", markup=False)
    save_kit_config(root, replace(config, public_datasets=public))
    console.print(f"public datasets: {', '.join(public) or 'none'}", markup=False)


def _privacy_lines(config: Any) -> list[str]:
    """Per dataset with a cap or a DP round: its cap and the DP-SGD rounds it has seen."""
    from neurofed.federated.site.privacy import PrivacyLedger

    ledger = PrivacyLedger(config.state_root)
    try:
        rounds = {d: len(ledger.entries(d)) for d in ledger.datasets()}
    except ValueError as exc:
        return [f"privacy ledger: {exc}"]
    lines = []
    for dataset in sorted({*config.privacy_budgets, *rounds}):
        cap = config.privacy_budgets.get(dataset)
        capped = "no cap" if cap is None else f"cap ε = {cap:g}"
        lines.append(
            f"privacy budget {dataset}: {capped}; {rounds.get(dataset, 0)} DP-SGD round(s) in "
            f"the ledger ({ledger.path})"
        )
    return lines


@site_app.command("privacy-budget")
def privacy_budget(
    dataset: Annotated[str, typer.Option(help="The dataset name (a study's `dataset`).")],
    epsilon: Annotated[
        float | None,
        typer.Option(help="The most ε DP-SGD may spend on this dataset here, over all studies."),
    ] = None,
    kit: KitOption = None,
    remove: Annotated[bool, typer.Option(help="Remove this dataset's cap.")] = False,
) -> None:
    """Cap the ε that studies with [privacy] may spend on a dataset at this site; a round that
    would cross the cap is refused, recorded in the audit log, and the federation goes on."""
    from dataclasses import replace

    from neurofed.federated.engine.kit import save_kit_config
    from neurofed.federated.site.config import SiteConfig

    root, config = _load(kit)
    assert isinstance(config, SiteConfig)
    caps = dict(config.privacy_budgets)
    if remove:
        caps.pop(dataset, None)
    elif epsilon is None or not 0 < epsilon < float("inf"):
        print_error(f"--epsilon {epsilon}: give the cap, an ε > 0 (or --remove)")
        raise typer.Exit(2)
    else:
        caps[dataset] = epsilon
    save_kit_config(root, replace(config, privacy_budgets=caps))
    for line in _privacy_lines(replace(config, privacy_budgets=caps)):
        console.print(line, soft_wrap=True, markup=False)
    if not caps:
        console.print("no privacy budget set", markup=False)


@site_app.command("audit")
def audit(
    kit: KitOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON lines.")] = False,
    tail: Annotated[int | None, typer.Option(min=1, help="Only the last N lines.")] = None,
    expect_head: Annotated[
        list[str] | None,
        typer.Option(
            "--expect-head",
            help="A head hash noted earlier (from an earlier `site audit`); the log must still "
            "hold that line. Repeat for several.",
        ),
    ] = None,
) -> None:
    """Print the site's audit log and verify it (exit 1 when it was tampered with).

    The hash chain must hold, and every head noted elsewhere must still be a line of the log at
    its place: the heads given with --expect-head, and those the site kept in its state folders
    after each task (also sent to the coordinator, who keeps them in the run folder).
    """
    from neurofed.federated.site.audit import AuditHead, read_audit_log, verify_audit_log
    from neurofed.federated.site.config import SiteConfig
    from neurofed.federated.site.state import kept_audit_heads

    _, config = _load(kit)
    assert isinstance(config, SiteConfig)
    if config.audit_log is None:
        raise _fail("this site keeps no audit log (no audit_log in its settings)")
    records = read_audit_log(config.audit_log)
    shown = records[-tail:] if tail else records
    kept = kept_audit_heads(config.state_root)
    expected: list[AuditHead | str] = [*kept, *(expect_head or [])]
    check = verify_audit_log(config.audit_log, expected)
    if as_json:
        for record in shown:
            typer.echo(json.dumps(record, sort_keys=True))
    else:
        for record in shown:
            console.print(_audit_line(record), soft_wrap=True, markup=False)
    out = err_console if as_json else console
    if check.ok:
        out.print(
            f"{config.audit_log}: {check.lines} lines, hash chain intact, {len(kept)} kept and "
            f"{len(expect_head or [])} noted head(s) found; head (line {check.seq}) "
            f"sha256:{check.head} — note it somewhere else to check the log against it later",
            soft_wrap=True,
        )
        return
    err_console.print(f"[red]tampered:[/red] {check.problem}", soft_wrap=True)
    raise typer.Exit(1)


def _audit_line(record: dict[str, object]) -> str:
    """One audit record as a readable line (the chain hash and site name left out)."""
    from neurofed.federated.site.audit import AuditField as F

    if "unreadable" in record:
        return f"(not a record) {record['unreadable']}"
    parts = [f"{record.get(F.SEQ.value, '?')}.", str(record.get(F.TIME.value, ""))]
    parts.append(str(record.get(F.EVENT.value, "")))
    if F.STUDY_HASH.value in record:
        parts.append(f"sha256:{str(record[F.STUDY_HASH.value])[:12]}")
    if F.STUDY.value in record:
        parts.append(str(record[F.STUDY.value]))
    if F.ROUND.value in record:
        parts.append(f"round {record[F.ROUND.value]}")
    shown = {F.SEQ, F.TIME, F.EVENT, F.STUDY_HASH, F.STUDY, F.ROUND, F.SITE, F.PREV}
    parts += [f"{k}={v}" for k, v in record.items() if k not in {f.value for f in shown}]
    return "  ".join(parts)
