import os
from pathlib import Path

import pytest

from tests.helpers import COLOUR_NET, NATURAL_CLASSES, shared_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    from agent.runs.engine_factory import build_engine

    return build_engine(settings)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline saved to a folder (evals.tiny_diffusion)."""
    pytest.importorskip("diffusers")
    from evals.tiny_diffusion import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture
def shared_photos(tmp_path, monkeypatch) -> Path:
    """LINE_SHARED_DATA pointed at a folder whose imagenet-samples/ holds 10 of the shared
    ImageNet samples (what `control = "auto"` finds for a photo generator); skips without them."""
    source = shared_data() / "imagenet-samples"
    if not source.is_dir():
        pytest.skip(f"the shared ImageNet samples are absent ({source}); set LINE_SHARED_DATA")
    root = tmp_path / "shared"
    (root / "imagenet-samples").mkdir(parents=True)
    for name in NATURAL_CLASSES:
        (root / "imagenet-samples" / f"{name}.jpg").write_bytes((source / f"{name}.jpg").read_bytes())
    monkeypatch.setenv("LINE_SHARED_DATA", str(root))
    return root / "imagenet-samples"


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a PostgreSQL server started for this test session (tests/postgres.py)."""
    from tests.postgres import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for this test session: 2 CPUs, no dashboard. Token authentication
    is turned off in this process (and so its workers) only."""
    import ray

    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous
