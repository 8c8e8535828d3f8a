"""The `aestudy` command: `data list|fetch|info`, `run`, `sweep`, `report`, `compare` (one parser per group; the
options `run` and `sweep` share are defined once, in `_study_options`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aestudy.errors import AestudyError


def _data_list(args: argparse.Namespace) -> int:
    """Print a table of the datasets: shape, classes, local availability, licence."""
    from aestudy.data import list_datasets

    rows = [("name", "shape", "classes", "local", "licence")]
    for row in list_datasets(args.data_dir):
        local = f"yes ({row.location})" if row.available else "no"
        rows.append((row.name, "x".join(map(str, row.shape)), str(row.num_classes), local, row.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    """Download/verify a dataset and build its decoded cache."""
    from aestudy.data import fetch_dataset

    folder = fetch_dataset(args.name, data_dir=args.data_dir, progress=not args.no_progress)
    print(f"{args.name}: ready in {folder}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    """Print split sizes, shape, classes, source, checksum and licence of a dataset."""
    from aestudy import imagefiles
    from aestudy.data import DATASET_NAMES, default_val_size, load_dataset

    val_size = default_val_size(args.name) if args.val_size is None else args.val_size
    files = ({"size": imagefiles.parse_size(args.size, name="--size"), "channels": args.channels}
             if args.size or args.channels else {})
    data = load_dataset(args.name, val_size=val_size, seed=args.seed, data_dir=args.data_dir,
                        progress=not args.no_progress, **files)
    info = data.info
    lines = [
        ("name", info.name),
        ("splits", f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,}"),
        ("shape", "x".join(map(str, info.shape))),
        ("classes", f"{info.num_classes} ({', '.join(info.class_names)})" if info.labelled else "0 (unlabelled)"),
        ("source", info.source),
        ("checksum", f"sha256:{info.checksum}"),
        ("licence", info.licence),
    ]
    if info.note:
        lines.append(("note", info.note))
    if args.name not in DATASET_NAMES and imagefiles.is_path(args.name):  # issue 17: too few for `aestudy run`?
        n = len(data.train) + len(data.val) + len(data.test)
        lines.append(("study", imagefiles.study_size_problem(n, info.name)
                      or f"enough images for aestudy run (at least {imagefiles.STUDY_MIN_IMAGES})"))
    for key, value in lines:
        print(f"{key + ':':<10}{value}")
    return 0


def _add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """`aestudy data list|fetch|info`."""
    from aestudy.data import DATASET_NAMES

    data = subparsers.add_parser("data", help="list, fetch and describe datasets")
    data.set_defaults(func=lambda _args: _usage(data))
    commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    names = ", ".join(DATASET_NAMES)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", default=None,
                          help="data root (default: $AESTUDY_DATA, else data/ in the checkout, else ~/.cache)")

    listing = commands.add_parser("list", parents=[data_dir], help="the datasets and whether they are local")
    listing.set_defaults(func=_data_list)

    fetch = commands.add_parser("fetch", parents=[data_dir], help="make a dataset available offline")
    fetch.add_argument("name", metavar="NAME", help=f"one of: {names}")
    fetch.add_argument("--no-progress", action="store_true", help="no download progress bar")
    fetch.set_defaults(func=_data_fetch)

    info = commands.add_parser("info", parents=[data_dir], help="split sizes, shape, source, checksum, licence")
    info.add_argument("name", metavar="NAME", help=f"one of: {names}; or a folder of images or an .npz/.npy file")
    info.add_argument("--val-size", type=int, default=None,
                      help="validation images (default: 5000; digits 140; files 10%% of the non-test images)")
    info.add_argument("--size", default=None, help="files only: auto, S or HxW (resize and center-crop)")
    info.add_argument("--channels", type=int, default=None, choices=(1, 3), help="files only: 1 grey, 3 RGB")
    info.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    info.add_argument("--no-progress", action="store_true", help="no download progress bar")
    info.set_defaults(func=_data_info)


def _device(text: str) -> str:
    """`--device`: the notebooks' own rule (auto, cpu, cuda, cuda:N, mps); argparse reports a refusal."""
    from aestudy.parameters import validate_parameter

    try:
        return validate_parameter("device", text)
    except AestudyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    """`--workers`: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; it must be an integer >= 1")
    return value


def _study_options(*, only_help: str) -> argparse.ArgumentParser:
    """The options `aestudy run` and `aestudy sweep` share (a parent parser: defined once)."""
    from aestudy.config import PROFILES
    from aestudy.runner.kernel import DEFAULT_KERNEL

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=None,
                        help="size of every computation (default: $AESTUDY_PROFILE or standard)")
    common.add_argument("--device", type=_device, default=None, metavar="{auto,cpu,cuda,cuda:N,mps}",
                        help="device for the notebooks that take one (default: auto = CUDA when present)")
    common.add_argument("--only", metavar="NN,NN", default=None,
                        help=only_help)
    common.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        dest="parameters", help="set a notebook parameter; VALUE is read as papermill's -p reads "
                        "it (None, True, False, 3, 1e-3, else text); repeatable")
    common.add_argument("--params", metavar="FILE.yaml", default=None,
                        help="YAML mapping of parameters (None or null for None; -p wins over it)")
    common.add_argument("--kernel", default=None, help=f"Jupyter kernel to execute with (default: {DEFAULT_KERNEL})")
    common.add_argument("--notebooks-dir", metavar="DIR", default=None,
                        help="folder holding the NN_*.ipynb series (default: the repository's notebooks/)")
    common.add_argument("--quiet", action="store_true", help="no progress output (failures are still reported)")
    return common


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    """`aestudy run`: execute the notebook series with papermill into runs/NAME, with a report."""

    run = subparsers.add_parser("run", parents=[_study_options(only_help="run only these notebooks, by number prefix "
                                                                       "(e.g. 01,03)")],
                                help="execute the notebook series into runs/NAME (metrics + report)")
    run.add_argument("--out", metavar="runs/NAME", default=None,
                     help="run folder, new or empty (default: runs/<timestamp>)")
    run.add_argument("--resume", metavar="runs/NAME", nargs="?", const="runs/latest", default=None,
                     help="continue a failed or interrupted run (default: runs/latest) with its parameters; "
                     "-p may change those of notebooks not yet done")
    run.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                     help="notebooks executed at once, each kernel with cores/N torch threads, more for the last ones "
                     "running (default: one per core, at most 2, on CPU; 1 on a GPU)")
    run.set_defaults(func=run_main)


def _add_sweep_parser(subparsers: argparse._SubParsersAction) -> None:
    """`aestudy sweep NAME=V1,V2 ...`: one papermill execution per grid point, in parallel."""

    sweep = subparsers.add_parser("sweep", parents=[_study_options(only_help="the notebooks each point runs, by number "
                                                                           "prefix (e.g. 02)")],
                                  help="run a parameter grid (process pool or Dask) into runs/NAME")
    sweep.add_argument("grid", nargs="+", metavar="NAME=V1,V2,...",
                       help="swept parameters; every combination is one point (values read as -p reads them)")
    sweep.add_argument("--out", metavar="runs/NAME", default=None,
                       help="sweep folder, new or empty (default: runs/sweep-<timestamp>)")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       help="run the points on this Dask cluster instead of local processes")
    sweep.add_argument("--workers", type=_positive_int, default=None,
                       help="local processes (default: one per CPU core, at most one per point)")
    sweep.set_defaults(func=sweep_main)


def _add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    """`aestudy report RUN`: rebuild a run's report from its metrics.json."""

    report = subparsers.add_parser("report", help="rebuild report.md / report.html of a run folder")
    report.add_argument("run", metavar="RUN", help="a run folder (e.g. runs/latest)")
    report.add_argument("--no-notebooks", action="store_true",
                        help="do not re-render the executed notebooks to HTML (claim links use existing pages)")
    report.set_defaults(func=report_main)


def _add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    """`aestudy compare RUN_A RUN_B`: parameters, verdicts and metrics that changed between two runs."""

    compare = subparsers.add_parser("compare", help="what changed between two runs (markdown and HTML)")
    compare.add_argument("run_a", metavar="RUN_A", help="the first run folder")
    compare.add_argument("run_b", metavar="RUN_B", help="the second run folder")
    compare.add_argument("--out", metavar="DIR", default=None,
                         help="write compare.md and compare.html into DIR (default: markdown to stdout)")
    compare.set_defaults(func=compare_main)


def _usage(parser: argparse.ArgumentParser) -> int:
    """Print a (sub)command's help when it was given no subcommand."""
    parser.print_help(sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The `aestudy` argument parser with every command group."""
    parser = argparse.ArgumentParser(prog="aestudy", description="AE vs VAE study: data, runs and sweeps.")
    parser.set_defaults(func=lambda _args: _usage(parser))
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data_parser(subparsers)
    _add_run_parser(subparsers)
    _add_sweep_parser(subparsers)
    _add_report_parser(subparsers)
    _add_compare_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `aestudy` command; errors print one line to stderr and return 2."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; report its code instead
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except AestudyError as exc:
        print(f"aestudy: error: {exc}", file=sys.stderr)
        return 2



def run_main(args: argparse.Namespace) -> int:
    """`aestudy run`: 0 complete, 1 a notebook failed, 130 interrupted (invalid options raise ConfigError)."""
    from aestudy.errors import ConfigError
    from aestudy.runner.kernel import DEFAULT_KERNEL
    from aestudy.runner.params import collect_params, parse_only
    from aestudy.runner.run import EXIT_INTERRUPTED, resume_study, run_study  # papermill: imported when used

    # SIGTERM (a `kill`, a scheduler's time limit, a closing terminal session) stops the run the way Ctrl-C does:
    # the notebooks running are marked pending and interrupted, the state stays resumable.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        params = collect_params(args.parameters, args.params)
        if args.resume is not None:
            given = [flag for flag, value in (("--profile", args.profile), ("--device", args.device),
                                              ("--only", args.only), ("--out", args.out),
                                              ("--notebooks-dir", args.notebooks_dir)) if value]
            if given:
                raise ConfigError(f"--resume continues with the run's saved settings; drop {', '.join(given)} "
                                  "(-p/--params may change parameters of the notebooks not yet done).")
            result = resume_study(args.resume, kernel=args.kernel, params=params, progress=not args.quiet,
                                  jobs=args.jobs)
        else:
            result = run_study(args.notebooks_dir, out=args.out, profile=args.profile, device=args.device,
                               only=parse_only(args.only), params=params,
                               kernel=args.kernel or DEFAULT_KERNEL, progress=not args.quiet, jobs=args.jobs)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result.exit_code


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sweep_main(args: argparse.Namespace) -> int:
    """`aestudy sweep`: 0 every point finished, 1 some failed, 130 interrupted (bad options raise ConfigError)."""
    from aestudy.runner.kernel import DEFAULT_KERNEL
    from aestudy.runner.params import collect_params, parse_only
    from aestudy.runner.run import EXIT_INTERRUPTED
    from aestudy.runner.sweep import parse_grid, run_sweep

    try:
        result = run_sweep(parse_grid(args.grid), args.notebooks_dir, only=parse_only(args.only),
                           params=collect_params(args.parameters, args.params), profile=args.profile,
                           device=args.device, kernel=args.kernel or DEFAULT_KERNEL, out=args.out,
                           scheduler=args.scheduler,
                           workers=args.workers, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\naestudy sweep: interrupted; finished points are kept in their points/<id>/ folders.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return result.exit_code


def report_main(args: argparse.Namespace) -> int:
    """`aestudy report RUN [--no-notebooks]`: rebuild report.md / report.html (and the notebooks' pages)."""
    from aestudy.runner.report import write_report

    for path in write_report(args.run, render_notebooks=not args.no_notebooks):
        print(path)
    return 0


def compare_main(args: argparse.Namespace) -> int:
    """`aestudy compare RUN_A RUN_B [--out DIR]`: markdown to stdout, or compare.md + compare.html in DIR."""
    from aestudy.runner.compare_runs import compare_runs, comparison_blocks, write_comparison
    from aestudy.runner.report import render_markdown

    comparison = compare_runs(args.run_a, args.run_b)
    if args.out is None:
        print(render_markdown(comparison_blocks(comparison), Path.cwd()), end="")
    else:
        for path in write_comparison(comparison, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
