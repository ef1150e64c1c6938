"""The `edgezoo` command: parse, call the library, print.

Each group of commands lives in ``edgezoo/commands/<name>.py`` with a ``register(app)`` function; heavy
imports (torch, onnxruntime) happen inside the commands, so `edgezoo --help` and the device-side commands
stay fast and work without PyTorch.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys

import typer

from edgezoo import __version__
from edgezoo.console import console, err_console
from edgezoo.errors import EdgezooError

app = typer.Typer(
    name="edgezoo",
    help="Paper-exact mobile CNNs: export to verified int8/fp16 ONNX, benchmark, profile and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": bool(os.environ.get("EDGEZOO_DEBUG"))}

COMMAND_MODULES = ("zoo", "export", "bench", "compare", "profile", "serve", "triton")
# commands that load other libraries' runtimes and converters for the whole run: their output goes to a log
# (edgezoo/quiet.py); `serve` quiets only its loading, so that the server's own log stays on the terminal
QUIET_COMMANDS = ("export", "bench", "compare", "profile")


def _version(value: bool) -> None:
    if value:
        console.print(f"edgezoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    verbose: bool = typer.Option(False, "--verbose", help="Show other libraries' warnings and log lines "
                                 "(by default they go to a log file, named at the end)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from edgezoo import quiet

    if debug:
        _state["debug"] = True
    if verbose:
        quiet.set_verbose(True)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgezoo.commands.{name}").register(app)
    for info in app.registered_commands:
        if info.name in QUIET_COMMANDS:
            info.callback = _quieted(info.callback, info.name)


def _quieted(callback, name: str):
    """The command's function, run with other libraries' output sent to a log (after parsing, so that
    click's --help and usage errors still reach the terminal)."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        from edgezoo import quiet

        with quiet.third_party_to_log(name):
            return callback(*args, **kwargs)

    return run


_register_commands()


def report_error(e: EdgezooError) -> None:
    from rich.markup import escape  # messages quote user input and "pkg[extra]" hints: not markup

    err_console.print(f"[bold red]error:[/bold red] {escape(e.message)}", highlight=False, soft_wrap=True)
    if e.hint:
        err_console.print(f"  {escape(e.hint)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="edgezoo")
    except EdgezooError as e:
        if _state["debug"]:
            raise
        report_error(e)
        sys.exit(e.exit_code)

