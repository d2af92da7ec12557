"""pyvisor's loggers (pyvisor/log.py): logging stays unloaded until a record is emitted, the
records that are emitted look as logging itself would make them, and once logging is loaded
it decides. The first checks run in a fresh interpreter: this one (pytest) has logging."""
from __future__ import annotations

import logging
import subprocess
import sys

from helpers import ROOT
from pyvisor.log import DEBUG, ERROR, INFO, WARNING, get_logger


def run(code: str) -> tuple[str, str]:
    """(stdout, stderr) of code in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", "import sys\n"
                             "from pyvisor.log import get_logger, to_stderr\n" + code],
                            capture_output=True, text=True, cwd=ROOT, check=True, timeout=60)
    return result.stdout, result.stderr


LOADED = "print('logging' in sys.modules)\n"


def test_levels_are_loggings():
    assert (DEBUG, INFO, WARNING, ERROR) == (10, 20, 30, 40)   # the logging documentation's


def test_records_below_warning_load_nothing_and_go_nowhere():
    out, err = run("log = get_logger('pyvisor.t')\n"
                   "log.debug('d'); log.info('i %d', 1)\n"
                   "print(log.isEnabledFor(20), log.isEnabledFor(30))\n" + LOADED)
    assert out.split() == ["False", "True", "False"]
    assert err == ""


def test_a_warning_goes_to_stderr_as_unconfigured_logging_sends_it():
    out, err = run("get_logger('pyvisor.t').warning('disk %s is slow', 'vda')\n" + LOADED)
    assert out.split() == ["True"]
    assert err == "disk vda is slow\n"


def test_to_stderr_at_warning_waits_for_the_first_record():
    out, err = run("to_stderr(30, 'pyvisor: %(name)s: %(message)s')\n" + LOADED +
                   "log = get_logger('pyvisor.t')\n"
                   "log.info('not shown')\n" + LOADED +
                   "log.error('bad %d', 7)\n" + LOADED)
    assert out.split() == ["False", "False", "True"]
    assert err == "pyvisor: pyvisor.t: bad 7\n"


def test_to_stderr_below_warning_configures_logging_at_once():
    out, err = run("to_stderr(10, '%(levelname)s %(name)s: %(message)s')\n" + LOADED +
                   "import logging\n"
                   "logging.getLogger('other').debug('direct')\n"
                   "get_logger('pyvisor.t').debug('through pyvisor')\n")
    assert out.split() == ["True"]
    assert err == "DEBUG other: direct\nDEBUG pyvisor.t: through pyvisor\n"


def test_with_logging_loaded_it_decides_and_names_the_caller(caplog):
    log = get_logger("pyvisor.test_log")
    with caplog.at_level(logging.DEBUG, "pyvisor.test_log"):
        log.debug("step %d", 1)
        assert log.isEnabledFor(DEBUG)
    with caplog.at_level(logging.ERROR, "pyvisor.test_log"):
        log.warning("dropped")
        assert not log.isEnabledFor(WARNING)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (DEBUG, "step 1"), (ERROR, "failed")]
    assert {r.funcName for r in caplog.records} == {
        "test_with_logging_loaded_it_decides_and_names_the_caller"}
    assert caplog.records[1].exc_info[0] is ValueError
