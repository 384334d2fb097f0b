"""The distillation loss on hand-computed logits (llmtune/engine/distill.py)."""

import math

import pytest

torch = pytest.importorskip("torch")

from llmtune.engine.distill import DistillLog, DistillLoss, kd_term, task_term  # noqa: E402


class _Logits(torch.nn.Module):
    """A 'model' that returns fixed logits whatever its input ids."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids=None, attention_mask=None):
        return {"logits": self.logits + 0 * self.dummy}


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_kd_term_two_classes_by_hand():
    # teacher logits [ln 3, 0] -> softmax [0.75, 0.25] at T=1; student [0, 0] -> [0.5, 0.5]
    teacher, student = torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.0, 0.0]])
    assert kd_term(student, teacher, 1.0).item() == pytest.approx(_kl([0.75, 0.25], [0.5, 0.5]), abs=1e-6)
    assert _kl([0.75, 0.25], [0.5, 0.5]) == pytest.approx(0.130812, abs=1e-6)
    # T=2: teacher [ln 3 / 2, 0] -> [sqrt 3, 1] / (1 + sqrt 3); times T^2 = 4
    p = math.sqrt(3) / (1 + math.sqrt(3))
    assert kd_term(student, teacher, 2.0).item() == pytest.approx(4 * _kl([p, 1 - p], [0.5, 0.5]), abs=1e-6)
    assert kd_term(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_mixed_loss_weights_both_terms_and_alpha_zero_is_the_task_loss():
    teacher = _Logits([[math.log(3), 0.0], [0.0, 0.0]])
    student = _Logits([[0.0, 0.0], [math.log(3), 0.0]])
    labels = torch.tensor([1, 0])
    ce = (math.log(2) + math.log(4 / 3)) / 2  # -ln 0.5 and -ln 0.75, mean over the 2 rows
    kl = (_kl([0.75, 0.25], [0.5, 0.5]) + _kl([0.5, 0.5], [0.75, 0.25])) / 2
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=0.25)
    student.train()
    value = loss(student(input_ids=torch.zeros(2, 1)), labels)
    assert value.item() == pytest.approx(0.25 * kl + 0.75 * ce, abs=1e-6)
    assert loss.log.take() == pytest.approx({"distill_kd_term": 0.25 * kl, "distill_task_term": 0.75 * ce})
    plain = DistillLoss(student, teacher, temperature=3.0, alpha=0.0)
    assert plain(student(input_ids=torch.zeros(2, 1)), labels).item() == pytest.approx(ce, abs=1e-6)
    assert task_term(student.logits, labels, shift=False).item() / 2 == pytest.approx(ce, abs=1e-6)


def test_evaluation_returns_the_task_loss_only_and_ignored_positions_do_not_count():
    teacher = _Logits([[[math.log(3), 0.0], [0.0, 0.0], [5.0, 0.0]]])  # 1 sequence, 3 positions, 2 tokens
    student = _Logits([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 0, -100]])  # shifted: position 0 predicts label 0 (counted), position 1 ignored
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=1.0, shift=True)
    student.train()
    assert loss(student(input_ids=torch.zeros(1, 3)), labels).item() == pytest.approx(
        _kl([0.75, 0.25], [0.5, 0.5]), abs=1e-6)
    student.eval()
    assert loss(student(input_ids=torch.zeros(1, 3)), labels).item() == pytest.approx(math.log(2), abs=1e-6)


def test_log_summary_gives_each_terms_share():
    log = DistillLog()
    log.add(0.3, 0.1)
    log.add(0.1, 0.1)
    assert log.summary() == pytest.approx({"distill_kd_term": 0.2, "distill_task_term": 0.1,
                                           "distill_kd_share": 2 / 3})
