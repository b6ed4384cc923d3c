"""Which parameters belong to which labelled head, for task-masked aggregation.

In ``glioma-multitask`` a site may lack some labels (no MGMT status, no masks). A head's
parameters only change at sites that trained it, so averaging them over every site would pull the
head back towards its old value. A :data:`HeadMap` maps glob patterns (``fnmatch``, as
``TrainConfig.local_parameters``) of state-dict names to the label kind that trains them; kinds
are :class:`~neurofed.models.OutputKey` values, the keys of
:attr:`SiteUpdate.label_counts <neurofed.federated.update.SiteUpdate.label_counts>`. Parameters
no pattern matches (the shared encoder) belong to every site.

For ``multitask-unet`` the decoder and the segmentation head are trained only by the segmentation
loss, and ``heads.<marker>`` only by that marker's loss.

Examples
--------
>>> heads = heads_for_model("multitask-unet")
>>> head_kind("heads.mgmt.weight", heads), head_kind("decoder.0.transp_conv.conv.weight", heads)
('mgmt', 'segmentation')
>>> head_kind("encoder.0.conv1.conv.weight", heads) is None
True
>>> heads_for_model("sfcn")
()
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from neurofed.keys import ModelName, OutputKey

__all__ = ["MODEL_HEADS", "MULTITASK_UNET_HEADS", "HeadMap", "head_kind", "heads_for_model"]

#: ``(glob pattern of state-dict names, label kind)`` pairs; the first match wins.
HeadMap = tuple[tuple[str, str], ...]

#: Heads of :class:`~neurofed.models.MultitaskUNet` (module names ``decoder``,
#: ``segmentation_head`` and ``heads.<OutputKey>``).
MULTITASK_UNET_HEADS: HeadMap = (
    ("decoder.*", OutputKey.SEGMENTATION.value),
    ("segmentation_head.*", OutputKey.SEGMENTATION.value),
    *((f"heads.{key.value}.*", key.value) for key in OutputKey if key != OutputKey.SEGMENTATION),
)

#: Registered models with labelled heads.
MODEL_HEADS: Mapping[str, HeadMap] = {ModelName.MULTITASK_UNET.value: MULTITASK_UNET_HEADS}


def heads_for_model(model_name: str) -> HeadMap:
    """The head map of a registered model (empty when every parameter is shared)."""
    return MODEL_HEADS.get(str(model_name), ())


def head_kind(name: str, heads: HeadMap) -> str | None:
    """The label kind that trains parameter ``name`` (``None``: shared by every site)."""
    for pattern, kind in heads:
        if fnmatch.fnmatchcase(name, pattern):
            return kind
    return None
