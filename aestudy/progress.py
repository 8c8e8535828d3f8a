"""Progress bars that tell the truth wherever they are read: the one home of every tqdm call in aestudy.

Three places show progress differently:

* a notebook in a live frontend (JupyterLab, Notebook, VS Code): a widget bar (`tqdm.notebook`);
* a notebook executed without a frontend (papermill/nbclient, nbval, `jupyter nbconvert --execute`): plain text
  lines, the last of which is the bar's final state ("train: 100%|...| 10/10 ..."). A widget there would be
  saved as its first frame ("0/10"), because nobody renders the later updates into the notebook file;
* a terminal or a script: tqdm's usual in-place text bar on stderr.

"No frontend" is read from the kernel's current request: papermill/nbclient and nbval send `execute_request`
with `allow_stdin=False` (they cannot answer `input()`), while every interactive frontend sends True. This
changes only what is displayed, never a result. `set_mode` overrides the choice (e.g. "off" in a runner).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Literal

from tqdm import std

from aestudy.validate import as_bool, as_choice

Mode = Literal["auto", "widget", "text", "terminal", "off"]
MODES: tuple[str, ...] = ("auto", "widget", "text", "terminal", "off")
TEXT_MININTERVAL = 30.0  # seconds between text lines without a frontend: a few lines per long loop in a saved notebook
TEXT_NCOLS = 100

_mode: str = "auto"


def set_mode(mode: Mode = "auto") -> None:
    """Force how progress is shown ("widget", "text", "terminal" or "off"); "auto" (the default) detects it.

    Raises:
        ConfigError: for any other value.
    """
    global _mode
    _mode = as_choice(mode, "mode", MODES)


def _kernel_allows_stdin() -> bool | None:
    """Whether the current Jupyter request came from a frontend that can answer input() (None: not in a kernel)."""
    ipython_module = sys.modules.get("IPython")  # never import IPython just to find out we are not in it
    if ipython_module is None:
        return None
    shell = ipython_module.get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return None  # a terminal IPython shell
    parent = kernel.get_parent() or {}
    return bool(parent.get("content", {}).get("allow_stdin", False))


def detect_mode() -> str:
    """The display this process has now: "widget", "text" (a kernel without a frontend) or "terminal"."""
    if _mode != "auto":
        return _mode
    allows_stdin = _kernel_allows_stdin()
    if allows_stdin is None:
        return "terminal"
    if not allows_stdin:
        return "text"
    try:
        import ipywidgets  # noqa: F401 - tqdm.notebook needs it
    except ImportError:
        return "text"
    return "widget"


class TextBar(std.tqdm):
    """A tqdm bar that writes whole lines (no carriage returns) and always ends with its final state.

    Saved notebooks and logs keep every line, so a line per refresh (at most one per `TEXT_MININTERVAL`)
    plus the final line on close reads correctly in any viewer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        kwargs.setdefault("ncols", TEXT_NCOLS)
        kwargs["dynamic_ncols"] = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Write the bar (or `msg`) as one line; an empty message (tqdm clearing its line) writes nothing."""
        if msg == "":
            return False
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        """Write the final state as the last line (tqdm may have skipped the last refresh) and stop."""
        if self.disable:
            return
        final = self.__str__()
        self.disable = True
        self._decr_instances(self)
        self.fp.write(final + "\n")
        self.fp.flush()


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str | None = None,
             enabled: bool = True, **kwargs: Any) -> std.tqdm:
    """A progress bar over `iterable` (or a manual one with `total`) shown the way this process can show it.

    `enabled=False` (or mode "off") returns a disabled bar (no output; `set_postfix`/`update` still work).
    Other keyword arguments (unit, mininterval, leave, ...) go to tqdm.
    """
    enabled = as_bool(enabled, "enabled")
    mode = detect_mode()
    if mode == "widget":
        from tqdm.notebook import tqdm as bar_class
    elif mode == "text":
        bar_class = TextBar
        kwargs.pop("mininterval", None)  # a text line per refresh: keep TEXT_MININTERVAL
    else:
        bar_class = std.tqdm
    return bar_class(iterable, total=total, desc=desc, disable=not enabled or mode == "off", **kwargs)
