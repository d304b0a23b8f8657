"""QEMU engine: q35 + OVMF, serial on stdio, QMP through qemu.qmp.

We are the QMP *server*: qemu.qmp's QMPClient listens on a UNIX socket in the
run folder and QEMU connects to it with `-chardev socket`.  That way no race
exists between QEMU creating a socket and us connecting to it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import QMPClient

from .base import Engine, EngineError, require_file, require_tool

# QMP's own logger is chatty at INFO on disconnects; our events.json says it all.
# A QEMU that dies during the handshake is reported by us (EngineError).
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

QEMU = "qemu-system-x86_64"
DEBUG_EXIT_PORT = 0xF4


@dataclass
class QemuSetup:
    cpu: str
    accel: str                  # "tcg" or "kvm"
    smp: int
    memory: int
    code: Path                  # OVMF code (read-only)
    vars: Path                  # the run's own copy of the variable store
    disk: Path
    machine: str = "q35"
    usb_stick: bool = False     # the disk is a USB stick (usb-storage on qemu-xhci)
    internal_disks: tuple = ()  # more disks, on the AHCI ports after it (no bootindex)
    secure_boot: bool = False   # SMM and a secure flash: the secboot OVMF needs both
    s3: bool = False            # offer S3 (ICH9 \_S3) and wake after each suspend


def qemu_command(s: QemuSetup, qmp_socket: Path, binary: str = QEMU) -> list[str]:
    """The QEMU command line, one argument group per line with its reason."""
    return [
        binary,
        "-machine", s.machine + (",smm=on" if s.secure_boot else ""),  # PCIe chipset OVMF targets
        *secure_boot_args(s),
        *(["-global", "ICH9-LPC.disable_s3=0"] if s.s3 else []),   # DSDT gets \_S3
        "-accel", s.accel,
        "-cpu", s.cpu,
        "-smp", str(s.smp),
        "-m", str(s.memory),
        "-nodefaults", "-no-user-config",    # only the devices listed here
        "-display", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={s.code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={s.vars}",   # per-run copy
        "-drive", f"if=none,id=esp,format=raw,file={s.disk}",
        *boot_disk_args(s),
        "-chardev", "stdio,id=com1,signal=off",                   # COM1 -> our pipe
        "-serial", "chardev:com1",
        "-chardev", f"socket,id=qmp,path={qmp_socket}",           # we listen, QEMU dials
        "-mon", "chardev=qmp,mode=control",
        # The guest can end the run with a status: value v exits QEMU with 2v+1.
        "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04",
    ]


def secure_boot_args(s: QemuSetup) -> list[str]:
    if not s.secure_boot:
        return []
    # Only SMM code may write the flash: the variable store cannot be forged
    # from the OS (OVMF's secboot build refuses to run without this).
    return ["-global", "driver=cfi.pflash01,property=secure,value=on"]


def boot_disk_args(s: QemuSetup) -> list[str]:
    """The boot disk (IDE port 0 or a USB stick) and the internal disks."""
    if s.usb_stick:
        # A USB 3 stick, booted first (bootindex=0): the removable-media path.
        args = ["-device", "qemu-xhci,id=xhci",
                "-device", "usb-storage,bus=xhci.0,drive=esp,bootindex=0"]
    else:
        args = ["-device", "ide-hd,drive=esp,bus=ide.0,bootindex=1"]  # ICH9 AHCI port 0
    for i, disk in enumerate(s.internal_disks):
        args += ["-drive", f"if=none,id=internal{i},format=raw,file={disk}",
                 "-device", f"ide-hd,drive=internal{i},bus=ide.{i + 1},bootindex={i + 1}"]
    return args


class QemuEngine(Engine):
    name = "qemu"

    def __init__(self, run_dir: Path, setup: QemuSetup):
        super().__init__(run_dir)
        self.setup = setup
        self.qmp_socket = self.run_dir / "qmp.sock"
        self.qmp = QMPClient(f"hv-{run_dir.name}")

    def command(self) -> list[str]:
        binary = require_tool(QEMU)
        require_file(self.setup.code, "OVMF firmware")
        return qemu_command(self.setup, self.qmp_socket, binary)

    def _stdout(self):
        return asyncio.subprocess.PIPE

    async def start(self) -> None:
        if self.qmp_socket.exists():
            self.qmp_socket.unlink()
        await self.qmp.start_server(str(self.qmp_socket))
        await super().start()

    async def _after_spawn(self) -> None:
        accept = asyncio.create_task(self.qmp.accept())
        died = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({accept, died}, timeout=15,
                                     return_when=asyncio.FIRST_COMPLETED)
        failed = accept not in done or accept.exception() is not None
        died.cancel()
        status = None
        if not failed:
            try:
                status = await self.qmp.execute("query-status")
            except Exception:       # QEMU quit during the handshake
                failed = True
        if failed:
            # A QEMU that died mid-handshake ends accept() with EOF on its own:
            # let it, as cancelling it there makes qemu.qmp log a traceback.
            await asyncio.wait({accept}, timeout=5)
            if accept.done() and not accept.cancelled():
                accept.exception()              # retrieved: we report it below
            accept.cancel()
            try:                # its exit code and last words (a loaded host is slow)
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                pass
            err = (self.run_dir / "qemu.stderr").read_text(errors="replace")
            raise EngineError("QEMU refused to start", self.command(),
                              self.proc.returncode, err)
        self._tasks.append(asyncio.create_task(self._watch_events()))
        self.event("query-status", status=status.get("status"))

    async def _watch_events(self) -> None:
        """Record every QMP event; SHUTDOWN, RESET and GUEST_PANICKED matter most.
        With S3 offered, a SUSPEND is answered by system_wakeup a second later
        (the power button of a sleeping laptop)."""
        try:
            async for ev in self.qmp.events:
                self.event("qmp:" + ev["event"], data=ev.get("data", {}))
                if ev["event"] == "SUSPEND" and self.setup.s3:
                    self._tasks.append(asyncio.create_task(self._wake()))
        except asyncio.CancelledError:
            pass

    async def _wake(self) -> None:
        await asyncio.sleep(1)
        try:
            await self.qmp.execute("system_wakeup")
            self.event("system_wakeup")
        except Exception as exc:     # QEMU gone meanwhile: the run ends anyway
            self.event("system_wakeup-failed", error=str(exc))

    async def _serial_source(self) -> None:
        await self._pump_stream(self.proc.stdout)

    async def _graceful_stop(self) -> None:
        try:
            await self.qmp.execute("quit")
        except Exception:       # already gone, or QMP never connected
            pass

    async def stop(self) -> None:
        await super().stop()
        try:
            await self.qmp.disconnect()
        except Exception:
            pass
        if self.qmp_socket.exists():
            self.qmp_socket.unlink()

    def _decode_exit(self, code) -> None:
        super()._decode_exit(code)
        # isa-debug-exit: guest value v -> exit code 2v+1 (QEMU's own exits are 0/1).
        if code is not None and code > 1 and code % 2 == 1:
            self.result.guest_exit = code >> 1
