"""Issue 13: with `aestudy run --jobs N`, the cores a finished notebook frees go to the kernels still running.

The kernel side (`aestudy.runner.thread_budget`) is tested in this process and in one real two-kernel run; the
runner side with papermill's execution replaced by a stand-in that reads its budget file as a kernel would.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch

from aestudy.runner import run as run_module
from aestudy.runner.folders import load_state
from aestudy.runner.kernel import THREAD_BUDGET_EXTENSION, THREAD_VARS, kernel_command
from aestudy.runner.run import run_study, tail_threads, threads_follow
from aestudy.runner.thread_budget import (
    THREAD_BUDGET_ENV,
    ThreadBudget,
    load_ipython_extension,
    read_budget,
    write_budget,
)

REPO = Path(__file__).resolve().parents[1]
TOYS = REPO / "tests" / "fixtures" / "notebooks"
IPYKERNEL = ["/venv/bin/python", "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@pytest.fixture
def no_user_threads(monkeypatch):
    """No thread variable set by the user (`make test` sets OMP_NUM_THREADS=1, which turns budgets off)."""
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def torch_threads():
    """Restore this process's torch thread count after a test changed it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ kernel side


@pytest.mark.parametrize(("content", "threads"), [
    (b"3\n", 3), (b" 12 ", 12), (b"1", 1),
    (b"", None), (b"many\n", None), (b"0\n", None), (b"-2\n", None), (b"2.5\n", None), (b"\xff\xfe", None),
])
def test_a_budget_file_is_read_and_a_garbled_one_is_none(tmp_path, content, threads):
    budget = tmp_path / "budget"
    budget.write_bytes(content)
    assert read_budget(budget) == threads
    assert read_budget(tmp_path / "missing") is None


def test_write_budget_refuses_a_count_below_one_and_keeps_the_file(tmp_path):
    budget = write_budget(tmp_path / "threads" / "01_x", 2)
    assert budget.read_text() == "2\n"
    with pytest.raises(ValueError, match=r"thread budget 0 is invalid; it must be an integer >= 1"):
        write_budget(budget, 0)
    assert read_budget(budget) == 2 and [p.name for p in budget.parent.iterdir()] == ["01_x"]


def test_the_hook_applies_a_changed_budget_and_keeps_the_count_otherwise(tmp_path, torch_threads):
    start = torch_threads
    budget = tmp_path / "budget"
    hook = ThreadBudget(budget, applied=start)
    hook()  # no file yet: nothing changes
    assert torch.get_num_threads() == start and hook.applied == start
    write_budget(budget, start + 1)
    hook(None)  # IPython passes the cell's ExecutionInfo
    assert torch.get_num_threads() == start + 1 and hook.applied == start + 1
    budget.write_text("half a numb")  # garbled: the current count stays, nothing raises
    hook()
    assert torch.get_num_threads() == start + 1
    torch.set_num_threads(start + 3)  # the notebook chose its own count: kept until the budget changes
    write_budget(budget, start + 1)
    hook()
    assert torch.get_num_threads() == start + 3
    write_budget(budget, start + 2)
    hook()
    assert torch.get_num_threads() == start + 2


def test_before_torch_is_imported_the_budget_waits_for_it(tmp_path, monkeypatch, torch_threads):
    budget = write_budget(tmp_path / "budget", torch_threads + 1)
    hook = ThreadBudget(budget, applied=torch_threads)
    with monkeypatch.context() as patch:
        patch.delitem(sys.modules, "torch")  # a kernel that has not imported torch (yet)
        hook()
    assert hook.applied == torch_threads and torch.get_num_threads() == torch_threads
    hook()  # the first cell after the import
    assert hook.applied == torch_threads + 1 and torch.get_num_threads() == torch_threads + 1


class _Events:
    def __init__(self) -> None:
        self.callbacks: dict[str, list] = {"pre_run_cell": []}

    def register(self, event: str, function) -> None:
        self.callbacks[event].append(function)


class _Shell:
    def __init__(self) -> None:
        self.events = _Events()


def test_the_extension_registers_the_hook_only_with_a_budget_file(tmp_path, monkeypatch):
    monkeypatch.delenv(THREAD_BUDGET_ENV, raising=False)
    shell = _Shell()
    load_ipython_extension(shell)
    assert shell.events.callbacks["pre_run_cell"] == []
    monkeypatch.setenv(THREAD_BUDGET_ENV, str(tmp_path / "budget"))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    load_ipython_extension(shell)
    (hook,) = shell.events.callbacks["pre_run_cell"]
    assert isinstance(hook, ThreadBudget) and hook.path == tmp_path / "budget" and hook.applied == 3


def test_the_kernel_loads_the_extension_only_when_given_a_budget_file():
    assert kernel_command(IPYKERNEL, {"OMP_NUM_THREADS": "1"}) == IPYKERNEL
    assert kernel_command(IPYKERNEL, {THREAD_BUDGET_ENV: "/run/threads/01_x"}) == [
        *IPYKERNEL, f"--IPKernelApp.extra_extensions={THREAD_BUDGET_EXTENSION}"]
    other = ["/usr/bin/R", "--slave", "-f", "{connection_file}"]  # a kernel that would not know the option
    assert kernel_command(other, {THREAD_BUDGET_ENV: "/run/threads/01_x"}) == other


# ------------------------------------------------------------------------------------------ runner side


def test_tail_threads_share_the_cores_among_the_notebooks_still_running(monkeypatch, no_user_threads):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [tail_threads(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert threads_follow(2) and not threads_follow(1)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")  # a count the user chose is left alone
    assert not threads_follow(2)


def _series(tmp_path: Path, *names: str) -> Path:
    """A notebooks folder with copies of the toy notebooks under `names` (the fakes below never run them)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, toy in zip(names, ("01_toy_alpha", "02_toy_beta", "02_toy_beta"), strict=False):
        shutil.copy(TOYS / f"{toy}.ipynb", folder / f"{name}.ipynb")
    return folder


def _budget_reading_execution(monkeypatch, *, slow: str, fail: str | None = None) -> dict[str, dict]:
    """Replace notebook execution: notebook `slow` reads its budget file the way a kernel would until the count
    changes (10 s at most), the others end as soon as it has read its first count (`fail` with an error). Returns
    what each one saw."""
    from papermill.exceptions import PapermillExecutionError

    seen: dict[str, dict] = {}
    slow_started = threading.Event()

    def execute(notebook, output, parameters, *, kernel, env, progress=True, kernel_log=None):
        budget = env.get(THREAD_BUDGET_ENV)
        seen[notebook.stem] = {"env": dict(env), "first": read_budget(budget) if budget else None}
        if notebook.stem != slow:
            slow_started.wait(timeout=10)
        slow_started.set()
        if notebook.stem == slow and budget:
            deadline = time.monotonic() + 10
            while read_budget(budget) == seen[notebook.stem]["first"] and time.monotonic() < deadline:
                time.sleep(0.01)
            seen[notebook.stem]["later"] = read_budget(budget)
        if notebook.stem == fail:
            raise PapermillExecutionError(3, 3, "x = 1 / 0", "ZeroDivisionError", "division by zero", [])
        output.write_text("{}")
        return 0.01

    monkeypatch.setattr(run_module, "execute_notebook", execute)
    return seen


def test_when_a_notebook_ends_the_one_still_running_gets_its_cores(tmp_path, monkeypatch, no_user_threads, capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    seen = _budget_reading_execution(monkeypatch, slow="01_long")
    run_dir = tmp_path / "runs" / "tail"
    result = run_study(_series(tmp_path, "01_long", "02_short"), out=run_dir, profile="smoke", device="cpu",
                       progress=True, jobs=2)
    assert result.status == "complete"
    assert ("02_short.ipynb ended and no further notebook starts: 01_long.ipynb now uses 4 torch threads\n"
            in capsys.readouterr().err)
    assert seen["01_long"]["first"] == seen["02_short"]["first"] == 2  # 4 cores // 2 jobs
    assert seen["01_long"]["env"]["OMP_NUM_THREADS"] == "2"
    assert seen["01_long"]["later"] == 4  # 02 ended: 4 cores // 1 running
    assert read_budget(run_dir / "threads" / "01_long") == 4
    (change,) = load_state(run_dir)["thread_changes"]
    assert (change["notebook"], change["threads"], change["after"]) == ("01_long.ipynb", 4, "02_short.ipynb")
    assert change["elapsed_s"] >= 0 and change["time"]


def test_after_a_failure_the_notebook_still_running_gets_the_freed_cores(tmp_path, monkeypatch, no_user_threads,
                                                                          capsys):
    """02 fails while 01 runs and 03 waits: 03 never starts, so 01 gets both cores at once."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    seen = _budget_reading_execution(monkeypatch, slow="01_long", fail="02_fails")
    run_dir = tmp_path / "runs" / "failed"
    result = run_study(_series(tmp_path, "01_long", "02_fails", "03_never"), out=run_dir, profile="smoke",
                       device="cpu", progress=False, jobs=2)
    assert (result.status, result.failed) == ("failed", "02_fails.ipynb")
    assert "03_never" not in seen
    assert (seen["01_long"]["first"], seen["01_long"]["later"]) == (1, 2)
    state = load_state(run_dir)
    assert state["status"] == {"01_long.ipynb": "done", "02_fails.ipynb": "failed", "03_never.ipynb": "pending"}
    assert [(c["notebook"], c["threads"], c["after"]) for c in state["thread_changes"]] == [
        ("01_long.ipynb", 2, "02_fails.ipynb")]


@pytest.mark.parametrize("why", ["one job", "the user's OMP_NUM_THREADS"])
def test_no_budget_with_one_job_or_a_users_thread_count(tmp_path, monkeypatch, no_user_threads, why):
    seen = _budget_reading_execution(monkeypatch, slow="01_long")
    jobs = 1 if why == "one job" else 2
    if why != "one job":
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "runs" / "plain"
    assert run_study(_series(tmp_path, "01_long", "02_short"), out=run_dir, profile="smoke", device="cpu",
                     progress=False, jobs=jobs).status == "complete"
    assert all(THREAD_BUDGET_ENV not in s["env"] for s in seen.values())
    assert not (run_dir / "threads").exists() and "thread_changes" not in load_state(run_dir)


# ------------------------------------------------------------------------------------------ real kernels


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile: str | None = None  # the run's profile", id="parameters")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s, id=f"cell-{i}") for i, s in enumerate(sources)]
    nb.metadata["kernelspec"] = {"name": "aestudy", "display_name": "Python (aestudy)", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_a_running_kernel_takes_the_cores_a_finished_notebook_freed(tmp_path, monkeypatch, no_user_threads):
    """Two kernels (--jobs 2): 01 imports torch with its half of the cores, waits until 02 has ended and the runner
    rewrote its budget, and the next cell runs with all the cores; a garbled budget then changes nothing."""
    cores = max(2, os.cpu_count() or 1)  # one core: pretend two, torch accepts any count
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_long.ipynb",
              "import json, os, time\nfrom pathlib import Path\n\nimport torch\n\n"
              "hooks = [type(f).__name__ for f in get_ipython().events.callbacks['pre_run_cell']]\n"
              "seen = [torch.get_num_threads()]\nbudget = Path(os.environ['AESTUDY_THREAD_BUDGET'])\n"
              "first = budget.read_text()",
              "deadline = time.monotonic() + 30  # until the runner gives this kernel the cores 02 freed\n"
              "while first.strip() == os.environ['OMP_NUM_THREADS'] and time.monotonic() < deadline:\n"
              "    time.sleep(0.02)\n    first = budget.read_text()",
              "seen.append(torch.get_num_threads())\nbudget.write_text('lots')",
              "seen.append(torch.get_num_threads())\n"
              "Path('seen.json').write_text(json.dumps({'hooks': hooks, 'threads': seen}))")
    _notebook(folder / "02_short.ipynb", "x = 1")
    run_dir = tmp_path / "runs" / "kernels"
    done: list = []
    worker = threading.Thread(target=lambda: done.append(
        run_study(folder, out=run_dir, profile="smoke", device="cpu", progress=False, jobs=2)))
    worker.start()
    worker.join(timeout=120)
    assert done and done[0].status == "complete"
    seen = json.loads((folder / "seen.json").read_text())
    assert seen["hooks"] == ["ThreadBudget"]
    assert seen["threads"] == [cores // 2, cores, cores]  # the garbled file left the count as it was
    assert [(c["notebook"], c["threads"]) for c in load_state(run_dir)["thread_changes"]] == [
        ("01_long.ipynb", cores)]
