"""Rate-limited logging (pyvisor/devices/ratelimit.py): a guest that triggers the same error
in a loop gets a few lines per interval, then one line saying how many were left out."""
import logging

from pyvisor.devices.ratelimit import RateLimitedLog


def test_burst_then_silence_then_a_count(caplog):
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("test.ratelimit"), burst=3, interval=5.0,
                        clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.ratelimit"):
        for i in range(100):
            rl.warning("bad chain %d", i)
        assert [r.getMessage() for r in caplog.records] == [
            "bad chain 0", "bad chain 1", "bad chain 2"]
        assert rl.suppressed == 97
        now[0] = 4.9
        rl.error("still quiet")
        assert len(caplog.records) == 3
        now[0] = 5.0
        rl.error("again")
        assert caplog.records[-1].getMessage() == "again (98 similar messages suppressed)"
        assert caplog.records[-1].levelno == logging.ERROR
        assert rl.suppressed == 0
