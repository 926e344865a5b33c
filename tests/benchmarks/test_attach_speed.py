"""The attach-speed script: its medians and its argument errors (the measurement itself is a benchmark)."""

from __future__ import annotations

import pytest

from benchmarks.attach_speed import _medians, main


def test_medians_are_per_variant_and_per_field():
    runs = [
        {"base": {"first_ms": 5.0, "reattach_ms": 1.0}},
        {"base": {"first_ms": 9.0, "reattach_ms": 0.5}},
        {"base": {"first_ms": 6.0, "reattach_ms": 0.7}},
    ]
    assert _medians(runs) == {"base": {"first_ms": 6.0, "reattach_ms": 0.7}}


def test_bad_arguments_are_cli_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--actors", "0"])
    assert exc.value.code == 2 and "--actors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--variants", "", "--bert-base", str(tmp_path)])
    assert "no model folder" in capsys.readouterr().err
