"""A site's startup kit: certificate checks, the server check, the locked-down local files, and
``init_site`` / ``doctor`` — on kits made by NVFlare's own provisioner."""

from __future__ import annotations

import json
import shutil
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from neurofed.federated.engine.kit import (
    AUDIT_LOG,
    LOG_STREAMER,
    SITE_ALLOWED_CLASSES,
    CheckStatus,
    KitCheck,
    KitCheckError,
    KitError,
    SiteKit,
    check_certificates,
    check_server,
    doctor,
    init_site,
    load_kit_config,
    site_authorization,
    site_resources,
)
from neurofed.federated.site.config import SiteConfig
from tests.federated.engine.kits import (
    checked_folder,
    copy_kit,
    provision,
    write_expired_identity,
)


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """site-1 and site-2 of one project (never modified: copy before changing)."""
    return provision(tmp_path_factory.mktemp("provisioned"))


@pytest.fixture(scope="module")
def other_kits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A second project with its own CA, also with a site-1."""
    return provision(tmp_path_factory.mktemp("other"), project="other-project", sites=["site-1"])


def _errors(checks: list[KitCheck]) -> dict[str, str]:
    return {c.subject: c.message for c in checks if c.status is CheckStatus.ERROR}


# -- certificates ------------------------------------------------------------------------------


def test_a_provisioned_kit_passes_every_certificate_check(kits: dict[str, Path]) -> None:
    kit = SiteKit.read(kits["site-1"])

    checks = check_certificates(kit)

    assert kit.site_name == "site-1" and (kit.server_host, kit.server_port) == ("localhost", 8102)
    assert _errors(checks) == {}
    assert {c.subject for c in checks} >= {
        "startup/rootCA.pem",
        "startup/client.crt",
        "startup/client.key",
    }


def test_a_certificate_from_another_ca_fails_naming_both_files(
    kits: dict[str, Path], other_kits: dict[str, Path], tmp_path: Path
) -> None:
    kit = copy_kit(kits["site-1"], tmp_path / "kit")
    for name in ("client.crt", "client.key"):  # same site name, another project's CA
        shutil.copy(other_kits["site-1"] / "startup" / name, kit / "startup" / name)

    errors = _errors(check_certificates(SiteKit.read(kit)))

    assert set(errors) == {"startup/client.crt"}
    assert "not signed by the kit's root CA startup/rootCA.pem" in errors["startup/client.crt"]
    assert "other-project" in errors["startup/client.crt"]


def test_an_expired_certificate_fails(kits: dict[str, Path], tmp_path: Path) -> None:
    kit = copy_kit(kits["site-1"], tmp_path / "kit")
    write_expired_identity(kit, "site-1")

    errors = _errors(check_certificates(SiteKit.read(kit)))

    assert set(errors) == {"startup/client.crt"}
    assert errors["startup/client.crt"].startswith("expired on ")


def test_a_key_of_another_certificate_fails(kits: dict[str, Path], tmp_path: Path) -> None:
    kit = copy_kit(kits["site-1"], tmp_path / "kit")
    shutil.copy(kits["site-2"] / "startup" / "client.key", kit / "startup" / "client.key")

    errors = _errors(check_certificates(SiteKit.read(kit)))

    assert set(errors) == {"startup/client.key"}
    assert "does not belong to startup/client.crt" in errors["startup/client.key"]


def test_a_certificate_of_another_site_fails(kits: dict[str, Path], tmp_path: Path) -> None:
    kit = copy_kit(kits["site-1"], tmp_path / "kit")
    for name in ("client.crt", "client.key"):
        shutil.copy(kits["site-2"] / "startup" / name, kit / "startup" / name)

    errors = _errors(check_certificates(SiteKit.read(kit)))

    assert set(errors) == {"startup/client.crt"}
    assert "issued to 'site-2'" in errors["startup/client.crt"]


def test_a_missing_certificate_is_named(kits: dict[str, Path], tmp_path: Path) -> None:
    kit = copy_kit(kits["site-1"], tmp_path / "kit")
    (kit / "startup" / "rootCA.pem").unlink()

    errors = _errors(check_certificates(SiteKit.read(kit)))

    assert errors == {
        "startup/rootCA.pem": "missing from the kit; ask the coordinator for the bundle again"
    }


# -- the server --------------------------------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_a_listening_server_is_reachable_and_a_closed_port_is_a_warning(
    kits: dict[str, Path], listening: int
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = int(probe.getsockname()[1])
    up = SiteKit(kits["site-1"], "site-1", "127.0.0.1", listening)
    down = SiteKit(kits["site-1"], "site-1", "127.0.0.1", closed)

    reachable, refused = check_server(up, timeout=2), check_server(down, timeout=2)

    assert reachable.status is CheckStatus.OK
    assert refused.status is CheckStatus.WARNING and "connection refused" in refused.message
    assert refused.subject == f"server 127.0.0.1:{closed}"


# -- the local files ---------------------------------------------------------------------------


def test_byoc_is_refused_for_every_role_and_every_other_right_is_kept(
    kits: dict[str, Path],
) -> None:
    from nvflare.apis.fl_constant import AdminCommandNames
    from nvflare.fuel.sec.authz import AuthzContext, Person
    from nvflare.security.security import FLAuthorizer

    default = json.loads((kits["site-1"] / "local/authorization.json.default").read_text())
    assert default["permissions"]["project_admin"] == "any"  # NVFlare grants byoc this way
    before = FLAuthorizer("test", default)
    after = FLAuthorizer("test", site_authorization(default))
    commands = {v for k, v in vars(AdminCommandNames).items() if not k.startswith("_")}

    def allowed(authorizer: FLAuthorizer, role: str, right: str) -> bool:
        user = Person("someone@test.org", "test", role)
        return bool(authorizer.authorize(AuthzContext(right, user, user))[0])

    for role in default["permissions"]:
        assert not allowed(after, role, "byoc"), role
        for right in sorted(commands):
            assert allowed(after, role, right) == allowed(before, role, right), (role, right)
    assert allowed(before, "project_admin", "byoc") and allowed(before, "lead", "byoc")


def test_resources_allow_only_the_site_executor_and_nvflare_enforces_it(
    kits: dict[str, Path], tmp_path: Path
) -> None:
    from nvflare.apis.fl_exception import UnsafeComponentError
    from nvflare.app_common.widgets.component_path_authorizer import ComponentPathAuthorizer

    default = json.loads((kits["site-1"] / "local/resources.json.default").read_text())
    resources = site_resources(default)
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(resources), encoding="utf-8")

    class Workspace:
        def get_resources_file_path(self) -> str:
            return str(path)

    def build(class_path: str) -> None:
        ComponentPathAuthorizer().authorize_component_config(
            {"path": class_path, "args": {}}, workspace=Workspace()
        )

    assert resources["class_allow_list"] == list(SITE_ALLOWED_CLASSES)
    assert resources["class_list_enforcement_mode"] == "enforce"
    assert resources["allow_log_streaming"] is False
    assert not any("SiteLogStreamer" in c["path"] for c in resources["components"])
    assert len(resources["components"]) == len(default["components"]) - 1  # the rest is kept
    build(SITE_ALLOWED_CLASSES[0])
    for refused in (
        "nvflare.app_common.executors.client_api_launcher_executor.ClientAPILauncherExecutor",
        "nvflare.app_common.np.np_trainer.NPTrainer",
        LOG_STREAMER,
    ):
        with pytest.raises(UnsafeComponentError, match="not in allow_list"):
            build(refused)
    streaming = site_resources(default, stream_logs=True)
    assert streaming["class_allow_list"] == [*SITE_ALLOWED_CLASSES, LOG_STREAMER]
    assert streaming["components"] == default["components"]


# -- init and doctor ---------------------------------------------------------------------------


def test_init_installs_the_kit_with_the_three_local_files(
    kits: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: the bundle as a zip of the kit folder, as a coordinator would mail it
    data = checked_folder(tmp_path / "hospital-data")
    bundle = tmp_path / "site-1.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in sorted(kits["site-1"].rglob("*")):
            archive.write(path, Path("site-1") / path.relative_to(kits["site-1"]))
    dest = tmp_path / "installed"
    # Execute
    done = init_site(bundle, data, kit_dir=dest, device="cpu", allowed_datasets=["fets"])
    # Assert
    assert done.kit.root == dest.resolve() and done.errors == []
    assert (dest / "startup" / "client.crt").is_file()
    assert (dest / "startup" / "client.key").stat().st_mode & 0o077 == 0
    config = SiteConfig.load(dest / "local" / "neurofed_site.json")
    assert config == SiteConfig(
        data_root=data.resolve(),
        device="cpu",
        require_approval=True,
        allowed_datasets=("fets",),
        audit_log=dest.resolve() / AUDIT_LOG,
    )
    raw = json.loads((dest / "local" / "neurofed_site.json").read_text())
    assert raw["format"] == 2 and raw["approved_studies"] == {}
    authz = json.loads((dest / "local" / "authorization.json").read_text())
    assert {rights["byoc"] for rights in authz["permissions"].values()} == {"none"}
    resources = json.loads((dest / "local" / "resources.json").read_text())
    assert resources["class_allow_list"] == list(SITE_ALLOWED_CLASSES)
    server = [c for c in done.checks if c.subject.startswith("server ")]
    assert len(server) == 1 and server[0].status is not CheckStatus.ERROR
    assert not list(tmp_path.glob(".installed*"))  # no staging folder left


def test_init_refuses_an_unchecked_data_folder_and_installs_nothing(
    kits: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "raw").mkdir()

    with pytest.raises(KitError, match=r"has not been checked: run `neurofed site check .*raw`"):
        init_site(kits["site-1"], tmp_path / "raw", kit_dir=tmp_path / "kit")

    assert not (tmp_path / "kit").exists()


def test_init_refuses_a_kit_from_another_ca_and_installs_nothing(
    kits: dict[str, Path], other_kits: dict[str, Path], tmp_path: Path
) -> None:
    bundle = copy_kit(kits["site-1"], tmp_path / "bundle")
    shutil.copy(other_kits["site-1"] / "startup/client.crt", bundle / "startup/client.crt")
    shutil.copy(other_kits["site-1"] / "startup/client.key", bundle / "startup/client.key")
    data = checked_folder(tmp_path / "data")

    with pytest.raises(KitCheckError, match=r"startup/client\.crt: not signed") as failure:
        init_site(bundle, data, kit_dir=tmp_path / "kit")

    assert "nothing was installed" in str(failure.value)
    assert not (tmp_path / "kit").exists() and not list(tmp_path.glob(".kit*"))


def test_init_refuses_an_existing_kit_folder(kits: dict[str, Path], tmp_path: Path) -> None:
    data = checked_folder(tmp_path / "data")
    init_site(kits["site-1"], data, kit_dir=tmp_path / "kit", timeout=0.5)

    with pytest.raises(KitError, match=r"already exists.*neurofed site doctor"):
        init_site(kits["site-1"], data, kit_dir=tmp_path / "kit", timeout=0.5)


def test_doctor_passes_an_installed_kit_and_catches_a_loosened_allow_list(
    kits: dict[str, Path], tmp_path: Path
) -> None:
    data = checked_folder(tmp_path / "data")
    kit = init_site(kits["site-1"], data, kit_dir=tmp_path / "kit", timeout=0.5).kit.root
    clean = doctor(kit, timeout=0.5)
    resources = json.loads((kit / "local/resources.json").read_text())
    resources["class_allow_list"].append("*")
    (kit / "local/resources.json").write_text(json.dumps(resources))
    policy = json.loads((kit / "local/authorization.json").read_text())
    policy["permissions"]["lead"]["byoc"] = "any"
    (kit / "local/authorization.json").write_text(json.dumps(policy))

    loosened = _errors(doctor(kit, timeout=0.5))

    assert _errors(clean) == {}
    assert set(loosened) == {"local/resources.json", "local/authorization.json"}
    assert "also allows *" in loosened["local/resources.json"]
    assert "role(s) lead may deploy jobs that carry code" in loosened["local/authorization.json"]


def test_doctor_flags_a_missing_or_empty_audit_log_at_a_site_that_has_run_studies(
    kits: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: an installed site with no log yet, then a study's state folder (it ran one)
    data = checked_folder(tmp_path / "data")
    kit = init_site(kits["site-1"], data, kit_dir=tmp_path / "kit", timeout=0.5).kit.root
    config = load_kit_config(kit)
    assert config.audit_log is not None
    fresh = _errors(doctor(kit, timeout=0.5))
    (config.state_root / ("ab" * 8)).mkdir(parents=True)
    # Execute
    missing = _errors(doctor(kit, timeout=0.5))
    config.audit_log.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log.write_text("")
    empty = _errors(doctor(kit, timeout=0.5))
    # Assert
    assert fresh == {}  # a new site has run nothing yet
    assert (
        "the audit log is missing but this site has run 1 study" in missing[str(config.audit_log)]
    )
    assert "the audit log is empty" in empty[str(config.audit_log)]
