"""The training ranks and what they run: SFT, optimiser, sharding, LoRA, checkpoints."""
