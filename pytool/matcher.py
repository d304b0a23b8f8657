"""Streaming serial-log assertions.

One matcher serves run_qemu.py, pytest and CI.  It is fed the serial output
line by line as it arrives and decides, at each line, whether the run has
succeeded (every expected pattern matched), failed (a forbidden pattern
appeared) or must go on.  The deadline is checked by the caller through
`check_deadline`, so the matcher itself never blocks.

Patterns are Python regular expressions searched (not anchored) in each line
after ANSI escape sequences and carriage returns are removed: OVMF's serial
console interleaves terminal control codes with our text.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>78c]")


def clean_line(line: str) -> str:
    """Serial text as a human would read it: no escapes, no CR, no NULs."""
    return _ANSI.sub("", line).replace("\r", "").replace("\x00", "")


@dataclass
class Assertion:
    kind: str                   # "expect" or "forbid"
    pattern: str
    count: int = 1              # expect: how many lines must match
    seen: int = 0
    matched_at: float | None = None   # seconds since start, when satisfied/hit
    line: str | None = None           # the (last) line that matched
    _re: re.Pattern = field(init=False, repr=False)

    def __post_init__(self):
        self._re = re.compile(self.pattern)

    def search(self, line: str) -> bool:
        return self._re.search(line) is not None

    @property
    def satisfied(self) -> bool:
        return self.seen >= self.count

    @property
    def ok(self) -> bool:
        return self.satisfied if self.kind == "expect" else self.seen == 0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "count": self.count,
                "seen": self.seen, "ok": self.ok,
                "time": None if self.matched_at is None else round(self.matched_at, 3),
                "line": self.line}


def _norm(p) -> tuple[str, int]:
    if isinstance(p, dict):
        return p["re"], p.get("count", 1)
    return p, 1


class SerialMatcher:
    def __init__(self, expect=(), forbid=(), ordered: bool = True,
                 timeout: float | None = None, clock=time.monotonic):
        self.expect = [Assertion("expect", *_norm(p)) for p in expect]
        self.forbid = [Assertion("forbid", *_norm(p)) for p in forbid]
        self.ordered = ordered
        self.clock = clock
        self.start = clock()
        self.deadline = None if timeout is None else self.start + timeout
        self.failure: str | None = None
        self.lines = 0

    # -- state ---------------------------------------------------------
    @property
    def done(self) -> bool:
        """Every expected pattern has matched (and nothing failed)."""
        return self.failure is None and all(a.satisfied for a in self.expect)

    @property
    def finished(self) -> bool:
        return self.failure is not None or (bool(self.expect) and self.done)

    @property
    def passed(self) -> bool:
        return self.failure is None and all(a.ok for a in self.expect + self.forbid)

    def elapsed(self) -> float:
        return self.clock() - self.start

    # -- input ---------------------------------------------------------
    def feed(self, raw_line: str) -> None:
        line = clean_line(raw_line)
        self.lines += 1
        now = self.elapsed()
        for a in self.forbid:
            if a.search(line):
                a.seen += 1
                if a.matched_at is None:
                    a.matched_at, a.line = now, line
                if self.failure is None:
                    self.failure = f"forbidden pattern {a.pattern!r} matched: {line.strip()}"
        pending = [a for a in self.expect if not a.satisfied]
        if self.ordered:
            pending = pending[:1]
        for a in pending:
            if a.search(line):
                a.seen += 1
                a.line = line
                if a.satisfied:
                    a.matched_at = now

    def check_deadline(self) -> bool:
        """Mark the run failed when the deadline has passed; True if so."""
        if self.deadline is not None and self.clock() >= self.deadline and not self.finished:
            self.failure = f"deadline of {self.deadline - self.start:.0f}s passed"
            return True
        return False

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    def unmet(self) -> list[Assertion]:
        return [a for a in self.expect if not a.satisfied]

    def results(self) -> list[dict]:
        return [a.as_dict() for a in self.expect + self.forbid]
