"""Training-speed, quality and evaluation-cost benchmarks of aestudy against its peers (issue 7).

Run `python -m benchmarks.train_speed` (or `make bench`); `--quick` is a seconds-long check on a tiny subset.
Modules: `gemm_floor` (the matmul floor of an MLP step), `loops` (the training loops timed side by side),
`evaluation` (IS-NLL cost and agreement with pythae), `series` (wall time of `aestudy run`), `report`
(tables, JSON, plot, README) and `train_speed` (the command line and the rows).
"""
