"""ACAR-Net neck keys the engine reads: values it cannot honour are errors, not silently ignored."""
import pytest

from stad.config import ConfigError, load_config
from stad.engine import builders
from tests.configs.published import ROOT

R50 = ROOT / "configs" / "ava" / "SLOWFAST_R50_ACAR_HR2O.yaml"


def test_acar_neck_keys_map():
    kwargs = builders.model_kwargs(load_config(R50))
    assert kwargs["jitter_scale"] == 0.075


@pytest.mark.parametrize("override, message", [
    ("model.neck.kwargs.bbox_jitter.num=2", "bbox_jitter.num: only 1"),
    ("model.neck.kwargs.bbox_jitter.scal=0.1", r"bbox_jitter: unknown keys \['scal'\]"),
    ("model.neck.kwargs.num_classes=80", "neck.kwargs.num_classes is 80 but model.head.kwargs.num_classes is 60"),
    ("model.neck.kwargs.multi_class=False", "only multi-label"),
])
def test_neck_values_we_cannot_honour_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        builders.model_kwargs(load_config(R50, [override]))
