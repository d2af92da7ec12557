"""Run inside the nested host: type into a program's terminal as a user would.

    python console_session.py STEPS_JSON TIMEOUT -- COMMAND...

STEPS_JSON is a list of [expect, send] pairs: wait until `expect` appears in the output,
then type `send` ("\\u0001x" is Ctrl-A x). After the last step the command's exit is
awaited. Prints the whole transcript, then "session-status=N"; exits 1 with
"session-failed: ..." when an expected text does not appear in time.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for pty_session

from pty_session import PtySession  # noqa: E402


def drain_until_exit(session: PtySession, timeout: float) -> int:
    """Keep reading (so the program never blocks on a full pty) until it exits."""
    deadline = time.monotonic() + timeout
    while session.proc.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(session.proc.args, timeout)
        if select.select([session.master], [], [], min(left, 0.5))[0]:
            try:
                session.transcript += os.read(session.master, 4096)
            except OSError:
                pass
    return session.proc.wait()


def main() -> int:
    steps, timeout, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: console_session.py STEPS_JSON TIMEOUT -- COMMAND..."
    session = PtySession(argv)
    try:
        for expect, send in json.loads(steps):
            session.expect(expect.encode(), float(timeout))
            session.type(send.encode())
        status = drain_until_exit(session, float(timeout))
    except (AssertionError, subprocess.TimeoutExpired, OSError) as exc:
        sys.stdout.write(session.transcript.decode(errors="replace"))
        print(f"\nsession-failed: {str(exc)[:300]}")
        return 1
    finally:
        session.close()
    sys.stdout.write(session.transcript.decode(errors="replace"))
    print(f"\nsession-status={status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
