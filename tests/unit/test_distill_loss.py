"""The distillation loss on hand-computed logits (llmtune/engine/distill.py)."""

import math

import pytest

torch = pytest.importorskip("torch")

from llmtune.engine.distill import (  # noqa: E402
    DistillLog, DistillLoss, SpanLogits, TopK, TopKCache, kd_term, task_term, topk_kd_term,
)


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


def test_generation_kl_counts_only_response_tokens_with_the_labels_mask():
    # 1 sequence of 4 tokens over a 2-token vocabulary. Labels mask the prompt (positions 0, 1) with -100;
    # shifted, logits at 1 predict label 2 and logits at 2 predict label 3: those 2 positions count.
    teacher = _Logits([[[9.0, -9.0], [math.log(3), 0.0], [0.0, math.log(3)], [7.0, 0.0]]])
    student = _Logits([[[-9.0, 9.0], [0.0, 0.0], [0.0, 0.0], [0.0, 7.0]]])
    labels = torch.tensor([[-100, -100, 0, 1]])
    kl = _kl([0.75, 0.25], [0.5, 0.5])  # position 1, by hand; position 2 is the mirror image, the same value
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=0.5, shift=True)
    student.train()
    value = loss(student(input_ids=torch.zeros(1, 4)), labels)
    ce = math.log(2)  # the student predicts [0.5, 0.5] at both counted positions
    assert value.item() == pytest.approx(0.5 * (kl + kl) / 2 + 0.5 * ce, abs=1e-6)
    # the masked prompt positions 0 and 3 (which would add ~18 and ~7 nats of KL) contributed nothing
    assert loss.log.take()["distill_kd_term"] == pytest.approx(0.5 * kl, abs=1e-6)


class _Spans(torch.nn.Module):
    """A QA 'model': fixed start/end logits and a fixed QA loss."""

    def __init__(self, start, end, loss=0.0):
        super().__init__()
        self.start, self.end, self.loss = torch.tensor(start), torch.tensor(end), loss
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids=None, attention_mask=None, start_positions=None, end_positions=None):
        return {"loss": torch.tensor(self.loss) + 0 * self.dummy, "start_logits": self.start + 0 * self.dummy,
                "end_logits": self.end + 0 * self.dummy}


def test_qa_kl_averages_start_and_end_and_ignores_padding():
    # 1 window of 3 positions, the last one padding: it must not take any probability in either model.
    teacher = _Spans([[math.log(3), 0.0, 50.0]], [[0.0, 0.0, -50.0]])
    student = _Spans([[0.0, 0.0, -50.0]], [[math.log(3), 0.0, 50.0]], loss=1.5)
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=0.5, view=SpanLogits())
    student.train()
    mask = torch.tensor([[1, 1, 0]])
    value = loss(student(input_ids=torch.zeros(1, 3), attention_mask=mask, start_positions=torch.tensor([0]),
                         end_positions=torch.tensor([0])), None)
    start, end = _kl([0.75, 0.25], [0.5, 0.5]), _kl([0.5, 0.5], [0.75, 0.25])
    assert value.item() == pytest.approx(0.5 * (start + end) / 2 + 0.5 * 1.5, abs=1e-5)
    student.eval()  # evaluation: the QA loss alone
    assert loss(student(input_ids=torch.zeros(1, 3), attention_mask=mask), None).item() == pytest.approx(1.5)


def test_log_summary_gives_each_terms_share():
    log = DistillLog()
    log.add(0.3, 0.1)
    log.add(0.1, 0.1)
    assert log.summary() == pytest.approx({"distill_kd_term": 0.2, "distill_task_term": 0.1,
                                           "distill_kd_share": 2 / 3})


class _CountingTeacher(torch.nn.Module):
    """Logits [sum of the row's unmasked ids, 0]; counts the rows it was run on."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.rows_seen = 0

    def forward(self, input_ids=None, attention_mask=None):
        self.rows_seen += input_ids.shape[0]
        total = (input_ids * attention_mask).sum(-1).float()
        return {"logits": torch.stack([total, torch.zeros_like(total)], -1) + 0 * self.dummy}


def test_row_cache_runs_the_teacher_once_per_row_whatever_the_padding_and_order():
    teacher = _CountingTeacher()
    student = _Logits([[0.0, 0.0], [0.0, 0.0]])
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=1.0, cache_rows=True)
    student.train()
    first = {"input_ids": torch.tensor([[1, 2, 0], [5, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    loss(student(**first), torch.tensor([0, 0]))
    assert teacher.rows_seen == 2
    # the same two rows, swapped and padded differently, plus nothing new: no teacher pass
    again = {"input_ids": torch.tensor([[5, 0], [1, 2]]), "attention_mask": torch.tensor([[1, 0], [1, 1]])}
    student(**again)
    assert loss.teacher_outputs(torch.device("cpu"))["logits"].tolist() == [[5.0, 0.0], [3.0, 0.0]]
    assert teacher.rows_seen == 2 and (loss.cache.hits, loss.cache.misses) == (2, 2)
    # one new row among known ones: the teacher runs on that row only
    mixed = {"input_ids": torch.tensor([[1, 2], [4, 4]]), "attention_mask": torch.tensor([[1, 1], [1, 1]])}
    student(**mixed)
    assert loss.teacher_outputs(torch.device("cpu"))["logits"].tolist() == [[3.0, 0.0], [8.0, 0.0]]
    assert teacher.rows_seen == 3


def test_topk_kl_by_hand_and_equal_to_the_full_kl_when_k_is_the_vocabulary():
    # teacher p = [0.5, 0.3, 0.2], student q = [0.25, 0.25, 0.5]; top-2 keeps tokens 0 and 1, renormalised:
    # p_2 = [0.625, 0.375]; the student's log q is read at ids 0 and 1 from its full softmax (not renormalised)
    p, q = [0.5, 0.3, 0.2], [0.25, 0.25, 0.5]
    student = torch.tensor([[math.log(x) for x in q]])
    logp = torch.tensor([[math.log(x) for x in p]])
    top2 = TopK(*logp.topk(2, dim=-1))
    by_hand = 0.625 * math.log(0.625 / 0.25) + 0.375 * math.log(0.375 / 0.25)
    assert by_hand == pytest.approx(0.724731, abs=1e-6)  # 0.625 ln 2.5 + 0.375 ln 1.5
    assert topk_kd_term(student, top2, 1.0).item() == pytest.approx(by_hand, abs=1e-6)
    assert topk_kd_term(student, TopK(*logp.topk(3, dim=-1)), 1.0).item() == pytest.approx(_kl(p, q), abs=1e-6)
    # k = V at T=2 on random logits, the teacher's log-probs stored as fp16: the full KL up to that rounding
    gen = torch.Generator().manual_seed(0)
    s_logits, t_logits = torch.randn(4, 7, 11, generator=gen), 3 * torch.randn(4, 7, 11, generator=gen)
    values, ids = torch.log_softmax(t_logits, -1).topk(11, dim=-1)
    full = kd_term(s_logits, t_logits, 2.0)
    assert torch.allclose(topk_kd_term(s_logits, TopK(values.half(), ids), 2.0), full, atol=2e-3)


def test_topk_cache_serves_repeated_rows_without_the_teacher_and_counts_rows():
    teacher = _TokenTeacher(vocab=5)
    cache = TopKCache(2)
    block = {"input_ids": torch.tensor([[1, 2, 3], [3, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])}
    cache.fill(teacher, [block], "cpu")
    assert teacher.rows_seen == 2 and (cache.misses, cache.hits) == (2, 0)
    # token t's logits are one-hot-ish at t (4.0) and t+1 (2.0): the top-2 ids per position are t, t+1
    again = {"input_ids": torch.tensor([[3, 0, 0], [1, 2, 3]]), "attention_mask": torch.tensor([[1, 0, 0], [1, 1, 1]])}
    top = cache.outputs(teacher, again, "cpu")
    assert teacher.rows_seen == 2 and (cache.misses, cache.hits) == (2, 2)
    assert top.indices[1].tolist() == [[1, 2], [2, 3], [3, 4]] and top.indices[0, 0].tolist() == [3, 4]
    expected = torch.log_softmax(teacher.row_logits(torch.tensor([1, 2, 3])), -1).topk(2, dim=-1).values
    assert torch.allclose(top.logprobs[1].float(), expected, atol=1e-3)
    assert top.logprobs[0, 1:].abs().sum() == 0  # padding: zeros, counted by no mask
    assert cache.nbytes() == 4 * 2 * (2 + 2)  # 4 real positions x k=2 x (fp16 value + int16 id)


def test_distill_loss_with_top_k_uses_the_cache_and_the_topk_term():
    teacher = _TokenTeacher(vocab=5)
    student = _Logits([[[0.0] * 5] * 3])
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=1.0, shift=True, top_k=5)
    student.train()
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    labels = inputs["input_ids"]
    value = loss(student(**inputs), labels).item()
    # k = V: the full KL at positions 0 and 1 (position 2 predicts nothing), mean over the 2 counted tokens
    full = kd_term(torch.zeros(2, 5), teacher.row_logits(torch.tensor([1, 2])), 1.0).mean().item()
    assert value == pytest.approx(full, abs=2e-3)
    loss(student(**inputs), labels)
    assert teacher.rows_seen == 1 and (loss.cache.misses, loss.cache.hits) == (1, 1)


class _TokenTeacher(torch.nn.Module):
    """Per token t: logit 4 at t, 2 at t + 1 (mod vocab), 0 elsewhere; counts the rows it runs on."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.rows_seen = vocab, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def row_logits(self, ids):
        out = torch.zeros(*ids.shape, self.vocab)
        out.scatter_(-1, ids.unsqueeze(-1), 4.0)
        out.scatter_(-1, ((ids + 1) % self.vocab).unsqueeze(-1), 2.0)
        return out

    def forward(self, input_ids=None, attention_mask=None):
        self.rows_seen += input_ids.shape[0]
        return {"logits": self.row_logits(input_ids) + 0 * self.dummy}
