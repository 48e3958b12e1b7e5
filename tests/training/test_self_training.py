"""Table 8's pseudo-label filters on hand-built teacher predictions."""

import numpy as np
import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.training.self_training import filter_pseudo_labels


def _pred(*scores):
    n = len(scores)
    return {"scores": np.array(scores, np.float32), "classes": np.arange(1, n + 1, dtype=np.int32),
            "boxes": np.arange(4 * n, dtype=np.float32).reshape(n, 4), "masks": np.zeros((n, 3, 3), bool),
            "case_id": "p"}


PREDICTIONS = [
    _pred(0.95, 0.92),        # image 0: all > 0.9
    _pred(0.95, 0.83, 0.6),   # image 1: 0.6 below the teacher's 0.7; 0.83 between 0.8 and 0.85
    _pred(0.88, 0.86),        # image 2: between 0.85 and 0.9
    _pred(),                  # image 3: no lesion
    _pred(0.81, 0.75),        # image 4: 0.75 <= 0.8
]

# threshold -> (image-level (images, lesions, kept ids), lesion-level (images, lesions))
EXPECTED = {
    None: ((5, 8, [0, 1, 2, 3, 4]), (5, 8)),
    0.8: ((4, 6, [0, 1, 2, 3]), (5, 7)),
    0.85: ((3, 4, [0, 2, 3]), (5, 5)),
    0.9: ((2, 2, [0, 3]), (5, 3)),
}


@pytest.mark.parametrize("threshold", [None, 0.8, 0.85, 0.9])
def test_filters_at_each_threshold(threshold):
    (n_img, n_les, ids), (l_img, l_les) = EXPECTED[threshold]
    kept, counts = filter_pseudo_labels(PREDICTIONS, threshold, "image")
    assert counts == {"images": n_img, "lesions": n_les}
    assert [i for i, _ in kept] == ids
    for _, pred in kept:
        assert np.all(pred["scores"] >= 0.7) and (threshold is None or np.all(pred["scores"] > threshold))
    kept, counts = filter_pseudo_labels(PREDICTIONS, threshold, "lesion")
    assert counts == {"images": l_img, "lesions": l_les}
    img1 = dict(kept)[1]
    expected_scores = [s for s in (0.95, 0.83) if threshold is None or s > threshold]
    np.testing.assert_allclose(img1["scores"], expected_scores)
    # boxes, classes and masks follow the kept scores; other entries are copied
    assert len(img1["boxes"]) == len(img1["classes"]) == len(img1["masks"]) == len(expected_scores)
    assert img1["classes"].tolist() == [1, 2][: len(expected_scores)] and img1["case_id"] == "p"


def test_bad_filter_settings():
    with pytest.raises(ConfigError, match="filter"):
        filter_pseudo_labels(PREDICTIONS, 0.8, "patient")
    with pytest.raises(ConfigError, match="threshold"):
        filter_pseudo_labels(PREDICTIONS, 1.5, "image")


def test_pseudo_label_samples_become_labeled_training_samples():
    from tfmedseg.data.detection import DetectionSample, pad_instances
    from tfmedseg.training.self_training import pseudo_label_samples

    samples = [DetectionSample(f"u{i}", np.zeros((3, 3), np.float32)) for i in range(5)]
    kept, _ = filter_pseudo_labels(PREDICTIONS, 0.85, "image")
    student = pseudo_label_samples(kept, samples)
    assert [s.sample_id for s in student] == ["u0#pseudo", "u2#pseudo", "u3#pseudo"]
    assert all(s.is_labeled for s in student)
    padded = pad_instances(student[0], 4)
    assert int(padded["num_instances"]) == 2 and padded["classes"][:2].tolist() == [1, 2]
    assert int(pad_instances(student[2], 4)["num_instances"]) == 0  # no lesion: a negative image


def test_table8_counts_every_threshold_and_level():
    from tfmedseg.training.self_training import pseudo_label_table

    rows = pseudo_label_table(PREDICTIONS, [0.8, 0.85, 0.9])
    assert rows[0] == {"threshold": None, "filter": "all", "images": 5, "lesions": 8}
    got = {(r["threshold"], r["filter"]): (r["images"], r["lesions"]) for r in rows[1:]}
    for t in (0.8, 0.85, 0.9):
        (n_img, n_les, _), lesion_level = EXPECTED[t]
        assert got[(t, "image")] == (n_img, n_les) and got[(t, "lesion")] == lesion_level


def test_self_training_rounds_retrain_on_filtered_pseudo_labels(monkeypatch):
    """Each round trains a student on labeled + filtered pseudo-labels; the student teaches the next round."""
    from types import SimpleNamespace

    from tfmedseg.data.detection import DetectionSample
    from tfmedseg.training import self_training as st

    unlabeled = [DetectionSample(f"u{i}", np.zeros((3, 3, 1), np.float32)) for i in range(5)]
    labeled = ["L0", "L1"]
    teachers = []
    monkeypatch.setattr(st, "predict_samples", lambda model, samples: teachers.append(model) or PREDICTIONS)
    trained = []

    def train(samples, k):
        trained.append((k, samples))
        return SimpleNamespace(model=f"student{k}")

    config = st.SelfTrainingConfig(rounds=2, threshold=0.85, filter="image", report_thresholds=(0.9,))
    result, report = st.self_training_rounds("teacher", unlabeled, labeled, config, train,
                                             score=lambda m: {"lesion_f1": 0.5})
    assert result.model == "student2" and teachers == ["teacher", "student1"]
    assert [k for k, _ in trained] == [1, 2]
    samples = trained[0][1]
    assert samples[:2] == labeled and [s.sample_id for s in samples[2:]] == ["u0#pseudo", "u2#pseudo", "u3#pseudo"]
    assert [len(s.boxes) for s in samples[2:]] == [2, 2, 0]
    assert report["rounds"][0] == {"round": 1, "threshold": 0.85, "filter": "image", "images": 3, "lesions": 4, "f1": 0.5}
    assert [r["filter"] for r in report["table"]] == ["all", "lesion", "image"]
    with pytest.raises(ConfigError, match="self_training.rounds"):
        st.SelfTrainingConfig(rounds=0)
    with pytest.raises(ConfigError, match="self_training.threshold"):
        st.SelfTrainingConfig(report_thresholds=(1.5,))
