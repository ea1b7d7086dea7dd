"""simulations/cli_output.py: errors on stderr, printed literally, with an exit code."""

import pytest
import typer

from simulations.cli_output import EXIT_BAD_INPUT, EXIT_FAILED, fail, literal, print_error


def test_print_error_keeps_brackets_and_writes_only_to_stderr(capsys):
    print_error("[federation] rouns: unknown key, [bold]not bold[/bold]")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: [federation] rouns: unknown key, [bold]not bold[/bold]\n"


def test_fail_exits_with_the_code_given(capsys):
    with pytest.raises(typer.Exit) as raised:
        fail(ValueError("[data] path: no such file"))
    assert raised.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(typer.Exit) as raised:
        fail("cannot write", EXIT_FAILED, label="the run failed")
    assert raised.value.exit_code == EXIT_FAILED
    assert capsys.readouterr().err == (
        "error: [data] path: no such file\nthe run failed: cannot write\n"
    )


def test_literal_text_prints_verbatim(capsys):
    from rich.console import Console

    Console(soft_wrap=True).print(f"[bold]{literal('runs/[seed 1]')}[/]")
    assert capsys.readouterr().out == "runs/[seed 1]\n"
