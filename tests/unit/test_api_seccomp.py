"""The API variant of the seccomp filter (`pyvisor serve`'s, from InstanceStart on): the
files the API names may be opened, linked, renamed and removed; exec, fork, mkdir, an open
that would truncate without writing and the rest still fail with EPERM. In a child process,
since a filter cannot be taken off."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import errno, json, os, sys
    from pyvisor.sandbox import seccomp

    scratch = sys.argv[1]
    assert seccomp.install(file_writes=True)

    calls = {
        "open_create": lambda: open(scratch, "w").close(),
        "open_rdwr": lambda: os.close(os.open(scratch, os.O_RDWR)),
        "truncate_readonly": lambda: os.close(os.open(scratch, os.O_RDONLY | os.O_TRUNC)),
        "link": lambda: os.link(scratch, scratch + ".mem"),
        "rename": lambda: os.replace(scratch + ".mem", scratch + ".m2"),
        "unlink": lambda: os.unlink(scratch + ".m2"),
        "execv": lambda: os.execv("/bin/true", ["true"]),
        "fork": lambda: os.fork() == 0 and os._exit(0),
        "mkdir": lambda: os.mkdir(scratch + ".d"),
        "symlink": lambda: os.symlink(scratch, scratch + ".l"),
        "chmod": lambda: os.chmod(scratch, 0o777),
        "kill_parent": lambda: os.kill(os.getppid(), 0),
    }
    report = {}
    for name, call in calls.items():     # in order: each call needs the one before
        try:
            call()
            report[name] = "allowed"
        except OSError as e:
            report[name] = errno.errorcode[e.errno]
    print(json.dumps(report))
""")


def test_api_filter_allows_the_files_and_nothing_else(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "snap")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == {"open_create": "allowed", "open_rdwr": "allowed",
                      "truncate_readonly": "EPERM", "link": "allowed",
                      "rename": "allowed", "unlink": "allowed", "execv": "EPERM",
                      "fork": "EPERM", "mkdir": "EPERM", "symlink": "EPERM",
                      "chmod": "EPERM", "kill_parent": "EPERM"}
