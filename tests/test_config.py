"""Config dataclasses: YAML and --set overrides, unknown keys, types, hashing."""

from __future__ import annotations

import dataclasses

import pytest

from tfmedseg.config import apply_overrides, config_hash, from_dict, load_config, save_config, to_dict
from tfmedseg.errors import ConfigError


@dataclasses.dataclass
class Optim:
    name: str = "radam"
    lr: float = 1e-3


@dataclasses.dataclass
class Exp:
    epochs: int = 100
    slices: tuple[int, ...] = (9,)
    optim: Optim = dataclasses.field(default_factory=Optim)
    note: str | None = None
    flag: bool = False


def test_defaults_yaml_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("epochs: 5\noptim:\n  lr: 1e-4\nslices: [3, 5]\n")
    cfg = load_config(Exp, path, ["optim.name=adam", "flag=true"])
    assert cfg.epochs == 5
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.name == "adam"
    assert cfg.slices == (3, 5)
    assert cfg.flag is True
    assert Exp().optim.lr == pytest.approx(1e-3)  # defaults untouched


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Exp, path)
    assert "optim.lrr" in str(info.value)
    assert "bad.yaml" in str(info.value)


def test_unknown_override_key_is_an_error():
    with pytest.raises(ConfigError, match="epoch"):
        apply_overrides(Exp(), ["epoch=3"])


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Exp(), ["epochs"])


@pytest.mark.parametrize("item", ["epochs=fast", "flag=3", "optim.lr=[1]"])
def test_wrong_value_types_are_rejected(item):
    with pytest.raises(ConfigError, match=item.split("=")[0]):
        apply_overrides(Exp(), [item])


@dataclasses.dataclass
class Checked:
    size: int = 8

    def __post_init__(self):
        if self.size < 1:
            raise ConfigError(f"must be >= 1, got {self.size}", path="size")


@dataclasses.dataclass
class Outer:
    stage: Checked = dataclasses.field(default_factory=Checked)


def test_a_nested_dataclass_check_names_the_dotted_key_and_where_the_value_came_from(tmp_path):
    """A nested config's own ``__post_init__`` check said ``size: must be >= 1`` for ``--set stage.size=0``
    (``liver.batch_size=0`` printed ``batch_size: ...``: which stage, which file?)."""
    with pytest.raises(ConfigError) as info:
        apply_overrides(Outer(), ["stage.size=0"])
    assert info.value.path == "stage.size"
    assert str(info.value) == "stage.size: must be >= 1, got 0 (in --set)"
    path = tmp_path / "exp.yaml"
    path.write_text("stage:\n  size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == f"stage.size: must be >= 1, got 0 (in {path})"


def test_int_is_accepted_for_float_and_scientific_strings_parse():
    cfg = apply_overrides(Exp(), ["optim.lr=1", "epochs=7"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    cfg = from_dict(Exp, {"optim": {"lr": "3e-5"}})
    assert cfg.optim.lr == pytest.approx(3e-5)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Exp, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_config(Exp, bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(Exp, broken)


def test_save_round_trip_and_hash(tmp_path):
    cfg = apply_overrides(Exp(), ["epochs=3", "optim.name=sgd"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Exp, path)
    assert again == cfg
    assert to_dict(again)["slices"] == [9]
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, ["epochs=4"])) != config_hash(cfg)
    assert len(config_hash(cfg)) == 12


def test_save_config_stages_under_the_visible_staging_name_and_leaves_nothing_else(tmp_path, monkeypatch):
    """Like every output (``tfmedseg.staging.atomic_file``): no hidden ``.config.yaml.tmp``; a stale
    staging file of a dead process and the hidden staging of older versions are removed."""
    import os
    import socket

    from tfmedseg.staging import STAGING_TAG

    run = tmp_path / "run"
    run.mkdir()
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:24] or "host"
    (run / f"config.yaml{STAGING_TAG}{host}-999999999-abcd.yaml").write_text("x")  # no such pid
    (run / ".config.yaml.tmp").write_text("x")
    renamed, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renamed.append(os.path.basename(src)) or real(src, dst))
    save_config(apply_overrides(Exp(), ["epochs=3"]), run / "config.yaml")
    assert len(renamed) == 1 and renamed[0].startswith(f"config.yaml{STAGING_TAG}{host}-{os.getpid()}-"), renamed
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert load_config(Exp, run / "config.yaml").epochs == 3


def test_a_config_cannot_run_code(tmp_path, monkeypatch):
    """Python tags (``!!python/object/apply``) are refused by the SafeLoader-based strict loader: a
    config is data and never runs code, however it is written."""
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.yaml"
    evil.write_text('epochs: !!python/object/apply:os.system ["touch ran.txt"]\n')
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(Exp, evil)
    evil.write_text("epochs: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(Exp, evil)
    assert not (tmp_path / "ran.txt").exists()
