"""Cross-attention probabilities of a diffusers UNet, read beside the forward pass.

The detectors of Chen et al. (Bright Ending) and Ren et al. (attention entropy) need the
softmax(Q Kᵀ / √d) maps of the UNet's cross-attention layers (``attn2`` of every transformer
block). Swapping the attention processor would change how the UNet computes its output (and so
every other detector's numbers); instead a forward pre-hook on each cross-attention module
recomputes the probabilities from the module's own inputs and projections, leaving the UNet's
computation untouched. A hook only works while a :class:`AttentionCapture` is active and only
at the UNet calls it was asked for; after the last of them the capture removes its hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

# A reducer turns one layer's probabilities [rows, heads, pixels, tokens] into a small tensor
# per row (e.g. the end token's map, or the mean over pixels); what it returns is kept. It is
# called with the layer's name and the probabilities.
Reducer = Callable[[str, torch.Tensor], torch.Tensor]


class CrossAttentionUnavailable(ValueError):
    """The UNet has no cross-attention layers whose maps can be read."""


def cross_attention_layers(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The UNet's text cross-attention modules by name (diffusers ``attn2``), in call order.

    Raises :class:`CrossAttentionUnavailable`, naming the layer, when there are none or when a
    layer normalises its inputs in a way the probability recomputation does not follow.
    """
    layers = {
        name: module
        for name, module in unet.named_modules()
        if name.endswith("attn2") and hasattr(module, "to_q") and hasattr(module, "to_k")
    }
    if not layers:
        raise CrossAttentionUnavailable(
            "the UNet has no cross-attention layers (no diffusers 'attn2' modules)"
        )
    for name, module in layers.items():
        for attribute in ("norm_cross", "group_norm", "spatial_norm", "norm_q", "norm_k"):
            if getattr(module, attribute, None) is not None:
                raise CrossAttentionUnavailable(
                    f"cross-attention layer {name} uses {attribute}, which the attention maps "
                    "of the attention-based detectors do not reproduce"
                )
    return layers


def attention_probabilities(
    module: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """softmax(Q Kᵀ · scale) of one diffusers Attention module, [rows, heads, pixels, tokens],
    float32, from its query input ``hidden`` [rows, pixels, C] and ``context`` [rows, L, D]."""
    if hidden.ndim == 4:  # [rows, C, h, w] (a module called on feature maps)
        hidden = hidden.flatten(2).transpose(1, 2)
    query = module.to_q(hidden).float()
    key = module.to_k(context).float()
    rows, pixels, inner = query.shape
    heads = int(module.heads)
    query = query.reshape(rows, pixels, heads, inner // heads).transpose(1, 2)
    key = key.reshape(rows, key.shape[1], heads, inner // heads).transpose(1, 2)
    scores = torch.matmul(query, key.transpose(-1, -2)) * float(module.scale)
    return scores.softmax(dim=-1)


class AttentionCapture:
    """Reads the cross-attention maps of chosen UNet calls while active (a context manager).

    ``requests`` maps a name to (the 0-based UNet call indices to read, a reducer). For every
    requested call and every cross-attention layer, the reducer's output for the first
    ``rows`` rows (the conditional half of a guided call) is kept in
    ``results[name][call]`` (a list of (layer name, output) in call order).
    ``seconds[name]`` is the time spent in that name's recomputation and reduction.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        requests: dict[str, tuple[frozenset[int], Reducer]],
        rows: int,
    ) -> None:
        self.unet = unet
        self.layers = cross_attention_layers(unet)
        self._names = {id(module): name for name, module in self.layers.items()}
        self.requests = requests
        self.rows = rows
        self.call = -1
        # after this UNet call every request is read: the hooks come off
        self._last_call = max(
            (max(calls, default=-1) for calls, _ in requests.values()), default=-1
        )
        self.results: dict[str, dict[int, list[tuple[str, torch.Tensor]]]] = {
            name: {} for name in requests
        }
        self.seconds: dict[str, float] = {name: 0.0 for name in requests}
        self._handles: list[Any] = []

    def __enter__(self) -> AttentionCapture:
        self._handles.append(self.unet.register_forward_pre_hook(self._count_call))
        for module in self.layers.values():
            self._handles.append(
                module.register_forward_pre_hook(self._read_layer, with_kwargs=True)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_call(self, module: torch.nn.Module, args: tuple) -> None:
        self.call += 1
        if self.call > self._last_call:  # later calls run hook-free (and so through the
            self.__exit__()  # frozen UNet, memaudit.diffusion.frozen_unet)

    def _read_layer(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        wanted = [n for n, (calls, _) in self.requests.items() if self.call in calls]
        if not wanted:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if hidden is None or context is None:
            raise CrossAttentionUnavailable(
                "a cross-attention layer was called without encoder_hidden_states"
            )
        with torch.no_grad():
            start = clock(hidden.device)
            probs = attention_probabilities(module, hidden[: self.rows], context[: self.rows])
            shared = clock(hidden.device) - start
            for name in wanted:
                begin = clock(hidden.device)
                reduced = self.requests[name][1](self._names[id(module)], probs)
                self.results[name].setdefault(self.call, []).append(
                    (self._names[id(module)], reduced)
                )
                self.seconds[name] += shared + clock(hidden.device) - begin


def clock(device: torch.device) -> float:
    """Wall seconds, after queued GPU work has finished (so GPU time is counted)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def end_token_positions(tokenizer: object, input_ids: torch.Tensor) -> torch.Tensor:
    """Index of each prompt's end token ([SEP] for BERT-style, <|endoftext|> for CLIP
    tokenizers): the first occurrence after position 0, or the last position when truncation
    left none."""
    end_id = getattr(tokenizer, "sep_token_id", None)
    if end_id is None:
        end_id = getattr(tokenizer, "eos_token_id", None)
    if end_id is None:
        raise CrossAttentionUnavailable(
            "the tokenizer has neither a sep_token_id nor an eos_token_id: no end token"
        )
    is_end = input_ids == int(end_id)
    is_end[:, 0] = False
    length = input_ids.shape[1]
    first = torch.where(is_end.any(dim=1), is_end.int().argmax(dim=1), length - 1)
    return first.long()
