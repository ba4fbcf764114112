"""AVA frame-mAP evaluation with capacity (numpy/pandas/numba only: no torch import)."""
from stad.evaluation.ava_map import (OFFICIAL_CAPACITY, CapacityResult, EvaluationResult, average_precision,
                                     evaluate)
from stad.evaluation.csv_io import AvaCsvError

__all__ = ["OFFICIAL_CAPACITY", "AvaCsvError", "CapacityResult", "EvaluationResult", "average_precision", "evaluate"]
