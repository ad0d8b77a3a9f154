"""How sure are the labels of a stored eval run? The verdict and the meanings, recomputed
from its histories (issue 23), with the measures beyond AUC.

    python -m evals.trust --results evals/results/planted-finalists [--method ours] \
        [--suite planted | --model efficientnet-lite0 --layer _blocks.6] --out evals/results/NAME

Each stored unit's state is finalised again as `agent.loop.nodes.finalize` does now (the same
label, from the same finalists): its verdict from the finalists' fresh images
(tools.verdict, natural photos through LINE_SHARED_DATA) and its meanings from fresh-image
tests (tools.meanings). The labelling itself is not repeated, so a whole results folder is
judged in minutes. The stored `units.csv` gives each label's CoSy figures; AUPRC and the
correlation are computed on the same 50 CoSy images (seeds 5000..). Writes `units.csv`,
`summary.json`, `config.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from agent.config import Settings, load_settings
from agent.runs.engine_factory import build_engine
from agent.loop.label_choice import choose_label
from agent.loop.state import NeuronState
from evals import metrics
from evals.planted import load_suite, pinned_spec
from tools import meanings, verdict
from tools.text import default_embedder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.trust", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="a results folder with histories/<method>.json")
    parser.add_argument("--method", default="ours")
    parser.add_argument("--suite", help="the planted suite the results labelled (ground truth)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--units", default=None, help="a comma list of stored units to judge (default: all)")
    parser.add_argument("--choose", action="store_true",
                        help="choose each label again from its stored finalists with today's criterion "
                             "(agent.loop.label_choice.choose_label) before judging it; the stored label is kept "
                             "as label_before")
    args = parser.parse_args(argv)
    stored = json.loads((Path(args.results) / "histories" / f"{args.method}.json").read_text())
    settings = Settings.model_validate(stored["settings"]) if isinstance(stored["settings"], dict) else None
    overrides = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    planted = None
    if args.suite:
        overrides |= {"model": pinned_spec(args.suite)}  # the detectors' code may have moved on: pin today's
        planted = list(load_suite(args.suite).units)
    settings = settings.model_copy(update=overrides) if settings else load_settings(**overrides)
    engine = build_engine(settings)
    cosy = {name: metrics.Cosy(name, build_engine(settings.model_copy(update={"control": spec})))
            for name, spec in cosy_controls(settings).items()}
    old = {int(r["unit"]): r for r in csv.DictReader((Path(args.results) / "units.csv").open())
           if r["method"] == args.method}
    matcher = metrics.Matcher(default_embedder()) if planted else None
    chosen = {int(u) for u in args.units.split(",")} if args.units else None
    rows = []
    for key, value in stored["units"].items():
        state = NeuronState.model_validate(value)
        if state.label is None or (chosen is not None and state.unit not in chosen):
            continue
        before = state.label.concept
        if args.choose:
            state = rechosen(state, settings, engine)
        rows.append(judge_unit(engine, cosy, state, old.get(state.unit, {}), matcher,
                               planted[state.unit] if planted else None) | {"label_before": before})
        print(json.dumps({k: rows[-1][k] for k in ("unit", "label", "explained", "meanings", "cosy_auc_natural")}),
              flush=True)
    summary = summarise(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "units.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "config.json").write_text(json.dumps({
        "created": datetime.now().isoformat(timespec="seconds"), "command": sys.argv, "arguments": vars(args),
        "bar": verdict.Bar().model_dump(), "meanings": {"images": meanings.IMAGES, "seed": meanings.MEANING_SEED,
                                                        "max_candidates": meanings.MAX_CANDIDATES},
        "natural_every": verdict.NATURAL_EVERY}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def rechosen(state: NeuronState, settings: Settings, engine) -> NeuronState:
    """`state` with its label chosen again from its finalists as `finalize` chooses it now
    (criterion, parsimony, the verdict's bar; the same finalists and fresh images)."""
    concept, scores, reason = choose_label(state, settings.loop.judge(), settings.loop.simplify,
                                           lambda f: verdict.finalist_verdict(engine, state.unit, f).explained)
    return state.model_copy(update={"label": state.label.model_copy(update={"concept": concept, "scores": scores,
                                                                              "reason": reason})})


def cosy_controls(settings) -> dict[str, str]:
    controls = {"procedural": settings.control}
    natural = metrics.shared_data() / "imagenet-samples"
    if natural.is_dir():
        controls["natural"] = f"dir:{natural}"
    return controls


def judge_unit(engine, cosy, state: NeuronState, old: dict, matcher, planted) -> dict:
    label = state.label.concept
    confirmed = state.finalist(label)
    trust = (verdict.held_out_verdict(engine, state.unit, label, confirmed.fresh) if confirmed is not None and confirmed.fresh
             else verdict.label_verdict(engine, state.unit, None))
    poly = meanings.analyse(engine, state.unit, state.steps, label, also=state.sweep_aucs())
    row = {"unit": state.unit, "label": label, **verdict.trust_row(trust, poly),
           "old_flag": bool(state.label.polysemanticity and state.label.polysemanticity.polysemantic),
           "flag": poly.polysemantic, "meaning_images": poly.images_rendered, "reason": trust.reason}
    row["meanings"] = "; ".join(row["meanings"])
    control = engine.control_activations()[:, state.unit]
    excess = [float(np.mean(m.evidence.evidence.activations) - control.mean()) for m in poly.meanings]
    row["meaning_strength"] = "; ".join(f"{e / max(excess):.2f}" for e in excess) if excess and max(excess) > 0 else ""
    for name, scorer in cosy.items():
        auc, mad = scorer.scores(label, state.unit)
        row[f"cosy_auc_{name}"], row[f"cosy_mad_{name}"] = round(auc, 4), round(mad, 3)
        row[f"auprc_{name}"], row[f"corr_{name}"] = (round(v, 4) for v in scorer.beyond_auc(label, state.unit))
    if planted is not None:
        row |= {"name": planted.name, "kind": planted.kind, "truth": planted.truth.label,
                "match": bool(any(matcher.how(label, t) for t in (planted.truth, *planted.concepts))),
                "strict": bool(any(matcher.strict(label, t) for t in (planted.truth, *planted.concepts)))}
        if planted.concepts:
            row["meanings_match"] = metrics.meanings_match(matcher, [m.concept for m in poly.meanings],
                                                           planted.concepts)
    return row


def summarise(rows: list[dict]) -> dict:
    def share(values):
        values = [bool(v) for v in values]
        return {"share": round(statistics.fmean(values), 3) if values else None, "count": sum(values), "of": len(values)}

    ors = [r for r in rows if r.get("kind") == "polysemantic"]
    others = [r for r in rows if r.get("kind") not in (None, "polysemantic")]
    summary = {"units": len(rows), "explained": share(r["explained"] for r in rows),
               "labels_changed": sum(r["label"] != r["label_before"] for r in rows),
               "images_for_meanings_per_unit": round(statistics.fmean(r["meaning_images"] for r in rows), 1) if rows else 0}
    if rows and "match" in rows[0]:
        summary |= {"match": share(r["match"] for r in rows), "strict": share(r["strict"] for r in rows)}
    if ors or others:
        summary |= {"flag_recall_or": share(r["flag"] for r in ors), "flag_fpr_others": share(r["flag"] for r in others),
                    "old_flag_recall_or": share(r["old_flag"] for r in ors),
                    "old_flag_fpr_others": share(r["old_flag"] for r in others),
                    "or_meanings_match_both": share(r["meanings_match"] for r in ors)}
    if rows and "cosy_auc_natural" in rows[0]:
        low = [r for r in rows if r["cosy_auc_natural"] < 0.8]
        summary["imagenet_cosy_auc_below_0.8"] = {"units": len(low), "called_explained": sum(bool(r["explained"]) for r in low),
                                                  "which": [(r["unit"], r["label"], r["cosy_auc_natural"], r["explained"]) for r in low]}
    for key in ("cosy_auc_natural", "auprc_natural", "corr_natural", "cosy_auc_procedural", "auprc_procedural",
                "corr_procedural"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            summary[key] = round(statistics.fmean(values), 3)
    return summary


if __name__ == "__main__":
    sys.exit(main())
