"""RoI heads: ACAR actor-context-actor relation head and a linear head."""
from stad.models.heads.acar import ACARHead, HR2O, acar_per_clip_reference
from stad.models.heads.common import roi_features
from stad.models.heads.linear import LinearHead

__all__ = ["ACARHead", "HR2O", "LinearHead", "acar_per_clip_reference", "roi_features"]
