"""What the `line` commands share (chat included): the consoles, a progress bar, settings from flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from agent.ui.terminal import safe

# Piped output (logs, CI) gets tables wide enough to read rather than rich's 80 columns.
# Untrusted text goes through agent.ui.terminal.safe; emoji codes (":x:") stay text.
console = Console(emoji=False) if sys.stdout.isatty() else Console(width=140, emoji=False)
err_console = Console(stderr=True, emoji=False)


def settings_from_args(args: argparse.Namespace, **extra: Any):
    """The settings of a command: its config file, then `extra` and the flags given."""
    from agent.config import load_settings

    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    for key in ("model", "layer", "control", "cache_dir"):
        if getattr(args, key, None) is not None:  # "" too: refused by the settings, not taken for the default
            overrides[key] = getattr(args, key)
    return load_settings(args.config, **overrides, **flag_settings(args))


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of `--generator KIND[:MODEL]` and `--device DEVICE` (the target model's
    and the generator's), as settings keys; a config file's other generator keys stay."""
    generator: dict[str, Any] = {}
    result: dict[str, Any] = {}
    if getattr(args, "generator", None) is not None:
        kind, _, model = args.generator.partition(":")
        generator |= {"kind": kind, **({"model": model} if model else {})}
    if getattr(args, "device", None) is not None:
        result["device"] = generator["device"] = args.device
    return result | ({"generator": generator} if generator else {})


PHASES = {"images": "rendering images", "activations": "activations"}


def progress(label: str = ""):
    """A callback(what, done, total) for the engine: long work (rendering images, per
    pipeline batch; activations) shown on stderr as a transient bar with done / total, one
    phase at a time, `label` before it; None (nothing shown) where stderr is no terminal."""
    if not err_console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    state: dict[str, Any] = {"task": None, "what": None}

    def update(what: str, done: int, total: int) -> None:
        if state["task"] is not None and state["what"] != what:
            bar.remove_task(state["task"])
            state["task"] = None
        if state["task"] is None:
            if not bar.tasks:
                bar.start()
            phase = PHASES.get(what, what)
            state["task"], state["what"] = bar.add_task(f"{label}: {phase}" if label else phase, total=total), what
        bar.update(state["task"], completed=done, total=total)
        bar.refresh()  # every batch is shown, however quick
        if done >= total:
            bar.remove_task(state["task"])
            bar.stop()
            state["task"] = None

    return update


class LiveProgress:
    """One progress display while a run labels: units finished of all (of every layer in a
    network run, with the layer at hand), and a bar for each unit in progress (here or on
    Ray workers). Where stderr is no terminal (a log file, CI), a plain line per unit and
    iteration instead. `update(unit, node, state)` for a run of one layer,
    `layer_update(layer, unit, node, state)` for a network run's."""

    def __init__(self, total: int, finished: int, loop, layers: list[str] | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.loop, self.layers = loop, layers or []
        self.plain = not err_console.is_terminal
        self.bar = Progress(TextColumn("{task.fields[name]:>9}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console)
        self.total_task = None
        self.counts = (total, finished)
        self.tasks: dict[tuple[str, int], Any] = {}
        self.shown: dict[tuple[str, int], tuple] = {}
        self.layer = ""

    def __enter__(self) -> "LiveProgress":
        if not self.plain:
            total, finished = self.counts
            self.total_task = self.bar.add_task("", total=total, completed=finished, name="units")
            self.bar.start()
        return self

    def update(self, unit: int, node: str, state) -> None:
        self.layer_update("", unit, node, state)

    def layer_update(self, layer: str, unit: int, node: str, state) -> None:
        limit = self.loop.max_iterations
        best = state.best(self.loop.judge())
        text = f"{node:<9} it {state.iteration:>2}  best {safe(repr(best.concept))} {best.scores.auc:.3f}" if best else node
        key = (layer, unit)
        if self.plain:
            moment = (state.iteration, node == "finalize")
            if self.shown.get(key) != moment:
                self.shown[key] = moment
                where = f"layer {safe(layer)} unit {unit}" if layer else f"unit {unit:>4}"
                err_console.print(f"{where}: {' '.join(text.split())}", highlight=False, soft_wrap=True)
            return
        if layer != self.layer and layer in self.layers:  # the count says which layer is at work
            self.layer = layer
            self.bar.update(self.total_task, description=f"layer {safe(layer)} ({self.layers.index(layer) + 1} of "
                                                         f"{len(self.layers)})")
        if node == "finalize":  # the unit is done: its bar gives way to the count
            if key in self.tasks:
                self.bar.remove_task(self.tasks.pop(key))
            self.bar.advance(self.total_task)
            return
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task("", total=limit, name=f"unit {unit}")
        self.bar.update(self.tasks[key], completed=min(state.iteration, limit), description=text)

    def __exit__(self, *exc) -> None:
        if not self.plain:
            self.bar.stop()
