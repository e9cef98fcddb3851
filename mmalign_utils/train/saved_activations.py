"""Keep the activations that autograd saves for the backward in bf16 while the compute stays fp32.

On a CPU without bf16 instructions the recipes train in fp32 (bf16 arithmetic is emulated there, 2.4-24x
slower: mmalign_utils/precision.py), so every activation kept for the backward costs 4 bytes. Storing those in
bf16 halves the largest item of a LoRA step's memory for the price of two conversions per saved tensor (which
run at memory speed even without bf16 instructions): the forward, the loss and every logged number are exactly
fp32; only the backward reads activations rounded to bf16 (8 significant bits, what bf16 autocast training
keeps anyway). Measured in benchmarks/dpo_speed_memory.py; docs/alignment.md.

What is not stored in bf16: parameters and views of them (the frozen weights a matmul saves are the
parameter's own memory, a bf16 copy would add memory), non-fp32 tensors (indices, masks, bf16 already), and
small tensors (below `min_numel`: not worth a hook call). A tensor that several ops save (the normed hidden
state feeds q, k, v and their LoRA adapters) is converted once and shared, as autograd shares the original.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class SavedActivationStats:
    """What one `bf16_saved_activations` block did: tensors converted, saves served by an earlier conversion of
    the same tensor, and the fp32 bytes the conversions replaced (half of that is saved)."""

    converted: int = 0
    shared: int = 0
    fp32_bytes: int = 0


class _Narrowed:
    """A saved fp32 activation kept in bf16 (what pack hands autograd in place of the tensor)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


MIN_NUMEL = 1 << 15  # smaller saved tensors stay fp32: a hook call costs more than their memory is worth


@contextlib.contextmanager
def bf16_saved_activations(model: torch.nn.Module, min_numel: int | None = None
                           ) -> Iterator[SavedActivationStats]:
    """While the block runs, fp32 tensors saved for backward (not parameters, at least `min_numel` elements,
    default MIN_NUMEL) are kept in bf16 and widened back to fp32 when the backward reads them. Yields running
    statistics."""
    min_numel = MIN_NUMEL if min_numel is None else min_numel
    parameter_memory = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stats = SavedActivationStats()
    # id(original) -> (weak reference to it, its version, its bf16 copy): the weak reference proves that the id
    # still names the same live tensor; the entry goes when the original does
    converted: dict[int, tuple[weakref.ref, int, _Narrowed]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor | _Narrowed:
        if (tensor.dtype != torch.float32 or tensor.numel() < min_numel
                or tensor.untyped_storage().data_ptr() in parameter_memory):
            return tensor
        key = id(tensor)
        entry = converted.get(key)
        if entry is not None and entry[0]() is tensor and entry[1] == tensor._version:
            stats.shared += 1
            return entry[2]
        narrowed = _Narrowed(tensor.to(torch.bfloat16))

        def forget(ref: weakref.ref, key: int = key) -> None:
            if converted.get(key, (None,))[0] is ref:
                del converted[key]

        converted[key] = (weakref.ref(tensor, forget), tensor._version, narrowed)
        stats.converted += 1
        stats.fp32_bytes += tensor.numel() * 4
        return narrowed

    def unpack(stored: torch.Tensor | _Narrowed) -> torch.Tensor:
        return stored.tensor.float() if isinstance(stored, _Narrowed) else stored

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        try:
            yield stats
        finally:
            converted.clear()
