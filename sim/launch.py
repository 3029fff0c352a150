"""Starting a simulator: a built design's cocotb module in Verilator, in a background thread, on a Unix socket.

:class:`SimulatorRun` is the start-up and shut-down that every host-side
simulator shares (:class:`sim.verilator_backend.VerilatorBackend`, the engine;
:class:`sim.link_sim.LinkSimulation`, a board top behind its UART): a
temporary directory, the socket the simulator connects to, the cocotb runner
in a thread (its log in a file unless verbose), the connection accepted
within a deadline, the simulator's first message, and on :meth:`~SimulatorRun.stop`
the thread joined (the process killed if it hangs) and the files removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sw.transport import TransportError

from .wire import ENV_META, ENV_SOCKET, recv_msg

__all__ = ["SimulatorRun"]


class SimulatorRun:
    """The cocotb module ``test_module`` simulating ``build``, connected to this process.

    Parameters
    ----------
    build : sim.build.Build
        The Verilator model (:func:`sim.build.build`).
    test_module : str
        The cocotb module that serves the socket (``sim.server``, ``sim.link_server``).
    name : str
        Names the thread (``kindling-<name>``) and the temporary directory.
    verbose : bool
        The simulator's log on stdout rather than in :attr:`log_path`.
    start_timeout : float
        Seconds for the simulator to connect.

    Attributes
    ----------
    sock : socket.socket
        The connection.
    hello : (dict, bytearray)
        The simulator's first message.
    pid : int or None
        The simulator's process id, for the owner to set from :attr:`hello` (killed if it hangs at :meth:`stop`).
    log_path, waves_path : Path or None
    error : BaseException or None
        What ended the runner thread, if anything.

    Raises
    ------
    TransportError
        If the simulator exits before connecting or does not connect within
        ``start_timeout`` (the message has its log's tail); everything
        started is stopped first.
    """

    def __init__(self, build, test_module: str, *, name: str, verbose: bool = False, start_timeout: float = 120.0):
        from .build import verilator_runner

        self.build = build
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.pid: int | None = None
        self._stopped = False
        self.tmp = Path(tempfile.mkdtemp(prefix=f"kindling-{name}-"))
        test_dir = self.tmp
        if build.waves:
            test_dir = build.directory / f"run-{os.getpid()}-{time.strftime('%H%M%S')}-{id(self):x}"
            test_dir.mkdir(parents=True, exist_ok=True)
        trace_file = build.metadata.get("trace_file")
        #: The waveform of this run (FST, or VCD without lz4) when built with waves, else None.
        self.waves_path = test_dir / trace_file if build.waves and trace_file else None
        #: The simulator's log (None when verbose: it goes to stdout).
        self.log_path = None if verbose else self.tmp / "sim.log"
        sock_path = str(self.tmp / "sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sock_path)
        listener.listen(1)
        listener.settimeout(0.5)
        runner = verilator_runner(build.metadata.get("public_all", False))
        if not verbose:
            runner.log.setLevel(logging.WARNING)
        env = {ENV_SOCKET: sock_path, ENV_META: str(build.directory / "kindling_build.json"),
               "COCOTB_LOG_LEVEL": "INFO" if verbose else "WARNING"}

        def run_sim():
            try:
                runner.test(test_module=test_module, hdl_toplevel=build.toplevel, hdl_toplevel_lang="verilog",
                            build_dir=build.directory, test_dir=test_dir, extra_env=env, log_file=self.log_path,
                            results_xml=str(self.tmp / "results.xml"), waves=build.waves)
            except BaseException as exc:  # SystemExit from the runner included
                self.error = exc

        self.thread = threading.Thread(target=run_sim, name=f"kindling-{name}", daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        try:
            self.sock = self._accept(listener, start_timeout)
            hello = recv_msg(self.sock)
            if hello is None:
                self.thread.join(timeout=10)
                raise TransportError(f"the simulator closed the connection ({self.error!r}){self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        self.hello = hello
        self.start_seconds = time.monotonic() - t0

    def _accept(self, listener: socket.socket, start_timeout: float) -> socket.socket:
        t0 = time.monotonic()
        try:
            while True:
                try:
                    return listener.accept()[0]
                except TimeoutError:
                    if not self.thread.is_alive():
                        raise TransportError(f"the simulator exited before connecting "
                                             f"({self.error!r}){self.log_tail()}") from None
                    if time.monotonic() - t0 > start_timeout:
                        raise TransportError(f"the simulator did not connect within {start_timeout} s"
                                             f"{self.log_tail()}") from None
        finally:
            listener.close()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the simulator's log, to append to an error message ("" when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- simulator log (tail) ---\n" + "\n".join(tail)

    def stop(self, goodbye: Callable[[], None] | None = None) -> None:
        """Say ``goodbye()`` (errors ignored), close the socket, end the thread (killing a hung simulator).

        Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        if self.sock is not None:
            if goodbye is not None:
                with contextlib.suppress(OSError, TransportError):
                    goodbye()
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=30)
            if self.thread.is_alive() and self.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                self.thread.join(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
