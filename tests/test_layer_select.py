import pytest

from tools.errors import LineError
from tools.layer_select import select_layers

NAMES = ["_conv_stem", "_blocks", "_blocks.0", "_blocks.0._dw", "_blocks.1", "_blocks.10", "_conv_head"]


def test_a_glob_does_not_cross_a_dot_and_keeps_the_models_order():
    assert select_layers("_blocks.*", NAMES) == ["_blocks.0", "_blocks.1", "_blocks.10"]
    assert select_layers("_conv_head, _blocks.1 ,_blocks.?", NAMES) == ["_blocks.0", "_blocks.1", "_conv_head"]


@pytest.mark.parametrize("text", ["", " , ", "_bl.*", "_blocks.2"])
def test_a_name_that_matches_nothing_is_named(text):
    with pytest.raises(LineError) as error:
        select_layers(text, NAMES, "m")
    assert "line layers --model m" in error.value.fix
