"""Every key neurofed uses, with a name.

Modalities, label values, clinical fields, layouts, problem kinds and file names are defined once
here so that no bare string travels between modules.

Examples
--------
>>> Modality("T1CE") is Modality.T1CE
True
>>> int(TumorLabel.ET)
3
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "ClinicalField",
    "LabelConvention",
    "Layout",
    "LesionLabel",
    "Marker",
    "MetricName",
    "Modality",
    "ModelName",
    "Optimizer",
    "OutputKey",
    "PhantomPreset",
    "ProblemKind",
    "Severity",
    "Sex",
    "SiteFile",
    "Split",
    "TaskId",
    "TransferMode",
    "TumorLabel",
    "TumorRegion",
]


class Modality(StrEnum):
    """The one vocabulary of MRI contrasts inside neurofed."""

    T1 = "T1"
    T1CE = "T1CE"
    T2 = "T2"
    FLAIR = "FLAIR"


class TumorLabel(IntEnum):
    """Internal glioma label convention (the BraTS 2023 numbering)."""

    BACKGROUND = 0
    NCR = 1  # necrotic and non-enhancing tumour core
    ED = 2  # peritumoral oedema / invaded tissue
    ET = 3  # enhancing tumour


class TumorRegion(StrEnum):
    """Nested glioma sub-regions evaluated by FeTS and BraTS."""

    ET = "ET"  # enhancing tumour
    TC = "TC"  # tumour core = ET ∪ NCR
    WT = "WT"  # whole tumour = TC ∪ ED


class LesionLabel(IntEnum):
    """Internal binary lesion convention (MS lesions)."""

    BACKGROUND = 0
    LESION = 1


class LabelConvention(StrEnum):
    """How label values are numbered in a source dataset (see :mod:`neurofed.data.labels`)."""

    BRATS_2021 = "brats-2021"  # {0, 1 NCR, 2 ED, 4 ET}
    BRATS_2023 = "brats-2023"  # {0, 1 NCR, 2 ED, 3 ET}
    MSD_BRAIN_TUMOUR = "msd-brain-tumour"  # {0, 1 oedema, 2 non-enhancing, 3 enhancing}
    BINARY_LESION = "binary-lesion"  # {0, 1 lesion}


class ClinicalField(StrEnum):
    """Clinical targets joined to subjects; every one of them may be unknown."""

    IDH = "idh"  # True = IDH-mutant
    CODEL_1P19Q = "codel_1p19q"  # True = 1p/19q co-deleted
    MGMT = "mgmt"  # True = MGMT promoter methylated
    GRADE = "grade"  # WHO CNS grade 1-4
    AGE = "age"  # years
    SEX = "sex"
    SDMT = "sdmt"  # Symbol Digit Modalities Test, 0-110


class Marker(StrEnum):
    """Markers and grade predicted by ``glioma-multitask`` (values equal ClinicalField values)."""

    IDH = "idh"
    CODEL_1P19Q = "codel_1p19q"
    MGMT = "mgmt"
    GRADE = "grade"


class OutputKey(StrEnum):
    """Keys of the dict the multi-task network returns (marker keys equal :class:`Marker`)."""

    SEGMENTATION = "segmentation"  # (B, out_channels, X, Y, Z) logits
    IDH = Marker.IDH.value  # (B,) logit
    CODEL_1P19Q = Marker.CODEL_1P19Q.value  # (B,) logit
    MGMT = Marker.MGMT.value  # (B,) logit
    GRADE = Marker.GRADE.value  # (B, num_grades) logits


class ModelName(StrEnum):
    """Names of the models shipped with neurofed."""

    RESIDUAL_UNET = "residual-unet"
    MULTITASK_UNET = "multitask-unet"
    DYNUNET = "dynunet"
    SFCN = "sfcn"


class TaskId(StrEnum):
    """The installed tasks (see DESIGN.md)."""

    TUMOR_REGIONS = "tumor-regions"
    GLIOMA_MULTITASK = "glioma-multitask"
    MS_LESION = "ms-lesion"
    BRAIN_AGE = "brain-age"


class MetricName(StrEnum):
    """Names of reported metrics (per region / marker they are prefixed, e.g. ``WT/dice``)."""

    DICE = "dice"
    DICE_POOLED = "dice_pooled"  # 2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over all cases (vs per-case mean)
    NUM_EXAMPLES = "num_examples"  # cases that entered a metric (known label / mask)
    NUM_POSITIVE = "num_positive"  # of those, positive cases (explains an undefined AUC)
    HD95 = "hd95"
    SENSITIVITY = "sensitivity"
    PRECISION = "precision"
    SPECIFICITY = "specificity"
    ACCURACY = "accuracy"
    RECALL = "recall"
    F1 = "f1"
    AUC = "auc"
    LESION_F1 = "lesion_f1"
    MAE = "mae"
    PEARSON_R = "pearson_r"
    LOSS = "loss"
    EPSILON = "epsilon"  # DP-SGD: ε a site's dataset has spent (its privacy ledger)
    NOISE_MULTIPLIER = "noise_multiplier"  # DP-SGD: noise std / clip norm of a round
    # secure aggregation: elements of a site's update clipped to ±secagg_clip (a count)
    SECAGG_CLIPPED = "secagg_clipped"


class Sex(StrEnum):
    FEMALE = "F"
    MALE = "M"
    OTHER = "O"


class Layout(StrEnum):
    """Community folder layouts a site's raw data may come in."""

    BRATS_2021 = "brats-2021"
    BRATS_2023 = "brats-2023"
    MSD = "msd"
    NNUNET_V2 = "nnunet-v2"
    BIDS = "bids"
    TABLE = "table"


class Severity(StrEnum):
    ERROR = "error"  # the case is excluded
    WARNING = "warning"  # the case is kept; the value named is dropped or noted


class ProblemKind(StrEnum):
    """Every problem `neurofed site check` can report."""

    UNREADABLE = "unreadable"  # truncated / corrupt gzip, I/O error
    NOT_NIFTI = "not-nifti"
    EMPTY_FILE = "empty-file"
    WRONG_DIMENSIONS = "wrong-dimensions"  # e.g. 4-D where 3-D is expected
    NON_FINITE = "non-finite"  # NaN / Inf voxels
    ALL_ZERO = "all-zero"
    GRID_MISMATCH = "grid-mismatch"  # modalities of one subject differ in shape or affine
    LABEL_VALUES = "label-values"  # values outside the label convention
    LABEL_GRID = "label-grid"  # label map not on the image grid
    MISSING_MODALITY = "missing-modality"
    MISSING_FILE = "missing-file"
    DUPLICATE_SUBJECT = "duplicate-subject"
    CLINICAL_RANGE = "clinical-range"
    CLINICAL_UNPARSEABLE = "clinical-unparseable"
    PATH_ESCAPE = "path-escape"  # symlink or `..` leaving the site root
    PERMISSION = "permission"  # the file exists but the account running neurofed cannot read it
    BAD_HEADER = "bad-header"  # a header no scan can have: sizes, voxel size, affine, data type
    HEADER_MISMATCH = "header-mismatch"  # sform and qform disagree (a warning)
    UNKNOWN_FILE = "unknown-file"  # a file the layout reader could not place
    LAYOUT = "layout"  # the folder matches no known layout, or its metadata is broken
    SPLIT = "split"  # splits.json and the site's cases disagree (new or vanished cases)


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class SiteFile(StrEnum):
    """Files neurofed writes inside ``<site>/neurofed/``."""

    FOLDER = "neurofed"
    MANIFEST = "manifest.json"
    SPLITS = "splits.json"
    CHECK_REPORT = "check-report.json"


class Optimizer(StrEnum):
    """Optimisers site-local training builds (torch ``Adam`` / ``SGD``)."""

    ADAM = "adam"
    SGD = "sgd"


class TransferMode(StrEnum):
    """Which parameters train when moving to a new target."""

    FULL = "full"  # every parameter
    HEAD = "head"  # only the last layer; the rest frozen, batch norm in eval behaviour


class PhantomPreset(StrEnum):
    """Which study the phantom sites look like."""

    GLIOMA = "glioma"  # BraTS 2021 layout, four contrasts, tumour labels, markers
    MS = "ms"  # BIDS, T1w/T2w/FLAIR, MS lesion masks, age and SDMT
    BRAIN_AGE = "brain-age"  # BIDS, T1w/FLAIR, ages 20-90 with atrophy, some MS lesions

    @property
    def is_bids(self) -> bool:
        return self is not PhantomPreset.GLIOMA
