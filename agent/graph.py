"""The labelling graph: one thread per neuron, its state the generation history.

    init -> stall -> propose -> dedup -> evaluate -> stall -> ... -> summarize -> review -> finalize
                        |          \\______________________________/^
                        \\____ (no usable proposal) _______________/

`stall` stops on a spent budget, changes strategy on a stall, and stops for good when every
strategy has been tried. Routing lives in the edges below; the nodes in `agent.nodes`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from agent import nodes, state
from agent.nodes import LineContext
from agent.state import NeuronState
from tools import history, polysemantic
from tools.scoring import Scores

CHECKPOINT_TYPES = [
    state.NeuronState, state.Proposal, state.Usage, state.Label, history.Step, history.Event,
    history.ActivationStats, Scores, polysemantic.Polysemanticity, polysemantic.Group,
]


def after_propose(s: NeuronState) -> str:
    return "dedup" if s.proposal is not None else "stall"


def after_dedup(s: NeuronState) -> str:
    return "evaluate" if s.proposal is not None else "stall"


def after_stall(s: NeuronState) -> str:
    return "summarize" if s.stop_reason else "propose"


def build_label_graph(checkpointer=None):
    graph = StateGraph(NeuronState, context_schema=LineContext)
    for name in ("init", "propose", "dedup", "evaluate", "stall", "summarize", "review", "finalize"):
        graph.add_node(name, getattr(nodes, name))
    graph.add_edge(START, "init")
    graph.add_edge("init", "stall")
    graph.add_conditional_edges("propose", after_propose, ["dedup", "stall"])
    graph.add_conditional_edges("dedup", after_dedup, ["evaluate", "stall"])
    graph.add_edge("evaluate", "stall")
    graph.add_conditional_edges("stall", after_stall, ["propose", "summarize"])
    graph.add_edge("summarize", "review")
    graph.add_edge("review", "finalize")
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)


def sqlite_checkpointer(path: str | Path) -> SqliteSaver:
    """Checkpoints in a SQLite file (WAL mode, shared by the threads of a batch run)."""
    connection = sqlite3.connect(str(path), check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(connection, serde=serializer())


def recursion_limit(loop) -> int:
    """Enough supersteps for every iteration (at most 4 nodes each) plus the fixed nodes."""
    return 4 * (loop.max_iterations + 1) + 16


def thread_config(unit: int, loop) -> dict:
    return {"configurable": {"thread_id": f"unit-{unit}"}, "recursion_limit": recursion_limit(loop)}


def neuron_state(values) -> NeuronState:
    """The graph's state values as a NeuronState (LangGraph may hand back a dict)."""
    return values if isinstance(values, NeuronState) else NeuronState.model_validate(values)
