"""bf16 storage of saved activations: forward untouched, backward reads bf16-rounded activations, parameters and
shared tensors handled, and when training turns it on."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mmalign_utils.train.peft_setup import keeps_bf16_activations
from mmalign_utils.train.recipes import RecipeError, default_recipe, validate
from mmalign_utils.train.saved_activations import bf16_saved_activations


def test_a_tensor_saved_twice_is_converted_once_and_grads_read_its_bf16_value():
    torch.manual_seed(0)
    h = torch.randn(4096)
    w1, w2 = torch.randn(4096, requires_grad=True), torch.randn(4096, requires_grad=True)
    with bf16_saved_activations(torch.nn.Linear(1, 1), min_numel=1) as stats:
        loss = (h * w1).sum() + (h * w2).sum()  # each product saves h for its weight's gradient
    loss.backward()
    assert (stats.converted, stats.shared, stats.fp32_bytes) == (1, 1, 4096 * 4)
    rounded = h.to(torch.bfloat16).float()  # d loss / d w = h, as stored
    assert torch.equal(w1.grad, rounded) and torch.equal(w2.grad, rounded)
    assert not torch.equal(rounded, h)  # the test can tell bf16 from fp32


def test_parameters_stay_as_they_are():
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256, bias=False).requires_grad_(False)  # frozen: its weight is saved for dx
    x = torch.randn(8, 256, requires_grad=True)
    F.linear(x, layer.weight).square().sum().backward()
    expected = x.grad.clone()
    x.grad = None
    with bf16_saved_activations(layer, min_numel=1) as stats:
        out = F.linear(x, layer.weight)
        loss = out.square().sum()
    loss.backward()
    # square saved `out` (converted); the weight view saved by linear is not: dx = (2 out) W uses the exact W
    assert stats.converted == 1 and stats.fp32_bytes == out.numel() * 4
    assert torch.allclose(x.grad, expected, rtol=1e-2, atol=1e-2)
    assert not torch.equal(x.grad, expected)


def test_a_small_transformer_loss_is_exact_and_grads_close():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    ids = torch.randint(0, 128, (2, 24))

    def loss_and_grads(narrow: bool):
        model.zero_grad()
        ctx = bf16_saved_activations(model, min_numel=1) if narrow else torch.autograd.graph.saved_tensors_hooks(
            lambda t: t, lambda t: t)
        with ctx:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grads32 = loss_and_grads(False)
    loss16, grads16 = loss_and_grads(True)
    assert torch.equal(loss32, loss16)  # the forward never reads what was stored
    relative = (grads16 - grads32).norm() / grads32.norm()
    assert 0 < relative < 2e-2  # bf16 keeps 8 significant bits: errors of a few parts per thousand


def test_small_tensors_and_other_dtypes_are_left_alone():
    x = torch.randn(100, requires_grad=True)
    with bf16_saved_activations(torch.nn.Linear(1, 1), min_numel=1000) as stats:
        (x.exp() * x.double().float()).sum().backward()
    assert stats.converted == 0


def _trainer(supports=True, **args):
    trainer = SimpleNamespace(args=SimpleNamespace(**{"bf16": False, "fp16": False, "use_cpu": True, **args}))
    trainer.supports_bf16_saved_activations = supports
    return trainer


@pytest.mark.parametrize("trainer, setting, expected", [
    (_trainer(), "auto", True),
    (_trainer(bf16=True), "auto", False),  # autocast: activations are bf16 already
    (_trainer(), "fp32", False),
    (_trainer(supports=False), "auto", False),  # TRL's fused LM head (SFT-style recipes)
])
def test_when_training_keeps_bf16_activations(trainer, setting, expected):
    assert keeps_bf16_activations(trainer, setting) is expected


def test_not_on_a_gpu_where_dpo_uses_trls_kernel(monkeypatch):
    from mmalign_utils.train import peft_setup

    monkeypatch.setattr(peft_setup, "has_cuda", lambda: True)
    assert keeps_bf16_activations(_trainer(use_cpu=False), "auto") is False
    assert keeps_bf16_activations(_trainer(use_cpu=True), "auto") is True  # use_cpu=True trains on the CPU


def test_only_dpo_trainers_declare_support():
    from mmalign_utils.train.dpo import AlignDPOTrainer
    from mmalign_utils.train.sft import AlignSFTTrainer

    assert AlignDPOTrainer.supports_bf16_saved_activations
    assert not getattr(AlignSFTTrainer, "supports_bf16_saved_activations", False)


def test_the_setting_is_checked():
    with pytest.raises(ValueError, match="saved_activations"):
        keeps_bf16_activations(_trainer(), "bf16")
    recipe = default_recipe("dpo", "toy")
    recipe.hardware.saved_activations = "fp8"
    with pytest.raises(RecipeError, match="hardware.saved_activations"):
        validate(recipe)


def test_the_cpu_log_prob_kernel_stays_close_under_bf16_storage():
    """Its log-prob gradient reads the bf16 probabilities it kept, not the stored hidden state: under bf16 storage
    it stays within bf16 rounding of the fp32 gradient (TRL's kernel pairs a rounded hidden state with the fp32
    normaliser instead, which is why only DPO's pair path turns the storage on)."""
    from mmalign_utils.train.cpu_logprobs import cpu_logprobs

    torch.manual_seed(0)
    hidden = (4 * torch.randn(40, 64)).requires_grad_()
    head = torch.nn.Linear(64, 500, bias=False).requires_grad_(False)  # the frozen LM head: a parameter
    weight, targets, upstream = head.weight, torch.randint(0, 500, (40,)), torch.randn(40)
    with bf16_saved_activations(head, min_numel=1) as stats:
        logp = cpu_logprobs(hidden, weight, None, targets)[0]
    (got,) = torch.autograd.grad((logp * upstream).sum(), hidden)
    assert stats.converted == 1  # the hidden state (kept for an entropy gradient)
    exact = torch.log_softmax(hidden @ weight.t(), -1).gather(1, targets[:, None]).squeeze(1)
    (want,) = torch.autograd.grad((exact * upstream).sum(), hidden)
    assert (got - want).norm() / want.norm() < 1e-2
