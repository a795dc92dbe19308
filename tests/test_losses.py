"""The distillation losses of the built-in plugin, against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from effrank_bench.errors import LossError
from effrank_bench.specs import LossOptions, Outputs
from effrank_bench_plugins.losses import geometric, kd, logit

OPTIONS = LossOptions()
NO_LABELS = torch.zeros(1, dtype=torch.long)


def out(logits, *features) -> Outputs:
    return Outputs(logits=torch.tensor(logits, dtype=torch.float32),
                   features=tuple(torch.tensor(f, dtype=torch.float32) for f in features))


# --- logit: MSE + (1 − cos) -------------------------------------------------------------------


def test_logit_loss_of_orthogonal_logits():
    # MSE = ((0 − 1)² + (1 − 0)²) / 2 = 1; cos([1, 0], [0, 1]) = 0 -> 1 + (1 − 0) = 2.
    loss = logit(out([[1.0, 0.0]]), out([[0.0, 1.0]]), NO_LABELS, OPTIONS)
    assert float(loss) == pytest.approx(2.0, abs=1e-6)


def test_logit_loss_of_identical_logits_is_zero():
    t = [[0.3, -1.2, 2.0], [4.0, 0.5, -0.1]]
    assert float(logit(out(t), out(t), NO_LABELS, OPTIONS)) == pytest.approx(0.0, abs=1e-6)


def test_logit_loss_of_scaled_logits_is_the_mse_only():
    # s = 2t: MSE = mean(t²) = (1 + 4 + 9 + 16) / 4 = 7.5, and cos = 1 so the cosine term vanishes.
    t = [[1.0, 2.0], [3.0, 4.0]]
    s = [[2.0, 4.0], [6.0, 8.0]]
    assert float(logit(out(t), out(s), NO_LABELS, OPTIONS)) == pytest.approx(7.5, abs=1e-5)


def test_logit_loss_averages_cosine_over_rows():
    # Row 1 identical (cos 1), row 2 opposite (cos −1): 1 − mean(1, −1) = 1.
    # MSE: only row 2 differs, by (−2, 0) -> 4 / 4 elements = 1. Total 2.
    t = [[1.0, 0.0], [1.0, 0.0]]
    s = [[1.0, 0.0], [-1.0, 0.0]]
    assert float(logit(out(t), out(s), NO_LABELS, OPTIONS)) == pytest.approx(2.0, abs=1e-6)


# --- geometric: the same on every branch output, averaged over terms ----------------------------


def test_geometric_is_the_mean_of_logit_and_branch_terms():
    logits_t, logits_s = [[1.0, 0.0]], [[0.0, 1.0]]  # term 2 (as above)
    # Branch 1, 2 tokens: token 1 equal (cos 1), token 2 orthogonal (cos 0) -> 1 − 0.5 = 0.5;
    # MSE: differences (0, 0, 1, −1) -> 2 / 4 = 0.5. Term 1.0.
    f1_t, f1_s = [[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]
    # Branch 2, 1 token: [3, 4] vs [4, 3]: MSE (1 + 1) / 2 = 1; cos = 24 / 25 -> 0.04. Term 1.04.
    f2_t, f2_s = [[[3.0, 4.0]]], [[[4.0, 3.0]]]
    loss = geometric(out(logits_t, f1_t, f2_t), out(logits_s, f1_s, f2_s), NO_LABELS, OPTIONS)
    assert float(loss) == pytest.approx((2.0 + 1.0 + 1.04) / 3, abs=1e-6)


def test_geometric_of_identical_outputs_is_zero():
    t = out([[1.0, 2.0]], [[[1.0, 2.0, 3.0]]], [[[0.5, -0.5, 1.0]]])
    assert float(geometric(t, t, NO_LABELS, OPTIONS)) == pytest.approx(0.0, abs=1e-6)


def test_geometric_refuses_a_different_number_of_branch_outputs():
    teacher = out([[1.0, 0.0]], [[[1.0]]], [[[1.0]]], [[[1.0]]])
    student = out([[1.0, 0.0]], [[[1.0]]], [[[1.0]]])
    with pytest.raises(LossError, match=r"teacher gave 3 .*student gave 2"):
        geometric(teacher, student, NO_LABELS, OPTIONS)
    with pytest.raises(LossError, match=r"teacher gave 2 .*student gave 3"):
        geometric(student, teacher, NO_LABELS, OPTIONS)


def test_geometric_refuses_mismatched_shapes():
    teacher = out([[1.0, 0.0]], [[[1.0, 2.0]]], [[[1.0, 2.0, 3.0]]])
    student = out([[1.0, 0.0]], [[[1.0, 2.0]]], [[[1.0, 2.0]]])
    with pytest.raises(LossError, match=r"branch 1 has shape \(1, 1, 2\) in the student but \(1, 1, 3\)"):
        geometric(teacher, student, NO_LABELS, OPTIONS)


def test_geometric_refuses_no_branch_outputs():
    with pytest.raises(LossError, match="no branch outputs"):
        geometric(out([[1.0, 0.0]]), out([[1.0, 0.0]]), NO_LABELS, OPTIONS)


# --- kd: α·T²·KL(p_t ‖ p_s) + (1 − α)·CE ------------------------------------------------------------


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kd_by_hand(t: list[list[float]], s: list[list[float]], labels: list[int], temperature: float,
               alpha: float) -> float:
    kl = ce = 0.0
    for t_row, s_row, y in zip(t, s, labels):
        p_t = softmax([v / temperature for v in t_row])
        p_s = softmax([v / temperature for v in s_row])
        kl += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
        ce += -math.log(softmax(s_row)[y])
    n = len(t)  # both terms are means over the batch
    return alpha * temperature**2 * kl / n + (1 - alpha) * ce / n


T_LOGITS = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
S_LOGITS = [[3.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
LABELS = [0, 2]


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (2.0, 0.3), (4.0, 0.9), (4.0, 1.0)])
def test_kd_matches_the_hand_formula(temperature, alpha):
    options = LossOptions(kd_temperature=temperature, kd_alpha=alpha)
    loss = kd(out(T_LOGITS), out(S_LOGITS), torch.tensor(LABELS), options)
    assert float(loss) == pytest.approx(kd_by_hand(T_LOGITS, S_LOGITS, LABELS, temperature, alpha), rel=1e-5)


def test_kd_numbers_for_one_row():
    # t = [0, 0] (p_t = ½, ½), s = [ln 3, 0] at T = 1 (p_s = ¾, ¼):
    # KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3); CE with label 1 = −ln ¼ = ln 4.
    # α = 0.5: 0.5 · ½ ln(4/3) + 0.5 · ln 4.
    options = LossOptions(kd_temperature=1.0, kd_alpha=0.5)
    loss = kd(out([[0.0, 0.0]]), out([[math.log(3), 0.0]]), torch.tensor([1]), options)
    assert float(loss) == pytest.approx(0.25 * math.log(4 / 3) + 0.5 * math.log(4), rel=1e-6)


def test_kd_with_alpha_zero_is_the_cross_entropy():
    options = LossOptions(kd_temperature=3.0, kd_alpha=0.0)
    ce = (-math.log(softmax(S_LOGITS[0])[0]) - math.log(softmax(S_LOGITS[1])[2])) / 2
    loss = kd(out(T_LOGITS), out(S_LOGITS), torch.tensor(LABELS), options)
    assert float(loss) == pytest.approx(ce, rel=1e-6)


def test_kd_of_identical_logits_with_alpha_one_is_zero():
    options = LossOptions(kd_temperature=2.0, kd_alpha=1.0)
    loss = kd(out(T_LOGITS), out(T_LOGITS), torch.tensor(LABELS), options)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)



# --- what any loss must return ----------------------------------------------------------------------------


def spec(compute):
    from effrank_bench.specs import LossSpec

    return LossSpec(name="theirs", description="a third party's", compute=compute)


@pytest.mark.parametrize("compute, got", [
    (lambda t, s, y, o: (s.logits - t.logits) ** 2, "a torch.float32 tensor of shape (2, 3)"),
    (lambda t, s, y, o: ((s.logits - t.logits) ** 2).mean().item(), "a float"),
    (lambda t, s, y, o: sum(s.features), "an int"),  # no features: a loss registered without uses_features
    (lambda t, s, y, o: ((s.logits - t.logits) ** 2).mean().detach(),
     "a tensor no gradient flows back through (detached, or not computed from the student's outputs)"),
    (lambda t, s, y, o: (s.logits.argmax(1) == y).sum(), "a torch.int64 tensor of shape ()"),
])
def test_a_loss_that_returns_no_differentiable_scalar_is_refused_naming_it(compute, got):
    teacher = Outputs(logits=torch.randn(2, 3))
    student = Outputs(logits=torch.randn(2, 3, requires_grad=True))
    loss = spec(compute)
    with pytest.raises(LossError) as err:
        loss.checked(loss.compute(teacher, student, torch.zeros(2, dtype=torch.long), OPTIONS))
    assert str(err.value) == (f"loss 'theirs' returned {got}; a loss returns a scalar floating-point tensor "
                              "computed from the student's outputs")


def test_a_checked_loss_is_the_loss_itself_a_one_element_one_as_a_scalar():
    teacher = Outputs(logits=torch.randn(2, 3))
    student = Outputs(logits=torch.randn(2, 3, requires_grad=True))
    value = logit(teacher, student, NO_LABELS, OPTIONS)
    assert spec(logit).checked(value) is value
    one = spec(logit).checked(value.reshape(1))  # backward() takes a shape-(1,) loss too
    assert one.shape == () and one.requires_grad and torch.equal(one, value)
