"""Where a run's units are labelled: here, in threads of this process (`Run.label`), or on
Ray workers (agent.runs.ray_backend), as `[cluster] backend` says."""

from __future__ import annotations

from agent.loop.context import LineContext
from agent.loop.state import NeuronState
from agent.runs.run import Reviewer, Run, Update


def label(run: Run, context: LineContext | None, on_update: Update | None = None,
          reviewer: Reviewer | None = None) -> dict[int, NeuronState]:
    """Label `run`'s units where its settings say (`[cluster] backend`): here with `context`
    (from `labelling_context`), or on Ray workers (agent.runs.ray_backend). On Ray a unit that waits
    for review stays waiting: resume it with the local backend to be asked."""
    if run.settings.cluster.backend == "ray":
        from agent.runs.ray_backend import label_on_ray  # Ray is imported only for Ray runs

        return label_on_ray(run, on_update)
    return run.label(context, on_update, reviewer)
