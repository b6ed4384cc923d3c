"""The benches' phantom federations: generated once per config, every site checked."""

from __future__ import annotations

import json
from pathlib import Path

from neurofed.data.manifest import check_site
from neurofed.phantom import PhantomConfig, generate_federation

__all__ = ["checked_sites"]


def checked_sites(root: Path, config: PhantomConfig) -> list[Path]:
    """The sites of ``config`` under ``root``: generated, or kept when ``root/phantom.json``
    records the same config; every site checked (``neurofed site check``)."""
    manifest = root / "phantom.json"
    if not (manifest.is_file() and json.loads(manifest.read_text())["config"] == config.to_json()):
        generate_federation(config, root)
    sites = [root / f"site-{k}" for k in range(1, config.sites + 1)]
    for site in sites:
        check_site(site)
    return sites
