"""The labelling graph: one LangGraph thread per neuron, its state the generation history.

Modules, top-down: `graph` (the topology: nodes and the edges that route between them),
`nodes` (thin nodes, one job each), `concept_path` (the one path every concept travels:
check, score, record), `proposal` (what the LLM is asked and must answer), `operators`
(concepts changed attribute by attribute), `stall` (budgets and the stall policy),
`label_choice` (finalists and the label), `context` (the runtime context: heavy objects)
and `state` (the serialisable history).
"""

from agent.loop.context import LineContext
from agent.loop.graph import CHECKPOINT_TYPES, NODES, build_label_graph, neuron_state, serializer, thread_config
from agent.loop.state import AtomScore, Label, NeuronState, Proposal

__all__ = ["CHECKPOINT_TYPES", "NODES", "AtomScore", "Label", "LineContext", "NeuronState", "Proposal",
           "build_label_graph", "neuron_state", "serializer", "thread_config"]
