"""A real federation on 127.0.0.1: provisioned kits, one OS process per participant, mutual TLS.

One federation (server + ``site-1`` + ``site-2``, heartbeat timeout 15 s) is provisioned with
``neurofed federation init`` and installed with ``neurofed site init`` for the whole module; its
processes are started once and every test leaves them running (or restarts what it stopped).
Every process a test starts is ended by the module's finaliser, whatever happens: the
participants through their kits (process group and job processes), then anything still running
from this module's temporary folder.

Measurements (printed, and in ``<tmp>/measurements.json``; never asserted as speeds): server
start-to-ready, site start-to-registered, per-round overhead deployed (round wall time minus the
slowest site's training time), dead-site detection (site killed → round closed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.evaluate.monitor import deployed_status
from neurofed.federated.engine.kit import AUDIT_LOG, init_site, load_kit_config, save_kit_config
from neurofed.federated.engine.provision import (
    Federation,
    FederationSpec,
    ProvisionError,
    ServerAddress,
    add_site,
    init_federation,
)
from neurofed.federated.engine.run_progress import default_run_name
from neurofed.federated.engine.services import (
    ServiceError,
    inspect_kit,
    service_status,
    start_service,
    stop_service,
)
from neurofed.federated.engine.submit import (
    StudyStatus,
    SubmitError,
    admin_session,
    download_run,
    follow_study,
    study_status,
    submit_study,
)
from neurofed.federated.server.run_folder import latest_round_checkpoint
from neurofed.federated.site.audit import read_audit_log
from neurofed.federated.study import Study
from neurofed.training import load_model
from tests.federated.conftest import SCORED, tiny_study, write_site

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.slow,
    # NVFlare's FLARE API client (aiohttp) — not ours
    pytest.mark.filterwarnings("ignore:ssl_context is deprecated:DeprecationWarning"),
]

HEARTBEAT_S = 15.0
#: Only a safety cap: every wait ends on an event (the awaited state, the job's end, a
#: participant ready), so a busy machine makes the tests slower, never wrong.
CAP_S = 900.0
#: Environment of every participant: one torch thread (the machine is small and shared).
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Deployment:
    """The module's federation: kits, data, and what was measured."""

    base: Path
    federation: Federation
    site_kits: dict[str, Path]
    measurements: dict[str, Any] = field(default_factory=dict)
    started: list[Path] = field(default_factory=list)

    @property
    def server_kit(self) -> Path:
        return self.federation.server_kit

    @property
    def admin_kit(self) -> Path:
        return self.federation.admin_kit

    def start(self, kit: Path, wait_s: float = CAP_S) -> float:
        """Start a participant; returns the seconds until it was ready."""
        if kit not in self.started:
            self.started.append(kit)
        began = time.monotonic()
        start_service(kit, wait_s=wait_s, env=ENV)
        return time.monotonic() - began

    def approve(self, study: Study, *sites: str) -> None:
        for site in sites:
            kit = self.site_kits[site]
            save_kit_config(kit, load_kit_config(kit).with_approval(study.content_hash, study.name))

    def measure(self, key: str, value: Any) -> None:
        self.measurements[key] = value
        (self.base / "measurements.json").write_text(json.dumps(self.measurements, indent=2))
        print(f"[measured] {key}: {value}")


def _kill_leftovers(base: Path) -> list[int]:
    """SIGKILL every process whose command line names this module's temporary folder."""
    killed = []
    marker = str(base).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def _install(federation: Federation, site: str, data: Path, kits: Path) -> Path:
    """The site's kit; its custodian lets scores over its one validation case leave (SCORED)."""
    init_site(federation.bundle(site), data, kit_dir=kits / site, device="cpu")
    config = dataclasses.replace(load_kit_config(kits / site), **SCORED)
    save_kit_config(kits / site, config)
    return kits / site


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, age_sites: list[Path]
) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("deployed")
    spec = FederationSpec(
        name="neurofed-test",
        server=ServerAddress("localhost", free_port(), free_port()),
        sites=("site-1", "site-2"),
        admin="lead@example.org",
        heartbeat_timeout_s=HEARTBEAT_S,
    )
    federation = init_federation(spec, base / "federation")
    kits = {
        s: _install(federation, s, d, base / "kits")
        for s, d in zip(spec.sites, age_sites, strict=True)
    }
    deployed = Deployment(base, federation, kits)
    try:
        deployed.measure("server_start_to_ready_s", round(deployed.start(federation.server_kit), 2))
        for site, kit in kits.items():
            deployed.measure(f"{site}_start_to_registered_s", round(deployed.start(kit), 2))
        yield deployed
    finally:
        for kit in reversed(deployed.started):
            with contextlib.suppress(ServiceError):
                stop_service(kit, grace_s=5)
        leftovers = _kill_leftovers(base)
        if leftovers:
            print(f"killed leftover processes {leftovers}")


def _wait(
    deployed: Deployment,
    job_id: str,
    check: Callable[[StudyStatus], Any],
    what: str,
    poll_s: float = 1.0,
) -> Any:
    """Poll the job until ``check`` of its status is truthy (returned); fail as soon as the
    job ended without it."""
    began = time.monotonic()
    while time.monotonic() - began < CAP_S:
        with admin_session(deployed.admin_kit) as session:
            status = study_status(session, job_id)
        value = check(status)
        if value:
            return value
        if status.done:
            raise AssertionError(f"job {job_id} ended ({status.status}) before {what}")
        time.sleep(poll_s)
    raise AssertionError(f"{what} did not happen within {CAP_S:g} s")


def _history_of(status: StudyStatus) -> list[dict[str, Any]]:
    return list(status.progress.get("history") or [])


def _rounds(run: Path) -> dict[int, dict[str, Any]]:
    return {
        int(p.parent.name): json.loads(p.read_text())
        for p in (run / "rounds").glob("*/metrics.json")
    }


def _overheads(run: Path) -> list[float]:
    """Per round: wall time on the server minus the slowest site's training time."""
    out = []
    for record in _rounds(run).values():
        trained = [v.get("seconds") or 0.0 for v in record["train"].values()]
        if trained and record["seconds"] is not None:
            out.append(round(record["seconds"] - max(trained), 3))
    return out


# -- the happy path ------------------------------------------------------------------------------


def test_a_two_site_federation_runs_a_study_and_the_coordinator_downloads_the_model(
    deployment: Deployment,
) -> None:
    # Prepare: both custodians approve the study (as `neurofed site approve` does)
    study = tiny_study(rounds=2, min_sites=2)
    deployment.approve(study, "site-1", "site-2")
    study_file = deployment.base / "study-happy.toml"
    study_file.write_text(study.to_toml())
    run = deployment.base / "run-happy"

    # Execute: the study lead's one command (submit, follow, download)
    command = ["study", "submit", str(study_file), "--admin-kit", str(deployment.admin_kit)]
    result = CliRunner().invoke(app, [*command, "--out", str(run)])

    # Assert
    assert result.exit_code == 0, result.output
    assert "submitted: job" in result.output and "round 2:" in result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_done"] == 2 and summary["dropped"] == []
    for record in _rounds(run).values():
        assert record["accepted"] == ["site-1", "site-2"] and record["aggregated"]
    model = load_model(run / "model")
    assert model.task.task_id.value == "brain-age" and model.epoch == summary["selected"]["round"]
    assert not (run / "checkpoints").exists()  # the server keeps them; the lead gets the models
    assert (deployment.server_kit / "neurofed" / "runs" / default_run_name(study)).is_dir()
    deployment.measure("round_overhead_deployed_s", _overheads(run))
    deployment.measure("round_wall_s", [round(r["seconds"], 3) for r in _rounds(run).values()])


def test_a_secure_study_runs_deployed_and_the_server_sees_only_masked_vectors(
    deployment: Deployment,
) -> None:
    """``secagg = true`` over real kits: the four steps of each round cross mutual TLS between
    separate processes, and every round is aggregated from the masked inputs."""
    # Prepare
    plain = tiny_study(rounds=2, min_sites=2)
    study = dataclasses.replace(
        plain, strategy_params=dataclasses.replace(plain.strategy_params, secagg=True)
    )
    deployment.approve(study, "site-1", "site-2")
    study_file = deployment.base / "study-secure.toml"
    study_file.write_text(study.to_toml())
    run = deployment.base / "run-secure"
    # Execute
    command = ["study", "submit", str(study_file), "--admin-kit", str(deployment.admin_kit)]
    result = CliRunner().invoke(app, [*command, "--out", str(run)])
    # Assert
    assert result.exit_code == 0, result.output
    for record in _rounds(run).values():
        assert record["accepted"] == ["site-1", "site-2"] and record["aggregated"], record
        assert set(record["train"]["site-1"]) >= {"secagg_clipped", "num_examples"}
    assert load_model(run / "model").task.task_id.value == "brain-age"
    deployment.measure(
        "round_wall_secagg_s", [round(r["seconds"], 3) for r in _rounds(run).values()]
    )


def test_service_status_reports_pid_and_log_and_the_cli_agrees(deployment: Deployment) -> None:
    # Execute
    status = service_status(deployment.server_kit, lines=5)
    result = CliRunner().invoke(
        app, ["server", "status", "--kit", str(deployment.server_kit), "--json"]
    )

    # Assert
    assert status.running and status.pid is not None and status.kit.role.value == "server"
    assert status.log == deployment.server_kit / "log.txt" and status.last_lines
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["running"] is True and shown["pid"] == status.pid
    with pytest.raises(ServiceError, match="already runs"):
        start_service(deployment.server_kit, wait_s=0)


# -- mutual TLS ----------------------------------------------------------------------------------


def _handshake_refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the server refuses a TLS client (at the handshake, or by closing at once)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return tls.recv(1024) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def test_every_connection_is_mutual_tls(deployment: Deployment) -> None:
    # Prepare: a client that trusts the project CA but has no certificate, a plain TCP client,
    # and a second project (another CA) whose site and admin dial this server
    address = deployment.federation.spec.server
    no_certificate = ssl.create_default_context(
        cafile=str(deployment.server_kit / "startup" / "rootCA.pem")
    )
    other = init_federation(
        FederationSpec("intruders", address, ("intruder",), "mallory@example.org", HEARTBEAT_S),
        deployment.base / "other-federation",
    )
    intruder_kit = _install(
        other,
        "intruder",
        load_kit_config(deployment.site_kits["site-1"]).data_root,
        deployment.base / "other-kits",
    )

    # Execute / Assert: no certificate → refused on both ports
    for port in (address.fl_port, address.admin_port):
        assert _handshake_refused(port, no_certificate), port
    # plain HTTP → no HTTP answer
    with socket.create_connection(("127.0.0.1", address.fl_port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.settimeout(10)
        try:
            answer = raw.recv(1024)
        except (TimeoutError, ConnectionResetError):
            answer = b""
        assert not answer.startswith(b"HTTP/")
    # another CA's admin cannot log in
    with pytest.raises(SubmitError), admin_session(other.admin_kit, timeout_s=10):
        pass
    # another CA's site never joins
    deployment.started.append(intruder_kit)
    with pytest.raises(ServiceError, match="has not registered"):
        start_service(intruder_kit, wait_s=15, env=ENV)
    stop_service(intruder_kit, grace_s=2)
    with admin_session(deployment.admin_kit) as session:
        joined = {c.name for c in session.get_connected_client_list()}
    assert joined == {"site-1", "site-2"}
    assert "intruder" not in (deployment.server_kit / "log.txt").read_text()


# -- faults --------------------------------------------------------------------------------------


def test_a_killed_site_is_dropped_within_the_detection_time_and_rejoins_later(
    deployment: Deployment,
) -> None:
    # Prepare: 14 short rounds (time for the restarted site to come back before the end), a
    # quorum of 1, a round timeout far above the detection time
    study = tiny_study(rounds=14, min_sites=1, timeout=240, local_epochs=2)
    deployment.approve(study, "site-1", "site-2")
    site_2 = deployment.site_kits["site-2"]
    with admin_session(deployment.admin_kit) as session:
        job_id = submit_study(session, study)

    def training_after_round_1(status: StudyStatus) -> int:
        done, now = len(_history_of(status)), int(status.progress.get("round", 0))
        return now if done >= 1 and now > done else 0

    killed_round = _wait(
        deployment, job_id, training_after_round_1, "a round after round 1", poll_s=0.2
    )

    # Execute: site-2 crashes mid-round (its whole process tree, SIGKILL)
    killed_at = time.monotonic()
    stop_service(site_2, grace_s=0)
    # the round that drops site-2: the one it died in, or the next one when it died after
    # answering every task of its round
    history = _wait(
        deployment,
        job_id,
        lambda status: [
            r
            for r in _history_of(status)
            if r["round"] >= killed_round and "site-2" in r["dropped"]
        ],
        f"a round from round {killed_round} on to drop site-2",
        poll_s=0.5,
    )
    detected_after = time.monotonic() - killed_at
    deployment.measure("dead_site_detection_s", round(detected_after, 1))
    deployment.measure("dead_site_round_seconds", round(history[0]["seconds"], 1))
    deployment.start(site_2)  # the custodian restarts the node
    updates: list[StudyStatus] = []
    final_job = follow_study(
        deployment.admin_kit, job_id, study, on_update=updates.append, timeout_s=CAP_S
    )
    with admin_session(deployment.admin_kit) as session:
        run = download_run(session, final_job, deployment.base / "run-killed")

    # Assert: the round closed with the survivor, well before the round timeout (site-2's
    # update is in it when it died after training, during the round's validation)
    closed = history[0]
    assert closed["round"] <= killed_round + 1
    assert closed["dropped"] == ["site-2"] and "site-1" in closed["accepted"]
    assert closed["seconds"] < study.round_timeout_s / 2
    # the run finished, and site-2 is back for a later round (in a new job: NVFlare 2.9 never
    # deploys a running job to a site that registers again)
    rounds = _rounds(run)
    assert sorted(rounds) == list(range(1, 15))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_done"] == 14
    back = [k for k, r in rounds.items() if k > killed_round and "site-2" in r["accepted"]]
    assert back, {k: r["accepted"] for k, r in rounds.items()}
    assert final_job != job_id
    assert all("site-2" not in rounds[k]["accepted"] for k in range(killed_round + 1, min(back)))
    # the lead's monitor, fed the answers follow_study saw, counted up in every job to the end
    shown = [(u.job_id, deployed_status(u)) for u in updates if u.progress]
    for job in {j for j, _ in shown}:
        counts = [s["rounds_done"] for j, s in shown if j == job]
        assert counts == sorted(counts), (job, counts)
    assert shown[0][1]["rounds_done"] < 14 and shown[-1][1]["rounds_done"] == 14
    assert shown[-1][1]["state"] == "finished" and len(shown[-1][1]["curves"]["site-1"]) == 14
    # (site-2 of the test data has no validation cases, so it has no curve)
    assert any(s["state"] == "running" and s["curves"].get("site-1") for _, s in shown)


def test_the_coordinator_stopped_mid_run_resumes_from_its_last_checkpoint(
    deployment: Deployment,
) -> None:
    # Prepare
    study = tiny_study(rounds=5, min_sites=2, local_epochs=2)
    deployment.approve(study, "site-1", "site-2")
    server_run = deployment.server_kit / "neurofed" / "runs" / default_run_name(study)
    with admin_session(deployment.admin_kit) as session:
        job_id = submit_study(session, study)
    _wait(deployment, job_id, lambda status: len(_history_of(status)) >= 2, "two rounds", 0.5)

    # Execute: the server stops (between or during rounds) and comes back
    stop_service(deployment.server_kit, grace_s=10)
    # done = checkpointed: a round stopped between its metrics and its checkpoint is run again
    latest = latest_round_checkpoint(server_run)
    kept = 0 if latest is None else int(latest.name.removeprefix("round-"))
    done_before = {
        k: (p.stat().st_mtime_ns, p.read_bytes()) for k, p in _metric_files(server_run) if k <= kept
    }
    began = time.monotonic()
    deployment.start(deployment.server_kit)
    deployment.measure("server_restart_to_ready_s", round(time.monotonic() - began, 2))
    final_job = follow_study(deployment.admin_kit, job_id, study, timeout_s=CAP_S)
    with admin_session(deployment.admin_kit) as session:
        run = download_run(session, final_job, deployment.base / "run-restarted")

    # Assert: a new job resumed after the last checkpoint; no round was redone
    assert final_job != job_id and len(done_before) >= 2
    after = dict(_metric_files(server_run))
    for k, (mtime, text) in done_before.items():
        assert after[k].stat().st_mtime_ns == mtime and after[k].read_bytes() == text
    assert sorted(_rounds(run)) == [1, 2, 3, 4, 5]
    assert json.loads((run / "summary.json").read_text())["rounds_done"] == 5


def _metric_files(run: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.parent.name), p) for p in (run / "rounds").glob("*/metrics.json"))


def test_ctrl_c_on_submit_follow_stops_following_and_the_run_goes_on(
    deployment: Deployment,
) -> None:
    # Prepare: a study of several rounds, submitted and followed as the lead would
    study = tiny_study(rounds=4, min_sites=1)
    deployment.approve(study, "site-1", "site-2")
    study_file = deployment.base / "study-ctrl-c.toml"
    study_file.write_text(study.to_toml())
    console = deployment.base / "submit-console.txt"
    command = [shutil.which("neurofed") or "neurofed", "study", "submit", str(study_file)]
    command += ["--admin-kit", str(deployment.admin_kit), "--follow"]
    with console.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        began = time.monotonic()
        while "round 1:" not in console.read_text():  # the event: it is following a round
            assert process.poll() is None, console.read_text()[-2000:]
            assert time.monotonic() - began < CAP_S, "round 1 was never shown"
            time.sleep(0.2)

        # Execute: Ctrl-C
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=CAP_S)  # a hang here is the failure
    finally:
        if process.poll() is None:
            process.kill()
    output = console.read_text()

    # Assert: it stopped following with status 130 and said how to pick the job up; the job
    # itself goes on and finishes in the federation
    assert code == 130, output[-2000:]
    job_id = output.split("submitted: job ", 1)[1].split()[0].strip("().,:;")
    assert f"stopped following job {job_id}" in output and "neurofed study status" in output
    final_job = follow_study(deployment.admin_kit, job_id, study, timeout_s=CAP_S)
    with admin_session(deployment.admin_kit) as session:
        assert study_status(session, final_job).progress["summary"]["rounds_done"] == 4


# -- governance ----------------------------------------------------------------------------------


def test_a_study_edited_after_approval_is_refused_and_the_run_completes_elsewhere(
    deployment: Deployment,
) -> None:
    # Prepare: both custodians approved the study as circulated; the lead then edits it (one
    # number), and only site-1's custodian approves the edited version
    circulated = tiny_study(rounds=2, min_sites=1, train={"learning_rate": 0.001})
    edited = tiny_study(rounds=2, min_sites=1, train={"learning_rate": 0.002})
    deployment.approve(circulated, "site-1", "site-2")
    deployment.approve(edited, "site-1")
    audit = deployment.site_kits["site-2"] / AUDIT_LOG
    lines_before = len(read_audit_log(audit)) if audit.is_file() else 0

    # Execute
    with admin_session(deployment.admin_kit) as session:
        job_id = submit_study(session, edited)
    final_job = follow_study(deployment.admin_kit, job_id, edited, timeout_s=CAP_S)
    with admin_session(deployment.admin_kit) as session:
        status = study_status(session, final_job)

    # Assert: the run completed on site-1; site-2 refused every round, and says why
    assert status.progress["summary"]["rounds_done"] == 2
    for entry in status.progress["history"]:
        assert entry["accepted"] == ["site-1"]
        assert "site-2" in entry["refused"] and edited.content_hash[:12] in json.dumps(entry)
    refusals = [
        r
        for r in read_audit_log(audit)[lines_before:]
        if r["event"] == "study-refused" and r["study_hash"] == edited.content_hash
    ]
    assert refusals and all("is not approved at this site" in r["reason"] for r in refusals)


# -- enrolment -----------------------------------------------------------------------------------


def test_a_site_added_later_joins_without_reissuing_any_kit(deployment: Deployment) -> None:
    # Prepare
    root = deployment.federation.root
    before = {p: p.read_bytes() for p in (root / "bundles").glob("*.zip")}
    server_files = {
        p: p.read_bytes() for p in (deployment.server_kit / "startup").iterdir() if p.is_file()
    }
    data = write_site(deployment.base / "hospital-3", seed=3)

    # Execute
    result = CliRunner().invoke(
        app, ["federation", "add-site", "site-3", "--federation", str(root)]
    )
    kit = _install(deployment.federation, "site-3", data, deployment.base / "kits")
    deployment.measure("site_3_start_to_registered_s", round(deployment.start(kit), 2))

    # Assert: only a new bundle; the running server accepted the new site as it is
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in before} == before
    assert {p: p.read_bytes() for p in server_files} == server_files
    assert inspect_kit(kit).name == "site-3"
    with admin_session(deployment.admin_kit) as session:
        joined = {c.name for c in session.get_connected_client_list()}
    assert "site-3" in joined
    stop_service(kit, grace_s=5)
    with pytest.raises(ProvisionError, match="already a participant"):
        add_site(root, "site-3")
