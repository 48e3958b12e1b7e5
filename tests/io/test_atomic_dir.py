"""``atomic_dir``: staged directory writes, added-to folders (``update``), nothing left on failure."""

from __future__ import annotations

import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import OUTPUT_MARKER, atomic_dir


def test_failure_removes_staging_and_the_parents_it_created(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as staging:
        (staging / "x.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_parents_that_existed_or_gained_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(KeyboardInterrupt), atomic_dir(out):
        (tmp_path / "a" / "b" / "someone_else.txt").write_text("theirs")
        raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["someone_else.txt"]


def test_update_adds_to_an_existing_folder_and_replaces_it_at_the_end(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("theirs")
    (out / "sub" / "deep.txt").write_text("deep")
    (out / "replace.txt").write_text("old")
    with atomic_dir(out, update=True) as staging:
        assert (staging / "sub" / "deep.txt").read_text() == "deep"
        (staging / "new.txt").write_text("new")
        (staging / "replace.txt").unlink()
        (staging / "replace.txt").write_text("new")
        assert not (out / "new.txt").exists() and (out / "replace.txt").read_text() == "old"  # untouched until the end
    assert (out / "keep.txt").read_text() == "theirs" and (out / "sub" / "deep.txt").read_text() == "deep"
    assert (out / "new.txt").read_text() == "new" and (out / "replace.txt").read_text() == "new"
    assert (out / OUTPUT_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_update_failure_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("theirs")
    with pytest.raises(OSError), atomic_dir(out, update=True) as staging:
        (staging / "new.txt").write_text("new")
        raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_update_refuses_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(InvalidInputError, match="not a directory"), atomic_dir(tmp_path / "out", update=True):
        pass
    assert (tmp_path / "out").read_text() == "a file"


def test_ours_lets_overwrite_replace_an_unmarked_folder_it_recognises(tmp_path):
    out = tmp_path / "ckpt-000002"
    out.mkdir()
    (out / "state.json").write_text("{}")  # written before the marker existed
    with pytest.raises(InvalidInputError, match="did not write"), atomic_dir(out, overwrite=True) as staging:
        (staging / "state.json").write_text("new")
    assert (out / "state.json").read_text() == "{}"
    with atomic_dir(out, overwrite=True, ours=lambda p: {e.name for e in p.iterdir()} == {"state.json"}) as staging:
        (staging / "state.json").write_text("new")
    assert (out / "state.json").read_text() == "new" and (out / OUTPUT_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000002"]


@pytest.mark.parametrize("option, says", [
    (None, "remove it or choose another output"),  # a caller without an overwrite option (phantoms)
    ("--overwrite", "pass --overwrite to replace"),
    ("overwrite=True", "pass overwrite=True to replace"),
])
def test_a_refused_folder_names_the_callers_own_option(tmp_path, option, says):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(InvalidInputError) as info, atomic_dir(out, option=option):
        pass
    message = str(info.value)
    assert message.startswith(f"{out}: ") and says in message
    assert message.count("overwrite") == (0 if option is None else 1)  # never "--overwrite / overwrite=True"
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "keep.txt").read_text() == "keep"


def test_the_writers_name_their_real_option(tmp_path):
    """Every caller passes its own option: the Python writers ``overwrite=True``, the liver-lesion
    command ``--overwrite`` (checked before it reads anything)."""
    import numpy as np

    from tfmedseg.apps.liver_lesions import run_liver_lesions
    from tfmedseg.io.dicom_write import write_dicom_series
    from tfmedseg.io.volume import Volume

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="pass overwrite=True to replace") as info:
        write_dicom_series(Volume(np.zeros((2, 4, 4), np.float32), (1.0, 1.0, 1.0), modality="CT"), out)
    assert "--overwrite" not in str(info.value)
    with pytest.raises(InvalidInputError, match="pass --overwrite to replace") as info:
        run_liver_lesions(tmp_path / "dicom", out, tmp_path / "model")
    assert "overwrite=True" not in str(info.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
