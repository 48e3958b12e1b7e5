"""Seed 000 experiment: a tiny end-to-end run (default) and the quick config's figures (slow)."""

from __future__ import annotations

import json

import pytest

from tfmedseg.experiments import maa_spect_liver


def test_tiny_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--config", "tiny", "--phantom-cases", "4", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert maa_spect_liver.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Table 16" in printed and "mean of 1" in printed and "Table 17" in printed
    data = json.loads((out / "summary.json").read_text())
    assert data["summary"]["ircadb_ct_slices"] == 48  # the 3DIRCADb-layout phantom joined the liver stage
    assert (tmp_path / "cache" / "phantoms" / "ircadb-n1-s7919" / "3Dircadb1.1" / "MASKS_DICOM" / "liver").is_dir()
    rows = data["rows"]
    assert len(rows) == 1 and rows[0]["patient"] == "MAA004"  # Table 6 block: the last patient of 4
    for key in ("liver_dsc", "tumour_iou", "combined_liver_dsc", "combined_tumour_iou", "tlr_ref", "tlr_true"):
        assert key in rows[0]
    assert rows[0]["tlr_ref"] == pytest.approx(rows[0]["tlr_true"], rel=0.15)  # GTM on reference masks
    patient = out / "fold1" / "patients"
    record = json.loads((patient / "MAA004.json").read_text())
    assert {"tlr", "tlr_reference", "volume_tumour_ml", "volume_normal_ml", "lung_shunt_fraction"} <= set(record)
    assert (patient / "MAA004.md").is_file() and (patient / "MAA004.png").is_file()
    for stage in ("liver", "tumour"):
        assert (out / "export" / stage / "model.keras").is_file()
        assert (out / "export" / stage / "serving_spec.json").is_file()


@pytest.mark.slow
def test_quick_config_meets_the_issue_figures(tmp_path):
    """The default command on the default 22 phantoms, fold 1 (5 test patients; about 15 minutes on 2 quiet cores)."""
    out = tmp_path / "quick"
    assert maa_spect_liver.main(["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["liver_dsc"] >= 0.90
    assert summary["tumour_dsc"] >= 0.55
    assert summary["tlr_within"] >= 0.8


def test_every_seed_table_config_loads():
    from tfmedseg.config import load_config
    from tfmedseg.experiments.cli import available_configs

    names = available_configs("maa_spect_liver")
    assert {"paper", "quick", "tiny"} | {f"table{t}" for t in range(9, 17)} <= set(names)
    for name, path in names.items():
        cfg = load_config(maa_spect_liver.MaaSpectConfig, path)
        assert any(getattr(cfg, s).enabled for s in maa_spect_liver.STAGES), name
        if name.startswith("table"):
            assert cfg.table == name[5:] and cfg.paper


def test_table_12_and_15_variants_and_3dircadb_settings_are_config_values():
    from tfmedseg.config import load_config
    from tfmedseg.errors import ConfigError
    from tfmedseg.experiments.cli import available_configs

    names = available_configs("maa_spect_liver")
    rgb = load_config(maa_spect_liver.MaaSpectConfig, names["table12"], ["adjust_channels=rgb"])
    assert rgb.adjust_channels == "rgb" and rgb.tumour.enabled and not rgb.combined.enabled
    spect_based = load_config(maa_spect_liver.MaaSpectConfig, names["table15"], ["match=ssim_spect"])
    assert spect_based.match == "ssim_spect" and spect_based.combined.enabled
    for name in ("paper", "table9", "table10", "table16"):  # the liver stage trains on 3DIRCADb too (seed Table 3)
        cfg = load_config(maa_spect_liver.MaaSpectConfig, names[name])
        assert (cfg.ircadb, cfg.ircadb_cases) == ("phantoms", 20)
    for bad in ("adjust_channels=b", "match=spect"):
        with pytest.raises(ConfigError):
            load_config(maa_spect_liver.MaaSpectConfig, names["table12"], [bad])


def test_generated_3dircadb_needs_the_phantom_run(tmp_path):
    from types import SimpleNamespace

    from tfmedseg.errors import ConfigError

    cfg = maa_spect_liver.MaaSpectConfig(ircadb="phantoms", ircadb_cases=20)
    ctx = SimpleNamespace(used_phantoms=False, data_dir=tmp_path, seed=0)
    with pytest.raises(ConfigError, match="3DIRCADb-01 root"):
        maa_spect_liver._ircadb_liver_slices(ctx, cfg, {"size": 32, "level": 30.0, "width": 150.0, "crop": True})
    assert maa_spect_liver._ircadb_liver_slices(ctx, maa_spect_liver.MaaSpectConfig(), {}) == []
