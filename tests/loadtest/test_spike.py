"""The spike script's pure parts: the request-rate timeline and the time to a share of capacity."""

from __future__ import annotations

import pytest

from loadtest.spike import BIN_S, WINDOW_S, main, rate_timeline, time_to_fraction


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


def test_time_to_fraction_is_the_first_window_at_the_share():
    timeline = [(0.5, 5.0), (0.6, 20.0), (0.7, 45.0), (0.8, 50.0), (0.9, 30.0)]
    assert time_to_fraction(timeline, 50.0) == 0.7  # 45 >= 0.9 x 50
    assert time_to_fraction(timeline, 50.0, fraction=1.0) == 0.8
    assert time_to_fraction(timeline, 100.0) is None


def test_bad_arguments_are_cli_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--users", "0"])
    assert exc.value.code == 2 and "--users" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bert-base", "/"])
    assert "not a model folder" in capsys.readouterr().err
