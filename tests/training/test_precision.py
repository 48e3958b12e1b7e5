"""``precision: auto``: bfloat16 only where the hardware computes it natively."""

from __future__ import annotations

import logging

import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.training import strategy

_AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
_SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
_ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"


@pytest.mark.parametrize("text, expected", [(_AVX2_ONLY, False), (_SAPPHIRE, True), (_ZEN4, True),
                                            ("flags : amx_tile\n", True), ("", False)])
def test_cpu_has_bf16_reads_the_flags(tmp_path, text, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert strategy.cpu_has_bf16(path) is expected


def test_cpu_has_bf16_false_when_unreadable(tmp_path):
    assert strategy.cpu_has_bf16(tmp_path / "missing") is False


def test_auto_is_float32_on_a_cpu_without_avx512_bf16(monkeypatch, caplog):
    monkeypatch.setattr(strategy, "gpu_has_bf16", lambda: None)
    monkeypatch.setattr(strategy, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="tfmedseg.training.strategy"):
        assert strategy.resolve_precision("auto") == "float32"
    assert "float32" in caplog.text and "without avx512_bf16" in caplog.text


def test_auto_is_bfloat16_on_a_cpu_with_it(monkeypatch):
    monkeypatch.setattr(strategy, "gpu_has_bf16", lambda: None)
    monkeypatch.setattr(strategy, "cpu_has_bf16", lambda: True)
    assert strategy.resolve_precision("auto") == "mixed_bfloat16"


@pytest.mark.parametrize("gpu, expected", [(True, "mixed_bfloat16"), (False, "mixed_float16")])
def test_auto_on_gpus(monkeypatch, gpu, expected):
    monkeypatch.setattr(strategy, "gpu_has_bf16", lambda: gpu)
    monkeypatch.setattr(strategy, "cpu_has_bf16", lambda: pytest.fail("the CPU is not asked when there is a GPU"))
    assert strategy.resolve_precision("auto") == expected


def test_explicit_names_pass_through_and_unknown_fails():
    assert strategy.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert strategy.resolve_precision("float32") == "float32"
    with pytest.raises(ConfigError, match="bfloat8"):
        strategy.resolve_precision("bfloat8")
