"""``tfmedseg --help`` lists the five experiments and none of the library modules beside them."""

from __future__ import annotations

from tfmedseg.__main__ import experiment_names, main

EXPERIMENTS = {"bone_malignet", "hecktor_petct", "liver_ct_2d3d", "liver_lesion_fusion", "maa_spect_liver"}


def test_experiment_listing_is_the_command_modules_only(capsys):
    assert set(experiment_names()) == EXPERIMENTS
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    listed = text.split("experiments (python -m tfmedseg.experiments.<name>):", 1)[1]
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert names == EXPERIMENTS
    assert main(["arguments"]) == 2  # the command-line helper module is not a command
    assert "unknown command" in capsys.readouterr().err
