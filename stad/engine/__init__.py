"""Training and inference: launch, trainer, predictor (distributed scoring), inference (the video `Predictor`), checkpoints.

Submodules import torch; import them explicitly (``from stad.engine import trainer``).
"""
