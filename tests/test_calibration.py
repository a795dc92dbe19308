"""Expected calibration error and NLL of effrank_bench.calibration, checked on logits with known softmax."""
from __future__ import annotations

import math

import pytest
import torch

from effrank_bench.calibration import CalibrationMeter, expected_calibration_error, negative_log_likelihood
from effrank_bench.errors import ConfigError


def two_class_logits(p_class1: list[float]) -> torch.Tensor:
    """Logits (0, ln(p/(1−p))): softmax gives exactly p to class 1."""
    p = torch.tensor(p_class1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], -1)


# Confidences 0.9, 0.9, 0.6, 0.6 (all predicting class 1), correct: yes, no, yes, yes.
LOGITS = two_class_logits([0.9, 0.9, 0.6, 0.6])
LABELS = torch.tensor([1, 0, 1, 1])


def test_hand_computed_ece():
    # bin of 0.9: accuracy 0.5, confidence 0.9 -> 0.4·2/4 = 0.2; bin of 0.6: 1.0 vs 0.6 -> 0.4·2/4 = 0.2
    assert expected_calibration_error(LOGITS, LABELS) == pytest.approx(0.4)


def test_hand_computed_nll():
    # −(ln 0.9 + ln 0.1 + 2 ln 0.6)/4 = 0.8574…
    expected = -(math.log(0.9) + math.log(0.1) + 2 * math.log(0.6)) / 4
    assert negative_log_likelihood(LOGITS, LABELS) == pytest.approx(expected)


def test_one_bin_ece_is_the_gap_between_accuracy_and_mean_confidence():
    # one bin: |0.75 − (0.9 + 0.9 + 0.6 + 0.6)/4| = |0.75 − 0.75| = 0
    assert expected_calibration_error(LOGITS, LABELS, bins=1) == pytest.approx(0, abs=1e-12)


def test_confident_and_right_is_calibrated():
    labels = torch.tensor([0, 2, 1, 2, 0])
    logits = 50 * torch.nn.functional.one_hot(labels, 3).float()
    assert expected_calibration_error(logits, labels) == pytest.approx(0, abs=1e-12)
    assert negative_log_likelihood(logits, labels) == pytest.approx(0, abs=1e-12)


def test_streaming_in_two_batches_equals_one_batch():
    g = torch.Generator().manual_seed(0)
    logits, labels = 3 * torch.randn(40, 10, generator=g), torch.randint(0, 10, (40,), generator=g)
    whole, streamed = CalibrationMeter(), CalibrationMeter()
    whole.update(logits, labels)
    streamed.update(logits[:17], labels[:17])
    streamed.update(logits[17:], labels[17:])
    a, b = whole.result(), streamed.result()
    assert a.samples == b.samples == 40
    assert (b.accuracy, b.ece, b.nll) == pytest.approx((a.accuracy, a.ece, a.nll), rel=1e-12)


def test_meter_reports_accuracy():
    meter = CalibrationMeter()
    meter.update(LOGITS, LABELS)
    assert meter.result().to_dict() == pytest.approx({"samples": 4, "accuracy": 0.75, "ece": 0.4,
                                                      "nll": negative_log_likelihood(LOGITS, LABELS)})


def test_empty_meter_and_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="no samples"):
        CalibrationMeter().result()
    with pytest.raises(ConfigError, match="expected logits"):
        CalibrationMeter().update(LOGITS, LABELS[:3])
