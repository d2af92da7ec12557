"""The commands' shared parser: getopt's rule for option values, errors as UsageError,
help that keeps the description's paragraphs."""
import argparse
import contextlib
import importlib
import io
import random

import pytest

from pyvisor.command_line import CommandParser, UsageError


def parser() -> CommandParser:
    p = CommandParser("pyvisor demo", "First paragraph,\n    wrapped.\n\n    Second one.")
    p.add_argument("path", nargs="?")
    p.add_argument("-m", "--mem", default="512M")
    p.add_argument("--disk", dest="disks", action="append", default=[])
    p.add_argument("--rng", action="store_true")
    return p


def test_an_option_value_may_start_with_a_dash():
    assert parser().parse(["--mem", "-5M", "k"]) == {"path": "k", "mem": "-5M", "disks": [],
                                                      "rng": False}
    assert parser().parse(["-m", "-1", "--disk", "--rng"])["disks"] == ["--rng"]
    assert parser().parse(["-m=2G"])["mem"] == "2G"


def test_double_dash_ends_the_options():
    assert parser().parse(["--rng", "--", "--mem"]) == {"path": "--mem", "mem": "512M",
                                                         "disks": [], "rng": True}


def test_repeated_options_do_not_share_a_list():
    assert parser().parse(["--disk", "a"])["disks"] == ["a"]
    assert parser().parse([])["disks"] == []


@pytest.mark.parametrize("argv, words", [
    (["--mem"], "argument -m/--mem: expected one argument"),
    (["--me", "1G"], "unrecognized arguments: --me"),     # no abbreviations
    (["a", "b"], "unrecognized arguments: b"),
])
def test_errors_are_raised_with_the_command(argv, words):
    with pytest.raises(UsageError) as error:
        parser().parse(argv)
    assert str(error.value) == words and error.value.prog == "pyvisor demo"


def test_help_keeps_paragraphs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: pyvisor demo [-h]")
    assert "\n\nFirst paragraph, wrapped.\n\nSecond one.\n\n" in out
    assert "-h, --help" in out and "Show this message and exit." in out


# The real commands' parsers against argparse itself, given the same add_argument calls
# and the same getopt rule (an option's value is the next word): the same values, the
# same first error, for every command line built from these words.
WORDS = ["k", "k2", "--mem", "1G", "-m", "-m2G", "-m=3G", "--mem=", "--", "-", "-5", "-1.5",
         "--rng", "--rng=1", "--disk", "a,ro", "--cpus", "x", "-c4", "--boot", "pvh", "bios",
         "--timeout", "inf", "--frob", "-v", "-vv", "-vV", "-v2", "-V", "-h", "-hv", "run",
         "check", "serve", "restore", "--api-sock", "s", "--seccomp", "on", "--me", "a b",
         "--device", "--force", "snap", "-mc", "--boot=pvh", "--cpus=", "---"]


def _argparse_twin(parser: CommandParser) -> argparse.ArgumentParser:
    twin = argparse.ArgumentParser(prog=parser.prog, add_help=False, allow_abbrev=False)
    for option in parser.options:
        twin.add_argument(*option.names, **option.kwargs)

    def error(message):
        raise UsageError(message)
    twin.error = error
    return twin


def _outcome(parse, argv: list[str]):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            return "values", parse(argv)
    except UsageError as e:
        return "error", str(e)
    except SystemExit as e:
        return "exit", e.code, out.getvalue()


def _parsers():
    from pyvisor import cli

    yield cli._top_parser()
    for name, (module_name, _) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        p = CommandParser(f"pyvisor {name}", getattr(module, name).__doc__)
        getattr(module, f"{name}_arguments")(p)
        yield p


def test_the_commands_parse_as_argparse_does():
    rng = random.Random(12)
    lines = [[]] + [[w] for w in WORDS] + [rng.choices(WORDS, k=rng.randint(2, 6))
                                            for _ in range(1500)]
    for p in _parsers():
        twin = _argparse_twin(p)
        for argv in lines:
            attached = p._values_attached(argv)
            if any(w.endswith("=--") for w in attached):
                continue   # argparse takes '--' out of an option's value: an empty list
            mine = _outcome(p.parse, argv)
            theirs = _outcome(lambda a: vars(twin.parse_args(attached)), argv)
            if mine[0] == "exit":    # --help: argparse formats it, in both
                assert theirs[0] == "exit" and theirs[1] == mine[1] == 0, (p.prog, argv)
            else:
                assert mine == theirs, (p.prog, argv)
