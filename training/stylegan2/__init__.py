"""StyleGAN2 (config-f) compatible with rosinality/stylegan2-pytorch checkpoints, and its trainer.

Modules: `ops` (upfirdn2d, fused leaky ReLU in plain PyTorch), `layers`, `networks` (Generator,
Discriminator), `checkpoint` (networks rebuilt from rosinality-layout checkpoints, on the generic I/O of
`training.common.checkpoint`), `losses`, `augment` (ADA), `fid`, `convert` (NVlabs pickles), `config`,
`trainer` (StyleGAN2Trainer, a `training.common.loop.Trainable`) and `stage` (the train-stylegan2 stage).
"""

from training.stylegan2.networks import Discriminator, Generator

__all__ = ["Discriminator", "Generator"]
