"""Structured pruning: measure what each head, FFN channel and layer is worth, then cut the least useful away.

Importance is first-order (gradient x activation) on a calibration sample, the estimate of how much
the loss would change without the part (Molchanov et al. 2019; for heads it is the head-mask
gradient of Michel et al. 2019):

* head h of layer l: ``|sum over tokens and head dims of a * dL/da|`` per example, ``a`` the head's
  slice of the attention output (the input of the output projection);
* FFN channel j: ``|sum over tokens of a_j * dL/da_j|`` per example, ``a`` the input of the down
  projection;
* layer l: ``|sum of (out - in) * dL/dout|`` per example: the layer's residual contribution.

Surgery then slices the linear layers so the saved model is dense and smaller, with a config that
says so (``num_attention_heads``/``head_dim``, ``intermediate_size``, ``num_hidden_layers``): the same
number of heads and channels is removed from every layer, since transformers configs hold one count
for all layers. Head pruning needs a config with ``head_dim`` (Llama-style models). BERT cannot hold
fewer heads (checked in transformers 5.25): ``BertSelfAttention`` sets ``attention_head_size =
int(hidden_size / num_attention_heads)`` and sizes query/key/value as ``num_attention_heads *
attention_head_size`` (models/bert/modeling_bert.py:151-157), the output projection is ``hidden_size x
hidden_size`` (:286), and no config field says otherwise; ``prune_heads``, ``_prune_heads`` and
``config.pruned_heads`` appear nowhere in the package (5.x removed them). MiniLM with 8 of its 12 heads has
256-row query/key/value, but ``num_attention_heads=8`` builds 8 x 48 = 384 rows, and ``from_pretrained``
refuses the checkpoint (size mismatch; checked). The sliced model runs in memory (attention reshapes to
``(-1, attention_head_size)``) but cannot be saved and reloaded. So BERT models take ``ffn`` and ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from llmtune.errors import ConfigError, ModelError


@dataclass
class Layout:
    """Where a model keeps its prunable parts (``bert``: BERT/RoBERTa naming; ``llama``: Llama/Mistral/Qwen2)."""

    kind: str
    layers: Any  # the ModuleList of transformer blocks
    heads: int
    head_dim: int
    heads_prunable: bool

    def attn_out(self, layer: Any) -> Any:
        return layer.self_attn.o_proj if self.kind == "llama" else layer.attention.output.dense

    def qkv(self, layer: Any) -> list[Any]:
        if self.kind == "llama":
            return [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]
        s = layer.attention.self
        return [s.query, s.key, s.value]

    def ffn_in(self, layer: Any) -> list[Any]:
        return [layer.mlp.gate_proj, layer.mlp.up_proj] if self.kind == "llama" else [layer.intermediate.dense]

    def ffn_out(self, layer: Any) -> Any:
        return layer.mlp.down_proj if self.kind == "llama" else layer.output.dense


def layout_of(model: Any) -> Layout:
    """The ``Layout`` of a BERT-like or Llama-like model.

    Raises:
        ModelError: Another architecture.
    """
    base, config = model.base_model, model.config
    if hasattr(base, "layers") and hasattr(base.layers[0], "self_attn") and hasattr(base.layers[0].self_attn, "o_proj"):
        head_dim = getattr(base.layers[0].self_attn, "head_dim", config.hidden_size // config.num_attention_heads)
        mha = getattr(config, "num_key_value_heads", config.num_attention_heads) == config.num_attention_heads
        return Layout("llama", base.layers, config.num_attention_heads, head_dim, heads_prunable=mha)
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer") and hasattr(encoder.layer[0], "intermediate"):
        heads = config.num_attention_heads
        return Layout("bert", encoder.layer, heads, config.hidden_size // heads, heads_prunable=False)
    raise ModelError(f"pruning supports BERT-like and Llama-like models, not {type(model).__name__} "
                     f"({config.model_type})")


@dataclass
class Scores:
    """Summed importance per layer: ``heads[l][h]``, ``ffn[l][j]``, ``layers[l]`` (tensors on the CPU)."""

    heads: list[Any] = field(default_factory=list)
    ffn: list[Any] = field(default_factory=list)
    layers: Any = None
    examples: int = 0


def measure(model: Any, layout: Layout, batches: Iterable[dict[str, Any]]) -> Scores:
    """Gradient x activation importance over ``batches`` (each holds labels, so the model returns a loss)."""
    import torch

    n = len(layout.layers)
    scores = Scores([torch.zeros(layout.heads) for _ in range(n)],
                    [torch.zeros(layout.ffn_out(layer).in_features) for layer in layout.layers], torch.zeros(n))
    kept: dict[tuple[str, int], Any] = {}

    def keep_input(key: tuple[str, int]) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            args[0].retain_grad()
            kept[key] = args[0]
        return hook

    def keep_layer(index: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            out.retain_grad()
            kept[("in", index)] = args[0] if args else kwargs["hidden_states"]
            kept[("out", index)] = out
        return hook

    handles = []
    for i, layer in enumerate(layout.layers):
        handles.append(layout.attn_out(layer).register_forward_pre_hook(keep_input(("attn", i))))
        handles.append(layout.ffn_out(layer).register_forward_pre_hook(keep_input(("ffn", i))))
        handles.append(layer.register_forward_hook(keep_layer(i), with_kwargs=True))
    model.eval()  # no dropout: the score of the model that will be used
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            _accumulate(scores, kept, layout)
            scores.examples += int(next(iter(batch.values())).shape[0])
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return scores


def _accumulate(scores: Scores, kept: dict[tuple[str, int], Any], layout: Layout) -> None:
    with __import__("torch").no_grad():
        for i in range(len(layout.layers)):
            a = kept[("attn", i)]
            per_head = (a * a.grad).reshape(*a.shape[:2], layout.heads, layout.head_dim).sum(dim=(1, 3))
            scores.heads[i] += per_head.abs().sum(0).float().cpu()
            f = kept[("ffn", i)]
            scores.ffn[i] += (f * f.grad).sum(1).abs().sum(0).float().cpu()
            out, inp = kept[("out", i)], kept[("in", i)]
            scores.layers[i] += ((out - inp) * out.grad).sum(dim=(1, 2)).abs().sum().float().cpu()


def plan_counts(layout: Layout, n_channels: int, heads: float, ffn: float, layers: int) -> tuple[int, int, int]:
    """Heads and FFN channels to remove from every layer, and layers to remove; refuse impossible requests.

    Raises:
        ConfigError: Every head or channel of a layer, or every layer, would go; or head pruning asked of a
            model whose config cannot hold fewer heads.
    """
    n_heads, n_ffn = round(heads * layout.heads), round(ffn * n_channels)
    if heads and not layout.heads_prunable:
        why = ("its head size is hidden_size / num_attention_heads and transformers 5 has no prune_heads"
               if layout.kind == "bert" else "it shares key/value heads (grouped-query attention)")
        raise ConfigError(f"prune.heads: heads of this {layout.kind} model cannot be removed as a plain HF folder "
                          f"({why}); prune --ffn and --layers instead")
    if n_heads >= layout.heads:
        raise ConfigError(f"prune.heads {heads:g} would remove all {layout.heads} heads of every layer; pass a "
                          f"smaller fraction (at most {(layout.heads - 1) / layout.heads:.2f})")
    if n_ffn >= n_channels:
        raise ConfigError(f"prune.ffn {ffn:g} would remove all {n_channels} FFN channels of every layer; pass less")
    if layers >= len(layout.layers):
        raise ConfigError(f"prune.layers {layers}: the model has {len(layout.layers)} layers and must keep one; "
                          f"pass at most {len(layout.layers) - 1}")
    return n_heads, n_ffn, layers


def _sliced(linear: Any, index: Any, dim: int) -> Any:
    """A copy of ``linear`` keeping output rows (``dim`` 0) or input columns (``dim`` 1) ``index``.

    Not ``transformers.pytorch_utils.prune_linear_layer``: that one builds the new layer in the default
    dtype, so a bf16 model would come back partly fp32.
    """
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    out_f, in_f = weight.shape
    new = torch.nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, index))
    return new


def _set(parent: Any, name: str, module: Any) -> None:
    *path, leaf = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, module)


def _lowest(values: Any, n: int) -> Any:
    """Indices of the values to keep (all but the ``n`` lowest), in their original order."""
    import torch

    return torch.sort(torch.argsort(values, descending=True)[: len(values) - n]).values


def apply(model: Any, layout: Layout, scores: Scores, n_heads: int, n_ffn: int, n_layers: int) -> dict[str, Any]:
    """Remove the lowest-scoring layers, then heads and FFN channels in each remaining layer; update the config.

    Returns:
        What was removed: ``removed_layers`` (original indices), ``heads_removed_per_layer``,
        ``ffn_channels_removed_per_layer``.
    """
    import torch

    keep_layers = _lowest(scores.layers, n_layers).tolist()
    removed = sorted(set(range(len(layout.layers))) - set(keep_layers))
    for new_index, old_index in enumerate(keep_layers):
        layer = layout.layers[old_index]
        if n_heads:
            _prune_heads(layout, layer, _lowest(scores.heads[old_index], n_heads))
        if n_ffn:
            _prune_ffn(layout, layer, _lowest(scores.ffn[old_index], n_ffn))
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = new_index  # key/value cache slots follow the new numbering
    kept = torch.nn.ModuleList([layout.layers[i] for i in keep_layers])
    holder = model.base_model.encoder if layout.kind == "bert" else model.base_model
    setattr(holder, "layer" if layout.kind == "bert" else "layers", kept)
    config = model.config
    config.num_hidden_layers = len(keep_layers)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep_layers]
    if n_heads:
        config.head_dim = layout.head_dim
        config.num_attention_heads = config.num_key_value_heads = layout.heads - n_heads
    if n_ffn:
        config.intermediate_size = layout.ffn_out(kept[0]).in_features
    return {"removed_layers": removed, "heads_removed_per_layer": n_heads, "ffn_channels_removed_per_layer": n_ffn}


def _prune_heads(layout: Layout, layer: Any, keep: Any) -> None:
    import torch

    dims = torch.cat([torch.arange(h * layout.head_dim, (h + 1) * layout.head_dim) for h in keep.tolist()])
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(layer.self_attn, name, _sliced(getattr(layer.self_attn, name), dims.to(layer.self_attn.q_proj.weight.device), 0))
    layer.self_attn.o_proj = _sliced(layer.self_attn.o_proj, dims.to(layer.self_attn.o_proj.weight.device), 1)


def _prune_ffn(layout: Layout, layer: Any, keep: Any) -> None:
    names = ("mlp.gate_proj", "mlp.up_proj") if layout.kind == "llama" else ("intermediate.dense",)
    for name, linear in zip(names, layout.ffn_in(layer)):
        _set(layer, name, _sliced(linear, keep.to(linear.weight.device), 0))
    out_name = "mlp.down_proj" if layout.kind == "llama" else "output.dense"
    out = layout.ffn_out(layer)
    _set(layer, out_name, _sliced(out, keep.to(out.weight.device), 1))
