"""Tests of the StyleGAN2 networks, trainer, stage and converter."""
