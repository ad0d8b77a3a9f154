"""A run's life: create and open it (`run`; several layers as one run: `network`), build its
runtime context from the settings (`context`, `engine_factory`), label its units here or on
Ray workers (`backends`, `ray_backend`), and keep its checkpoints, unit table, concept bank
and writer lock (`store`, `lock`), and its labels as a table (`labels_csv`)."""

from agent.runs.backends import label
from agent.runs.context import build_context, labelling_context
from agent.runs.engine_factory import build_engine
from agent.runs.network import NetworkRun, layer_run, open_run
from agent.runs.run import Run, resume_settings

__all__ = ["NetworkRun", "Run", "build_context", "build_engine", "label", "labelling_context", "layer_run", "open_run",
           "resume_settings"]
