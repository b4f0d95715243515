"""kvae._progress without a terminal: progress lines on standard error for steps longer than
a minute, at every further 10% or every minute; tested with a fake clock (no waiting)."""

import io

from kvae._progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _run(total, seconds_per_unit, verbose="auto"):
    """Advance one unit at a time, each taking ``seconds_per_unit``; the lines written.
    Under pytest standard output is not a terminal, so "auto" means lines."""
    clock, out = FakeClock(), io.StringIO()
    with Progress(total, verbose, title="log p(x)", stream=out, clock=clock) as progress:
        for _ in range(total):
            clock.now += seconds_per_unit
            progress.advance()
    return out.getvalue().splitlines()


def test_a_step_under_a_minute_prints_nothing():
    assert _run(100, 0.59) == []  # 59 s in all


def test_a_long_step_reports_every_tenth_after_the_first_minute():
    lines = _run(100, 6.0)  # 10 minutes; 60 s is reached at unit 10
    assert all(line.startswith("kvae: log p(x): ") for line in lines)
    # the first line at 60 s, then one per further 10% (units 20, 30, ..., 100)
    assert [line.split(": ")[2].split(" ")[0] for line in lines] == [
        f"{k}/100" for k in range(10, 101, 10)
    ]
    assert lines[0] == "kvae: log p(x): 10/100 steps (10%), 1m00s so far, about 9m00s left"
    assert lines[-1] == "kvae: log p(x): 100/100 steps (100%), 10m00s so far, done"


def test_a_stalled_step_reports_every_minute_between_tenths():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(1000, "auto", stream=out, clock=clock)
    for _ in range(300):  # 0.5 s per unit: the first line at 60 s (unit 120), then 20%, 30%
        clock.now += 0.5
        progress.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["120/1000", "200/1000", "300/1000"]
    assert lines[0] == "kvae: 120/1000 steps (12%), 1m00s so far, about 7m20s left"
    clock.now += 61  # a slow unit: no new tenth, but a minute since the last line
    progress.advance()
    assert out.getvalue().splitlines()[-1].startswith("kvae: 301/1000 steps (30%), 3m31s")
    clock.now += 30  # half a minute more, still in the same tenth: nothing
    progress.advance()
    assert len(out.getvalue().splitlines()) == 4


def test_no_lines_unless_auto():
    assert _run(100, 6.0, verbose=0) == []
