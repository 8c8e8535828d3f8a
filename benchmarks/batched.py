"""The batched-seeds speed-up: `aestudy.ensemble.fit_many` with the models stacked vs one after the other.

Both sides make the same call a notebook makes (fresh cache folders, so every model trains; validation, history
and checkpoint writes included), interleaved over rounds (batched, sequential, batched, …) so that load drifts hit
both alike. The ratio of wall times is the figure; the largest weight difference between the two sides' models
shows that they trained the same models (float rounding only).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import torch

from aestudy.data import Dataset
from aestudy.ensemble import fit_many
from aestudy.train import TrainConfig
from benchmarks.loops import LoopSpec


def _one(data: Dataset, spec: LoopSpec, cfgs: list[TrainConfig], batched: bool) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aestudy-bench-batched-") as cache_dir:
        start = time.perf_counter()
        results = fit_many(spec.model, cfgs, data, cache_dir=cache_dir, batched=batched)
        wall = time.perf_counter() - start
    # the last epoch of all models together: batched histories hold each model's share of the shared epoch
    last_epoch = sum(float(r.history["seconds"].iloc[-1]) for r in results)
    return {"wall_s": wall, "last_epoch_s": last_epoch, "load1": (load + os.getloadavg()[0]) / 2,
            "states": [r.model.state_dict() for r in results]}


def batched_speedup(data: Dataset, spec: LoopSpec, *, models: int, epochs: int, rounds: int) -> dict[str, Any]:
    """`models` seeds × `epochs` epochs on `data`, batched vs sequential, `rounds` interleaved rounds."""
    cfgs = [TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, seed=s, device="cpu", progress=False)
            for s in range(models)]
    runs: dict[str, list[dict[str, Any]]] = {"batched": [], "sequential": []}
    max_diff = 0.0
    for round_ in range(rounds):
        for name in ("batched", "sequential"):
            runs[name].append(_one(data, spec, cfgs, name == "batched"))
            print(f"  batched row, round {round_ + 1}/{rounds} {name}: {runs[name][-1]['wall_s']:.1f} s "
                  f"(load {runs[name][-1]['load1']:.1f})", flush=True)
        a, b = runs["batched"][-1].pop("states"), runs["sequential"][-1].pop("states")
        max_diff = max(max_diff, max(float((sa[k] - sb[k]).abs().max()) for sa, sb in zip(a, b, strict=True)
                                     for k in sa))
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "last_epoch_s", "load1")}
               for name, rs in runs.items()}
    return {"models": models, "epochs": epochs, "rounds": rounds, "samples": len(data.train),
            "threads": torch.get_num_threads(), "runs": runs, "summary": summary,
            "speedup_wall": summary["sequential"]["wall_s"] / summary["batched"]["wall_s"],
            "speedup_epoch": summary["sequential"]["last_epoch_s"] / summary["batched"]["last_epoch_s"],
            "max_weight_diff": max_diff}
