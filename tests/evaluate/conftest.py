"""The tiny sites of the training tests (written once per session)."""

from tests.training.conftest import bids_site, glioma_site, one_torch_thread

__all__ = ["bids_site", "glioma_site", "one_torch_thread"]
