"""The spike script's pure parts: the request-rate timeline and the time to a share of capacity."""

from __future__ import annotations

import pytest

from benchmarks.spike import BIN_S, WINDOW_S, main, rate_timeline, time_to_fraction


def test_rate_timeline_counts_answers_in_the_trailing_window():
    start = 100.0
    # 10 answers/s for 2 s, then 40/s for 2 s
    times = [start + i / 10 for i in range(20)] + [start + 2 + i / 40 for i in range(80)]
    timeline = rate_timeline(times, start, start + 4)
    assert timeline[0][0] == pytest.approx(WINDOW_S)
    assert all(b[0] - a[0] == pytest.approx(BIN_S) for a, b in zip(timeline, timeline[1:], strict=False))
    rates = dict(timeline)
    assert rates[1.5] == pytest.approx(10, abs=2.5)
    assert rates[3.5] == pytest.approx(40, abs=2.5)


def test_time_to_fraction_is_the_first_lasting_level_at_the_share():
    ramp = [(0.5, 5.0), (0.6, 20.0), (0.7, 60.0), (0.8, 10.0), (0.9, 10.0)]  # one lucky window at 0.7
    steady = [(round(1.0 + i / 10, 1), 30.0 if i == 5 else 48.0) for i in range(30)]  # one dip at 1.5
    timeline = ramp + steady
    assert time_to_fraction(timeline, 50.0, sustain_s=1.0) == 1.0  # 48 >= 0.9 x 50, and it lasts
    assert time_to_fraction(timeline, 50.0, fraction=1.0, sustain_s=1.0) is None
    assert time_to_fraction(timeline, 100.0) is None


def test_bad_arguments_are_cli_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--users", "0"])
    assert exc.value.code == 2 and "--users" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bert-base", "/"])
    assert "not a model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--switching-only", "--bert-base", ""])
    assert "--switching-only needs" in capsys.readouterr().err
