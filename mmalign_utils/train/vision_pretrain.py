"""Teach the toy vision tower to see before the LLaVA stages.

LLaVA starts from CLIP, a tower that already sees. A SigLIP tower initialised at random and trained only
through the language model on a few thousand examples stays at chance (measured: VQA 0.23 vs chance 0.23),
so the toy gets its own "CLIP pretraining": ShapesWorld images are free, and the patch grid is aligned with the
3x3 world grid (k x k patches per cell: k = 2 at the default 96 px with 16 px patches), so the tower learns to
name, at every patch, what is in that patch's cell (empty, or colour x shape x size), with a linear head on the
features the LLaVA projector will read (the last hidden state).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mmalign_utils.progress import progress_bar
from mmalign_utils.world import vocab
from mmalign_utils.world.render import render_batch
from mmalign_utils.world.scenes import generate_scene
from mmalign_utils.world.vocab import GRID


@dataclass
class VisionPretrainConfig:
    n_train_scenes: int = 12000
    n_heldout_scenes: int = 1000
    steps: int = 500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0

    @classmethod
    def smoke(cls) -> VisionPretrainConfig:
        return cls(n_train_scenes=600, n_heldout_scenes=100, steps=20, batch_size=32)


def n_cell_classes() -> int:
    return 1 + len(vocab.COLORS) * len(vocab.SHAPES) * len(vocab.SIZES)


def patches_per_cell_side(vision_tower) -> int:
    """k: the tower's patch grid is (3k) x (3k), each world cell covered by k x k patches."""
    side = vision_tower.config.image_size // vision_tower.config.patch_size
    if side % GRID:
        raise ValueError(f"a {side}x{side} patch grid does not tile the {GRID}x{GRID} world grid")
    return side // GRID


def patch_labels(cell_labels: np.ndarray, k: int) -> np.ndarray:
    """Cell classes [n, 9] -> the class of each patch's cell, [n, (3k)^2] in the tower's raster patch order."""
    grid = np.asarray(cell_labels).reshape(-1, GRID, GRID)
    return grid.repeat(k, axis=1).repeat(k, axis=2).reshape(len(grid), -1)


def patch_slots(k: int) -> np.ndarray:
    """For each patch in raster order, its place inside its cell (0 .. k*k-1, row-major)."""
    rows, cols = np.divmod(np.arange((GRID * k) ** 2), GRID * k)
    return (rows % k) * k + cols % k


def _scenes_and_targets(n: int, seed: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scenes = [generate_scene(rng) for _ in range(n)]
    images = render_batch(scenes, image_size)
    targets = np.asarray([s.cell_labels() for s in scenes], dtype=np.int64)
    return images, targets


def _to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW normalised with mean/std 0.5, as the toy image processor does."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def cell_features(vision_tower, pixel_values: torch.Tensor) -> torch.Tensor:
    """The features LLaVA reads (vision_feature_layer=-1, strategy "full"): one vector per patch."""
    out = vision_tower(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[-1]


@torch.no_grad()
def cell_accuracy(vision_tower, head: torch.nn.Module, images: np.ndarray, targets: np.ndarray,
                  batch_size: int = 256) -> dict:
    """Share of patches whose cell class the head names right (`targets`: cell classes [n, 9])."""
    vision_tower.eval()
    targets = patch_labels(targets, patches_per_cell_side(vision_tower))
    correct = occupied_correct = occupied = 0
    for i in range(0, len(images), batch_size):
        x = _to_pixel_values(images[i:i + batch_size])
        y = torch.from_numpy(targets[i:i + batch_size])
        pred = head(cell_features(vision_tower, x).float()).argmax(-1)
        correct += (pred == y).sum().item()
        mask = y > 0
        occupied += mask.sum().item()
        occupied_correct += ((pred == y) & mask).sum().item()
    vision_tower.train()
    return {"cell_accuracy": correct / targets.size, "object_cell_accuracy": occupied_correct / max(occupied, 1)}


def pretrain_vision_tower(vision_tower, cfg: VisionPretrainConfig | None = None, progress: bool = True) -> dict:
    """Train the tower in place on per-cell classification. Returns held-out accuracies and timing."""
    cfg = cfg or VisionPretrainConfig()
    torch.manual_seed(cfg.seed)
    start = time.time()
    image_size = vision_tower.config.image_size
    train_x, train_y = _scenes_and_targets(cfg.n_train_scenes, cfg.seed, image_size)
    held_x, held_y = _scenes_and_targets(cfg.n_heldout_scenes, cfg.seed + 10_000_019, image_size)
    train_patch_y = patch_labels(train_y, patches_per_cell_side(vision_tower))
    hidden = vision_tower.config.hidden_size
    head = torch.nn.Linear(hidden, n_cell_classes())
    params = list(vision_tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng = np.random.default_rng(cfg.seed)
    vision_tower.train()
    losses = []
    bar = progress_bar(range(cfg.steps), desc="vision pretraining", disable=not progress)
    for _ in bar:
        idx = rng.integers(0, len(train_x), cfg.batch_size)
        logits = head(cell_features(vision_tower, _to_pixel_values(train_x[idx])).float())
        patch_targets = torch.from_numpy(train_patch_y[idx]).reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), patch_targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    metrics = cell_accuracy(vision_tower, head, held_x, held_y)
    metrics.update(seconds=time.time() - start, final_loss=float(np.mean(losses[-20:])), steps=cfg.steps,
                   chance_cell_accuracy=float((held_y == 0).mean()))  # always answering "empty"
    return metrics


@dataclass
class ProjectorInitConfig:
    n_scenes: int = 3000
    steps: int = 300
    batch_size: int = 1024
    lr: float = 2e-3
    seed: int = 1

    @classmethod
    def smoke(cls) -> ProjectorInitConfig:
        return cls(n_scenes=200, steps=30)


# What each patch of an occupied cell is mapped to when a cell has several patches (k >= 2): the word for one
# attribute, by the patch's place in the cell (top-left: colour, top-right: shape, bottom-left: size, then again),
# so that a row of patches reads like words ("red circle", "large red") and every image token starts as a real
# word embedding the LLM already reads.
ATTRIBUTE_BY_SLOT: tuple[str, ...] = ("color", "shape", "size")


def _words_embedding(embed: torch.Tensor, tokenizer, words: str) -> torch.Tensor:
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return embed[ids].float().mean(0)


def cell_word_targets(embed: torch.Tensor, tokenizer) -> torch.Tensor:
    """For each cell class, the mean input embedding of the words that name it (" large red circle"; an empty
    cell: " empty"), rescaled to the average norm of a token embedding. [n_cell_classes, hidden]."""
    rows = []
    for index in range(n_cell_classes()):
        cls = vocab.class_from_index(index)
        rows.append(_words_embedding(embed, tokenizer, " empty" if cls is None else f" {cls[2]} {cls[0]} {cls[1]}"))
    targets = torch.stack(rows)
    scale = embed.float().norm(dim=-1).mean()
    return targets / targets.norm(dim=-1, keepdim=True) * scale


def patch_word_targets(embed: torch.Tensor, tokenizer, k: int) -> torch.Tensor:
    """The embedding each patch is regressed onto, by its cell's class and its place in the cell:
    [n_cell_classes, k*k, hidden]. One patch per cell (k = 1): the cell's words in one vector
    (`cell_word_targets`); k >= 2: one attribute word per patch (ATTRIBUTE_BY_SLOT), an empty cell " empty"."""
    if k == 1:
        return cell_word_targets(embed, tokenizer)[:, None]
    out = torch.empty(n_cell_classes(), k * k, embed.shape[1])
    for index in range(n_cell_classes()):
        cls = vocab.class_from_index(index)
        attributes = None if cls is None else dict(zip(("color", "shape", "size"), cls))
        for slot in range(k * k):
            word = "empty" if attributes is None else attributes[ATTRIBUTE_BY_SLOT[slot % len(ATTRIBUTE_BY_SLOT)]]
            out[index, slot] = _words_embedding(embed, tokenizer, " " + word)
    return out


def init_projector_from_words(model, tokenizer, cfg: ProjectorInitConfig | None = None) -> dict:
    """Start the projector where it maps each patch's features onto word embeddings of what is in its cell.

    LLaVA's stage 1 starts from CLIP, whose image features are already aligned with text, so a projector learns
    the map into the LLM's embedding space from captions. Our tower learnt classes, not text: measured, 50
    stage-1 steps from a random projector left the LLM blind (held-out caption loss 1.97 with the right image,
    1.99 with another scene's image), and the toy LLaVA trained on after that answered VQA near chance. This
    regression (patch features -> the LLM's own embeddings of the cell's words, `patch_word_targets`, no LLM
    forward pass, seconds on CPU) stands in for CLIP's text alignment; stage 1 then trains the projector through
    the LLM as LLaVA does.
    """
    cfg = cfg or ProjectorInitConfig()
    torch.manual_seed(cfg.seed)
    tower = model.model.vision_tower
    projector = model.model.multi_modal_projector
    embed = model.model.language_model.get_input_embeddings().weight.detach()
    k = patches_per_cell_side(tower)
    targets = patch_word_targets(embed, tokenizer, k).reshape(-1, embed.shape[1])  # row = class * k*k + slot
    images, labels = _scenes_and_targets(cfg.n_scenes, cfg.seed + 20_000_003, tower.config.image_size)
    was_training = tower.training
    tower.eval()
    with torch.no_grad():
        feats = torch.cat([cell_features(tower, _to_pixel_values(images[i:i + 256])).float()
                           for i in range(0, len(images), 256)])
    tower.train(was_training)
    feats = feats.reshape(-1, feats.shape[-1])
    slots = np.broadcast_to(patch_slots(k), (len(labels), (GRID * k) ** 2))
    rows = torch.from_numpy((patch_labels(labels, k) * k * k + slots).reshape(-1))  # target row of each patch
    dtype = next(projector.parameters()).dtype
    opt = torch.optim.Adam(projector.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    variance = targets[rows].var(0).sum()
    for _ in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, len(feats), cfg.batch_size))
        out = projector(feats[idx].to(dtype)).float()
        loss = ((out - targets[rows[idx]]) ** 2).sum(-1).mean() / variance  # 1.0 = predicting the mean target
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():  # how often the nearest target vector is the right one (words shared by rows count)
        out = projector(feats[:4096].to(dtype)).float()
        nearest = targets[torch.cdist(out, targets).argmin(-1)]
        accuracy = (nearest - targets[rows[:4096]]).abs().amax(-1).lt(1e-6).float().mean().item()
    return {"relative_mse": float(loss.item()), "nearest_word_accuracy": accuracy}
