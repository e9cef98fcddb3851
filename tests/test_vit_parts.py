"""Parts of the toy VIT that decide whether the LLaVA can see: the projector's word-embedding start."""
import copy

import torch

from mmalign_utils.train.vision_pretrain import ProjectorInitConfig, cell_word_targets, init_projector_from_words
from mmalign_utils.world import vocab


def test_cell_targets_are_the_scaled_mean_embedding_of_the_cell_words(untrained_llava):
    model, processor = untrained_llava
    embed = model.model.language_model.get_input_embeddings().weight.detach().float()
    targets = cell_word_targets(embed, processor.tokenizer)
    assert targets.shape == (1 + len(vocab.COLORS) * len(vocab.SHAPES) * len(vocab.SIZES), embed.shape[1])
    ids = processor.tokenizer(" large red circle", add_special_tokens=False)["input_ids"]
    by_hand = embed[ids].mean(0)
    row = targets[vocab.class_index("red", "circle", "large")]
    assert torch.allclose(row / row.norm(), by_hand / by_hand.norm(), atol=1e-5)
    assert torch.allclose(targets.norm(dim=-1), embed.norm(dim=-1).mean().expand(len(targets)), rtol=1e-4)
    empty = processor.tokenizer(" empty", add_special_tokens=False)["input_ids"]
    assert torch.allclose(targets[0] / targets[0].norm(), embed[empty].mean(0) / embed[empty].mean(0).norm(),
                          atol=1e-5)


def test_projector_init_fits_better_than_the_mean_and_touches_only_the_projector(untrained_llava):
    model, processor = untrained_llava
    model = copy.deepcopy(model)
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    lm_before = model.model.language_model.layers[0].mlp.up_proj.weight.clone()
    proj_before = model.model.multi_modal_projector.linear_1.weight.clone()
    metrics = init_projector_from_words(model, processor.tokenizer, ProjectorInitConfig(n_scenes=100, steps=40))
    assert metrics["relative_mse"] < 0.9  # 1.0 is what always predicting the mean target scores
    assert not torch.equal(model.model.multi_modal_projector.linear_1.weight, proj_before)
    assert all(torch.equal(v, tower_before[k]) for k, v in model.model.vision_tower.state_dict().items())
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm_before)
