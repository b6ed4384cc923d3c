"""What secure aggregation costs per round, for 3 to 100 sites.

One process plays every site (:class:`~neurofed.federated.site.secagg.SecureSite`) and the server
(:class:`~neurofed.federated.server.secagg.SecureRound`) through the four steps of a round, on an
update the size of a real model's (by default the ``tumor-regions`` residual U-Net at its real
width: its float entries). For each number of sites it measures:

- **time**: each step's computation per site (mean and slowest) and at the server, and the
  plain FedAvg work it replaces (the weighted sum of the sites' float32 updates);
- **bytes**: what one site sends and receives per step, as the messages travel (arrays as
  their bytes; the model the ``train`` task carries is left out, as FedAvg sends it too), and
  the share of that which is overhead beyond FedAvg's one float32 update;
- **correctness**: the largest difference between the unmasked mean and the plain weighted
  mean of the same clipped updates.

Each size runs twice: every site answers, and ``--drop`` of them (at least one) fall silent
after sharing, so the server rebuilds their mask keys and removes their pairwise masks.

Usage::

    python bench/secagg.py [--sites 3,10,30,100] [--size N | --task tumor-regions] [--drop 0.1]
                           [--out FILE]

``bench/privacy.py`` runs it too (its secure aggregation table). Prints a table and writes JSON
(default ``bench/results/secagg.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurofed import __version__
from neurofed.federated.protocol import SecAggRequest, SiteAnswer
from neurofed.federated.secagg.vectors import Layout
from neurofed.federated.server.secagg import SecureRound
from neurofed.federated.site.secagg import SecureSite

HASH = "5e" * 32
CLIP = 10.0
STEPS = ("keys", "shares", "train", "unmask")


def wire_bytes(value: Any) -> int:
    """Bytes of a message as it travels: arrays by their size, text by its length."""
    if isinstance(value, Mapping):
        return sum(len(str(k)) + wire_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(wire_bytes(v) for v in value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | str):
        return len(value)
    return 8


def _update(site: int, size: int) -> np.ndarray:
    """Site ``site``'s update (a fixed seed per site, drawn again when needed)."""
    return np.random.default_rng(site).normal(scale=0.01, size=size).astype(np.float32)


def measure(sites: int, size: int, silent: int) -> dict[str, Any]:
    """One round with ``sites`` sites of which ``silent`` drop out after sharing."""
    names = [f"site-{k:03d}" for k in range(1, sites + 1)]
    weights = {name: 10 + k % 7 for k, name in enumerate(names)}
    zero = {"w": np.zeros(size, np.float32)}
    layout = Layout.of(zero)
    server = SecureRound(HASH, 1, layout, clip=CLIP)
    clients = {n: SecureSite(n) for n in names}
    site_seconds: dict[str, list[float]] = {s: [] for s in STEPS}
    server_seconds: dict[str, float] = {}
    up: dict[str, int] = {}
    down: dict[str, int] = {}

    def timed(step: str, work: Any) -> Any:
        began = time.perf_counter()
        out = work()
        site_seconds[step].append(time.perf_counter() - began)
        return out

    def on_server(step: str, work: Any) -> Any:
        began = time.perf_counter()
        out = work()
        server_seconds[step] = time.perf_counter() - began
        return out

    def sent(step: str, answers: Mapping[str, Any]) -> None:
        first = next(iter(answers.values()))
        up[step] = wire_bytes(SiteAnswer(result=first).encode()[1])

    def told(step: str, request: SecAggRequest | None) -> None:
        down[step] = 0 if request is None else wire_bytes(request.encode())

    keys = {n: timed("keys", lambda n=n: clients[n].keys(HASH, 1, weights[n], {})) for n in names}
    sent("keys", keys)
    told("keys", None)
    request = on_server("keys", lambda: server.take_keys(keys))
    told("shares", request)
    shares = {n: timed("shares", lambda n=n: clients[n].shares(HASH, 1, request)) for n in names}
    sent("shares", shares)
    request = on_server("shares", lambda: server.take_shares(shares))
    told("train", request)
    arriving = names[silent:]
    inputs = {}
    for n in arriving:
        trained = {"w": _update(names.index(n), size)}

        def train_step(site: SecureSite = clients[n], t: dict[str, np.ndarray] = trained) -> Any:
            site.receive(HASH, 1, request)
            return site.mask(HASH, 1, layout, t, zero, CLIP)[0]

        inputs[n] = timed("train", train_step)
    up["train"] = int(next(iter(inputs.values())).nbytes)
    request = on_server("train", lambda: server.take_inputs(inputs))
    told("unmask", request)
    reveals = {
        n: timed("unmask", lambda n=n: clients[n].reveal(HASH, 1, request)) for n in arriving
    }
    sent("unmask", reveals)
    total = on_server("unmask", lambda: server.take_reveals(reveals))
    # the plain weighted mean of the same updates, and FedAvg's server work on them
    plain = np.zeros(size, np.float64)
    plain_seconds = 0.0
    for n in arriving:
        update = _update(names.index(n), size)  # drawn again: not FedAvg's work
        began = time.perf_counter()
        plain += weights[n] * update.astype(np.float64)
        plain_seconds += time.perf_counter() - began
    began = time.perf_counter()
    plain /= sum(weights[n] for n in arriving)
    plain_seconds += time.perf_counter() - began
    error = float(np.max(np.abs(total.means["w"] - plain)))
    overhead_up = sum(v for k, v in up.items() if k != "train")
    return {
        "sites": sites,
        "silent_after_sharing": silent,
        "size": size,
        "site_seconds": {
            s: {"mean": float(np.mean(v)), "max": float(np.max(v))} for s, v in site_seconds.items()
        },
        "site_seconds_total": float(sum(np.mean(v) for v in site_seconds.values())),
        "server_seconds": server_seconds,
        "server_seconds_total": float(sum(server_seconds.values())),
        "fedavg_server_seconds": plain_seconds,
        "bytes_up_per_site": up,
        "bytes_down_per_site": down,
        "bytes_overhead_per_site": overhead_up + sum(down.values()),
        "fedavg_update_bytes": 4 * size,
        "max_error": error,
        "error_bound": len(arriving) * CLIP / 2**31,
    }


def run(sites: list[int], size: int, drop: float) -> dict[str, Any]:
    started = time.perf_counter()
    rows = []
    for n in sites:
        for silent in (0, max(1, int(drop * n))):
            print(f"secure aggregation: {n} sites, {silent} silent after sharing …", flush=True)
            rows.append(measure(n, size, silent))
    return {
        "bench": "secagg",
        "neurofed": __version__,
        "machine": {"platform": platform.platform()},
        "size": size,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f}"


def show(result: dict[str, Any]) -> None:
    size = result["size"]
    print(f"\nsecure aggregation of {size:,} float entries ({_mb(4 * size)} MB as float32)")
    print(
        "sites | silent | site ms: keys/shares/mask/reveal | server ms: all (unmask) | "
        "FedAvg ms | MB up/site | MB down/site | overhead MB/site | max error"
    )
    for r in result["rows"]:
        s = r["site_seconds"]
        steps = "/".join(f"{1e3 * s[k]['mean']:.1f}" for k in STEPS)
        up = sum(r["bytes_up_per_site"].values())
        down = sum(r["bytes_down_per_site"].values())
        server = (
            f"{1e3 * r['server_seconds_total']:.0f} ({1e3 * r['server_seconds']['unmask']:.0f})"
        )
        print(
            f"{r['sites']:5} | {r['silent_after_sharing']:6} | {steps:32} | {server:22} | "
            f"{1e3 * r['fedavg_server_seconds']:9.0f} | {_mb(up):10} | {_mb(down):12} | "
            f"{_mb(r['bytes_overhead_per_site']):16} | {r['max_error']:.1e}"
        )


def model_size(task: str) -> int:
    """Float entries of ``task``'s network at its default (real) width."""
    from neurofed.tasks import get_task

    model = get_task(task).build_model(None)
    return sum(v.numel() for v in model.state_dict().values() if v.dtype.is_floating_point)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="3,10,30,100", help="site counts, comma-separated")
    parser.add_argument("--size", type=int, default=None, help="update entries (default: --task)")
    parser.add_argument("--task", default="tumor-regions", help="whose network sizes the update")
    parser.add_argument("--drop", type=float, default=0.1, help="share silent after sharing")
    parser.add_argument("--out", type=Path, default=Path("bench/results/secagg.json"))
    args = parser.parse_args()
    size = args.size or model_size(args.task)
    result = run([int(v) for v in args.sites.split(",") if v], size, args.drop)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
