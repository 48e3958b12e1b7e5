"""The model registry resolves names and rejects unknown ones with the list of names."""

from __future__ import annotations

import pytest

from tfmedseg.errors import ModelBuildError
from tfmedseg.models import registry


def test_unknown_name_lists_registered_models():
    with pytest.raises(ModelBuildError) as info:
        registry.build("no_such_net")
    assert "no_such_net" in str(info.value)
    assert "registered models" in str(info.value)


def test_register_and_build_roundtrip():
    @registry.register("_test_identity_builder")
    def builder(value=1):
        return ("built", value)

    assert registry.build("_test_identity_builder", value=3) == ("built", 3)
    assert "_test_identity_builder" in registry.available()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("_test_identity_builder")(lambda: None)
