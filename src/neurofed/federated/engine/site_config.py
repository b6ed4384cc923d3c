"""Site-only settings: where a site's data lives, which device it trains on.

These never travel with a job. A site's executor is given the path of its site-config JSON
(``neurofed simulate`` writes one per simulated site, outside the job, under ``<run>/sites/``);
in a deployed federation the custodian puts the file in the site's kit ``local/`` folder and the
executor finds it there by name (:data:`SITE_CONFIG_FILE`).

.. code-block:: json

    {"format": 1, "data_root": "/data/neurofed/site-a", "device": "cpu"}

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> path = SiteConfig(data_root=folder, device="cpu").write(folder / "site.json")
>>> SiteConfig.load(path).device
'cpu'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from neurofed.engine.checkpoint import write_json_atomically

__all__ = ["SITE_CONFIG_FILE", "SiteConfig", "SiteConfigError"]

#: The file name looked up in a deployed site's ``local/`` folder.
SITE_CONFIG_FILE = "neurofed_site.json"
_FORMAT = 1


class SiteConfigError(ValueError):
    """A site config is missing or unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class SiteConfig:
    """Settings of one site that stay at the site.

    Attributes
    ----------
    data_root
        The site folder (checked with ``neurofed site check``).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"``.
    audit_dir
        If set, every payload the site sends is also written there (arrays described by dtype
        and shape, every string and number as sent) so a custodian can inspect what left the
        site (:func:`~neurofed.federated.engine.site_worker.describe_payload`).
    """

    data_root: Path
    device: str = "auto"
    audit_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_root", Path(self.data_root))
        if self.audit_dir is not None:
            object.__setattr__(self, "audit_dir", Path(self.audit_dir))
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise SiteConfigError(f"device = {self.device!r}: use auto, cpu, cuda or cuda:<n>")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": _FORMAT,
            "data_root": str(self.data_root),
            "device": self.device,
        }
        if self.audit_dir is not None:
            out["audit_dir"] = str(self.audit_dir)
        return out

    def write(self, path: Path) -> Path:
        """Write the config as JSON (atomically); returns ``path``."""
        return write_json_atomically(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read a site config.

        Raises
        ------
        SiteConfigError
            The file is missing, not JSON, or lacks ``data_root``.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SiteConfigError(
                f"{path}: no site config; write one with data_root (the site folder)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SiteConfigError(f"{path}: unreadable site config ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("data_root"), str):
            raise SiteConfigError(f"{path}: 'data_root' (the site folder) is required")
        if data.get("format", _FORMAT) != _FORMAT:
            raise SiteConfigError(f"{path}: format {data.get('format')!r} is not {_FORMAT}")
        audit = data.get("audit_dir")
        return cls(
            data_root=Path(data["data_root"]),
            device=str(data.get("device", "auto")),
            audit_dir=None if audit is None else Path(str(audit)),
        )
