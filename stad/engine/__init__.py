"""Training and inference under torch.distributed: launch, trainer, predictor, checkpoints.

Submodules import torch; import them explicitly (``from stad.engine import trainer``).
"""
