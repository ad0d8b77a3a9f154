import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
COLOUR_NET = "tests.colour_net:colour_net"


def shared_data() -> Path:
    root = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("LINE_SHARED_DATA", root.parent / "shared" / "data"))


@pytest.fixture
def settings(tmp_path):
    """Settings for a fast run on the colour net and the procedural generator."""
    from agent.config import load_settings

    return load_settings(
        model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(tmp_path / "cache"),
        runs_dir=str(tmp_path / "runs"),
        loop={"images_per_concept": 3, "init_top": 2, "init_random": 1, "sweep": False, "bank_top": 0,
              "max_iterations": 6},
    )


@pytest.fixture
def engine(settings):
    from agent.engines import build_engine

    return build_engine(settings)
