import pytest

from agent.config import LoopConfig, load_settings
from tools.errors import LineError


def test_toml_then_environment_then_overrides(tmp_path, monkeypatch):
    path = tmp_path / "line.toml"
    path.write_text('layer = "_blocks.10"\n[loop]\nmax_iterations = 3\npatience = 2\n[llm]\nprovider = "openai"\n')
    settings = load_settings(path)
    assert (settings.layer, settings.loop.max_iterations, settings.llm.provider) == ("_blocks.10", 3, "openai")
    monkeypatch.setenv("LINE_LOOP__MAX_ITERATIONS", "7")
    monkeypatch.setenv("LINE_LLM__PROVIDER", "openai-compatible")
    settings = load_settings(path, layer="_conv_head")
    assert settings.loop.max_iterations == 7 and settings.loop.patience == 2
    assert settings.llm.provider == "openai-compatible" and settings.layer == "_conv_head"


@pytest.mark.parametrize("body, words", [
    ("[loop]\nmax_iter = 3\n", "unknown key 'loop.max_iter'"),
    ("[loop]\nmax_iterations = 'lots'\n", "'loop.max_iterations'"),
    ("[llm]\nprovider = 'magic'\n", "'llm.provider'"),
    ("layer = [", "not valid TOML"),
])
def test_broken_config_names_the_key(tmp_path, body, words):
    path = tmp_path / "line.toml"
    path.write_text(body)
    with pytest.raises(LineError) as error:
        load_settings(path)
    assert words in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(LineError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_public_settings_hold_no_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    assert "sk-secret-value" not in str(load_settings(llm={"provider": "openai"}).public())


def test_paper_preset_is_lines_loop():
    paper = LoopConfig.paper()
    assert (paper.init_top, paper.init_random, paper.max_iterations, paper.images_per_concept) == (5, 5, 10, 5)
    assert not paper.dedup and not paper.stall and paper.summary
