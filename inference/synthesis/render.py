"""One batch of edits: n_o from the fusion network, then origin G(w), basis G(w + n_b), ours G(w + n_b + n_o).

Exactly the official test.py's three renders (w repeated over the W+ rows; truncation towards the mean after the
sum), with our frozen `Editor`, plus the edit-strength sweep G(w + a·n_b) and G(w + a·(n_b + n_o)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from training.fusion.network import FusionArch, SemanticFusionNetwork
from training.fusion.trainer import Editor, Inputs, prepare_inputs


@dataclass
class Rendered:
    origin: Tensor  # (B, 3, S, S) float in [-1, 1]-ish (unclamped generator output), on the CPU
    basis: Tensor
    ours: Tensor
    offset: Tensor  # n_o (B, num_ws, w_dim)
    inputs: Inputs


class EditRenderer:
    """A fusion network and the editor that renders its edits; no gradients anywhere."""

    def __init__(self, network: SemanticFusionNetwork, editor: Editor, device: torch.device) -> None:
        self.network = network.to(device).eval()
        self.arch: FusionArch = network.arch
        self.editor = editor
        self.device = device

    @torch.no_grad()
    def render(self, batch: dict) -> Rendered:
        inputs = prepare_inputs(batch, self.arch, self.editor.generator.size, self.device)
        offset = self.network(inputs.face, inputs.template, inputs.canonical).float()
        zero = torch.zeros_like(inputs.nb)
        images = [self.editor(self.editor.latent(inputs.w, nb, off)).float().cpu()
                  for nb, off in ((zero, None), (inputs.nb, None), (inputs.nb, offset))]
        return Rendered(*images, offset=offset.cpu(), inputs=inputs)

    @torch.no_grad()
    def sweep(self, rendered: Rendered, count: int, alphas: Sequence[float]) -> dict[str, dict[float, Tensor]]:
        """{"interfacegan": {a: G(w + a·n_b)}, "sdgan": {a: G(w + a·(n_b + n_o))}} of the first `count` samples."""
        inputs = rendered.inputs
        w, nb, offset = inputs.w[:count], inputs.nb[:count], rendered.offset[:count].to(self.device)
        out: dict[str, dict[float, Tensor]] = {"interfacegan": {}, "sdgan": {}}
        for alpha in alphas:
            out["interfacegan"][alpha] = self.editor(self.editor.latent(w, alpha * nb)).float().cpu()
            out["sdgan"][alpha] = self.editor(self.editor.latent(w, alpha * nb, alpha * offset)).float().cpu()
        return out


def offset_norms(offset: Tensor) -> list[float]:
    """Per sample, the mean norm of n_o's W+ rows (comparable with ||n_b||, which every row receives)."""
    return [round(float(v), 6) for v in offset.norm(dim=-1).mean(dim=-1)]


__all__ = ["EditRenderer", "Rendered", "offset_norms"]
