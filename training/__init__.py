"""StyleGAN2, the attribute classifier, InterfaceGAN boundaries, Unsup3d and the SD-GAN fusion network."""
