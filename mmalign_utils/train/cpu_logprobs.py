"""Per-token log-probs of the answer tokens on a CPU, with the statistics DPOTrainer logs, in whole-row tensor ops.

TRL's `ChunkedLogProbFunction` (what pair_batches uses on GPUs) folds vocabulary tiles into running statistics
with a Triton kernel; on a CPU it runs the same fold as a dozen torch ops per tile, and its backward recomputes
each tile's logits. Here each group of `ROWS` answer tokens gets its full (rows, vocabulary) logits at once
(49152 x 4 bytes a token for SmolLM2: 100 MB for 512 tokens, freed before the next group) and the statistics
come from a few fused passes. The forward keeps the probabilities in bf16 (2 bytes a vocabulary entry: 34 MB for
the toy DPO step's 344 answer tokens), so the backward of the log-probs is one matmul, d hidden = (onehot - p)
g W, with no second pass over the logits; it reads no stored hidden state, so bf16 storage of the saved
activations (saved_activations.py) changes it only by the rounding of p. (TRL's backward would pair logits
recomputed from a bf16-rounded hidden state with the forward's fp32 normaliser, which only matches an exact copy:
why the SFT-style recipes keep fp32 storage.) An entropy gradient (not used by DPO, whose entropy is logged only)
recomputes the logits and their normaliser from the stored hidden state instead. Same outputs as TRL's kernel,
gradients within bf16 rounding (tests/test_cpu_logprobs.py); speed in benchmarks/cpu_logprobs_speed.py.
"""
from __future__ import annotations

import torch

ROWS = 512  # answer tokens per logits block


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for (rows, V) tensors without a (rows, V) product tensor."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
            ) -> torch.Tensor:
    """fp32 logits from a matmul in `dtype` (the forward's compute dtype: the backward recomputes them alike)."""
    z = hidden.to(dtype) @ weight.to(dtype).t()
    if bias is not None:
        z = z + bias.to(dtype)
    return z.float()


class CPULogProbs(torch.autograd.Function):
    """(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) of `hidden @ weight.T + bias` at `targets`;
    an output not named in `outputs` is None. Gradients flow through log_probs and entropy, as in TRL."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                outputs: tuple[str, ...] = ()):
        ctx.set_materialize_grads(False)
        n = hidden.shape[0]
        ctx.compute_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        logprobs = torch.empty(n)
        entropy = torch.empty(n) if "entropy" in outputs else None
        log_sum_sq = torch.empty(n) if "log_sum_sq_probs" in outputs else None
        mean_logits = torch.empty(n) if "mean_logits" in outputs else None
        is_top1 = torch.empty(n, dtype=torch.bool) if "is_top1" in outputs else None
        probs = torch.empty((n, weight.shape[0]), dtype=torch.bfloat16)  # what the backward of log-probs reads
        for start in range(0, n, ROWS):
            rows = slice(start, min(start + ROWS, n))
            z = _logits(hidden[rows], weight, bias, ctx.compute_dtype)
            top, top_index = z.max(-1)  # max returns the first maximum: a tie with an earlier token is not top-1
            if is_top1 is not None:
                is_top1[rows] = top_index == targets[rows]
            if mean_logits is not None:
                mean_logits[rows] = z.mean(-1)
            logprobs[rows] = z.gather(1, targets[rows].unsqueeze(1)).squeeze(1)
            shifted = z.sub_(top.unsqueeze(1))  # z - max, in place: logits are not needed any more
            e = shifted.exp()
            total = e.sum(-1)
            log_total = total.log()
            logprobs[rows] -= top + log_total  # log Z = max + log sum exp(z - max)
            if entropy is not None:  # H = log Z - sum(p z), on max-shifted logits (less cancellation)
                entropy[rows] = log_total - _row_dot(e, shifted) / total
            if log_sum_sq is not None:  # log sum p^2 = log sum e^2 - 2 log sum e
                log_sum_sq[rows] = _row_dot(e, e).log() - 2 * log_total
            probs[rows] = e.div_(total.unsqueeze(1))
        ctx.save_for_backward(hidden, weight, bias, targets, probs)
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy, *_):
        hidden, weight, bias, targets, probs = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros(hidden.shape) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape) if needs_weight else None
        grad_bias = torch.zeros(bias.shape) if needs_bias else None
        n = hidden.shape[0]
        for start in range(0, n, ROWS):
            rows = slice(start, min(start + ROWS, n))
            # d log p_t / d z = onehot_t - p;  d H / d z = -p (log p + H)
            coef = torch.zeros(probs[rows].shape[0]) if grad_logprobs is None else grad_logprobs[rows].float()
            if grad_entropy is not None:  # needs log p: recompute the logits and their normaliser
                z = _logits(hidden[rows], weight, bias, ctx.compute_dtype)
                log_p = z.sub_(z.logsumexp(-1, keepdim=True))
                p = log_p.exp()
                entropy = -_row_dot(p, log_p)
                scale = log_p.add_(entropy.unsqueeze(1)).mul_(grad_entropy[rows].float().unsqueeze(1))
                grad_z = p.mul_(scale.add_(coef.unsqueeze(1))).neg_()
            else:
                grad_z = probs[rows].float().mul_(coef.unsqueeze(1)).neg_()
            if grad_logprobs is not None:
                grad_z.scatter_add_(1, targets[rows].unsqueeze(1), coef.unsqueeze(1))
            if grad_hidden is not None:
                grad_hidden[rows] = grad_z @ weight.float()
            if grad_weight is not None:
                grad_weight += grad_z.t() @ hidden[rows].float()
            if grad_bias is not None:
                grad_bias += grad_z.sum(0)
        return (grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
                grad_weight.to(weight.dtype) if grad_weight is not None else None,
                grad_bias.to(bias.dtype) if grad_bias is not None else None, None, None)


def cpu_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                 outputs: tuple[str, ...] = ()) -> tuple:
    """See `CPULogProbs`."""
    return CPULogProbs.apply(hidden, weight, bias, targets, tuple(outputs))
