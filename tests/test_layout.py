"""The house: no import cycles, no imports up the layers, no module over 600 lines, and runs
written by the layout before agent/loop, agent/runs and agent/ui still resume."""

import shutil
from pathlib import Path

from agent.llm import ScriptedChatModel
from agent.loop.graph import build_label_graph, neuron_state
from agent.runs.context import build_context
from agent.runs.engine_factory import build_engine
from agent.runs.run import Run, resume_settings
from tests.helpers import ROOT, import_cycles, imports_up_the_layers, long_modules, say

OLD_RUN = Path(__file__).parent / "data" / "old-layout-run"  # written by main at 49d0fc6 (tests/data/README.md)


def test_no_import_cycles_between_our_modules():
    assert import_cycles(ROOT) == []


def test_no_import_goes_up_the_layers():
    assert imports_up_the_layers(ROOT) == []


def test_no_module_is_over_600_lines():
    assert long_modules(ROOT, 600) == []


def _old_run(tmp_path) -> Run:
    shutil.copytree(OLD_RUN, tmp_path / "runs" / "old-layout")
    return Run.open("old-layout", tmp_path / "runs")


def test_a_run_written_by_the_old_layout_resumes_to_its_label(tmp_path):
    run = _old_run(tmp_path)
    waiting = run.states()[0]
    assert waiting.label is None and waiting.usage.llm_calls == 4  # paused in review: no label yet
    settings = resume_settings(run, {"cache_dir": str(tmp_path / "cache"), "runs_dir": str(tmp_path / "runs")})
    run = Run.open("old-layout", tmp_path / "runs")
    context = build_context(settings, build_engine(settings), chat=ScriptedChatModel(replies=[say("blue noise")]))
    state = run.label(context, reviewer=lambda question: "approve")[0]
    assert state.label is not None and state.verdict == "approve"
    assert [s.concept for s in state.steps] == [s.concept for s in waiting.steps]  # nothing scored again


def test_an_old_checkpoint_mid_search_goes_on_with_todays_nodes(tmp_path):
    """From the old run's checkpoint before its first LLM proposal, today's graph proposes,
    scores and adds the LLM's cost to the usage the old checkpoint holds."""
    run = _old_run(tmp_path)
    settings = resume_settings(run, {"cache_dir": str(tmp_path / "cache"), "runs_dir": str(tmp_path / "runs")})
    context = build_context(settings, build_engine(settings), chat=ScriptedChatModel(replies=[say("yellow noise")]))
    with run.store.checkpointer() as checkpointer:
        graph = build_label_graph(checkpointer)
        history = list(graph.get_state_history(run.thread_config(0)))
        assert history[0].next == ("review",)  # the old run waits for a person's review
        before = next(s for s in reversed(history) if s.next == ("propose",))
        old = neuron_state(before.values)
        for _ in graph.stream(None, before.config, context=context, stream_mode="updates"):
            pass
        state = neuron_state(graph.get_state(run.thread_config(0)).values)
    assert state.usage.llm_calls > old.usage.llm_calls
    assert "yellow noise" in [s.concept for s in state.steps]
