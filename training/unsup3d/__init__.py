"""Unsup3d (Wu et al., CVPR 2020): the networks behind SD-GAN's canonical 3D maps, official checkpoints and maps.

Modules here: `networks` (Encoder, EDDeconv, ConfNet with the official state-dict layout), `checkpoint`
(`load_unsup3d` reads official full / networks-only checkpoints and ours without running pickled code;
`save_unsup3d` writes the official layout) and `maps` (the six canonical maps of SD-GAN's Unsup3d demo and the
9-channel fusion input). The renderer, model and trainer of the train-unsup3d stage live next to them.
"""

from training.unsup3d.checkpoint import Unsup3dNets, load_unsup3d, save_unsup3d

__all__ = ["Unsup3dNets", "load_unsup3d", "save_unsup3d"]
