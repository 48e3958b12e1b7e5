"""``python -m tfmedseg.export`` never writes into what it reads: an ``--output`` that is, contains or sits
inside ``--model`` is one error line (exit 2) before anything is read or written. (Before: ``--output
runs/x/liver_model/1`` exported into the run directory and exited 0.)"""

from __future__ import annotations

import pytest

from tfmedseg.export.__main__ import main


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "all"])
@pytest.mark.parametrize("output, model, says", [
    ("run/liver_model/1", "run/liver_model", "is or sits inside the input"),
    ("run/liver_model", "run/liver_model", "is or sits inside the input"),
    ("run", "run/liver_model", "contains the input"),
    ("run", "run/model.keras", "contains the input"),
])
def test_output_in_or_around_the_model_is_refused(tmp_path, capsys, fmt, output, model, says):
    run = tmp_path / "run"
    (run / "liver_model").mkdir(parents=True)
    for name in ("liver_model/model.keras", "liver_model/serving_spec.json", "model.keras"):
        (run / name).write_bytes(b"ours, not tfmedseg's")  # never read: refused first
    before = _files(tmp_path)
    assert main(["--model", str(tmp_path / model), "--format", fmt, "--output", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / output}: output {says} {tmp_path / model}")
    assert _files(tmp_path) == before
