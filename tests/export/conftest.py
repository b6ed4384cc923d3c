"""The tiny sites of the training tests."""

from tests.training.conftest import bids_site, glioma_site, lesion_site, one_torch_thread

__all__ = ["bids_site", "glioma_site", "lesion_site", "one_torch_thread"]
