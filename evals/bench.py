"""Benchmarks (`make bench`): speed and memory of scoring, cost of labelling.

    python -m evals.bench speed            # hook vs bare forward, procedural images/s, warm vs cold
                                           # `line score`, peak memory of `line score --units all`
    python -m evals.bench cost [--units 4] [--layer-units 32]
                                           # our loop vs the paper's loop (same LLM, same units),
                                           # and images over a layer sweep (concept bank)
    python -m evals.bench diffusion [--shape tiny|sd-turbo] [--size 64] [--device auto] [--dtype auto]
                                           # images/s of a random-weight diffusers pipeline at pipeline
                                           # batch sizes 1, 4 and 16 (interleaved runs, medians)
    python -m evals.bench all              # speed and cost

Results are printed and written to evals/results/bench-<part>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
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


BATCH_SIZES = (1, 4, 16)


def diffusion(shape: str, size: int, device: str, dtype: str, images: int, rounds: int) -> dict:
    """Images/s of a random-weight pipeline (evals.tiny_diffusion) rendered through the
    generator at each of BATCH_SIZES: `rounds` rounds, each timing every batch size once on
    `images` new (prompt, seed) pairs, in turn (interleaved, so a slow moment of a shared
    machine hits them alike); the median per batch size. A warm-up render comes first."""
    from evals.tiny_diffusion import save_tiny_pipeline
    from tools.generators.diffusion import DiffusersGenerator

    concepts = ["cat", "red car", "sand", "striped shirt", "octagons", "wooden table", "dog on grass", "blue sky"]
    with tempfile.TemporaryDirectory() as root:
        folder = save_tiny_pipeline(root, shape)
        generators = {b: DiffusersGenerator(str(folder), size=size, batch_size=b, device=device, dtype=dtype)
                      for b in BATCH_SIZES}
        first = generators[BATCH_SIZES[0]]
        generator_id = first.id  # while the folder exists: its digest is part of the id
        pipe = first._pipeline()
        for generator in generators.values():  # one pipeline in memory, shared
            generator._pipe = pipe
        first.render([first.prompt("cat", 0)] * 2, [0, 1])  # warm-up
        rates: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        for r in range(rounds):
            for b, generator in generators.items():
                seeds = list(range(1000 * (r + 1), 1000 * (r + 1) + images))
                prompts = [generator.prompt(concepts[i % len(concepts)], s) for i, s in enumerate(seeds)]
                if generator.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                generator.render(prompts, seeds)
                if generator.device.startswith("cuda"):
                    torch.cuda.synchronize()
                rates[b].append(images / (time.perf_counter() - start))
    medians = {b: statistics.median(v) for b, v in rates.items()}
    return {"shape": shape, "size": size, "device": first.device, "dtype": first.dtype, "images_per_run": images,
            "rounds": rounds, "generator": generator_id, "processor": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(first.device) if first.device.startswith("cuda") else None,
            "img_s": {str(b): v for b, v in rates.items()}, "median_img_s": {str(b): m for b, m in medians.items()},
            "speedup_vs_1": {str(b): m / medians[1] for b, m in medians.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="all", choices=["speed", "cost", "diffusion", "all"])
    parser.add_argument("--units", type=int, default=4, help="units for ours vs paper")
    parser.add_argument("--layer-units", type=int, default=32, help="units of the layer sweep (0: skip)")
    parser.add_argument("--shape", choices=["tiny", "sd-turbo"], default="tiny", help="diffusion: the pipeline's shape")
    parser.add_argument("--size", type=int, default=64, help="diffusion: image side in pixels")
    parser.add_argument("--device", default="auto", help="diffusion: auto, cpu, cuda")
    parser.add_argument("--dtype", default="auto", help="diffusion: auto, float32, float16, bfloat16")
    parser.add_argument("--images", type=int, default=32, help="diffusion: images per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="diffusion: interleaved rounds")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    parts = {"speed": speed, "cost": lambda: cost(args.units, args.layer_units),
             "diffusion": lambda: diffusion(args.shape, args.size, args.device, args.dtype, args.images, args.rounds)}
    for name in (["speed", "cost"] if args.part == "all" else [args.part]):
        suffix = f"-{args.shape}-{args.size}px" if name == "diffusion" else ""
        result = {"part": name, "machine": f"{torch.get_num_threads()} threads", **parts[name]()}
        path = RESULTS / f"bench-{name}{suffix}.json"
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "paper", "layer_sweep")}, indent=1))
        for key in ("ours", "paper", "layer_sweep"):
            if key in result:
                print(key, json.dumps({k: v for k, v in result[key].items() if k != "rows"}))
        print(f"written {path}")


if __name__ == "__main__":
    main()
