"""Where the command line prints: results on stdout, errors on stderr, user text kept literal.

Rich reads ``[...]`` in a printed string as markup and drops what it takes for a tag, so an
error such as ``[federation] rouns: unknown key`` lost its section name. Every command prints
through the helpers here: our own styling is markup, and anything that comes from the user or
from an error (messages, paths, scenario names) goes through :func:`literal` first.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Exit codes: 2 for bad input (the code click gives a usage error), 1 when the work failed.
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def literal(text: object) -> str:
    """Return ``text`` as a string that rich prints verbatim (its brackets escaped).

    Parameters
    ----------
    text : object
        Anything printable: a message, a path, an exception.

    Returns
    -------
    str
        ``str(text)`` with every ``[`` that could open a rich tag escaped.
    """
    return escape(str(text))


def stdout_console(*, soft_wrap: bool = False) -> Console:
    """Return the console for normal output (stdout).

    Parameters
    ----------
    soft_wrap : bool
        Keep long lines (paths) on one line whatever the terminal width.

    Returns
    -------
    rich.console.Console
        A console on stdout; 120 columns wide when stdout is not a terminal, because piped
        into a log or a file rich assumes 80 and elides the figures of wide tables.
    """
    console = Console(soft_wrap=soft_wrap)
    if not console.is_terminal:
        console = Console(width=120, soft_wrap=soft_wrap)
    return console


def stderr_console() -> Console:
    """Return the console for errors and warnings (stderr, lines never wrapped).

    Returns
    -------
    rich.console.Console
        A console on stderr with ``soft_wrap`` on, so a message stays copyable.
    """
    return Console(stderr=True, soft_wrap=True)


def print_error(message: object, *, label: str = "error", style: str = "red") -> None:
    """Print ``label: message`` on stderr, the message literal (never read as markup).

    Parameters
    ----------
    message : object
        The message (an exception or a string); printed exactly as ``str(message)``.
    label : str
        The word before the colon (``error``, ``the run failed``, ``interrupted``).
    style : str
        The rich style of the label.
    """
    stderr_console().print(f"[{style}]{label}:[/] {literal(message)}")


def fail(message: object, exit_code: int = EXIT_BAD_INPUT, *, label: str = "error") -> NoReturn:
    """Print ``label: message`` on stderr and exit with ``exit_code``.

    Parameters
    ----------
    message : object
        The message (an exception or a string); printed exactly as ``str(message)``.
    exit_code : int
        :data:`EXIT_BAD_INPUT` (the default) for bad input, :data:`EXIT_FAILED` for work that
        failed.
    label : str
        The word before the colon.

    Raises
    ------
    typer.Exit
        Always, with ``exit_code``.
    """
    print_error(message, label=label)
    raise typer.Exit(exit_code)
