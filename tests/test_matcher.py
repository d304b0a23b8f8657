"""The streaming serial matcher shared by run_qemu.py, pytest and CI."""
from pytool.matcher import SerialMatcher, clean_line


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_ordered_needs_order():
    m = SerialMatcher(["B", "A"], ordered=True, clock=Clock())
    m.feed("A")
    m.feed("B")
    assert not m.done
    m.feed("A")
    assert m.done and m.passed and m.finished


def test_unordered_accepts_any_order():
    m = SerialMatcher(["B", "A"], ordered=False, clock=Clock())
    m.feed("A")
    m.feed("B")
    assert m.done


def test_counts():
    m = SerialMatcher([{"re": r"cpu=\d+ vmx=on", "count": 2}], clock=Clock())
    m.feed("HV: cpu=0 vmx=on")
    assert not m.done
    m.feed("HV: cpu=1 vmx=on")
    assert m.done
    assert m.results()[0]["seen"] == 2


def test_forbidden_fails_at_once_with_the_line():
    clk = Clock()
    m = SerialMatcher(["never"], forbid=["HV: panic"], clock=clk)
    clk.t = 1.5
    m.feed("HV: panic triple-fault")
    assert m.finished and not m.passed
    assert "HV: panic triple-fault" in m.failure
    forbid = [r for r in m.results() if r["kind"] == "forbid"][0]
    assert forbid["time"] == 1.5 and not forbid["ok"]


def test_deadline():
    clk = Clock()
    m = SerialMatcher(["x"], timeout=10, clock=clk)
    clk.t = 9.9
    assert not m.check_deadline()
    clk.t = 10.0
    assert m.check_deadline()
    assert "deadline" in m.failure and not m.passed


def test_deadline_does_not_override_success():
    clk = Clock()
    m = SerialMatcher(["x"], timeout=1, clock=clk)
    m.feed("x")
    clk.t = 5
    assert not m.check_deadline() and m.passed


def test_match_time_is_recorded():
    clk = Clock()
    m = SerialMatcher(["a"], clock=clk)
    clk.t = 3.25
    m.feed("xx a xx")
    assert m.results()[0]["time"] == 3.25


def test_ansi_and_cr_are_removed():
    assert clean_line("\x1b[0m\x1b[2JHV: caps\r") == "HV: caps"
    m = SerialMatcher([r"^HV: caps$"], clock=Clock())
    m.feed("\x1b[1;1HHV: caps\r")
    assert m.done


def test_no_expectations_is_not_done():
    m = SerialMatcher([], clock=Clock())
    m.feed("anything")
    assert m.passed and not m.finished
