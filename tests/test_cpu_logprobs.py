"""The CPU log-prob kernel against the plain formula and against TRL's chunked kernel: outputs and gradients."""
import pytest
import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction

from mmalign_utils.train import cpu_logprobs as kernel

OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _inputs(n=37, vocab=301, width=24, bias=True, seed=0):  # fp32, as the kernel computes
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, width, generator=g, dtype=torch.float32).requires_grad_()
    weight = torch.randn(vocab, width, generator=g, dtype=torch.float32).requires_grad_()
    b = torch.randn(vocab, generator=g, dtype=torch.float32).requires_grad_() if bias else None
    targets = torch.randint(0, vocab, (n,), generator=g)
    return hidden, weight, b, targets


@pytest.mark.parametrize("rows", [512, 5])  # one block, and blocks that split the tokens
def test_outputs_and_gradients_match_the_formula(monkeypatch, rows):
    monkeypatch.setattr(kernel, "ROWS", rows)
    hidden, weight, bias, targets = _inputs()
    targets[3], targets[4] = 7, 5
    with torch.no_grad():  # tokens 5 and 7 tie for the top logit: only the first maximum counts as top-1
        weight[7] = weight[5]
        bias[5] = bias[7] = 50.0
    logp, entropy, log_sum_sq, mean_logits, is_top1 = kernel.cpu_logprobs(hidden, weight, bias, targets, OUTPUTS)
    z = hidden @ weight.t() + bias
    log_softmax = z.log_softmax(-1)
    p = log_softmax.exp()
    assert torch.allclose(logp, log_softmax.gather(1, targets[:, None]).squeeze(1), atol=1e-5)
    assert torch.allclose(entropy, -(p * log_softmax).sum(-1), atol=1e-4)
    assert torch.allclose(log_sum_sq, (p * p).sum(-1).log(), atol=1e-5)
    assert torch.allclose(mean_logits, z.mean(-1), atol=1e-5)
    assert torch.equal(is_top1, z.argmax(-1) == targets) and not is_top1[3] and is_top1[4]
    g1, g2 = torch.randn(len(targets), dtype=torch.float32), torch.randn(len(targets), dtype=torch.float32)
    grads = torch.autograd.grad((logp * g1).sum() + (entropy * g2).sum(), (hidden, weight, bias))
    expected_logp = log_softmax.gather(1, targets[:, None]).squeeze(1)
    expected = torch.autograd.grad((expected_logp * g1).sum() + (-(p * log_softmax).sum(-1) * g2).sum(),
                                   (hidden, weight, bias))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5)


def test_matches_trl_chunked_kernel_in_fp32_and_without_entropy_gradient():
    hidden, weight, _, targets = _inputs(n=50, vocab=2000, width=32, bias=False, seed=1)
    hidden, weight = hidden.detach().requires_grad_(), weight.detach()  # frozen head, as in LoRA
    ours = kernel.cpu_logprobs(hidden, weight, None, targets, OUTPUTS)
    trl = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 512, None, 1.0, OUTPUTS)
    for name, a, b in zip(("logp",) + OUTPUTS, ours, trl):
        assert (torch.equal(a, b) if name == "is_top1" else torch.allclose(a, b, atol=1e-5)), name
    upstream = torch.randn(50)
    (mine,) = torch.autograd.grad((ours[0] * upstream).sum(), hidden)
    (theirs,) = torch.autograd.grad((trl[0] * upstream).sum(), hidden)
    # the log-prob gradient reads probabilities kept in bf16 (8 significant bits): close, not equal
    assert 0 < (mine - theirs).norm() / theirs.norm() < 1e-2


def test_only_requested_outputs_are_computed():
    hidden, weight, bias, targets = _inputs(n=4, vocab=10, width=3)
    logp, entropy, log_sum_sq, mean_logits, is_top1 = kernel.cpu_logprobs(hidden, weight, bias, targets, ())
    assert logp.shape == (4,) and entropy is None and log_sum_sq is None and mean_logits is None and is_top1 is None
