"""The `line` command: list layers, score concepts, find units, label neurons, read histories."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from typing import Any

from rich.table import Table

from agent.config import MAX_IMAGES_PER_CONCEPT
from agent.ui.console import LiveProgress, console, err_console, flag_settings, progress, settings_from_args
from agent.ui.terminal import safe
from tools.errors import LineError, os_error



class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error of `line` (exit 2)."""

    def error(self, message: str):
        err_console.print(f"[red]error:[/] {safe(message)}. See: {safe(self.prog)} --help", highlight=False, soft_wrap=True)
        raise SystemExit(2)


def whole_number(low: int, high: int):
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range (from {low} to {high})")
        return value

    parse.__name__ = "number"
    return parse


# --- shared options ------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser, layer: bool = True) -> None:
    parser.add_argument("--config", help="TOML configuration file (see README: Configuration)")
    parser.add_argument("--model", help="target model: efficientnet-lite0, timm:NAME, hf:ID_OR_FOLDER, package.module:factory")
    if layer:
        parser.add_argument("--layer", help="layer by dotted module path (see `line layers`)")
        parser.add_argument("--control", help="control set: auto (by the generator), procedural:N or dir:PATH")
        parser.add_argument("--generator", help="procedural, or diffusers:HUB_ID_OR_FOLDER")
    parser.add_argument("--device", help="where the target model and the generator run: auto, cpu, cuda, cuda:N "
                                         "(sets device and generator.device)")
    parser.add_argument("--cache-dir", help="where images and activations are cached")


# --- commands ------------------------------------------------------------------------------
def cmd_layers(args: argparse.Namespace) -> None:
    from tools.activations import layer_infos
    from tools.models import load_target_model

    settings = settings_from_args(args)
    layers = layer_infos(load_target_model(settings.model, settings.device))
    if args.json:
        print(json.dumps([{"name": l.name, "type": l.type, "shape": list(l.shape), "units": l.units} for l in layers], indent=1))
        return
    table = Table(title=f"layers of {safe(settings.model)}")
    for column in ("layer", "type", "output shape", "units"):
        table.add_column(column)
    for layer in layers:
        table.add_row(safe(layer.name), safe(layer.type), "x".join(map(str, layer.shape)), str(layer.units))
    console.print(table)


def cmd_score(args: argparse.Namespace) -> None:
    from agent.runs.engine_factory import build_engine
    from tools.concepts import check_concept
    from tools.engine import parse_units
    from tools.scoring import strict_json

    settings = settings_from_args(args)
    engine = build_engine(settings, progress=progress())
    cache = engine.cache
    units = parse_units(args.units if args.units is not None else str(args.unit), engine.units, engine.layer)
    concept = check_concept(args.concept, engine.generator)
    evidence = engine.evaluate(concept, engine.seeds(args.images))
    nonfinite = engine.nonfinite_units(units, evidence.activations)
    if nonfinite and (args.units is None or len(nonfinite) == len(units)):
        engine.check_finite(units, evidence.activations)  # nothing to show: a LineError naming them
    if args.units is not None and args.top:
        units = [u for u in evidence.top_units(len(evidence.table["auc"])) if u in set(units)][: args.top]
    interpretation = evidence.interpretation
    result = {
        "model": settings.model, "layer": settings.layer, "concept": concept,
        "control": f"{engine.control.spec} ({len(engine.control)} images, mode {settings.loop.control_mode})",
        "generator": engine.generator.id,
        "understood": interpretation.understood, "ignored": interpretation.ignored,
        "canonical": interpretation.canonical,
        "images": [r.path for r in evidence.images],
        "units": [{"unit": u, **{k: (None if u in nonfinite else v) for k, v in evidence.scores(u).model_dump().items()}}
                  for u in units],
        "cache": {k: v for k, v in sorted(cache.stats.items())},
    }
    if nonfinite:
        result["nonfinite_units"] = nonfinite
        err_console.print(safe(f"warning: units {', '.join(map(str, nonfinite))} give NaN or inf activations; "
                               "their scores are left empty (null in --json)."), highlight=False, soft_wrap=True)
    if args.json:
        print(strict_json(result))
        return
    console.print(f"[bold]{safe(repr(concept))}[/] on {safe(settings.model)} / {safe(settings.layer)} vs {safe(result['control'])}")
    console.print(safe(f"generator {engine.generator.id}: understood {interpretation.understood or '-'}, "
                       f"ignored {interpretation.ignored or '-'}, canonical {interpretation.canonical!r}"))
    table = Table()
    for column in ("unit", "AUC", "MAD", "mean act", "U", "p"):
        table.add_column(column, justify="right")
    for row in result["units"]:
        if row["unit"] in nonfinite:
            table.add_row(str(row["unit"]), *["-"] * 5)
            continue
        table.add_row(str(row["unit"]), f"{row['auc']:.3f}", f"{row['mad']:.2f}", f"{row['mean']:.4f}",
                      f"{row['u']:.0f}", f"{row['p']:.2e}")
    console.print(table)
    stats = cache.stats
    console.print(f"cache: images {stats['image_hit']} hit / {stats['images_generated']} generated, "
                  f"activations {stats['activation_hit']} hit / {stats['activation_miss']} computed"
                  f"{', repaired ' + str(stats['image_repaired'] + stats['activation_repaired']) if stats['image_repaired'] + stats['activation_repaired'] else ''}")


def cmd_label(args: argparse.Namespace) -> None:
    from agent.runs.backends import label
    from agent.runs.network import NetworkRun
    from agent.runs.run import units_text

    if args.layer is not None and args.layers is not None:
        raise LineError("--layer and --layers exclude each other.",
                        "Pass one layer with --layer, or several with --layers (names and globs, e.g. '_blocks.*').")
    with ExitStack() as stack:
        run, settings, contexts, generator = _resumed_label(args, stack) if args.resume else _new_label(args, stack)
        network = isinstance(run, NetworkRun)
        resume = f"line label --resume {run.id}{run.flag}"
        cluster = settings.cluster
        where = (f", on Ray ({cluster.workers} workers at {safe(cluster.address)})" if cluster.backend == "ray" else "")
        what = (f"layers {_layers_text(run.layers)}, units {_network_units_text(run)}" if network
                else f"{safe(settings.layer)}, units {units_text(run.units)}")
        llm = (f"LLM {safe(settings.llm.provider)}" if settings.loop.llm_proposes(settings.llm)
               else "search by the operators (the embedded LLM does not propose: loop.llm_proposals = "
                    f"{settings.loop.llm_proposals!r}; \"on\" lets it)" if settings.llm.embedded_default
               else f"no LLM proposals (loop.llm_proposals = {settings.loop.llm_proposals!r})")
        console.print(f"run [bold]{safe(run.id)}[/]: {safe(settings.model)} / {what}, {llm}, "
                      f"generator {safe(generator)}" + where)
        reviewer = _ask_person if sys.stdin.isatty() else None
        try:
            with _live_progress(run) as shown:
                if network:
                    states = run.label(contexts, on_update=shown.layer_update, reviewer=reviewer)
                else:
                    states = label(run, contexts, on_update=shown.update, reviewer=reviewer)
        except KeyboardInterrupt as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            err_console.print(f"{how}: every finished step is saved ({safe(run.folder / 'history.json')}). "
                              f"Resume with: {safe(resume)}", highlight=False, soft_wrap=True)
            raise SystemExit(128 + signum)
        except (LineError, OSError) as error:  # OSError: a file operation nobody put in words
            error = error if isinstance(error, LineError) else os_error(error)
            if not args.resume and run.discard_if_unstarted():  # a failed start leaves no run behind
                raise error
            raise LineError(error.problem, f"{error.fix} Completed steps are saved; resume with: {resume} "
                                           "(add --config FILE or --device to mend the device, the LLM or budgets)")
    if network:
        for layer, layer_states in states.items():
            _print_summary(run.children[layer], layer_states, f"labels of {layer}")
    else:
        _print_summary(run, states)
    console.print(f"history: {safe(run.folder / 'history.json')}, labels: {safe(run.folder / 'labels.csv')}")
    _say_who_waits(run, resume)


def _new_label(args: argparse.Namespace, stack: ExitStack):
    """A new run (of one layer, or of the layers `--layers` names), held for writing, with
    its context(s) and the generator's name; checked before the run exists, so that a
    failed start leaves nothing behind."""
    from agent.runs.context import labelling_context
    from agent.runs.engine_factory import build_engine
    from agent.runs.network import start_network
    from agent.runs.run import Run
    from tools.engine import parse_units

    settings = settings_from_args(args, runs_dir=args.runs_dir, concurrency=args.concurrency)
    units = args.units if args.units is not None else "0"
    if args.layers is not None:
        run, contexts, engines = start_network(settings, args.layers, units, args.run_id, progress=progress())
        stack.enter_context(run.writer())
        return run, settings, contexts, next(iter(engines.values())).generator.id
    engine = build_engine(settings, progress=progress())
    chosen = parse_units(units, engine.units, engine.layer)
    if settings.cluster.backend == "local":  # on Ray the workers compute the control set (their init checks)
        engine.check_finite(chosen)
    context = labelling_context(settings, engine)  # before the run exists: a failed start leaves nothing behind
    run = Run.create(settings, chosen, args.run_id)
    stack.enter_context(run.writer())
    return run, settings, context, engine.generator.id


def _resumed_label(args: argparse.Namespace, stack: ExitStack):
    """The run to resume, held for writing, with its mended settings, context(s) and generator."""
    from agent.runs.context import labelling_context
    from agent.runs.engine_factory import build_engine
    from agent.runs.network import NetworkRun, network_contexts

    run, settings = _resumed(args)
    stack.enter_context(run.writer())  # a second writer stops here, before any work
    mended = run.mend(settings)
    if mended:
        err_console.print(f"run {safe(run.id)} resumes with mended settings: {safe(', '.join(mended))}",
                          highlight=False, soft_wrap=True)
    if isinstance(run, NetworkRun):
        contexts, engines = network_contexts(run, progress=progress())
        return run, settings, contexts, next(iter(engines.values())).generator.id
    engine = build_engine(settings, progress=progress())
    return run, settings, labelling_context(settings, engine), engine.generator.id


def _layers_text(layers: list[str]) -> str:
    from agent.runs.network import layers_text

    return safe(layers_text(layers))


def _network_units_text(run) -> str:
    """'0, 1 of each' or '12 in all': the units of a network run's layers, briefly."""
    from agent.runs.run import units_text

    units = list(run.units.values())
    if all(u == units[0] for u in units):
        return f"{units_text(units[0])} of each"
    return f"{sum(map(len, units))} in all"


def _say_who_waits(run, resume: str) -> None:
    """Units paused for review (`loop.review`) where no terminal could ask a person: how to go on."""
    from agent.runs.run import units_text

    waiting = run.waiting()
    if isinstance(waiting, dict):  # a network run's, by layer
        text = "; ".join(f"{safe(layer)}: {units_text(units)}" for layer, units in waiting.items())
    else:
        text = units_text(waiting)
    if waiting:
        err_console.print(f"units {text} wait for a person's review, which needs a terminal: "
                          f"resume on one with: {safe(resume)}", highlight=False, soft_wrap=True)


def _resumed(args: argparse.Namespace):
    """The run to resume and its settings: flags that would change what it scores are refused."""
    from agent.chat import is_chat_thread
    from agent.runs.network import NetworkRun, open_run
    from agent.runs.run import deep_merged, resume_settings

    if args.run_id:
        raise LineError(f"--run-id {args.run_id!r} and --resume {args.resume!r} exclude each other.",
                        "Leave out --run-id: a resumed run keeps its name.")
    run = open_run(args.resume, "runs" if args.runs_dir is None else args.runs_dir)
    if not isinstance(run, NetworkRun) and is_chat_thread(run):
        raise LineError(f"{run.id} is a chat thread, not a labelling run: line label --resume cannot continue it.",
                        f"Continue the conversation with: line chat --thread {run.id}{run.flag}")
    changes: dict[str, Any] = _file_settings(args.config) if args.config else {}
    for key in ("model", "layer", "control", "cache_dir", "runs_dir", "concurrency"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    changes = deep_merged(changes, flag_settings(args))
    if isinstance(run, NetworkRun):
        return run, _network_resume_settings(run, changes, args)
    run.check_checkpoints()
    if args.layers is not None:
        raise LineError(f"run {run.id} labels one layer ({run.settings.layer}): --layers cannot be added on resume.",
                        "Leave --layers out, or start a new run with --layers.")
    units = None
    if args.units is not None:
        from agent.runs.engine_factory import build_engine
        from tools.engine import parse_units

        engine = build_engine(run.settings)
        units = parse_units(args.units, engine.units, engine.layer)
    return run, resume_settings(run, changes, units)


def _network_resume_settings(run, changes: dict, args: argparse.Namespace):
    """A network run's settings for --resume: `--layers` and `--units`, when given, must name its own."""
    from agent.runs.network import layer_engines
    from tools.engine import parse_units
    from tools.layer_select import model_layers

    for child in run.children.values():
        child.check_checkpoints()
    if "layer" in changes:
        raise LineError(f"run {run.id} labels several layers: --layer cannot change on resume.",
                        "Leave --layer out to resume every layer of the run.")
    layers = units = None
    if args.layers is not None or args.units is not None:
        engines = layer_engines(run.settings, run.layers)
        if args.layers is not None:
            layers = model_layers(args.layers, next(iter(engines.values())).model, run.settings.model)
        if args.units is not None:
            units = {layer: parse_units(args.units, engine.units, layer) for layer, engine in engines.items()}
    return run.resume_settings(changes, units, layers)


def _file_settings(path: str) -> dict:
    """The settings a TOML file sets (checked by load_settings first)."""
    import tomllib

    from agent.config import load_settings

    load_settings(path)
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _ask_person(question: dict) -> str:
    console.print(question["question"])
    return input("> ")


def _live_progress(run):
    """The progress display of `run` (agent.ui.console.LiveProgress), counting its finished units."""
    from agent.runs.network import NetworkRun

    if isinstance(run, NetworkRun):
        units, unfinished = run.units, run.unfinished()
        total, left = sum(map(len, units.values())), sum(map(len, unfinished.values()))
        return LiveProgress(total, total - left, run.settings.loop, run.layers)
    return LiveProgress(len(run.units), len(run.units) - len(run.unfinished()), run.settings.loop)


def _print_summary(run, states, title: str = "labels") -> None:
    from agent.ui.summaries import summary_row, unused_answers_text

    table = Table(title=safe(title))
    for column in ("unit", "label", "from", "AUC", "explained", "runners-up", "iter", "images", "LLM calls", "stop", "s"):
        wide = column in ("label", "runners-up", "stop")
        table.add_column(column, overflow="fold" if wide else "ellipsis", ratio=3 if wide else None,
                         justify="left" if wide else "right")
    rows = {unit: summary_row(state, run.settings.loop.judge()) for unit, state in states.items()}
    for unit in run.waiting():
        if unit in rows:
            rows[unit]["stop"] = "waiting for review"
    for row in rows.values():
        calls = f"{row['llm_calls']}" + (f" ({row['llm_failures']} failed)" if row["llm_failures"] else "")
        source = "vocabulary" if row["source"] == "sweep" else row["source"] or "-"  # beyond it: who found it
        table.add_row(str(row["unit"]), safe(row["label"]), source, f"{row['auc']:.3f}" if row["auc"] is not None else "-",
                      trust_cell(row), safe("; ".join(row["runners_up"][:2])), str(row["iterations"]), str(row["images"]),
                      calls, safe(row["stop"]), f"{row['seconds']:.0f}")
    console.print(table)
    for unit, row in rows.items():
        if row["without_llm"]:
            usage = states[unit].usage
            advice = ("Check the LLM (llm.provider, llm.base_url)" if usage.unanswered == usage.llm_calls
                      else "A stronger LLM (llm.provider, llm.model) proposes better")
            err_console.print(
                f"[yellow]warning:[/] unit {unit} was labelled without the LLM: none of its {usage.llm_calls} answers "
                f"was scored ({unused_answers_text(states[unit])}); operators and the initial pool chose "
                f"{safe(repr(row['label']))}. {advice}; details: line history {safe(run.id)} --unit {unit}{safe(run.flag)}",
                highlight=False, soft_wrap=True)


def trust_cell(row: dict) -> str:
    """'yes 0.98 [0.95, 1.00] p 0.001' / 'no ...' / '-': the verdict and its fresh AUC (tools.verdict)."""
    if row.get("explained") is None:
        return "-"
    interval = row.get("fresh_auc_interval") or [None, None]
    numbers = (f" {row['fresh_auc']:.2f} [{interval[0]:.2f}, {interval[1]:.2f}] p {row['p']:.2g}"
               if row.get("fresh_auc") is not None else "")
    return ("yes" if row["explained"] else "no") + numbers


def cmd_history(args: argparse.Namespace) -> None:
    from agent.runs.network import NetworkRun, layer_run, open_run
    from agent.runs.run import units_text
    from tools.history import event_text

    opened = open_run(args.run_id, "runs" if args.runs_dir is None else args.runs_dir)
    run = layer_run(opened, args.layer)  # a network run's layer: named by --layer where it has several
    name = f"{opened.id} (layer {run.settings.layer})" if isinstance(opened, NetworkRun) else run.id
    states = run.states()
    if args.unit in run.units and args.unit not in states:
        started = ", ".join(map(str, sorted(states))) or "none"
        raise LineError(f"unit {args.unit} of run {name} has not started yet (started: {started}).",
                        f"Resume the run (line label --resume {opened.id}{opened.flag}) or pass a started unit with --unit.")
    if args.unit not in states:
        raise LineError(f"unit {args.unit} is not in run {name} (units: {units_text(run.units)}).",
                        "Pass one of the run's units with --unit.")
    state = states[args.unit]
    if args.json:
        print(state.model_dump_json(indent=1))
        return
    timeline = sorted([(s.iteration, 0, s) for s in state.steps] + [(e.iteration, 1, e) for e in state.events],
                      key=lambda item: (item[0], item[1]))
    table = Table(title=f"run {safe(name)}, unit {args.unit}")
    for column in ("it", "what", "concept", "AUC", "MAD", "images", "detail"):
        table.add_column(column)
    for iteration, _, item in timeline:
        if hasattr(item, "scores"):
            table.add_row(str(iteration), safe(item.source), safe(item.concept), f"{item.scores.auc:.3f}",
                          f"{item.scores.mad:.2f}", str(item.images_rendered),
                          safe((item.strategy + ": " if item.strategy else "") + item.reasoning[:80]))
        else:
            table.add_row(str(iteration), safe(item.kind), safe(item.concept), "", "", "", safe(event_text(item)[:100]))
    console.print(table)
    if state.finalists:
        finalists = Table(title="finalists, confirmed on fresh images")
        for column in ("concept", "why", "AUC", "MAD", "fresh activations"):
            finalists.add_column(column)
        for f in state.finalists:
            finalists.add_row(safe(f.concept), safe(f.why), f"{f.scores.auc:.3f}", f"{f.scores.mad:.2f} ± {f.scores.mad_se:.2f}",
                              ", ".join(f"{a:.3g}" for a in f.activations[-f.fresh:]))
        console.print(finalists)
    if state.label:
        console.print(f"label: [bold]{safe(state.label.concept)}[/] (AUC {state.label.scores.auc:.3f}, "
                      f"MAD {state.label.scores.mad:.2f}); stop: {safe(state.stop_reason)}")
        if state.label.reason:
            console.print(f"why: {safe(state.label.reason)}")
        if state.label.confidence:
            console.print(f"verdict: {safe(state.label.confidence.text())}")
        if state.label.polysemanticity:
            console.print(f"meanings: {safe(state.label.polysemanticity.describe())}")


# --- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="line", description="Explain single neurons of vision models in plain words.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("layers", help="list a model's layers with output shapes")
    _common(p, layer=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("score", help="score one concept for units of a layer")
    _common(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--unit", type=int, default=0)
    group.add_argument("--units", help="all, 0-9, 1,5,9-12")
    p.add_argument("--concept", required=True)
    p.add_argument("--top", type=whole_number(0, 1_000_000), default=0,
                   help="with --units: only the N units it drives most (by AUC); 0: all")
    p.add_argument("--images", type=whole_number(1, MAX_IMAGES_PER_CONCEPT), help="images of the concept (default: loop.images_per_concept)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("find", help="the units of layers that respond most to a concept, per layer and overall")
    _common(p)
    p.add_argument("concept", help="what to draw, e.g. 'red stripes'")
    p.add_argument("--layers", help="layer names and globs, e.g. '_blocks.*' or _blocks.1,_blocks.3 (* does not cross a dot)")
    p.add_argument("--top", type=whole_number(1, 1_000_000), default=5, help="units shown per layer and overall (default 5)")
    p.add_argument("--images", type=whole_number(1, MAX_IMAGES_PER_CONCEPT), help="images of the concept (default: loop.images_per_concept)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("agent.ui.find", "cmd_find"))

    p = sub.add_parser("label", help="label neurons autonomously (the LINE loop)")
    _common(p)
    p.add_argument("--layers", help="several layers as one run: names and globs, e.g. _blocks.1,_blocks.3 or '_blocks.*' "
                                    "(a * does not cross a dot)")
    p.add_argument("--units", help="all, 0-9, 1,5,9-12 (default 0; with --layers: of every layer)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a run after a stop (flags that change what is scored are refused)")
    p.add_argument("--run-id", help="name of a new run (default: time, model and layer)")
    p.add_argument("--runs-dir", help="where runs live (default: runs)")
    p.add_argument("--concurrency", type=int, help="units labelled at once")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("history", help="a neuron's generation history, step by step")
    p.add_argument("run_id")
    p.add_argument("--unit", type=int, required=True)
    p.add_argument("--layer", help="the layer of a run over several layers (see line label --layers)")
    p.add_argument("--runs-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("chat", help="investigate one neuron in conversation with an LLM agent")
    _common(p)
    p.add_argument("--unit", type=int, help="the neuron (default 0; with --run: which unit of the run)")
    p.add_argument("--thread", metavar="ID", help="resume a chat thread (its folder name under --runs-dir)")
    p.add_argument("--run", metavar="RUN_ID", help="start from a unit's history in an autonomous run")
    p.add_argument("--runs-dir", help="where runs and chat threads live (default: runs)")
    p.add_argument("--trust-run", action="store_true",
                   help="with --run: load the run's model even when it names code (package.module:factory, file.py:factory)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show every tool result and repeated call in full")
    p.set_defaults(func=_lazy("agent.ui.chat_repl", "cmd_chat"))

    p = sub.add_parser("report", help="write a self-contained HTML report of a run")
    p.add_argument("run_id")
    p.add_argument("--unit", type=int, help="only this unit's page")
    p.add_argument("--layer", help="only this layer's report, of a run over several layers")
    p.add_argument("--open", action="store_true", help="open the report in the web browser")
    p.add_argument("--runs-dir", help="where runs live (default: runs)")
    p.add_argument("--trust-run", action="store_true",
                   help="load the run's model when it names code, to compute activations the cache lacks")
    p.set_defaults(func=_lazy("agent.ui.report", "cmd_report"))
    return parser


def _lazy(module: str, name: str):
    """A command whose module is imported only when it runs (keeps `line --help` fast)."""

    def command(args: argparse.Namespace) -> None:
        getattr(importlib.import_module(module), name)(args)

    return command


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, which `line` takes as Ctrl-C (`signum` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _signals_as_ctrl_c():
    """For the block: SIGTERM (kill, a scheduler) and SIGHUP (a closed terminal) stop `line`
    as Ctrl-C does, so a run saves its history and says how to resume; the handlers before
    are restored after (in the main thread only, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _signals_as_ctrl_c():
            args.func(args)
    except (LineError, OSError) as error:  # OSError: a file operation nobody put in words
        error = error if isinstance(error, LineError) else os_error(error)
        err_console.print(f"[red]error:[/] {safe(error)}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as stop:  # a command with nothing to save
        signum = getattr(stop, "signum", signal.SIGINT)
        err_console.print("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}")
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
