"""fit-boundaries: InterfaceGAN boundaries in W (the semantic prior basis n_b) and the held-out test set."""
