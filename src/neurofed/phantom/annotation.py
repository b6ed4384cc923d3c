"""A site's annotation habit applied to a case's true label map (see
:class:`~neurofed.phantom.site.Annotation`).

Pure function of the label map, its voxel size and the habit: the written mask is the truth with
its outer border moved by ``boundary_mm`` (a looser glioma mask gains oedema, a tighter one loses
its outermost voxels of any label) and, for lesion masks, without the lesions smaller than
``missed_below_mm3``.

Examples
--------
>>> import numpy as np
>>> label = np.zeros((9, 9, 9), dtype=np.uint8)
>>> label[3:6, 3:6, 3:6] = 1
>>> affine = np.diag([1.0, 1.0, 1.0, 1.0])
>>> int((annotate(label, affine, Annotation(boundary_mm=1.0), glioma=False) > 0).sum())
81
>>> int(annotate(label, affine, Annotation(boundary_mm=-1.0), glioma=False).sum())
1
>>> int(annotate(label, affine, Annotation(missed_below_mm3=30.0), glioma=False).sum())
0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.phantom.site import Annotation

__all__ = ["annotate"]

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

#: BraTS 2021 oedema: what a looser glioma mask adds around the whole tumour.
_OEDEMA = 2


def annotate(label: U8, affine: F64, annotation: Annotation, *, glioma: bool) -> U8:
    """``label`` as the site's annotators would have drawn it (a new array; ``label`` is kept)."""
    if annotation == Annotation() or not label.any():
        return label
    voxel = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)  # (3,) mm
    out = label.copy()
    drawn = out > 0
    shift = annotation.boundary_mm
    if shift > 0:  # looser: every voxel within ``shift`` of the mask joins it
        near = ndimage.distance_transform_edt(~drawn, sampling=voxel) <= shift
        out[near & ~drawn] = _OEDEMA if glioma else 1
    elif shift < 0:  # tighter: every voxel within ``-shift`` of the background leaves it
        edge = ndimage.distance_transform_edt(drawn, sampling=voxel) <= -shift
        out[edge & drawn] = 0
    if annotation.missed_below_mm3 > 0 and not glioma:
        components, count = ndimage.label(out > 0)
        sizes = np.bincount(components.ravel(), minlength=count + 1) * float(np.prod(voxel))
        small = sizes < annotation.missed_below_mm3
        small[0] = False
        out[small[components]] = 0
    return out
