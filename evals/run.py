"""Label the same units with several methods and compare them in one table.

    python -m evals.run --suite evals/suites/planted.toml --methods all --out evals/results/NAME
        [--units 0-5] [--llm local|scripted] [--config line.toml] [--cache-dir DIR]
    python -m evals.run --model efficientnet-lite0 --layer _blocks.6 --units 0-3 --methods ours,paper ...

Writes to --out: `units.csv` and `summary.csv` (one row per method and unit / per method),
`results.json` (both, plus a breakdown by unit kind), `config.json` (arguments, settings,
suite digest, thresholds), `table.md` (the table for the README) and `histories/` (the
graph methods' histories). Methods work in fresh cache folders (removed at the end);
CoSy images and control activations go to --cache-dir and are reused across runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.config import Settings, load_settings
from agent.ui.console import progress
from agent.runs.engine_factory import build_engine
from agent.llm import ScriptedChatModel, make_chat_model
from agent.ui.terminal import safe
from evals import metrics
from evals.methods import EvalContext, UnitResult, methods, split_name
from evals.planted import PlantedUnit, load_suite, pinned_spec
from tools.criterion import CRITERIA
from tools.engine import parse_units
from tools.errors import LineError
from tools.generators.procedural import ProceduralGenerator
from tools.text import default_embedder

console = Console(width=None if sys.stdout.isatty() else 220, emoji=False)
SCRIPTED_CONCEPTS = 40  # scripted LLM: this many closed-vocabulary concepts, in a fixed order
COLUMNS = [  # (row key, table header, format)
    ("match", "match", "{:.0%}"), ("strict", "strict match", "{:.0%}"), ("recovered", "OR recovered", "{:.0%}"),
    ("cosy_auc_procedural", "CoSy AUC proc.", "{:.3f}"), ("cosy_mad_procedural", "CoSy MAD proc.", "{:.2f}"),
    ("cosy_auc_natural", "CoSy AUC ImageNet", "{:.3f}"), ("cosy_mad_natural", "CoSy MAD ImageNet", "{:.1f}"),
    ("auprc_procedural", "AUPRC proc.", "{:.3f}"), ("corr_procedural", "corr. proc.", "{:.3f}"),
    ("auprc_natural", "AUPRC ImageNet", "{:.3f}"), ("corr_natural", "corr. ImageNet", "{:.3f}"),
    ("explained", "explained", "{:.0%}"), ("flag_or", "poly. flag recall (OR)", "{:.0%}"),
    ("flag_other", "poly. flag FPR (others)", "{:.0%}"), ("meanings_match", "OR meanings match both", "{:.0%}"),
    ("novel", "novel", "{:.0%}"), ("images", "images/unit", "{:.0f}"), ("llm_calls", "LLM calls/unit", "{:.1f}"),
    ("seconds", "s/unit", "{:.1f}"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--suite", help="planted suite (a TOML file, or a name in evals/suites/)")
    target.add_argument("--model", help="a real target model (no ground truth), e.g. efficientnet-lite0")
    parser.add_argument("--layer", help="with --model: the layer")
    parser.add_argument("--units", default="all", help="all, 0-5, 1,3,7-9")
    parser.add_argument("--methods", default="all", help="all, or a comma list of: " + ", ".join(methods()))
    parser.add_argument("--out", required=True, help="results folder, e.g. evals/results/NAME")
    parser.add_argument("--llm", help="LLM provider: local, scripted, openai, openai-compatible (default: config)")
    parser.add_argument("--config", help="TOML configuration (see README: Configuration)")
    parser.add_argument("--cache-dir", help="cache of CoSy images and control activations (default: config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        evaluate(args)
    except LineError as error:
        Console(stderr=True, emoji=False).print(f"[red]error:[/] {safe(error)}", highlight=False, soft_wrap=True)
        return 2
    return 0


def evaluate(args: argparse.Namespace) -> dict:
    settings, planted = target_settings(args)
    units = parse_units(args.units, len(planted) if planted else build_engine(settings).units)
    planted = [planted[u] for u in units] if planted else None
    chosen = choose_methods(args.methods, planted is not None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="line-evals-"))
    try:
        ctx = EvalContext(settings, units, make_chat(settings), work / "cache", work / "runs", planted)
        results = label(ctx, chosen)
        rows = unit_rows(ctx, results)
        copy_histories(ctx.runs, out / "histories")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = aggregate(rows, ("method",))
    write_outputs(out, args, settings, rows, summary, aggregate(rows, ("method", "kind")) if planted else [])
    print_table(summary, safe(f"{settings.model} / {settings.layer}, {len(units)} units, LLM {settings.llm.provider}"))
    return {"rows": rows, "summary": summary}


# --- set-up --------------------------------------------------------------------------------------
def target_settings(args: argparse.Namespace) -> tuple[Settings, list[PlantedUnit] | None]:
    overrides: dict = {k: v for k, v in (("cache_dir", args.cache_dir),) if v}
    if args.llm:
        overrides["llm"] = {"provider": args.llm}
    if args.suite:
        overrides.update(model=pinned_spec(args.suite), layer="units")
        planted = list(load_suite(args.suite).units)
    else:
        overrides.update(model=args.model, **({"layer": args.layer} if args.layer else {}))
        planted = None
    return load_settings(args.config, **overrides), planted


def choose_methods(text: str, has_truth: bool) -> list[str]:
    known = list(methods())
    chosen = ([m for m in known if (m != "oracle" or has_truth) and not m.endswith(("-always", "-llm"))]  # variants: by name
              if text == "all" else [m.strip() for m in text.split(",")])
    unknown = [m for m in chosen if split_name(m)[0] not in known or split_name(m)[1] not in (None, *CRITERIA)]
    if unknown:
        raise LineError(f"unknown method(s) {', '.join(unknown)}.",
                        f"Use all, or some of: {', '.join(known)}, each optionally with @CRITERION "
                        f"({', '.join(CRITERIA)}), e.g. ours@auc.")
    if "oracle" in chosen and not has_truth:
        raise LineError("the oracle method needs a planted suite.", "Use --suite, or drop oracle from --methods.")
    return chosen


def make_chat(settings: Settings):
    """The one chat model every method shares; `scripted` proposes closed-vocabulary concepts."""
    if settings.llm.provider != "scripted" or settings.llm.script:
        return make_chat_model(settings.llm)
    return ScriptedChatModel(replies=scripted_replies())


def scripted_replies() -> list[str]:
    """The scripted LLM's answers: SCRIPTED_CONCEPTS closed-vocabulary concepts in a fixed order."""
    concepts = ProceduralGenerator().sweep_vocabulary()[::7][:SCRIPTED_CONCEPTS]
    return [json.dumps({"reasoning": "scripted", "concept": c}) for c in concepts]


def broden_drawable() -> list[str]:
    """Broden labels the procedural generator can draw (for the closed vocabulary)."""
    path = metrics.shared_data() / "broden-labels.txt"
    if not path.is_file():
        return []
    generator = ProceduralGenerator()
    return [c for c in path.read_text().splitlines() if c.strip() and generator.interpret(c).drawable]


# --- labelling and metrics --------------------------------------------------------------------------
def label(ctx: EvalContext, chosen: list[str]) -> dict[str, dict[int, UnitResult]]:
    available = methods(broden_drawable())
    results = {}
    for name in chosen:
        console.print(f"[bold]{safe(name)}[/]: labelling {len(ctx.units)} unit(s)")
        start = time.perf_counter()
        base, criterion = split_name(name)
        results[name] = available[base](replace(ctx, method=name, criterion=criterion))
        console.print(f"  done in {time.perf_counter() - start:.0f} s")
    return results


def cosy_scorers(settings: Settings) -> list[metrics.Cosy]:
    """CoSy against the labelling's control set, and against ImageNet samples when present."""
    controls = {"procedural": settings.control}
    natural = metrics.shared_data() / "imagenet-samples"
    if natural.is_dir():
        controls["natural"] = f"dir:{natural}"
    else:
        console.print(f"[yellow]note:[/] no {safe(natural)}: CoSy against natural images skipped (set LINE_SHARED_DATA).")
    return [metrics.Cosy(name, build_engine(settings.model_copy(update={"control": spec}), progress=progress(f"CoSy {name}")))
            for name, spec in controls.items()]


def unit_rows(ctx: EvalContext, results: dict[str, dict[int, UnitResult]]) -> list[dict]:
    scorers = cosy_scorers(ctx.settings)
    matcher = metrics.Matcher(default_embedder()) if ctx.planted else None
    known = metrics.known_vocabulary(metrics.shared_data())
    truth = dict(zip(ctx.units, ctx.planted or []))
    for scorer in scorers:  # every label's images at once: batched across labels
        scorer.prepare([result.label for by_unit in results.values() for result in by_unit.values()])
    rows = []
    for method, by_unit in results.items():
        for unit, result in by_unit.items():
            row = {"method": method, "unit": unit, "label": result.label}
            for scorer in scorers:
                row[f"cosy_auc_{scorer.name}"], row[f"cosy_mad_{scorer.name}"] = scorer.scores(result.label, unit)
                row[f"auprc_{scorer.name}"], row[f"corr_{scorer.name}"] = scorer.beyond_auc(result.label, unit)
            row |= trust(matcher, truth.get(unit), result)
            if unit in truth:
                row |= ground_truth(matcher, truth[unit], result, row["cosy_auc_procedural"])
            row["novel"] = metrics.novel(result.label, known) if known is not None else None
            row |= {"images": result.images, "llm_calls": result.llm_calls, "seconds": result.seconds,
                    "note": result.note, "top_scored": sorted(result.scored, key=lambda s: -s[1])[:5]}
            rows.append(row)
    return rows


def trust(matcher, planted: PlantedUnit | None, result: UnitResult) -> dict:
    """The verdict and, on planted units, the polysemantic flag split by the truth (OR units
    are the polysemantic ones): its mean over OR units is the recall, over the others the
    false-positive rate."""
    row = {"explained": result.explained, "meanings": "; ".join(result.meanings or []) if result.meanings is not None else None,
           "flag_or": None, "flag_other": None, "meanings_match": None}
    if planted is None or result.meanings is None:
        return row
    flagged = len(result.meanings) >= 2
    if planted.concepts:
        row["flag_or"] = flagged
        row["meanings_match"] = metrics.meanings_match(matcher, result.meanings, planted.concepts)
    else:
        row["flag_other"] = flagged
    return row


def ground_truth(matcher: metrics.Matcher, planted: PlantedUnit, result: UnitResult, cosy_auc: float) -> dict:
    """Match of the label (to the truth or, for an OR unit, to any of its concepts) and, for
    an OR unit, the share of its concepts recovered (methods without a history: the label;
    none for the oracle, which states the truth)."""
    targets = (planted.truth, *planted.concepts)
    how = next((h for h in (matcher.how(result.label, t) for t in targets) if h), "")
    row = {"name": planted.name, "kind": planted.kind, "truth": planted.truth.label, "match": bool(how),
           "strict": any(matcher.strict(result.label, t) for t in targets), "match_how": how, "recovered": None}
    if planted.concepts and not result.reference:
        row["recovered"] = matcher.recovered(result.scored or [(result.label, cosy_auc)], planted.concepts)
    return row


def aggregate(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Mean and standard deviation of every metric, per group of `keys`."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    summary = []
    for group, members in groups.items():
        entry = dict(zip(keys, group)) | {"units": len(members)}
        for key, _, _ in COLUMNS:
            values = [float(r[key]) for r in members if r.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else (0.0 if values else None)
        summary.append(entry)
    return summary


# --- output ---------------------------------------------------------------------------------------
def shown_columns(summary: list[dict]) -> list[tuple[str, str, str]]:
    return [c for c in COLUMNS if any(s.get(c[0]) is not None for s in summary)]


def cell(entry: dict, key: str, fmt: str) -> str:
    if entry.get(key) is None:
        return "-"
    spread = entry.get(f"{key}_std")
    return fmt.format(entry[key]) + (f" ± {fmt.format(spread)}" if spread else "")


def print_table(summary: list[dict], title: str) -> None:
    table = Table(title=title)
    columns = shown_columns(summary)
    for header in ["method", "units"] + [h for _, h, _ in columns]:
        table.add_column(header, justify="left" if header == "method" else "right")
    for entry in summary:
        table.add_row(safe(entry["method"]), str(entry["units"]), *(cell(entry, k, f) for k, _, f in columns))
    console.print(table)


def markdown(summary: list[dict]) -> str:
    columns = shown_columns(summary)
    lines = ["| method | units | " + " | ".join(h for _, h, _ in columns) + " |",
             "|---" * (len(columns) + 2) + "|"]
    lines += ["| " + " | ".join([e["method"], str(e["units"])] + [cell(e, k, f) for k, _, f in columns]) + " |"
              for e in summary]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, args: argparse.Namespace, settings: Settings, rows: list[dict],
                  summary: list[dict], by_kind: list[dict]) -> None:
    _write_csv(out / "units.csv", [{k: v for k, v in r.items() if k != "top_scored"} for r in rows])
    _write_csv(out / "summary.csv", summary)
    (out / "results.json").write_text(json.dumps({"summary": summary, "by_kind": by_kind, "units": rows}, indent=1))
    config = {"created": datetime.now().isoformat(timespec="seconds"), "command": sys.argv, "arguments": vars(args),
              "settings": settings.public(),
              "suite": {"path": args.suite, "digest": settings.model.rpartition("@")[2]} if args.suite else None,
              "thresholds": {"match_similarity": metrics.MATCH_THRESHOLD, "recovery_auc": metrics.RECOVERY_AUC,
                             "cosy_images": metrics.COSY_IMAGES, "cosy_seeds_from": metrics.COSY_SEED}}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "table.md").write_text(markdown(summary))


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def copy_histories(runs: Path, target: Path) -> None:
    """Keep each graph run's history.json (the checkpoints and images stay behind)."""
    for history in runs.glob("*/history.json"):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(history, target / f"{history.parent.name.rsplit('-', 2)[0]}.json")  # without the time stamp


if __name__ == "__main__":
    sys.exit(main())
