"""The server notices a finished task within TASK_CHECK_S: NVFlare 2.9's controller setting
never reaches its communicator, so the study controller sets the communicator's own."""

from __future__ import annotations

from pathlib import Path

from nvflare.apis.impl.wf_comm_server import WFCommServer

from neurofed.federated.engine.controller import TASK_CHECK_S, StudyController
from tests.federated.conftest import tiny_study


def test_the_communicator_checks_tasks_at_the_controllers_period(tmp_path: Path) -> None:
    # Prepare: the communicator as NVFlare attaches it
    controller = StudyController(study=tiny_study().to_dict(), run_dir=str(tmp_path / "run"))
    communicator = WFCommServer()
    controller.set_communicator(communicator)
    assert communicator._task_check_period == 0.2  # NVFlare's default, whatever the controller's
    # Execute
    controller._check_tasks_often()
    # Assert
    assert communicator._task_check_period == TASK_CHECK_S < 0.2
