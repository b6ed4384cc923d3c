"""The server side of a federated run, without NVFlare: rounds, quorum, selection, run folder.

- :mod:`~neurofed.federated.server.run` — :class:`FederatedRun`, what the NVFlare controller
  drives: the initial model or resume, aggregation of a round's answers, federated validation,
  dropped sites, the best round's model;
- :mod:`~neurofed.federated.server.run_folder` — per-round metrics and checkpoints on disk;
- :mod:`~neurofed.federated.server.planning` — a planned study's fingerprint round.
"""

from neurofed.federated.server.run import FederatedRun
from neurofed.federated.server.run_folder import (
    RoundCheckpoint,
    RoundRecord,
    check_run_folder,
    latest_round_checkpoint,
    load_round_checkpoint,
    save_round_checkpoint,
    settle_round_checkpoints,
)

__all__ = [
    "FederatedRun",
    "RoundCheckpoint",
    "RoundRecord",
    "check_run_folder",
    "latest_round_checkpoint",
    "load_round_checkpoint",
    "save_round_checkpoint",
    "settle_round_checkpoints",
]
