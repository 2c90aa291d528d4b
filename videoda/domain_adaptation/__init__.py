"""Domain adaptation: the training loop, its losses, the adversarial phase (VAT) and self-training (VST)."""
