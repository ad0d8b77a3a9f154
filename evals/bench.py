"""Benchmarks (`make bench`): speed and memory of scoring, cost of labelling.

    python -m evals.bench speed [--rounds 5]
                                           # hook vs bare forward (interleaved pairs, medians), procedural
                                           # images/s, warm vs cold `line score`, peak memory of
                                           # `line score --units all`
    python -m evals.bench cost [--units 4] [--layer-units 32]
                                           # our loop vs the paper's loop (same LLM, same units),
                                           # and images over a layer sweep (concept bank)
    python -m evals.bench diffusion [--shape tiny|sd-turbo] [--size 64] [--device auto] [--dtype auto]
                                           # images/s of a random-weight diffusers pipeline at pipeline
                                           # batch sizes 1, 4 and 16 (interleaved runs, medians)
    python -m evals.bench scale [--units 16] [--layer _blocks.10] [--loops embedded,operators,remote]
                                [--llm-latency 2.9]
                                           # units per minute on the local backend against Ray with 1
                                           # and 2 workers, images and LLM calls per unit, the bank's savings
    python -m evals.bench network [--layers '_blocks.*,_conv_head'] [--units all] [--loop defaults]
                                           # every unit of those layers of EfficientNet-Lite0 as one run:
                                           # seconds, images, LLM calls, where the time goes, per layer
    python -m evals.bench all              # speed and cost

Results are printed and written to evals/results/bench-<part>.json (`--out DIR` elsewhere).
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
    return n / min(_seconds(fn) for _ in range(repeats))


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_hook(images: list, rounds: int) -> dict:
    """Scoring through the hook against a bare forward, timed in adjacent pairs (bare, hooked,
    bare, hooked, ...), so that a slow moment of a shared machine hits both of a pair: the
    median over `rounds` of each pair's ratio, and the median rates."""
    from tools.activations import layer_activations
    from tools.models import load_target_model

    model = load_target_model(MODEL)
    batches = [model.preprocess(images[i : i + 32]) for i in range(0, len(images), 32)]

    def bare():
        with torch.inference_mode():
            for x in batches:
                model.module(x)

    layers = (LAYER, "_conv_head")
    hooked = {layer: (lambda layer=layer: [layer_activations(model, layer, x) for x in batches]) for layer in layers}
    bare()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in ("bare", *layers)}
    ratios: dict[str, list[float]] = {layer: [] for layer in layers}
    for _ in range(rounds):
        for layer in layers:
            pair = len(images) / _seconds(bare), len(images) / _seconds(hooked[layer])
            rates["bare"].append(pair[0])
            rates[layer].append(pair[1])
            ratios[layer].append(pair[1] / pair[0])
    result = {"images": len(images), "rounds": rounds, "bare_forward_img_s": statistics.median(rates["bare"])}
    for layer in layers:
        result[f"hook_{layer}_img_s"] = statistics.median(rates[layer])
        result[f"ratio_{layer}"] = statistics.median(ratios[layer])
        result[f"ratios_{layer}"] = [round(r, 3) for r in ratios[layer]]
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
    subprocess.run([sys.executable, "-m", "agent.ui.cli", *argv], check=True, stdout=subprocess.DEVNULL)
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


def speed(rounds: int) -> dict:
    procedural, images = bench_procedural()
    return {**bench_hook(images, rounds), **procedural, **bench_score_cli()}


def _label(settings, units: list[int], run_id: str) -> list[dict]:
    from agent.runs.engine_factory import build_engine
    from agent.runs.run import Run
    from agent.runs.context import build_context
    from agent.ui.summaries import summary_row

    engine = build_engine(settings)
    run = Run.create(settings, units, run_id)
    states = run.label(build_context(settings, engine))
    return [summary_row(s, settings.loop.judge()) for s in states.values()]


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


SCALE_BACKENDS = (("local", 1), ("ray", 1), ("ray", 2))  # (backend, workers) on the machine's cores
# the embedded SmolLM2; no LLM at all; an endpoint on another machine (see `scale`)
SCALE_LOOPS = {"embedded": {}, "operators": {"max_llm_calls": 0}, "remote": {}}
DEFAULT_LOOPS = ",".join(SCALE_LOOPS)
REMOTE_LATENCY_S = 2.9  # the embedded SmolLM2's seconds per call on this machine (bench-scale.json, local)


def scale(units: int, layer: str, loops: list[str], latency: float = REMOTE_LATENCY_S) -> dict:
    """`units` units of `layer` labelled on the local backend and on Ray with 1 and 2 workers
    (Ray started by the run, address "local"), for each loop of SCALE_LOOPS. The machine's
    cores are split between the workers: each gets cores / workers CPUs, as many torch and
    llama.cpp threads. Every configuration starts from a copy of one cache that holds the
    control set's activations and the layer sweep (the one-off start of a layer, timed
    once), so each renders its own concept images and grows its own bank.

    The `remote` loop stands in for an LLM endpoint on another machine (a vLLM server
    shared by the workers): an OpenAI-compatible server in this process answers each call
    after `latency` seconds of waiting, using none of this machine's cores, with the
    scripted LLM's closed-vocabulary concepts in turn."""
    import os
    import shutil
    from contextlib import ExitStack

    from agent.config import load_settings
    from agent.runs.engine_factory import build_engine
    from agent.runs.run import Run, prepare
    from agent.runs.context import build_context, labelling_context
    from agent.runs.backends import label
    from evals.fake_openai import FakeOpenAI
    from evals.run import scripted_replies

    cores = os.cpu_count() or 1
    result: dict = {"layer": layer, "units": units, "cores": cores, "loops": {}, "remote_latency_s": latency}
    with tempfile.TemporaryDirectory() as root, ExitStack() as servers:
        llm_of: dict[str, dict] = {}  # a loop's [llm] settings beyond the defaults
        if "remote" in loops:
            endpoint = servers.enter_context(FakeOpenAI("ok", reply=scripted_replies(), latency=latency))
            llm_of["remote"] = {"provider": "openai-compatible", "base_url": endpoint.url, "model": "remote"}
        warm = Path(root) / "warm-cache"
        base = {"model": MODEL, "layer": layer, "runs_dir": f"{root}/runs"}
        prepared = load_settings(**base, cache_dir=str(warm), loop={"max_llm_calls": 0})
        start = time.perf_counter()
        result["sweep"] = prepare(build_context(prepared, build_engine(prepared)))
        result["prepare_s"] = time.perf_counter() - start
        for loop in loops:
            for backend, workers in SCALE_BACKENDS:
                name = f"{loop}-{backend}-{workers}"
                shutil.copytree(warm, Path(root) / name)
                settings = load_settings(
                    **base, cache_dir=f"{root}/{name}", loop=SCALE_LOOPS[loop],
                    llm={"threads": max(1, cores // workers), **llm_of.get(loop, {})},
                    cluster={"backend": backend, "workers": workers, "cpus_per_worker": cores / workers, "address": "local"})
                moments: list[float] = []
                load = os.getloadavg()[0]  # what else ran: recorded beside the figures
                start = time.perf_counter()
                run = Run.create(settings, list(range(units)), name)
                states = label(run, labelling_context(settings, build_engine(settings)),
                               on_update=lambda unit, node, state: moments.append(time.perf_counter()))
                wall = time.perf_counter() - start
                labelling = moments[-1] - moments[0]
                result["loops"].setdefault(loop, {})[f"{backend}-{workers}"] = {
                    "wall_s": wall, "start_s": moments[0] - start, "labelling_s": labelling,
                    "load_before": load, "load_after": os.getloadavg()[0],
                    "units_per_min": 60 * units / labelling, "units_per_min_wall": 60 * units / wall,
                    **_unit_costs(list(states.values()))}
                print(name, json.dumps({k: round(v, 2) for k, v in result["loops"][loop][f"{backend}-{workers}"].items()}),
                      flush=True)
    for loop, rows in result["loops"].items():
        one = rows.get("ray-1", {}).get("units_per_min")
        for key, row in rows.items():
            row["vs_local"] = row["units_per_min"] / rows["local-1"]["units_per_min"]
            row["vs_ray_1"] = row["units_per_min"] / one if one else None
    return result


def _unit_costs(states: list) -> dict:
    """Means per unit: images rendered and scored, LLM calls, seconds (and of those, scoring:
    rendering plus activations), and the images the layer's concept bank gave for free (the
    unit's best sweep atoms and other units' concepts, scored without a new image)."""
    n = len(states)
    free = [sum(len(s.image_keys) for s in state.steps if s.source in ("sweep", "bank")) for state in states]
    from_bank = [sum(len(s.image_keys) for s in state.steps if s.source == "bank") for state in states]
    scoring = [sum(s.seconds for s in state.steps) for state in states]
    return {"images_rendered": sum(s.images_rendered() for s in states) / n, "images_used": sum(s.images_used() for s in states) / n,
            "llm_calls": sum(s.usage.llm_calls for s in states) / n, "seconds": sum(s.elapsed for s in states) / n,
            "scoring_s": sum(scoring) / n, "bank_images_free": sum(free) / n, "other_units_images_free": sum(from_bank) / n,
            "auc": sum(s.label.scores.auc for s in states if s.label) / n}


NETWORK_LAYERS = "_blocks.*,_conv_head"  # EfficientNet-Lite0: 16 block outputs (1,808 units) and the head (1,280)
NETWORK_LOOPS = ("defaults", "operators", "vocabulary")  # the loop; without the LLM; the search off (evals.methods)


def _network_loop(name: str):
    from agent.config import LoopConfig
    from evals.methods import search_off

    loop = LoopConfig()
    return {"defaults": loop, "operators": loop.model_copy(update={"max_llm_calls": 0}),
            "vocabulary": search_off(loop)}[name]


def network(layers: str, units: str, loop: str) -> dict:
    """Every unit of `layers` of EfficientNet-Lite0 labelled as one network run (`line label
    --layers`), embedded defaults (or the `loop` of NETWORK_LOOPS), fresh cache: the whole
    run's seconds, images rendered and LLM calls, where the time went (the shared forwards
    and each layer's sweep; the units: search, confirmation, verdict) and a per-layer table."""
    from agent.config import load_settings
    from agent.runs.network import start_network

    with tempfile.TemporaryDirectory() as root:
        settings = load_settings(model=MODEL, cache_dir=f"{root}/cache", runs_dir=f"{root}/runs",
                                 loop=_network_loop(loop).model_dump())
        start = time.perf_counter()
        run, contexts, engines = start_network(settings, layers, units, "bench-network")
        started = time.perf_counter() - start
        states = run.label(contexts)
        seconds = time.perf_counter() - start
        shared = _json(run.folder / "sweep.json")
        per_layer = {}
        for layer, units_states in states.items():
            sweep = _json(run.folder / "layers" / layer / "sweep.json")
            rows = list(units_states.values())
            per_layer[layer] = {"units": len(rows), "sweep_s": sweep.get("seconds", 0.0),
                                "units_s": round(sum(s.elapsed for s in rows), 1),
                                "images_rendered_by_units": sum(s.images_rendered() for s in rows),
                                "llm_calls": sum(s.usage.llm_calls for s in rows),
                                "from_vocabulary": sum(1 for s in rows if s.label_source() == "sweep"),
                                "mean_auc": round(sum(s.label.scores.auc for s in rows if s.label) / max(1, len(rows)), 3),
                                "explained": sum(1 for s in rows if s.label and s.label.explained)}
        caches = {id(e.cache): e.cache for e in engines.values()}
        rendered = sum(c.stats["images_generated"] for c in caches.values())
        total_units = sum(p["units"] for p in per_layer.values())
        return {"model": MODEL, "layers": len(per_layer), "layer_names": list(per_layer), "units": total_units,
                "loop": loop, "seconds": round(seconds, 1), "images_rendered": rendered,
                "images_per_unit": round(rendered / max(1, total_units), 2),
                "llm_calls": sum(p["llm_calls"] for p in per_layer.values()),
                "from_vocabulary": sum(p["from_vocabulary"] for p in per_layer.values()),
                "time": {"start_s": round(started, 1), "shared_sweep_s": shared.get("seconds", 0.0),
                         "layer_sweeps_s": round(sum(p["sweep_s"] for p in per_layer.values()), 1),
                         "units_s": round(sum(p["units_s"] for p in per_layer.values()), 1)},
                "per_layer": per_layer}


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


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
    parser.add_argument("part", nargs="?", default="all", choices=["speed", "cost", "diffusion", "scale", "network", "all"])
    parser.add_argument("--units", type=int, help="units for ours vs paper (default 4), for scale (default 16)")
    parser.add_argument("--layer-units", type=int, default=32, help="units of the layer sweep (0: skip)")
    parser.add_argument("--layer", default="_blocks.10", help="scale: the layer")
    parser.add_argument("--loops", default=DEFAULT_LOOPS,
                        help="scale: embedded (SmolLM2), operators (no LLM), remote (an endpoint elsewhere)")
    parser.add_argument("--llm-latency", type=float, default=REMOTE_LATENCY_S, help="scale: the remote endpoint's seconds per call")
    parser.add_argument("--layers", default=NETWORK_LAYERS, help="network: layers (names and globs)")
    parser.add_argument("--unit-list", default="all", help="network: the units of each layer (all, 0-9, ...)")
    parser.add_argument("--loop", choices=NETWORK_LOOPS, default="defaults",
                        help="network: the embedded defaults, operators without the LLM, or the vocabulary alone")
    parser.add_argument("--shape", choices=["tiny", "sd-turbo"], default="tiny", help="diffusion: the pipeline's shape")
    parser.add_argument("--size", type=int, default=64, help="diffusion: image side in pixels")
    parser.add_argument("--device", default="auto", help="diffusion: auto, cpu, cuda")
    parser.add_argument("--dtype", default="auto", help="diffusion: auto, float32, float16, bfloat16")
    parser.add_argument("--images", type=int, default=32, help="diffusion: images per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="speed, diffusion: interleaved rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where bench-<part>.json goes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"speed": lambda: speed(args.rounds), "cost": lambda: cost(args.units or 4, args.layer_units),
             "diffusion": lambda: diffusion(args.shape, args.size, args.device, args.dtype, args.images, args.rounds),
             "scale": lambda: scale(args.units or 16, args.layer, args.loops.split(","), args.llm_latency),
             "network": lambda: network(args.layers, args.unit_list, args.loop)}
    for name in (["speed", "cost"] if args.part == "all" else [args.part]):
        suffix = {"diffusion": f"-{args.shape}-{args.size}px",
                  "network": ("" if (args.layers, args.unit_list) == (NETWORK_LAYERS, "all") else "-partial")
                  + ("" if args.loop == "defaults" else f"-{args.loop}"),
                  "scale": "" if args.loops == DEFAULT_LOOPS else "-" + args.loops.replace(",", "-")}.get(name, "")
        result = {"part": name, "machine": f"{torch.get_num_threads()} threads", **parts[name]()}
        path = args.out / f"bench-{name}{suffix}.json"
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "paper", "layer_sweep", "loops", "per_layer")},
                         indent=1))
        for key in ("ours", "paper", "layer_sweep"):
            if key in result:
                print(key, json.dumps({k: v for k, v in result[key].items() if k != "rows"}))
        print(f"written {path}")


if __name__ == "__main__":
    main()
