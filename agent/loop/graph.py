"""The labelling graph: one thread per neuron, its state the generation history.

    init -> judge_vocabulary -> stall -> propose ---> check -> score -> stall -> ... -> summarize -> check -> score
                                  |         ^  \        |                                   |                  |
                                  |         |   \-> operate <- (rejected twice, or the LLM failed)               v
                                  \-> operate (operators' strategy)    finalize <- review <- score <- confirm <-/

`judge_vocabulary` scores the vocabulary's finalists on fresh images first; where one passes
the verdict's bar (with `loop.search_when = "unexplained"`, the default), the unit is
explained by the vocabulary and `stall` goes straight to the summary and the confirm step.
Every proposal (LLM, operator, summary, a person's) goes through `check` and `score`; so do
the confirm step's finalists (`score` only: they are scored again, on fresh images).
`stall` starts each iteration: it stops on a spent budget and changes strategy on a stall.
A rejected LLM proposal is asked for again once, with the reason; after that an operator
proposal takes its place, so no iteration ends without a new scored concept. The search
ends early only when the operators find nothing new. Routing lives in the edges below;
the nodes in `agent.loop.nodes`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from agent import llm
from agent.loop import nodes, state
from agent.loop.context import LineContext
from agent.loop.stall import LLM_REJECTIONS
from agent.loop.state import NeuronState
from tools import history, polysemantic, verdict
from tools.scoring import Scores

CHECKPOINT_TYPES = [
    state.NeuronState, state.Proposal, llm.Usage, state.Label, state.AtomScore, history.Step, history.Event,
    history.Finalist, history.ActivationStats, Scores, polysemantic.Polysemanticity, polysemantic.Group,
    polysemantic.Test, polysemantic.Meaning, polysemantic.Comparison, verdict.Verdict, verdict.Evidence, verdict.Bar,
]
# Where the checkpointed types lived before the layout of agent/loop/ (runs written then must
# resume): allowed, so that they load without a warning as their fields, which every reader
# validates into today's types (NeuronState; Usage adds a dict of its fields).
LEGACY_CHECKPOINT_TYPES = [("agent.state", name) for name in ("NeuronState", "Proposal", "Usage", "Label", "AtomScore")]
NODES = ("init", "judge_vocabulary", "stall", "propose", "operate", "check", "score", "summarize", "confirm", "review", "finalize")


def after_stall(s: NeuronState) -> str:
    if s.stop_reason:
        return "summarize"
    return "operate" if s.strategy == "operators" else "propose"


def after_propose(s: NeuronState) -> str:
    return "check" if s.proposals else "operate"


def after_operate(s: NeuronState) -> str:
    return "check" if s.proposals else "summarize"


def after_check(s: NeuronState) -> str:
    """Score an accepted proposal. A rejected one: the summary tries its fallback, a
    person's concept is dropped, the LLM is asked once more, then an operator steps in."""
    if s.proposals:
        return "score"
    if s.phase == "summary":
        return "summarize"
    if s.phase == "review":
        return "finalize"
    llm_rejections = sum(e.iteration == s.iteration and e.source == "llm" and e.kind in LLM_REJECTIONS
                         for e in s.events)
    return "propose" if s.events[-1].source == "llm" and llm_rejections < 2 else "operate"


def after_score(s: NeuronState) -> str:
    return {"search": "stall", "summary": "confirm", "confirm": "review", "review": "finalize"}[s.phase]


def after_summarize(s: NeuronState) -> str:
    return "check" if s.proposals else "confirm"


def after_confirm(s: NeuronState) -> str:
    return "score" if s.proposals else "review"


def after_review(s: NeuronState) -> str:
    return "check" if s.proposals else "finalize"


def build_label_graph(checkpointer=None, wrap=None):
    """The labelling graph; `wrap` (a served graph's) wraps each node function."""
    wrap = wrap or (lambda node: node)
    graph = StateGraph(NeuronState, context_schema=LineContext)
    for name in NODES:
        graph.add_node(name, wrap(getattr(nodes, name)))
    graph.add_edge(START, "init")
    graph.add_edge("init", "judge_vocabulary")
    graph.add_edge("judge_vocabulary", "stall")
    graph.add_conditional_edges("stall", after_stall, ["propose", "operate", "summarize"])
    graph.add_conditional_edges("propose", after_propose, ["check", "operate"])
    graph.add_conditional_edges("operate", after_operate, ["check", "summarize"])
    graph.add_conditional_edges("check", after_check, ["score", "summarize", "propose", "operate", "finalize"])
    graph.add_conditional_edges("score", after_score, ["stall", "confirm", "review", "finalize"])
    graph.add_conditional_edges("summarize", after_summarize, ["check", "confirm"])
    graph.add_conditional_edges("confirm", after_confirm, ["score", "review"])
    graph.add_conditional_edges("review", after_review, ["check", "finalize"])
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=[*CHECKPOINT_TYPES, *LEGACY_CHECKPOINT_TYPES])


def sqlite_checkpointer(path: str | Path) -> SqliteSaver:
    """Checkpoints in a SQLite file (WAL mode, shared by the threads of a batch run and by
    the worker processes of one machine)."""
    connection = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(connection, serde=serializer())


def recursion_limit(loop) -> int:
    """Enough supersteps for every iteration (at most 8 nodes: stall, propose, check, propose,
    check, operate, check, score) plus the fixed nodes."""
    return 8 * (loop.max_iterations + 1) + 24


def thread_config(thread_id: str, loop) -> dict:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": recursion_limit(loop)}


def neuron_state(values) -> NeuronState:
    """The graph's state values as a NeuronState (LangGraph may hand back a dict)."""
    return values if isinstance(values, NeuronState) else NeuronState.model_validate(values)
