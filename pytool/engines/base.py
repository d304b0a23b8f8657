"""What every engine shares: process lifetime, the serial pump and the run loop.

An engine turns a prepared run folder (disk image, firmware copies) into a
running emulator whose serial output arrives line by line.  The loop here feeds
those lines to the matcher, mirrors them to serial.log and to the console, and
ends the run when the matcher is satisfied, a forbidden pattern appears, the
guest ends the run or the deadline passes.  Every process an engine starts is
ended here: on success, on failure, on Ctrl-C and on a test timeout.
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..matcher import SerialMatcher

# Process groups still alive: the last line of defence (atexit) ends them.
_LIVE_GROUPS: set[int] = set()


def _kill_group(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """preexec_fn for every emulator: the kernel sends SIGKILL to it when the
    runner dies, even by SIGKILL or os._exit (where atexit never runs)."""
    def hook() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:      # the runner died before prctl took effect
            os._exit(1)
    return hook


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the runner.  A KeyboardInterrupt subclass, so
    asyncio propagates it out of any callback and cancels the run's tasks,
    whose `finally` stops the emulator (as it does for Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class stop_on_signals:
    """While a run is in progress in the main thread: SIGTERM and SIGHUP raise
    Terminated (SIGINT already raises KeyboardInterrupt).  Restores the
    previous handlers afterwards; a no-op outside the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.saved = {}
        import threading
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.SIGNALS:
            self.saved[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Terminated(signum)

    def __exit__(self, *exc):
        for sig, old in self.saved.items():
            signal.signal(sig, old)
        return False


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_LIVE_GROUPS):
        _kill_group(pid)
    _LIVE_GROUPS.clear()


class EngineError(Exception):
    """The engine could not run: a missing tool or file, or a launch failure.

    Carries what a user needs to act on it: the command line, the exit code
    and the tail of the engine's own output.
    """

    def __init__(self, message: str, command: list[str] | None = None,
                 exit_code: int | None = None, output: str = ""):
        self.command, self.exit_code, self.output = command, exit_code, output
        detail = message
        if exit_code is not None:
            detail += f" (exit code {exit_code})"
        if output.strip():
            detail += "\n" + "\n".join(output.strip().splitlines()[-15:])
        super().__init__(detail)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise EngineError(f"{name} not found on PATH: run `python3 -m pytool.hostsetup`")
    return path


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"{what} not found at {p}: run `python3 -m pytool.hostsetup`")
    return p


@dataclass
class EngineResult:
    end_reason: str = ""              # expectations-met, forbidden, guest-ended, deadline, ...
    exit_code: int | None = None      # the emulator process's exit code
    guest_exit: int | None = None     # a value the guest reported (isa-debug-exit)
    events: list[dict] = field(default_factory=list)
    stderr_tail: str = ""


class Engine:
    """One emulator run.  Subclasses provide the command and the serial source."""

    name = "engine"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.proc: asyncio.subprocess.Process | None = None
        self.result = EngineResult()
        self._lines: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._t0 = time.monotonic()
        self._seen = 0                  # serial lines received

    # -- for subclasses -----------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write generated configs into the run folder."""

    async def _after_spawn(self) -> None:
        """Attach side channels (QMP) once the process exists."""

    async def _serial_source(self) -> None:
        """Put serial lines on self._lines; return when the process has ended."""
        raise NotImplementedError

    async def _graceful_stop(self) -> None:
        """Ask the emulator to quit; stop() kills it if this does not work."""

    def _stdout(self):
        return asyncio.subprocess.DEVNULL

    def _decode_exit(self, code: int | None) -> None:
        self.result.exit_code = code

    def event(self, name: str, **data) -> None:
        self.result.events.append({"time": round(time.monotonic() - self._t0, 3),
                                   "event": name, **data})

    # -- lifetime ---------------------------------------------------------
    async def start(self) -> None:
        cmd = self.command()
        self.prepare()
        (self.run_dir / "command.txt").write_text(" ".join(_quote(c) for c in cmd) + "\n")
        self._stderr = open(self.run_dir / f"{self.name}.stderr", "wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=self._stdout(),
                stderr=self._stderr, cwd=self.run_dir, start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()))
        except OSError as exc:
            raise EngineError(f"cannot start {cmd[0]}: {exc.strerror}", cmd) from None
        _LIVE_GROUPS.add(self.proc.pid)
        self._t0 = time.monotonic()
        self.event("spawned", pid=self.proc.pid)
        await self._after_spawn()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.proc and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self._graceful_stop(), 3)
                await asyncio.wait_for(self.proc.wait(), 3)
            except (asyncio.TimeoutError, Exception):
                pass
        if self.proc:
            if self.proc.returncode is None:
                _kill_group(self.proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), 3)
                except asyncio.TimeoutError:
                    pass
            _kill_group(self.proc.pid)  # children that outlived the parent
            if self.proc.returncode is None:
                await self.proc.wait()
            _LIVE_GROUPS.discard(self.proc.pid)
            self._decode_exit(self.proc.returncode)
        if getattr(self, "_stderr", None):
            self._stderr.close()
            err = (self.run_dir / f"{self.name}.stderr").read_bytes()[-4000:]
            self.result.stderr_tail = err.decode(errors="replace")

    # -- the loop -----------------------------------------------------------
    async def run(self, matcher: SerialMatcher, serial_log: Path, live=None,
                  keep_running: bool = False) -> EngineResult:
        """Run until the matcher decides, the guest ends the run or the deadline."""
        with open(serial_log, "w", encoding="utf-8", errors="replace") as log:
            try:
                await self.start()
                self._tasks.append(asyncio.create_task(self._serial_source()))
                self.result.end_reason = await self._pump(matcher, log, live, keep_running)
            finally:
                await self.stop()
                # Lines the source read before it was stopped still count.
                while not self._lines.empty():
                    line = self._lines.get_nowait()
                    if line is not None:
                        self._emit(line, matcher, log, live)
        self.event("stopped", reason=self.result.end_reason)
        if self.result.end_reason == "guest-ended" and self._seen == 0 \
                and self.result.exit_code not in (0, None) and self.result.guest_exit is None:
            raise EngineError(f"{self.name} refused to start", self.command(),
                              self.result.exit_code, self._refusal_text())
        return self.result

    def _refusal_text(self) -> str:
        """What the emulator said when it quit without running the guest."""
        return self.result.stderr_tail

    def _emit(self, line: str, matcher: SerialMatcher, log, live) -> None:
        self._seen += 1
        log.write(line + "\n")
        log.flush()
        if live:
            live(line)
        matcher.feed(line)

    async def _pump(self, matcher, log, live, keep_running) -> str:
        while True:
            try:
                line = await asyncio.wait_for(self._lines.get(), 0.25)
            except asyncio.TimeoutError:
                if matcher.check_deadline():
                    self.event("deadline")
                    return "deadline"
                continue
            if line is None:                     # the source saw the process end
                self.event("process-exit", code=self.proc.returncode)
                return "guest-ended"
            self._emit(line, matcher, log, live)
            if matcher.failure:
                return "forbidden"
            if matcher.done and (matcher.expect or getattr(matcher, "implied", None)) \
                    and not keep_running:
                return "expectations-met"
            if matcher.check_deadline():
                return "deadline"

    async def _pump_stream(self, stream: asyncio.StreamReader) -> None:
        """Split a byte stream into lines (partial last line included)."""
        buf = b""
        while True:
            chunk = await stream.read(4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                await self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if buf:
            await self._lines.put(buf.decode("utf-8", errors="replace"))
        await self.proc.wait()
        await self._lines.put(None)


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)
