"""Evaluations inside training show the same progress as ``llmtune eval`` (issue 22: SQuAD's final evaluation
ran for minutes in silence after the last training step)."""

import re


def test_finetune_prints_eval_progress_for_each_evaluation(cli, tiny_bert, cls_data, tmp_path):
    # 60 validation rows at eval batch 8 = 8 batches; not a terminal, so plain lines: one per tenth of the
    # batches (every batch here), "eval batch k/8", for each of the two evaluations (steps 4 and 8).
    result = cli("finetune", "--task", "classification", "--model", str(tiny_bert),
                 "--dataset", str(cls_data / "train.csv"), "--eval-dataset", str(cls_data / "val.csv"),
                 "--max-steps", "8", "--batch-size", "8", "--set", "train.eval_steps=4",
                 "--set", "train.eval_batch_size=8", "--set", "train.time_budget=null", "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    batches = [int(m.group(1)) for m in re.finditer(r"^eval batch (\d+)/8\b", result.output, re.MULTILINE)]
    assert batches == [*range(1, 9), *range(1, 9)], result.output
    last = [line for line in result.output.splitlines() if line.startswith("eval batch 8/8")][-1]
    assert re.search(r"examples/s \| eta 0:00$", last), last
