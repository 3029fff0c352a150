"""Every expected failure of the ``kindling`` CLI is one line on stderr, the right exit code, no traceback.

The rows are the table of docs/RELIABILITY.md: each row's message must stand in that
document (so the two cannot drift) and each row is run through the CLI in a subprocess
with a hard time limit (a hang fails the test instead of stalling CI).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RELIABILITY.md"
CAT = "coco_cat.jpg"

#: (name, arguments with {dir} for the scratch folder and {cat} for a real picture, exit code, message part)
ROWS = [
    ("missing file", ["classify", "{dir}/nosuch.jpg"], 2, "nosuch.jpg: does not exist"),
    ("zero-byte file", ["classify", "{dir}/empty.jpg"], 2, "empty file (0 bytes), not a picture"),
    ("not a picture", ["classify", "{dir}/text.jpg"], 2, "not a picture (Pillow cannot identify the file's format)"),
    ("truncated JPEG", ["classify", "{dir}/trunc.jpg"], 2, "trunc.jpg: damaged or truncated picture"),
    ("directory", ["classify", "{dir}/adir"], 2, "adir: is a directory, not a picture"),
    ("--top 0", ["classify", "{cat}", "--top", "0"], 2, "argument --top: 0 must be between 1 and 1000"),
    ("port that cannot be opened", ["classify", "{cat}", "--backend", "serial", "--port", "/nonexistent/tty"], 1,
     "/nonexistent/tty: cannot open the serial port"),
    ("unknown simulated board", ["classify", "{cat}", "--backend", "serial", "--port", "sim:bogus"], 2,
     "--port sim:bogus: no simulated board 'bogus'"),
    ("silent board (pty)", ["classify", "{cat}", "--backend", "serial", "--port", "{pty}", "--timeout", "0.5"], 1,
     "no valid answer to INFO"),
    ("babbling port (pty)", ["classify", "{cat}", "--backend", "serial", "--port", "{pty_babble}", "--timeout", "0.5"],
     1, "no valid answer to INFO"),
]


def _scratch(tmp: Path, shared: Path) -> None:
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "text.jpg").write_text("hello\n")
    (tmp / "trunc.jpg").write_bytes((shared / "images" / CAT).read_bytes()[:2000])
    (tmp / "adir").mkdir()


class _Pty:
    """A pseudo-terminal whose far end is silent, or sends garbage until closed."""

    def __init__(self, babble: bool):
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(babble,), daemon=True)
        self._thread.start()

    def _run(self, babble: bool) -> None:
        junk = bytes(range(256)) * 4
        while not self._stop.is_set():
            if babble:
                with contextlib.suppress(OSError):
                    os.write(self.master, junk)
            self._stop.wait(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.parametrize(("name", "args", "code", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_cli_error_is_one_line(tmp_path, shared, name, args, code, message):
    assert message in DOC.read_text(), f"docs/RELIABILITY.md lacks the row {name!r} ({message!r})"
    _scratch(tmp_path, shared)
    ptys = {"{pty}": _Pty(babble=False), "{pty_babble}": _Pty(babble=True)}
    try:
        argv = []
        for a in args:
            a = a.replace("{dir}", str(tmp_path)).replace("{cat}", str(shared / "images" / CAT))
            argv.append(ptys[a].path if a in ptys else a)
        env = dict(os.environ, PYTHONPATH=str(REPO), KINDLING_SHARED=str(shared))
        proc = subprocess.run([sys.executable, "-m", "sw.cli", *argv], capture_output=True, text=True,
                              env=env, timeout=240, cwd=tmp_path)
    finally:
        for p in ptys.values():
            p.close()
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(err) == 1, f"{name}: expected one line on stderr, got {len(err)}:\n{proc.stderr}"
    assert proc.returncode == code, f"{name}: exit {proc.returncode}, expected {code}: {proc.stderr}"
    assert message in err[0], f"{name}: {err[0]!r} lacks {message!r}"
