"""train-fusion: the SD-GAN semantic fusion network (official layout) and its checkpoints."""

from training.fusion.checkpoint import fusion_state_dict, load_fusion_checkpoint, save_fusion_checkpoint
from training.fusion.network import FusionArch, SemanticFusionNetwork

__all__ = ["FusionArch", "SemanticFusionNetwork", "fusion_state_dict", "load_fusion_checkpoint",
           "save_fusion_checkpoint"]
