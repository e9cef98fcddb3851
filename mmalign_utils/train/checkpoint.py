"""Resumable training loops: a long toy build (hours on 2 cores) must survive a crash or a closed session.

A checkpoint is a folder holding the trainable tensors (safetensors, by parameter name), the optimizer and
scheduler state (`torch.save`, read back with weights_only=True), and a JSON file with everything else the loop
needs to go on exactly where it stopped: the batch queue, the Python RNG state, the losses and any records the
caller keeps (evaluations along the way). It is written to a sibling folder and renamed into place, so a crash
while saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state: list) -> tuple:
    return (state[0], tuple(state[1]), state[2])


class LoopCheckpoint:
    """`folder` holds at most one checkpoint of one loop; `every` steps between saves."""

    def __init__(self, folder: str | Path, every: int = 50):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, not {every}")
        self.folder = Path(folder)
        self.every = every

    @property
    def _saving(self) -> Path:
        return self.folder.with_name(self.folder.name + ".saving")

    def _complete(self) -> Path | None:
        """The folder holding a whole checkpoint: `folder`, or the sibling a save wrote in full (loop.json is
        written last) before a crash between removing the old one and renaming it into place."""
        for candidate in (self.folder, self._saving):
            if (candidate / "loop.json").exists():
                return candidate
        return None

    def exists(self) -> bool:
        return self._complete() is not None

    def save(self, model, opt, sched, rng, queue: list[list[int]], losses: list[float], records: list[dict]
             ) -> None:
        tmp = self._saving
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optim.pt")
        (tmp / "loop.json").write_text(json.dumps({
            "step": len(losses), "queue": queue, "rng": _rng_to_json(rng.getstate()),
            "losses": losses, "records": records}))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        tmp.rename(self.folder)

    def load(self, model, opt, sched, rng) -> tuple[list[list[int]], list[float], list[dict]]:
        """Restore the tensors, optimizer, scheduler and RNG in place; returns (queue, losses, records)."""
        source = self._complete()
        if source is None:
            raise FileNotFoundError(f"no checkpoint in {self.folder}")
        if source != self.folder:  # finish the rename the crash interrupted
            if self.folder.exists():
                shutil.rmtree(self.folder)
            source.rename(self.folder)
        state = json.loads((self.folder / "loop.json").read_text())
        tensors = load_file(str(self.folder / "trainable.safetensors"))
        params = dict(model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
        if missing or set(tensors) - set(params):
            raise RuntimeError(
                f"checkpoint {self.folder} does not match this model (missing {missing[:3]}, unknown "
                f"{sorted(set(tensors) - set(params))[:3]}): it was written by another configuration; delete the "
                f"folder to start this stage again")
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)
        optim = torch.load(self.folder / "optim.pt", weights_only=True)
        opt.load_state_dict(optim["optimizer"])
        sched.load_state_dict(optim["scheduler"])
        rng.setstate(_rng_from_json(state["rng"]))
        return state["queue"], state["losses"], state["records"]
