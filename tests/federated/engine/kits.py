"""NVFlare startup kits for tests: provisioned with NVFlare's own provisioner (~0.3 s), and
certificates made by hand with ``cryptography`` for the cases provisioning never produces."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def provision(
    workspace: Path,
    *,
    project: str = "neurofed-test",
    sites: Sequence[str] = ("site-1", "site-2"),
    port: int = 8102,
) -> dict[str, Path]:
    """Provision a project (server on localhost, ``sites``, one admin); the site kits by name."""
    import nvflare.lighter
    import yaml
    from nvflare.lighter.provision import prepare_builders, prepare_packager, prepare_project
    from nvflare.lighter.provisioner import Provisioner

    template = Path(nvflare.lighter.__file__).parent / "dummy_project.yml"
    project_dict = yaml.safe_load(template.read_text(encoding="utf-8"))
    project_dict["name"] = project
    project_dict["participants"] = [
        {
            "name": "server1",
            "type": "server",
            "org": "test",
            "fed_learn_port": port,
            "default_host": "localhost",
        },
        *({"name": site, "type": "client", "org": "test"} for site in sites),
        {"name": "admin@test.org", "type": "admin", "org": "test", "role": "project_admin"},
    ]
    provisioner = Provisioner(
        str(workspace), prepare_builders(project_dict), prepare_packager(project_dict)
    )
    provisioner.provision(prepare_project(project_dict))
    out = workspace / project / "prod_00"
    return {site: out / site for site in sites}


def checked_folder(root: Path) -> Path:
    """A data folder that `neurofed site check` has seen (only its manifest matters here)."""
    from neurofed.data.manifest import site_file
    from neurofed.keys import SiteFile

    manifest = site_file(root, SiteFile.MANIFEST)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}", encoding="utf-8")
    return root


def copy_kit(kit: Path, dest: Path) -> Path:
    shutil.copytree(kit, dest)
    return dest


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_expired_identity(kit: Path, site: str) -> None:
    """Replace the kit's CA, certificate and key by a valid CA and a site certificate that
    expired yesterday (so only the validity check can fail)."""
    now = datetime.now(UTC)
    ca_key, key = _key(), _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("expired-test-ca"))
        .issuer_name(_name("expired-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(site))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now - timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    startup = kit / "startup"
    (startup / "rootCA.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (startup / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (startup / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
