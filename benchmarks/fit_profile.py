"""Where a whole `train_or_load` goes, as a user calls it in a fresh process (`python -m benchmarks.fit_profile`).

Process start and imports, data loading, then `cProfile` over `train_or_load` (cold cache): optimizer construction
(torch.optim's first use imports torch._dynamo), the epochs' training steps, validation passes, the GEMM-backend
probe, the checkpoint write, and the rest. Prints one JSON object; `fit_profile(...)` runs it as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PARTS = {  # (file suffix, function) -> part
    ("aestudy/train.py", "_make_optimizer"): "optimizer construction (first use imports torch._dynamo)",
    ("aestudy/train.py", "_run_epoch"): "training steps",
    ("aestudy/train.py", "_evaluate"): "validation passes",
    ("aestudy/precision.py", "_decision"): "GEMM-backend probe",
    ("aestudy/cache.py", "save_checkpoint"): "checkpoint write",
    ("aestudy/train.py", "_device_tensors"): "data to device",
}


def _main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from aestudy.data import Split, load_dataset
    from aestudy.models import ModelConfig
    from aestudy.train import TrainConfig, train_or_load
    torch.set_num_threads(args.threads)
    imported = time.perf_counter() - T0
    tic = time.perf_counter()
    data = load_dataset("fashion-mnist", progress=False)  # with its 5,000-image validation split
    n = min(args.size, len(data.train))
    data = dataclasses.replace(data, train=Split(data.train.images[:n], data.train.labels[:n]),
                               fingerprint=f"{data.fingerprint}-first{n}")
    loaded = time.perf_counter() - tic
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aestudy-fit-profile-") as cache_dir:
        profiler = cProfile.Profile()
        tic = time.perf_counter()
        profiler.enable()
        result = train_or_load(ModelConfig(), TrainConfig(epochs=args.epochs, device="cpu", progress=False), data,
                               cache_dir=cache_dir)
        profiler.disable()
        total = time.perf_counter() - tic
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts = {part: 0.0 for part in PARTS.values()}
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        part = PARTS.get((str(Path(filename).parent.name + "/" + Path(filename).name), function))
        if part is not None:
            parts[part] += cumulative
    parts["other (history, bookkeeping, model build)"] = max(0.0, total - sum(parts.values()))
    return {"samples": n, "val_samples": len(data.val), "epochs": args.epochs, "threads": args.threads,
            "process_start_and_imports_s": imported, "data_load_s": loaded, "train_or_load_s": total,
            "parts": [{"part": k, "seconds": v, "share": 100 * v / total} for k, v in parts.items()],
            "history_seconds": result.history["seconds"].tolist(), "load1": (load + os.getloadavg()[0]) / 2}


def fit_profile(*, size: int, epochs: int, threads: int, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run this module in a fresh process and return its JSON (or the error it printed)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.fit_profile", "--size", str(size), "--epochs",
                           str(epochs), "--threads", str(threads)], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return {"status": f"failed (exit {done.returncode})", "stderr_tail": done.stderr[-2000:]}
    return {"status": "run", **json.loads(done.stdout.strip().splitlines()[-1])}


if __name__ == "__main__":
    print(json.dumps(_main(sys.argv[1:])))
