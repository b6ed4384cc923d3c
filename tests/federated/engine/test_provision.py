"""Provisioning without starting anything: the spec's checks, the kits, the bundles, add-site."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.federated.engine.provision import (
    BUNDLE_INFO,
    FederationSpec,
    ProvisionError,
    ServerAddress,
    add_site,
    configure_server_kit,
    init_federation,
    load_federation,
)
from neurofed.federated.engine.services import Role, ServiceError, inspect_kit, service_status
from neurofed.federated.engine.simulation import ALLOWED_CLASSES


def _spec(**changes: object) -> FederationSpec:
    values: dict[str, object] = {
        "name": "fed",
        "server": ServerAddress("localhost", 18002, 18003),
        "sites": ("site-a", "site-b"),
        "admin": "lead@example.org",
        "heartbeat_timeout_s": 20.0,
    }
    values.update(changes)
    return FederationSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_federation(_spec(), tmp_path_factory.mktemp("fed") / "federation").root


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fl.example.org", ServerAddress("fl.example.org", 8002, 8003)),
        ("127.0.0.1:9000", ServerAddress("127.0.0.1", 9000, 9001)),
        ("localhost:9000:9500", ServerAddress("localhost", 9000, 9500)),
    ],
)
def test_a_server_address_parses_with_default_ports(text: str, expected: ServerAddress) -> None:
    assert ServerAddress.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "HOST"),
        ("host:port", "not a port number"),
        ("host:70000", "not in 1-65535"),
        ("host:9000:9000", "both 9000"),
        ("bad_host", "not a host name"),
    ],
)
def test_a_bad_server_address_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ProvisionError, match=message):
        ServerAddress.parse(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sites": ()}, "no site given"),
        ({"sites": ("a", "a")}, "named twice"),
        ({"sites": ("a-b", "a_b")}, "differ only"),
        ({"sites": ("bad site",)}, "site name"),
        ({"admin": "lead"}, "not an e-mail"),
        ({"name": "bad name"}, "--name"),
        ({"heartbeat_timeout_s": 5.0}, "too short"),
    ],
)
def test_a_bad_federation_is_refused_before_provisioning(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ProvisionError, match=message):
        _spec(**changes)


def test_init_writes_the_server_kit_the_admin_kit_and_one_bundle_per_site(federation: Path) -> None:
    # Execute
    loaded = load_federation(federation)

    # Assert: the server kit is tuned (heartbeat, allow-list, storage inside the kit)
    resources = json.loads((federation / "server" / "local" / "resources.json").read_text())
    assert resources["servers"][0]["heart_beat_timeout"] == 20.0
    assert set(ALLOWED_CLASSES) <= set(resources["class_allow_list"])
    jobs = next(c for c in resources["components"] if c["id"] == "job_manager")
    assert jobs["args"]["uri_root"].startswith(str(federation / "server"))
    fed_server = json.loads((federation / "server" / "startup" / "fed_server.json").read_text())
    assert fed_server["servers"][0]["connection_security"] == "mtls"
    assert inspect_kit(federation / "server") == inspect_kit(federation / "server")
    assert inspect_kit(federation / "server").role is Role.SERVER
    admin = json.loads((federation / "admin" / "startup" / "fed_admin.json").read_text())
    assert admin["admin"]["username"] == "lead@example.org"
    # each bundle is the site's kit, with its certificate and what the custodian checks
    for site in ("site-a", "site-b"):
        with zipfile.ZipFile(loaded.bundle(site)) as bundle:
            names = set(bundle.namelist())
            info = json.loads(bundle.read(BUNDLE_INFO))
        assert {"startup/fed_client.json", "startup/client.crt", "startup/client.key"} <= names
        assert info["site"] == site and info["ca_sha256"] == loaded.ca_fingerprint
        assert loaded.bundle(site).stat().st_mode & 0o077 == 0  # holds a private key


def test_a_server_kit_moved_elsewhere_keeps_its_job_store_inside(
    federation: Path, tmp_path: Path
) -> None:
    # Prepare
    import shutil

    moved = tmp_path / "moved-server"
    shutil.copytree(federation / "server", moved)

    # Execute
    configure_server_kit(moved)

    # Assert: the heartbeat timeout is kept; the stores follow the kit
    resources = json.loads((moved / "local" / "resources.json").read_text())
    assert resources["servers"][0]["heart_beat_timeout"] == 20.0
    jobs = next(c for c in resources["components"] if c["id"] == "job_manager")
    assert jobs["args"]["uri_root"] == str(moved / "neurofed" / "jobs-storage")


def test_add_site_issues_one_new_bundle_with_the_same_ca(federation: Path) -> None:
    # Prepare
    before = {p.name: p.read_bytes() for p in (federation / "bundles").glob("*.zip")}
    server = {p.name: p.read_bytes() for p in (federation / "server" / "startup").iterdir()}

    # Execute
    bundle = add_site(federation, "site-c")

    # Assert
    loaded = load_federation(federation)
    assert loaded.spec.sites == ("site-a", "site-b", "site-c")
    assert {p.name: p.read_bytes() for p in (federation / "bundles").glob("*.zip")} == {
        **before,
        "site-c.zip": bundle.read_bytes(),
    }
    assert {p.name: p.read_bytes() for p in (federation / "server" / "startup").iterdir()} == (
        server
    )
    with zipfile.ZipFile(bundle) as archive:
        info = json.loads(archive.read(BUNDLE_INFO))
        root_ca = archive.read("startup/rootCA.pem")
    assert info["ca_sha256"] == loaded.ca_fingerprint
    assert root_ca == (federation / "server" / "startup" / "rootCA.pem").read_bytes()
    with pytest.raises(ProvisionError, match="already a participant"):
        add_site(federation, "site-a")


def test_init_refuses_a_folder_that_holds_a_federation(federation: Path) -> None:
    with pytest.raises(ProvisionError, match="already holds a federation"):
        init_federation(_spec(), federation)


def test_the_cli_provisions_and_says_what_to_hand_to_whom(tmp_path: Path) -> None:
    # Execute
    init = ["federation", "init", "--name", "demo", "--admin", "lead@example.org"]
    result = CliRunner().invoke(
        app,
        [*init, "--server", "localhost:19002", "--site", "site-x", "--out", str(tmp_path / "f")],
    )

    # Assert
    assert result.exit_code == 0, result.output
    assert "custodian of site-x" in result.output and "CA fingerprint" in result.output
    assert (tmp_path / "f" / "bundles" / "site-x.zip").is_file()
    out = str(tmp_path / "g")
    refused = CliRunner().invoke(
        app,
        [*init, "--server", "localhost", "--site", "x", "--heartbeat-timeout", "2", "--out", out],
    )
    assert refused.exit_code == 1 and "too short" in refused.output


def test_a_kit_that_never_ran_is_stopped_and_a_folder_that_is_no_kit_is_refused(
    federation: Path, tmp_path: Path
) -> None:
    # Execute
    status = service_status(federation / "server")

    # Assert
    assert not status.running and status.pid is None
    assert status.log == (federation / "server" / "log.txt").resolve()
    with pytest.raises(ServiceError, match="not a server or site kit"):
        inspect_kit(tmp_path)
