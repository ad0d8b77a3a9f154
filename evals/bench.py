"""Benchmarks (`make bench`): speed and memory of scoring, cost of labelling.

    python -m evals.bench speed            # hook vs bare forward, procedural images/s, warm vs cold
                                           # `line score`, peak memory of `line score --units all`
    python -m evals.bench cost [--units 4] [--layer-units 32]
                                           # our loop vs the paper's loop (same LLM, same units),
                                           # and images over a layer sweep (concept bank)
    python -m evals.bench all

Results are printed and written to evals/results/bench-<part>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
MODEL, LAYER = "efficientnet-lite0", "_blocks.6"


def _rate(fn, n: int, repeats: int = 3) -> float:
    """Best items per second over `repeats` runs of fn (which handles n items)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def bench_hook(images: list) -> dict:
    from tools.activations import layer_activations
    from tools.models import load_target_model

    model = load_target_model(MODEL)
    batches = [model.preprocess(images[i : i + 32]) for i in range(0, len(images), 32)]

    def bare():
        with torch.inference_mode():
            for x in batches:
                model.module(x)

    result = {"images": len(images), "bare_forward_img_s": _rate(bare, len(images))}
    for layer in (LAYER, "_conv_head"):
        rate = _rate(lambda: [layer_activations(model, layer, x) for x in batches], len(images))
        result[f"hook_{layer}_img_s"] = rate
        result[f"ratio_{layer}"] = rate / result["bare_forward_img_s"]
    return result


def bench_procedural() -> tuple[dict, list]:
    from tools.generators.procedural import ProceduralGenerator

    generator = ProceduralGenerator(size=224)
    concepts = generator.random_concepts(40, seed=1)
    prompts = [c for c in concepts for _ in range(5)]
    seeds = [s for _ in concepts for s in range(5)]
    rate = _rate(lambda: generator.render(prompts, seeds), len(prompts))
    return {"procedural_img_s_224px": rate}, generator.render(prompts[:96], seeds[:96])


def _line(*argv: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one `line` command in a fresh process."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "agent.cli", *argv], check=True, stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.perf_counter() - start, max(peak, before) // 1024


def bench_score_cli() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        base = ["score", "--model", MODEL, "--layer", LAYER, "--cache-dir", cache, "--concept", "red polka dots"]
        cold, _ = _line(*base, "--unit", "17")
        warm, _ = _line(*base, "--unit", "17")
        new_concept, _ = _line(*base[:-1], "black and white stripes", "--unit", "17")
        _, peak = _line(*base[:-1], "green zigzag", "--units", "all", "--top", "10")
    return {"score_cold_s": cold, "score_warm_s": warm, "warm_speedup": cold / warm,
            "score_new_concept_warm_control_s": new_concept, "score_units_all_peak_mb": peak}


def speed() -> dict:
    procedural, images = bench_procedural()
    return {**bench_hook(images), **procedural, **bench_score_cli()}


def _label(settings, units: list[int], run_id: str) -> list[dict]:
    from agent.engines import build_engine
    from agent.runner import Run, build_context, summary_row

    engine = build_engine(settings)
    run = Run.create(settings, units, run_id)
    states = run.label(build_context(settings, engine))
    return [summary_row(s) for s in states.values()]


def cost(units: int, layer_units: int) -> dict:
    from agent.config import LoopConfig, load_settings

    result: dict = {"units": list(range(units))}
    with tempfile.TemporaryDirectory() as root:
        for name, loop in (("ours", LoopConfig()), ("paper", LoopConfig.paper())):
            settings = load_settings(model=MODEL, layer=LAYER, cache_dir=f"{root}/{name}-cache",
                                     runs_dir=f"{root}/runs", loop=loop.model_dump())
            rows = _label(settings, list(range(units)), name)
            result[name] = {"rows": rows, **_means(rows)}
        if layer_units:
            settings = load_settings(model=MODEL, layer=LAYER, cache_dir=f"{root}/sweep-cache", runs_dir=f"{root}/runs")
            rows = _label(settings, list(range(layer_units)), "sweep")
            cumulative = [sum(r["images"] for r in rows[: i + 1]) for i in range(len(rows))]
            result["layer_sweep"] = {"units": layer_units, "cumulative_images": cumulative,
                                     "images_first_half": cumulative[len(rows) // 2 - 1],
                                     "images_second_half": cumulative[-1] - cumulative[len(rows) // 2 - 1],
                                     **_means(rows)}
    return result


def _means(rows: list[dict]) -> dict:
    keys = ("auc", "images", "images_used", "llm_calls", "seconds")
    return {f"mean_{k}": sum(r[k] for r in rows) / len(rows) for k in keys}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="all", choices=["speed", "cost", "all"])
    parser.add_argument("--units", type=int, default=4, help="units for ours vs paper")
    parser.add_argument("--layer-units", type=int, default=32, help="units of the layer sweep (0: skip)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    parts = {"speed": speed, "cost": lambda: cost(args.units, args.layer_units)}
    for name in (["speed", "cost"] if args.part == "all" else [args.part]):
        result = {"part": name, "machine": f"{torch.get_num_threads()} threads", **parts[name]()}
        path = RESULTS / f"bench-{name}.json"
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "paper", "layer_sweep")}, indent=1))
        for key in ("ours", "paper", "layer_sweep"):
            if key in result:
                print(key, json.dumps({k: v for k, v in result[key].items() if k != "rows"}))
        print(f"written {path}")


if __name__ == "__main__":
    main()
