"""What a training rank computes: the rank trainer, SFT, optimiser, sharding, LoRA, checkpoints."""
