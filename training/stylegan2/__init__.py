"""StyleGAN2 (config-f) compatible with rosinality/stylegan2-pytorch checkpoints, and its trainer.

Modules: `ops` (upfirdn2d, fused leaky ReLU in plain PyTorch), `layers`, `networks` (Generator,
Discriminator), `checkpoint` (safe load, atomic save, strict load with readable errors), `losses`,
`augment` (ADA), `fid`, `convert` (NVlabs pickles), `config` and `trainer` (the training stage).
"""

from training.stylegan2.networks import Discriminator, Generator

__all__ = ["Discriminator", "Generator"]
