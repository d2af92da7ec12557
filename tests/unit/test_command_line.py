"""The commands' shared parser: getopt's rule for option values, errors as UsageError,
help that keeps the description's paragraphs."""
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
