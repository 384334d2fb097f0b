"""A nanoGPT-style character-level GPT: the in-process baseline of the quality benchmark.

It follows nanoGPT's CPU preset for Shakespeare (``config/train_shakespeare_char.py`` with
``--device=cpu --compile=False --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``): pre-LayerNorm blocks without biases, GELU
MLP, tied input/output embeddings, AdamW (betas 0.9/0.99, weight decay 0.1 on matrices), gradient
clipping at 1.0, linear warm-up over 100 iterations then cosine from 1e-3 down to 1e-4.

One change makes it fair against a time-budgeted llmtune run: instead of a fixed 2000 iterations the
schedule is fitted to the wall-clock budget (iterations are timed first), and the run stops at the
budget. Data preparation and the final evaluation are inside the budget, as for llmtune.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Preset:
    """nanoGPT's CPU Shakespeare-char preset."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1337


@dataclass
class BaselineResult:
    """What the baseline reached within its budget."""

    bits_per_char: float
    iters: int
    wall_seconds: float
    parameters: int


class Block(nn.Module):
    """Pre-LN transformer block: causal self-attention and a 4x GELU MLP, no biases."""

    def __init__(self, p: Preset) -> None:
        super().__init__()
        self.n_head = p.n_head
        self.ln_1 = nn.LayerNorm(p.n_embd, bias=False)
        self.c_attn = nn.Linear(p.n_embd, 3 * p.n_embd, bias=False)
        self.attn_proj = nn.Linear(p.n_embd, p.n_embd, bias=False)
        self.ln_2 = nn.LayerNorm(p.n_embd, bias=False)
        self.c_fc = nn.Linear(p.n_embd, 4 * p.n_embd, bias=False)
        self.mlp_proj = nn.Linear(4 * p.n_embd, p.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class CharGPT(nn.Module):
    """Token + position embeddings, blocks, final LayerNorm, output tied to the token embedding."""

    def __init__(self, vocab_size: int, p: Preset) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, p.n_embd)
        self.wpe = nn.Embedding(p.block_size, p.n_embd)
        self.blocks = nn.ModuleList(Block(p) for _ in range(p.n_layer))
        self.ln_f = nn.LayerNorm(p.n_embd, bias=False)
        self.apply(_init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * p.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def lines_view(text: str) -> str:
    """The text as llmtune's data loader sees it: non-blank lines, each ending in a newline.

    llmtune reads a .txt file one non-blank line per row and counts a separator per row as the
    newline, so the baseline is trained and scored on exactly these characters.
    """
    return "".join(line + "\n" for line in text.split("\n") if line.strip())


def _lr(it: int, total: int, p: Preset) -> float:
    """nanoGPT's get_lr with lr_decay_iters = total."""
    if it < p.warmup_iters:
        return p.lr * (it + 1) / (p.warmup_iters + 1)
    ratio = min(1.0, (it - p.warmup_iters) / max(1, total - p.warmup_iters))
    return p.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (p.lr - p.min_lr)


def _batch(data: torch.Tensor, p: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - p.block_size - 1, (p.batch_size,))
    x = torch.stack([data[i : i + p.block_size] for i in starts.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + p.block_size] for i in starts.tolist()])
    return x, y


def _optimizer(model: nn.Module, p: Preset) -> torch.optim.Optimizer:
    params = list(model.parameters())
    groups = [{"params": [q for q in params if q.dim() >= 2], "weight_decay": p.weight_decay},
              {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=p.lr, betas=p.betas)


@torch.no_grad()
def bits_per_char(model: nn.Module, data: torch.Tensor, block_size: int, batch: int = 256) -> float:
    """Mean cross-entropy over every character of ``data`` in non-overlapping blocks, in bits."""
    model.eval()
    n = (len(data) - 1) // block_size
    x_all = data[: n * block_size].view(n, block_size)
    y_all = data[1 : n * block_size + 1].view(n, block_size)
    total = 0.0
    for i in range(0, n, batch):
        logits = model(x_all[i : i + batch])
        total += F.cross_entropy(logits.flatten(0, 1), y_all[i : i + batch].flatten(), reduction="sum").item()
    model.train()
    return total / (n * block_size) / math.log(2)


def _step(model: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor, p: Preset, lr: float) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    x, y = _batch(data, p)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def train_within(
    train_text: str, val_text: str, budget_s: float, p: Preset = Preset(), probe: int = 20
) -> BaselineResult:
    """Train on ``train_text`` for ``budget_s`` wall seconds (evaluation included); score ``val_text``.

    After ``probe`` iterations the mean iteration time fixes how many iterations fit (keeping time for
    the evaluation), and the cosine schedule decays over exactly those.
    """
    started = time.monotonic()
    torch.manual_seed(p.seed)
    train_text, val_text = lines_view(train_text), lines_view(val_text)
    stoi = {ch: i for i, ch in enumerate(sorted(set(train_text + val_text)))}  # as nanoGPT's prepare.py
    train = torch.tensor([stoi[c] for c in train_text], dtype=torch.long)
    val = torch.tensor([stoi[c] for c in val_text], dtype=torch.long)
    model = CharGPT(len(stoi), p)
    opt = _optimizer(model, p)
    total, it, loop_start = 10**9, 0, time.monotonic()
    deadline = started + budget_s
    while it < total:
        _step(model, opt, train, p, _lr(it, total, p))
        it += 1
        now = time.monotonic()
        if it == probe:
            per_iter = (now - loop_start) / probe
            # Evaluation is forward-only (~1/3 of a training step per token); keep 1.5x that, as llmtune keeps 15 %.
            eval_s = 1.5 * per_iter / 3 * len(val) / (p.batch_size * p.block_size)
            deadline = started + budget_s - eval_s
            total = probe + max(0, math.floor((deadline - now) / per_iter))
        if now + (now - loop_start) / it > deadline:  # one more iteration would overrun
            break
    bpc = bits_per_char(model, val, p.block_size)
    return BaselineResult(bpc, it, time.monotonic() - started, sum(q.numel() for q in model.parameters()))


def describe(p: Preset = Preset()) -> str:
    """One line naming the preset, for the results table."""
    return (f"nanoGPT-style char GPT {p.n_layer}x{p.n_embd}, block {p.block_size}, batch {p.batch_size}, "
            f"lr {p.lr:g}->{p.min_lr:g}, dropout 0")
