"""A site's NVFlare startup kit: install it from an enrolment bundle and lock it down.

An enrolment bundle is the startup kit ``nvflare provision`` made for one site (``neurofed
federation init`` hands one to each site), as a folder or a zip of it::

    <kit>/startup/fed_client.json   server address (servers[0].service.target) and site name
    <kit>/startup/rootCA.pem        the project's CA
    <kit>/startup/client.crt        this site's certificate (CN = the site's name), signed by it
    <kit>/startup/client.key        its private key
    <kit>/local/*.default           NVFlare's defaults (authorization, resources, logging)

:func:`init_site` (``neurofed site init BUNDLE --data DIR``) installs the kit in a new folder
and writes, in its ``local/`` folder (NVFlare reads ``X.json`` in place of ``X.json.default``
and never writes there itself):

- ``neurofed_site.json`` — the site's :class:`~neurofed.federated.site.config.SiteConfig`
  (:data:`~neurofed.federated.site.config.SITE_CONFIG_FILE`): the data folder, the
  device, ``require_approval: true``, no approved study yet, the allowed datasets and the audit
  log ``<kit>/neurofed/audit.jsonl`` (:data:`AUDIT_LOG`; outside ``local/`` because it is an
  output, next to NVFlare's own ``audit.log``).
- ``authorization.json`` — the kit's ``authorization.json.default`` with the ``byoc`` right set
  to ``"none"`` for every role (:func:`site_authorization`). NVFlare 2.9 checks this right at
  the site when a job carrying code (a ``custom/`` folder, or a launcher image / python path) is
  deployed, for the job's submitter role, and refuses it at this site ("BYOC not permitted"). A
  role granted everything as a string (``"project_admin": "any"``) is written as the same
  condition for every right NVFlare knows (each admin command category and uncategorised
  command), except ``byoc``. NVFlare reads this file when the site process starts.
- ``resources.json`` — the kit's ``resources.json.default`` with ``class_allow_list`` holding
  only :data:`SITE_ALLOWED_CLASSES` (the neurofed site executor) and
  ``class_list_enforcement_mode: "enforce"``: a job building any other class fails at this site.
  NVFlare skips the allow-list for BYOC jobs, which is why ``byoc`` must be refused too. Log
  streaming (``SiteLogStreamer``, which injects NVFlare's ``JobLogStreamer`` into every job and
  sends the site's ``error_log.txt`` to the server) is switched off unless ``stream_logs``: a
  site log may name local paths.

Then it checks the kit before anyone starts it — NVFlare itself hangs silently on a kit that
does not chain to its CA (:func:`check_certificates`: the certificate is signed by the kit's
root CA, both are within their validity dates, the key belongs to the certificate, its CN is
the site's name) and tries a TCP connection to the server (:func:`check_server`; a warning
only: the server may not be up yet). :func:`doctor` runs every check again on an installed kit.

Interfaces for the coordinator's commands: :class:`SiteKit` (``read`` a kit folder: site
name, server host and port), :func:`find_kit_root`, :data:`SITE_ALLOWED_CLASSES`, and
:func:`site_config_path` / :func:`load_kit_config` / :func:`save_kit_config`.

Examples
--------
>>> policy = site_authorization({"format_version": "1.0", "permissions": {
...     "lead": {"submit_job": "any", "byoc": "any"}}})
>>> policy["permissions"]["lead"]
{'submit_job': 'any', 'byoc': 'none'}
>>> site_resources({"format_version": 2})["class_allow_list"]
['neurofed.federated.engine.site_executor.SiteExecutor']
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.data.manifest import site_file
from neurofed.federated.site.audit import verify_audit_log
from neurofed.federated.site.config import SITE_CONFIG_FILE, SiteConfig, SiteConfigError
from neurofed.federated.site.state import kept_audit_heads
from neurofed.keys import SiteFile

__all__ = [
    "AUDIT_LOG",
    "SITE_ALLOWED_CLASSES",
    "CheckStatus",
    "KitCheck",
    "KitCheckError",
    "KitError",
    "SiteInit",
    "SiteKit",
    "bundle_site_name",
    "check_certificates",
    "check_server",
    "check_site_files",
    "default_kit_dir",
    "doctor",
    "find_kit_root",
    "init_site",
    "install_kit",
    "load_kit_config",
    "save_kit_config",
    "site_authorization",
    "site_config_path",
    "site_resources",
]

STARTUP = "startup"
LOCAL = "local"
FED_CLIENT = "fed_client.json"
ROOT_CA = "rootCA.pem"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
AUTHORIZATION = "authorization.json"
RESOURCES = "resources.json"
_DEFAULT = ".default"
#: The site's audit log, relative to the kit folder.
AUDIT_LOG = Path("neurofed") / "audit.jsonl"
#: The only classes a job may build at a site (``local/resources.json`` ``class_allow_list``).
SITE_ALLOWED_CLASSES: tuple[str, ...] = ("neurofed.federated.engine.site_executor.SiteExecutor",)
#: NVFlare's job log streamer: allow-listed only when the custodian lets logs be streamed.
LOG_STREAMER = "nvflare.app_common.logging.job_log_streamer.JobLogStreamer"
_SITE_LOG_STREAMER = "SiteLogStreamer"
_BYOC = "byoc"
_FLOWER = "server-predeployed-flwr"
_REFUSE = ("none", "no")
#: A certificate expiring sooner than this is reported as a warning.
EXPIRY_WARNING = timedelta(days=30)


class KitError(ValueError):
    """A bundle or kit cannot be used; the message names the file and the fix."""


class CheckStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"  # the site can start; something may need attention
    ERROR = "error"  # the site would not work: fix this first


@dataclass(frozen=True)
class KitCheck:
    """One check of a kit: what was checked, how it went, and the fix when it failed."""

    status: CheckStatus
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.subject}: {self.message}"


def _ok(subject: str, message: str) -> KitCheck:
    return KitCheck(CheckStatus.OK, subject, message)


def _warn(subject: str, message: str) -> KitCheck:
    return KitCheck(CheckStatus.WARNING, subject, message)


def _error(subject: str, message: str) -> KitCheck:
    return KitCheck(CheckStatus.ERROR, subject, message)


# -- the kit folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteKit:
    """An NVFlare site startup kit on disk (see the module docstring).

    Attributes
    ----------
    root
        The kit folder (holding ``startup/`` and ``local/``).
    site_name
        The site's name (``client.fqsn`` of ``fed_client.json``).
    server_host, server_port
        Where the server's FL port is (``servers[0].service.target``).
    """

    root: Path
    site_name: str
    server_host: str
    server_port: int

    @property
    def startup(self) -> Path:
        return self.root / STARTUP

    @property
    def local(self) -> Path:
        return self.root / LOCAL

    @classmethod
    def read(cls, root: Path) -> SiteKit:
        """Read ``<root>/startup/fed_client.json``.

        Raises
        ------
        KitError
            No such file, not JSON, or no server target / site name in it.
        """
        root = Path(root)
        path = root / STARTUP / FED_CLIENT
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KitError(
                f"{path}: missing — {root} is not an NVFlare site startup kit (ask the "
                "coordinator for this site's enrolment bundle)"
            ) from None
        except (OSError, ValueError) as exc:
            raise KitError(f"{path}: unreadable ({exc})") from None
        try:
            target = str(data["servers"][0]["service"]["target"])
            host, _, port = target.rpartition(":")
            server_port = int(port)
        except (KeyError, IndexError, TypeError, ValueError):
            raise KitError(
                f"{path}: no servers[0].service.target 'host:port' (the server's address)"
            ) from None
        client = data.get("client") if isinstance(data.get("client"), Mapping) else {}
        name = client.get("fqsn") if isinstance(client, Mapping) else None
        if not isinstance(name, str) or not name:
            name = _certificate_name(root / STARTUP / CLIENT_CERT)
        if not name:
            raise KitError(f"{path}: no client.fqsn (the site's name) and no readable client.crt")
        return cls(root=root, site_name=name, server_host=host.strip("[]"), server_port=server_port)


def _certificate_name(path: Path) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def find_kit_root(folder: Path) -> Path:
    """The folder holding ``startup/fed_client.json``: ``folder`` or its only subfolder with one.

    Raises
    ------
    KitError
        None found, or several.
    """
    folder = Path(folder)
    if (folder / STARTUP / FED_CLIENT).is_file():
        return folder
    found = sorted(p.parent.parent for p in folder.glob(f"*/{STARTUP}/{FED_CLIENT}"))
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found)
        raise KitError(f"{folder} holds several startup kits ({names}); give the one of this site")
    raise KitError(
        f"{folder} holds no NVFlare site startup kit (no {STARTUP}/{FED_CLIENT}); give the "
        "enrolment bundle the coordinator sent for this site"
    )


def default_kit_dir(site_name: str) -> Path:
    """Where ``neurofed site init`` installs a kit unless told: ``./neurofed-site-<name>``."""
    return Path(f"neurofed-site-{site_name}")


def site_config_path(kit_root: Path) -> Path:
    """``<kit>/local/neurofed_site.json``: the file the site executor reads."""
    return Path(kit_root) / LOCAL / SITE_CONFIG_FILE


def load_kit_config(kit_root: Path) -> SiteConfig:
    """The site config of an installed kit.

    Raises
    ------
    KitError
        The kit has no site config (it was not installed with ``neurofed site init``) or the
        file is unusable.
    """
    path = site_config_path(kit_root)
    if not path.is_file():
        raise KitError(
            f"{path}: missing — install the kit with `neurofed site init BUNDLE --data DIR` "
            "first, or give the kit folder with --kit"
        )
    try:
        return SiteConfig.load(path)
    except SiteConfigError as exc:
        raise KitError(str(exc)) from None


def save_kit_config(kit_root: Path, config: SiteConfig) -> Path:
    """Write ``config`` as the kit's site config (atomically; the running site re-reads it)."""
    return config.write(site_config_path(kit_root))


def _extract(bundle: Path, into: Path) -> None:
    """Unzip ``bundle`` into ``into``, refusing members outside it; keeps executable bits."""
    base = into.resolve()
    try:
        with zipfile.ZipFile(bundle) as archive:
            for member in archive.infolist():
                target = (base / member.filename).resolve()
                if not target.is_relative_to(base):
                    raise KitError(f"{bundle}: member {member.filename!r} lies outside the kit")
                archive.extract(member, base)
                mode = (member.external_attr >> 16) & 0o777
                if mode and not member.is_dir():
                    os.chmod(target, mode)
    except zipfile.BadZipFile:
        raise KitError(
            f"{bundle}: not a zip file nor a folder; give the enrolment bundle"
        ) from None


def install_kit(bundle: Path, dest: Path) -> SiteKit:
    """Copy (folder) or unzip (``.zip``) the kit in ``bundle`` into ``dest`` (must not exist).

    Raises
    ------
    KitError
        ``bundle`` is missing or holds no site kit, or ``dest`` exists and is not empty.
    """
    bundle, dest = Path(bundle), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise KitError(
            f"{dest} already exists; choose another --kit-dir, or run `neurofed site doctor "
            f"{dest}` to check the kit installed there"
        )
    if not bundle.exists():
        raise KitError(f"{bundle}: no such enrolment bundle")
    with tempfile.TemporaryDirectory(prefix=".neurofed-bundle-", dir=dest.parent) as tmp:
        if bundle.is_dir():
            source = find_kit_root(bundle)
        else:
            _extract(bundle, Path(tmp))
            source = find_kit_root(Path(tmp))
        SiteKit.read(source)  # refuse before copying anything that is not a site kit
        if dest.exists():
            dest.rmdir()
        shutil.copytree(source, dest, symlinks=False)
    key = dest / STARTUP / CLIENT_KEY
    if key.is_file():
        key.chmod(0o600)
    return SiteKit.read(dest)


# -- the site's local files ----------------------------------------------------------------------


def _all_rights() -> list[str]:
    """Every right NVFlare 2.9 checks: admin command categories, other commands, byoc, flower."""
    from nvflare.apis.fl_constant import AdminCommandNames
    from nvflare.security.security import COMMAND_CATEGORIES

    commands = {
        value
        for name, value in vars(AdminCommandNames).items()
        if not name.startswith("_") and isinstance(value, str)
    }
    categories = sorted(set(COMMAND_CATEGORIES.values()))
    return [*categories, *sorted(commands - set(COMMAND_CATEGORIES)), _BYOC, _FLOWER]


def site_authorization(default: Mapping[str, Any]) -> dict[str, Any]:
    """``default`` (an NVFlare authorization policy) with ``byoc`` refused for every role."""
    policy = copy.deepcopy(dict(default))
    permissions = policy.get("permissions")
    if not isinstance(permissions, Mapping):
        raise KitError("the authorization policy has no 'permissions' table")
    out: dict[str, Any] = {}
    for role, rights in permissions.items():
        if isinstance(rights, str | list):  # one condition for every right
            rights = dict.fromkeys(_all_rights(), rights)
        if not isinstance(rights, Mapping):
            raise KitError(f"authorization role {role!r}: expected a table of rights")
        out[role] = {**rights, _BYOC: "none"}
    policy["permissions"] = out
    return policy


def site_resources(default: Mapping[str, Any], *, stream_logs: bool = False) -> dict[str, Any]:
    """``default`` (NVFlare site resources) allowing only neurofed's executor, enforced."""
    resources = copy.deepcopy(dict(default))
    resources["class_allow_list"] = [
        *SITE_ALLOWED_CLASSES,
        *([LOG_STREAMER] if stream_logs else []),
    ]
    resources["class_list_enforcement_mode"] = "enforce"
    resources["allow_log_streaming"] = stream_logs
    components = resources.get("components")
    if not stream_logs and isinstance(components, list):
        resources["components"] = [
            c
            for c in components
            if not (isinstance(c, Mapping) and str(c.get("path", "")).endswith(_SITE_LOG_STREAMER))
        ]
    return resources


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{path}: missing from the kit") from None
    except (OSError, ValueError) as exc:
        raise KitError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: not a JSON object")
    return data


def _nvflare_default_authorization() -> dict[str, Any]:
    """NVFlare's provisioning template for ``authorization.json.default``."""
    import yaml
    from nvflare import lighter

    template = Path(lighter.__file__).parent / "templates" / "master_template.yml"
    return dict(json.loads(yaml.safe_load(template.read_text(encoding="utf-8"))["default_authz"]))


def write_site_files(kit: SiteKit, config: SiteConfig, *, stream_logs: bool = False) -> list[Path]:
    """Write ``local/neurofed_site.json``, ``authorization.json`` and ``resources.json``."""
    local = kit.local
    local.mkdir(parents=True, exist_ok=True)
    default = local / (AUTHORIZATION + _DEFAULT)
    authz = _read_json(default) if default.is_file() else _nvflare_default_authorization()
    resources_default = local / (RESOURCES + _DEFAULT)
    resources = _read_json(resources_default) if resources_default.is_file() else {}
    resources.setdefault("format_version", 2)
    return [
        save_kit_config(kit.root, config),
        write_json_atomically(local / AUTHORIZATION, site_authorization(authz)),
        write_json_atomically(
            local / RESOURCES, site_resources(resources, stream_logs=stream_logs)
        ),
    ]


def check_site_files(kit: SiteKit) -> list[KitCheck]:
    """Check the three local files: approvals required, no code shipped, only neurofed built."""
    checks = []
    path = Path(LOCAL, SITE_CONFIG_FILE)
    try:
        config = load_kit_config(kit.root)
    except KitError as exc:
        checks.append(_error(str(path), str(exc).split(": ", 1)[-1]))
        config = None
    if config is not None:
        checks.append(_check_data(config.data_root, str(path)))
        if config.require_approval:
            approved = len(config.approved_studies)
            checks.append(_ok(str(path), f"studies need approval ({approved} approved)"))
        else:
            checks.append(
                _warn(str(path), "require_approval is false: this site runs any study it is sent")
            )
        if config.audit_log is not None:
            checks.append(_check_audit_log(config))
    checks.append(_check_authorization(kit.root, Path(LOCAL, AUTHORIZATION)))
    checks.append(_check_resources(kit.root, Path(LOCAL, RESOURCES)))
    return checks


def _check_audit_log(config: SiteConfig) -> KitCheck:
    """The audit log: its chain and kept heads hold, and it is not missing or empty at a site
    that has run studies (a state folder per study)."""
    assert config.audit_log is not None
    log, subject = config.audit_log, str(config.audit_log)
    ran = (
        [p for p in config.state_root.iterdir() if p.is_dir()] if config.state_root.is_dir() else []
    )
    if not log.is_file() or log.stat().st_size == 0:
        if ran:
            return _error(
                subject,
                f"the audit log is {'empty' if log.is_file() else 'missing'} but this site has "
                f"run {len(ran)} study(ies) (state folders in {config.state_root}): it was deleted "
                "or replaced; keep the site stopped and restore the log from a backup",
            )
        return _ok(subject, "no audit log yet (no study has run here)")
    verdict = verify_audit_log(log, kept_audit_heads(config.state_root))
    if not verdict.ok:
        return _error(subject, str(verdict.problem))
    return _ok(subject, f"{verdict.lines} lines, hash chain and kept heads intact")


def _check_data(data_root: Path, subject: str) -> KitCheck:
    if not site_file(data_root, SiteFile.MANIFEST).is_file():
        return _error(
            subject,
            f"the data folder {data_root} has not been checked: run `neurofed site check "
            f"{data_root}` first",
        )
    return _ok(subject, f"data folder {data_root} (checked)")


def _check_authorization(root: Path, path: Path) -> KitCheck:
    try:
        policy = _read_json(root / path)
    except KitError as exc:
        return _error(str(path), f"{str(exc).split(': ', 1)[-1]}; run `neurofed site init` again")
    permissions = policy.get("permissions")
    if not isinstance(permissions, Mapping):
        return _error(str(path), "no 'permissions' table")
    allowed = sorted(
        str(role)
        for role, rights in permissions.items()
        if not (isinstance(rights, Mapping) and str(rights.get(_BYOC, "")).lower() in _REFUSE)
        and not (isinstance(rights, str) and rights.lower() in _REFUSE)
    )
    if allowed:
        return _error(
            str(path),
            f"role(s) {', '.join(allowed)} may deploy jobs that carry code (byoc); set "
            '"byoc": "none" for every role',
        )
    return _ok(str(path), "jobs that carry code are refused (byoc: none for every role)")


def _check_resources(root: Path, path: Path) -> KitCheck:
    try:
        resources = _read_json(root / path)
    except KitError as exc:
        return _error(str(path), f"{str(exc).split(': ', 1)[-1]}; run `neurofed site init` again")
    allow = resources.get("class_allow_list")
    mode = resources.get("class_list_enforcement_mode", "enforce")
    permitted = {*SITE_ALLOWED_CLASSES, LOG_STREAMER}
    if not isinstance(allow, list) or not set(map(str, allow)) <= permitted:
        extra = sorted(set(map(str, allow)) - permitted) if isinstance(allow, list) else ["*"]
        return _error(
            str(path),
            f"class_allow_list also allows {', '.join(extra[:5])}: jobs could build classes "
            "other than neurofed's site executor",
        )
    if mode != "enforce":
        return _error(str(path), f'class_list_enforcement_mode is {mode!r}; set "enforce"')
    return _ok(str(path), "jobs may build neurofed's site executor only (enforced)")


# -- certificates and the server -----------------------------------------------------------------


def _signed_by(cert: Any, issuer: Any) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        else:
            cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _validity(cert: Any, path: Path, now: datetime) -> KitCheck:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return _error(
            str(path),
            f"not valid before {start:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M}); check "
            "this machine's clock",
        )
    if now > end:
        return _error(
            str(path),
            f"expired on {end:%Y-%m-%d} UTC; ask the coordinator for a renewed enrolment bundle",
        )
    if end - now < EXPIRY_WARNING:
        return _warn(str(path), f"expires on {end:%Y-%m-%d} UTC; ask for a renewal soon")
    return _ok(str(path), f"valid until {end:%Y-%m-%d} UTC")


def _load_certificate(root: Path, path: Path) -> Any:
    """The certificate at ``root / path``; a :class:`KitError` carries the failed check."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate((root / path).read_bytes())
    except FileNotFoundError:
        check = _error(str(path), "missing from the kit; ask the coordinator for the bundle again")
    except (OSError, ValueError) as exc:
        check = _error(str(path), f"not a PEM certificate ({exc})")
    raise KitError(check.line(), check)


def _common_name(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def check_certificates(kit: SiteKit, *, now: datetime | None = None) -> list[KitCheck]:
    """Check the site certificate against the kit's root CA and its key (see module docstring).

    Every failing check is an error naming the file (relative to the kit) and what to do.
    """
    from cryptography.hazmat.primitives import hashes, serialization

    now = now or datetime.now(UTC)
    root_path, cert_path = Path(STARTUP, ROOT_CA), Path(STARTUP, CLIENT_CERT)
    key_path = Path(STARTUP, CLIENT_KEY)
    try:
        root = _load_certificate(kit.root, root_path)
        cert = _load_certificate(kit.root, cert_path)
    except KitError as exc:
        return [exc.args[1] if len(exc.args) > 1 else _error(str(kit.root), str(exc))]
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    checks = [
        _ok(
            str(root_path),
            f"project CA {_common_name(root)!r}, SHA-256 fingerprint {fingerprint}: compare it "
            "with the one the coordinator gives you by phone",
        ),
        _validity(root, root_path, now),
    ]
    if root.issuer != root.subject or not _signed_by(root, root):
        checks.append(_warn(str(root_path), "the root CA is not self-signed"))
    if cert.issuer != root.subject or not _signed_by(cert, root):
        checks.append(
            _error(
                str(cert_path),
                f"not signed by the kit's root CA {root_path} (the certificate was issued by "
                f"{cert.issuer.rfc4514_string()!r}, the root CA is "
                f"{root.subject.rfc4514_string()!r}): the two come from different projects; ask "
                "the coordinator for this site's enrolment bundle again",
            )
        )
    else:
        checks.append(_ok(str(cert_path), f"signed by the kit's root CA {_common_name(root)!r}"))
    checks.append(_validity(cert, cert_path, now))
    name = _common_name(cert)
    if name != kit.site_name:
        checks.append(
            _error(
                str(cert_path),
                f"issued to {name!r}, but {STARTUP}/{FED_CLIENT} names the site "
                f"{kit.site_name!r}; the kit's files were mixed up",
            )
        )
    try:
        key = serialization.load_pem_private_key((kit.root / key_path).read_bytes(), password=None)
    except FileNotFoundError:
        checks.append(_error(str(key_path), "missing from the kit"))
        return checks
    except (OSError, ValueError, TypeError) as exc:
        checks.append(_error(str(key_path), f"not a readable private key ({exc})"))
        return checks
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        checks.append(
            _error(
                str(key_path),
                f"does not belong to {cert_path} (its public key differs); the kit's files were "
                "mixed up: ask the coordinator for this site's enrolment bundle again",
            )
        )
    else:
        checks.append(_ok(str(key_path), "matches the site certificate"))
    return checks


def check_server(kit: SiteKit, *, timeout: float = 3.0) -> KitCheck:
    """Try a TCP connection to the server's FL port (a warning when it fails, never an error)."""
    import socket

    where = f"server {kit.server_host}:{kit.server_port}"
    try:
        with socket.create_connection((kit.server_host, kit.server_port), timeout=timeout):
            pass
    except socket.gaierror:
        return _warn(
            where,
            f"cannot resolve {kit.server_host!r} from this machine; check DNS or /etc/hosts "
            "(ask the coordinator for the server's address)",
        )
    except TimeoutError:
        return _warn(
            where,
            f"no answer within {timeout:g} s: a firewall may drop outgoing connections to port "
            f"{kit.server_port}, or the server is down",
        )
    except ConnectionRefusedError:
        return _warn(
            where,
            "connection refused: the server is not started yet (or listens on another port); "
            "the site keeps trying once started",
        )
    except OSError as exc:
        return _warn(where, f"unreachable ({exc})")
    return _ok(where, "reachable (TCP)")


# -- the custodian's two entry points ------------------------------------------------------------


@dataclass(frozen=True)
class SiteInit:
    """An installed kit: where, its site config, and every check made."""

    kit: SiteKit
    config: SiteConfig
    checks: list[KitCheck] = field(default_factory=list)

    @property
    def errors(self) -> list[KitCheck]:
        return [c for c in self.checks if c.status is CheckStatus.ERROR]


class KitCheckError(KitError):
    """A kit failed its checks; ``checks`` holds all of them."""

    def __init__(self, message: str, checks: Sequence[KitCheck]) -> None:
        super().__init__(message)
        self.checks = list(checks)


def bundle_site_name(bundle: Path) -> str:
    """The site name of the kit in ``bundle`` (a folder or a zip), without installing it."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise KitError(f"{bundle}: no such enrolment bundle")
    if bundle.is_dir():
        return SiteKit.read(find_kit_root(bundle)).site_name
    with tempfile.TemporaryDirectory(prefix=".neurofed-bundle-") as tmp:
        _extract(bundle, Path(tmp))
        return SiteKit.read(find_kit_root(Path(tmp))).site_name


def init_site(
    bundle: Path,
    data_root: Path,
    *,
    kit_dir: Path | None = None,
    device: str = "auto",
    allowed_datasets: Sequence[str] = (),
    stream_logs: bool = False,
    timeout: float = 3.0,
) -> SiteInit:
    """Install the kit of ``bundle`` for the data in ``data_root`` and check it.

    The kit goes to ``kit_dir`` (default ``./neurofed-site-<site name>``). Nothing is installed
    when the data folder is unchecked or the kit fails a certificate check; an unreachable
    server is only a warning.

    Raises
    ------
    KitError
        An unchecked data folder, a bundle that is not a site kit, an existing ``kit_dir``;
        :class:`KitCheckError` (with every check) when the certificates are wrong.
    """
    data_root = Path(data_root).resolve()
    if not data_root.is_dir():
        raise KitError(f"{data_root}: no such data folder")
    if not site_file(data_root, SiteFile.MANIFEST).is_file():
        raise KitError(
            f"{data_root} has not been checked: run `neurofed site check {data_root}` first, "
            "then `neurofed site init` again"
        )
    bundle = Path(bundle)
    name = bundle_site_name(bundle)
    dest = Path(kit_dir if kit_dir is not None else default_kit_dir(name)).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise KitError(
            f"{dest} already exists; choose another --kit-dir, or run `neurofed site doctor "
            f"{dest}` to check the kit installed there"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.installing"
    if staging.exists():
        shutil.rmtree(staging)
    config = SiteConfig(
        data_root=data_root,
        device=device,
        require_approval=True,
        allowed_datasets=tuple(allowed_datasets),
        audit_log=dest / AUDIT_LOG,
    )
    try:
        staged = install_kit(bundle, staging)
        checks = check_certificates(staged)
        failed = [c for c in checks if c.status is CheckStatus.ERROR]
        if failed:
            raise KitCheckError(
                f"{bundle}: the kit failed its checks; nothing was installed:\n"
                + "\n".join(f"  {c.line()}" for c in failed),
                checks,
            )
        write_site_files(staged, config, stream_logs=stream_logs)
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    kit = SiteKit.read(dest)
    return SiteInit(kit=kit, config=config, checks=[*checks, check_server(kit, timeout=timeout)])


def doctor(kit_root: Path, *, timeout: float = 3.0, now: datetime | None = None) -> list[KitCheck]:
    """Every check of an installed kit: certificates, local files, data folder, server."""
    try:
        kit = SiteKit.read(Path(kit_root))
    except KitError as exc:
        return [_error(str(kit_root), str(exc))]
    return [
        *check_certificates(kit, now=now),
        *check_site_files(kit),
        check_server(kit, timeout=timeout),
    ]
