"""The forward-switch script's argument errors (the measurement itself is a benchmark)."""

from __future__ import annotations

import pytest

from benchmarks.forward_switch import main


def test_bad_arguments_are_cli_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--repeats", "0"])
    assert exc.value.code == 2 and "--repeats" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--bert-base", str(tmp_path)])  # exists, holds no model: never overwritten
    assert exc.value.code == 2 and "not a model folder" in capsys.readouterr().err
