"""A federation's startup kits: NVFlare provisioning with a project CA (mutual TLS) and bundles.

:func:`init_federation` is what ``neurofed federation init`` runs for a coordinator. It writes an
NVFlare ``project.yml`` (one server, the sites, one ``project_admin``; every connection mutual
TLS), provisions it in-process with NVFlare's lighter (``Provisioner`` with the workspace,
static-file, certificate and signature builders) and lays the result out as::

    <federation>/federation.json       what was issued (server address, sites, CA fingerprint)
    <federation>/project.yml           the NVFlare project
    <federation>/provision/            NVFlare's provisioning workspace; state/cert.json holds the
                                       project CA's private key: keep this folder secret
    <federation>/server/               the server's kit: `neurofed server start --kit …/server`
    <federation>/admin/                the coordinator's admin kit: `neurofed study submit
                                       --admin-kit …/admin`
    <federation>/bundles/<site>.zip    one enrolment bundle per site (its kit: certificate, key,
                                       connection details), to hand over by independent means

A bundle holds the site's kit at its root (``startup/``, ``local/``, ``readme.txt``) plus
:data:`BUNDLE_INFO` (federation, site, server address, the CA's SHA-256 fingerprint for the
custodian to compare over the phone). The server kit is tuned for realistic fault handling: its
``local/resources.json`` sets ``heart_beat_timeout`` (a dead site is noticed within about that
time instead of NVFlare's 600 s), allow-lists :data:`ALLOWED_CLASSES` and keeps the job store
inside the kit (NVFlare's template puts it in ``/tmp/nvflare``, shared by every server on the
machine; :func:`configure_server_kit` re-points it whenever the kit moves).

Adding a site later (:func:`add_site`) provisions the project again in the same workspace:
NVFlare's ``CertBuilder`` reloads the project CA and every certificate already issued from
``state/cert.json``, so only the new site's kit is new; the other sites' kits and the server's
kit stay valid as they are (the server admits any client whose certificate chains to the project
CA — it keeps no list of sites), and the running server does not even need a restart.

Examples
--------
>>> ServerAddress.parse("fl.example.org:9002")
ServerAddress(host='fl.example.org', fl_port=9002, admin_port=9003)
>>> org_name("site-a")
'site_a'
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neurofed.artifacts import atomic_path, write_json_atomically
from neurofed.federated.engine.simulation import ALLOWED_CLASSES

__all__ = [
    "ADMIN_FOLDER",
    "BUNDLES_FOLDER",
    "BUNDLE_INFO",
    "CLIENT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_FL_PORT",
    "DEFAULT_HEARTBEAT_TIMEOUT_S",
    "FEDERATION_FILE",
    "SERVER_FOLDER",
    "Federation",
    "FederationSpec",
    "ProvisionError",
    "ServerAddress",
    "add_site",
    "bundle_sha256",
    "configure_server_kit",
    "init_federation",
    "load_federation",
    "org_name",
]

FEDERATION_FILE = "federation.json"
PROJECT_FILE = "project.yml"
PROVISION_FOLDER = "provision"
SERVER_FOLDER = "server"
ADMIN_FOLDER = "admin"
BUNDLES_FOLDER = "bundles"
#: Inside every bundle (and so inside every installed site kit).
BUNDLE_INFO = "neurofed_bundle.json"
#: Where neurofed keeps what it adds to a kit (service state, job store, run folders).
KIT_FOLDER = "neurofed"
DEFAULT_FL_PORT = 8002
DEFAULT_ADMIN_PORT = 8003
#: Server-side dead-site detection (ENGINE.md: NVFlare's default 600 s stalled a round ~11 min).
DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0
#: How often a site started by ``neurofed site start`` sends a heartbeat (``client_train``'s
#: ``heart_beat_interval``; NVFlare's default is 10 s, and a failed heartbeat is retried 5 s later).
CLIENT_HEARTBEAT_INTERVAL_S = 5.0
#: The shortest heartbeat timeout accepted: three heartbeat intervals, so that late heartbeats on
#: a loaded machine (measured: 16 s gaps with 10 s heartbeats) do not make the server drop a
#: live site.
MIN_HEARTBEAT_TIMEOUT_S = 3 * CLIENT_HEARTBEAT_INTERVAL_S
_FORMAT = 1
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_HOST = re.compile(
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$"
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_BUILDERS: list[dict[str, Any]] = [
    {
        "path": "nvflare.lighter.impl.workspace.WorkspaceBuilder",
        "args": {"template_file": ["master_template.yml"]},
    },
    {
        "path": "nvflare.lighter.impl.static_file.StaticFileBuilder",
        "args": {"config_folder": "config"},
    },
    {"path": "nvflare.lighter.impl.cert.CertBuilder"},
    {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
]


class ProvisionError(ValueError):
    """A federation cannot be provisioned or extended; the message says why and what to do."""


def org_name(site: str) -> str:
    """NVFlare's organisation name of a participant (letters, digits and ``_`` only)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", site)


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ProvisionError(f"{what} {text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ProvisionError(f"{what} {port} is not in 1-65535")
    return port


@dataclass(frozen=True)
class ServerAddress:
    """Where the sites and the admins reach the server (the host is also the certificate's name)."""

    host: str
    fl_port: int = DEFAULT_FL_PORT
    admin_port: int = DEFAULT_ADMIN_PORT

    def __post_init__(self) -> None:
        if not _HOST.match(self.host) or len(self.host) > 63:
            raise ProvisionError(
                f"server host {self.host!r} is not a host name (letters, digits, '-' and '.'; "
                "at most 63 characters): give the name the sites will dial, e.g. fl.hospital.org"
            )
        if self.fl_port == self.admin_port:
            raise ProvisionError(
                f"the FL port and the admin port are both {self.fl_port}; give two ports"
            )

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        """``HOST[:FL_PORT[:ADMIN_PORT]]``; the admin port defaults to the FL port + 1."""
        parts = text.strip().split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ProvisionError(f"--server {text!r}: use HOST[:FL_PORT[:ADMIN_PORT]]")
        fl_port = _port(parts[1], "FL port") if len(parts) > 1 else DEFAULT_FL_PORT
        admin = _port(parts[2], "admin port") if len(parts) > 2 else fl_port + 1
        return cls(parts[0], fl_port, admin)

    def __str__(self) -> str:
        return f"{self.host}:{self.fl_port}:{self.admin_port}"


@dataclass(frozen=True)
class FederationSpec:
    """What a coordinator decides: the project, the server, the sites and the admin.

    Attributes
    ----------
    name
        The project name (also the CA's common name).
    server
        The server address.
    sites
        Site names (each becomes an NVFlare client of that name).
    admin
        The coordinator's e-mail (the ``project_admin`` who submits studies).
    heartbeat_timeout_s
        How long the server waits for a site's heartbeat before declaring it dead.
    """

    name: str
    server: ServerAddress
    sites: tuple[str, ...]
    admin: str
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        if not _PROJECT.match(self.name):
            raise ProvisionError(
                f"--name {self.name!r}: use letters, digits, '-' and '_' (at most 63 characters)"
            )
        if not self.sites:
            raise ProvisionError("no site given; pass --site NAME for each hospital")
        for site in self.sites:
            _check_site_name(site)
        if len(set(self.sites)) != len(self.sites):
            raise ProvisionError(f"a site is named twice in {list(self.sites)}")
        orgs = [org_name(s) for s in self.sites]
        if len(set(orgs)) != len(orgs):
            raise ProvisionError(f"sites {list(self.sites)} differ only in '-' versus '_'")
        if self.server.host in self.sites:
            raise ProvisionError(f"a site is named like the server host {self.server.host!r}")
        if not _EMAIL.match(self.admin):
            raise ProvisionError(f"--admin {self.admin!r} is not an e-mail address")
        if not self.heartbeat_timeout_s >= MIN_HEARTBEAT_TIMEOUT_S:
            raise ProvisionError(
                f"--heartbeat-timeout {self.heartbeat_timeout_s:g} s is too short: sites send a "
                f"heartbeat every {CLIENT_HEARTBEAT_INTERVAL_S:g} s (`neurofed site start`), so "
                "use at least "
                f"{MIN_HEARTBEAT_TIMEOUT_S:g} s (60 s suits most networks)"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": {
                "host": self.server.host,
                "fl_port": self.server.fl_port,
                "admin_port": self.server.admin_port,
            },
            "sites": list(self.sites),
            "admin": self.admin,
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FederationSpec:
        server = data["server"]
        return cls(
            name=str(data["name"]),
            server=ServerAddress(
                str(server["host"]), int(server["fl_port"]), int(server["admin_port"])
            ),
            sites=tuple(str(s) for s in data["sites"]),
            admin=str(data["admin"]),
            heartbeat_timeout_s=float(data["heartbeat_timeout_s"]),
        )


def _check_site_name(site: str) -> None:
    if not _SITE.match(site):
        raise ProvisionError(
            f"site name {site!r}: use letters, digits, '-' and '_' (at most 63 characters)"
        )


@dataclass(frozen=True)
class Federation:
    """A provisioned federation folder (see the module docstring)."""

    root: Path
    spec: FederationSpec
    ca_fingerprint: str

    @property
    def server_kit(self) -> Path:
        return self.root / SERVER_FOLDER

    @property
    def admin_kit(self) -> Path:
        return self.root / ADMIN_FOLDER

    def bundle(self, site: str) -> Path:
        """The enrolment bundle of ``site``."""
        return self.root / BUNDLES_FOLDER / f"{site}.zip"


def _project_dict(spec: FederationSpec) -> dict[str, Any]:
    participants: list[dict[str, Any]] = [
        {
            "name": spec.server.host,
            "type": "server",
            "org": org_name(spec.name),
            "fed_learn_port": spec.server.fl_port,
            "admin_port": spec.server.admin_port,
            "connection_security": "mtls",
        }
    ]
    participants += [
        {"name": site, "type": "client", "org": org_name(site), "connection_security": "mtls"}
        for site in spec.sites
    ]
    participants.append(
        {"name": spec.admin, "type": "admin", "org": org_name(spec.name), "role": "project_admin"}
    )
    return {
        "api_version": 3,
        "name": spec.name,
        "description": f"neurofed federation {spec.name}",
        "participants": participants,
        "builders": copy.deepcopy(_BUILDERS),
    }


class _Log:
    """Collects NVFlare's provisioning messages instead of printing them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, level: str, msg: str) -> None:
        self.lines.append(f"{level}: {msg}")

    def debug(self, msg: str) -> None:
        self._add("debug", msg)

    def info(self, msg: str) -> None:
        self._add("info", msg)

    def warning(self, msg: str) -> None:
        self._add("warning", msg)

    def error(self, msg: str) -> None:
        self._add("error", msg)


def _provision(root: Path, project: dict[str, Any]) -> Path:
    """Run NVFlare's lighter on ``project``; returns the new ``prod_NN`` folder."""
    import yaml
    from nvflare.lighter.constants import CtxKey
    from nvflare.lighter.prov_utils import prepare_builders, prepare_packager
    from nvflare.lighter.provision import prepare_project
    from nvflare.lighter.provisioner import Provisioner

    (root / PROJECT_FILE).write_text(
        "# NVFlare project written by `neurofed federation init`; edit with neurofed commands\n"
        + yaml.safe_dump(project, sort_keys=False),
        encoding="utf-8",
    )
    log = _Log()
    try:
        built = prepare_project(copy.deepcopy(project))
        provisioner = Provisioner(
            str(root / PROVISION_FOLDER), prepare_builders(project), prepare_packager(project)
        )
        ctx = provisioner.provision(built, logger=log)
    except (ValueError, RuntimeError) as exc:
        raise ProvisionError(f"NVFlare refused the project: {exc}") from None
    prod = ctx.get(CtxKey.CURRENT_PROD_DIR)
    if ctx.get(CtxKey.BUILD_ERROR) or not prod:
        raise ProvisionError("NVFlare provisioning failed:\n" + "\n".join(log.lines))
    return Path(prod)


def _ca_fingerprint(kit: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate((kit / "startup" / "rootCA.pem").read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def configure_server_kit(kit: Path, heartbeat_timeout_s: float | None = None) -> Path:
    """Write the server kit's ``local/resources.json`` from NVFlare's default of the kit.

    Sets ``heart_beat_timeout`` (when given; kept otherwise), adds :data:`ALLOWED_CLASSES` to the
    enforced class allow-list, and points the job store and the snapshot store at
    ``<kit>/neurofed/`` (absolute paths: NVFlare's storage requires them; called again by
    ``neurofed server start``, so a moved kit keeps its jobs with it). Returns the file.
    """
    kit = Path(kit).resolve()
    local = kit / "local"
    current = local / "resources.json"
    source = current if current.is_file() else local / "resources.json.default"
    if not source.is_file():
        raise ProvisionError(f"{kit} is not a server kit: {source} is missing")
    resources = json.loads(source.read_text(encoding="utf-8"))
    servers = resources.setdefault("servers", [{}])
    if heartbeat_timeout_s is not None:
        servers[0]["heart_beat_timeout"] = float(heartbeat_timeout_s)
    allowed = list(resources.get("class_allow_list", []))
    resources["class_allow_list"] = allowed + [c for c in ALLOWED_CLASSES if c not in allowed]
    resources["class_list_enforcement_mode"] = "enforce"
    state = kit / KIT_FOLDER
    storage = resources.get("snapshot_persistor", {}).get("args", {}).get("storage", {})
    if storage:
        storage.setdefault("args", {})["root_dir"] = str(state / "snapshot-storage")
    for component in resources.get("components", []):
        if component.get("id") == "job_manager":
            component.setdefault("args", {})["uri_root"] = str(state / "jobs-storage")
    return write_json_atomically(current, resources)


def _quiet_console(kit: Path) -> None:
    """Console logging at WARNING: every INFO line still goes to the kit's ``log.txt``."""
    local = kit / "local"
    default = local / "log_config.json.default"
    if not default.is_file():
        return
    config = json.loads(default.read_text(encoding="utf-8"))
    handler = config.get("handlers", {}).get("consoleHandler")
    if handler is not None:
        handler["level"] = "WARNING"
    write_json_atomically(local / "log_config.json", config)


def _write_bundle(kit: Path, bundle: Path, info: dict[str, Any]) -> Path:
    with (
        atomic_path(bundle) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for path in sorted(kit.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(kit).as_posix())
        archive.writestr(BUNDLE_INFO, json.dumps(info, indent=2) + "\n")
    bundle.chmod(0o600)  # it holds the site's private key
    return bundle


def _bundle_info(spec: FederationSpec, site: str, fingerprint: str) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "federation": spec.name,
        "site": site,
        "server": {
            "host": spec.server.host,
            "fl_port": spec.server.fl_port,
            "admin_port": spec.server.admin_port,
        },
        "ca_sha256": fingerprint,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_record(root: Path, spec: FederationSpec, fingerprint: str, prod: Path) -> None:
    write_json_atomically(
        root / FEDERATION_FILE,
        {
            "format": _FORMAT,
            **spec.to_json(),
            "ca_sha256": fingerprint,
            "last_provisioned": str(prod.relative_to(root)),
        },
    )


def init_federation(spec: FederationSpec, out: Path) -> Federation:
    """Provision ``spec`` into the folder ``out`` (see the module docstring).

    Raises
    ------
    ProvisionError
        ``out`` already holds a federation, or NVFlare refused the project.
    """
    root = Path(out).resolve()
    if (root / FEDERATION_FILE).exists() or (root / PROVISION_FOLDER).exists():
        raise ProvisionError(
            f"{root} already holds a federation; add sites with `neurofed federation add-site "
            f"NAME --federation {root}`, or choose another --out"
        )
    root.mkdir(parents=True, exist_ok=True)
    prod = _provision(root, _project_dict(spec))
    server = root / SERVER_FOLDER
    shutil.copytree(prod / spec.server.host, server)
    configure_server_kit(server, spec.heartbeat_timeout_s)
    _quiet_console(server)
    shutil.copytree(prod / spec.admin, root / ADMIN_FOLDER)
    fingerprint = _ca_fingerprint(server)
    for site in spec.sites:
        _write_bundle(
            prod / site,
            root / BUNDLES_FOLDER / f"{site}.zip",
            _bundle_info(spec, site, fingerprint),
        )
    _write_record(root, spec, fingerprint, prod)
    return Federation(root, spec, fingerprint)


def load_federation(root: Path) -> Federation:
    """Read a folder written by :func:`init_federation`.

    Raises
    ------
    ProvisionError
        The folder holds no federation.
    """
    root = Path(root).resolve()
    path = root / FEDERATION_FILE
    if not path.is_file():
        raise ProvisionError(
            f"{root} holds no federation ({FEDERATION_FILE} is missing); create one with "
            "`neurofed federation init`"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    return Federation(root, FederationSpec.from_json(data), str(data["ca_sha256"]))


def add_site(root: Path, site: str) -> Path:
    """Issue a kit for one more site of the federation in ``root``; returns its bundle.

    Only the new site's bundle is written: every kit issued before (sites, server, admin) keeps
    working unchanged (see the module docstring).

    Raises
    ------
    ProvisionError
        The name is taken or invalid, or the project CA changed (it would no longer match the
        server's kit).
    """
    federation = load_federation(root)
    spec = federation.spec
    _check_site_name(site)
    if site in spec.sites or site == spec.server.host:
        raise ProvisionError(f"{site!r} is already a participant of {spec.name}")
    if org_name(site) in {org_name(s) for s in spec.sites}:
        raise ProvisionError(f"{site!r} differs from an existing site only in '-' versus '_'")
    extended = FederationSpec(
        spec.name, spec.server, (*spec.sites, site), spec.admin, spec.heartbeat_timeout_s
    )
    prod = _provision(federation.root, _project_dict(extended))
    fingerprint = _ca_fingerprint(prod / site)
    if fingerprint != federation.ca_fingerprint:
        raise ProvisionError(
            f"the project CA in {federation.root / PROVISION_FOLDER} is not the one the server "
            "kit trusts; the provisioning state was replaced, so the new kit would be refused"
        )
    bundle = _write_bundle(
        prod / site, federation.bundle(site), _bundle_info(extended, site, fingerprint)
    )
    _write_record(federation.root, extended, fingerprint, prod)
    return bundle


def bundle_sha256(bundle: Path) -> str:
    """SHA-256 of a bundle file (to read out to the custodian alongside the CA fingerprint)."""
    digest = hashlib.sha256()
    with Path(bundle).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
