"""Helpers the tests share (fixtures live in conftest.py): the tiny model's spec, scripted
LLM replies, settings tweaks, an in-process `line`, and the code-layout checks."""

from __future__ import annotations

import ast
import json
import os
import signal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLOUR_NET = "tests.colour_net:colour_net"
NATURAL_CLASSES = ("n01440764_tench", "n01443537_goldfish", "n01530575_brambling", "n02085620_Chihuahua",
                   "n02123045_tabby", "n02504458_African_elephant", "n03417042_garbage_truck", "n07920052_espresso",
                   "n09472597_volcano", "n04254680_soccer_ball")


def shared_data() -> Path:
    return Path(os.environ.get("LINE_SHARED_DATA", ROOT.parent / "shared" / "data"))


# --- the LLM and the loop ---------------------------------------------------------------------
def say(concept: str, reasoning: str = "a guess") -> str:
    """A scripted LLM reply proposing `concept`."""
    return json.dumps({"concept": concept, "reasoning": reasoning})


def with_loop(settings, **loop):
    """`settings` with some `[loop]` keys changed."""
    from agent.config import load_settings

    data = settings.model_dump()
    data["loop"].update(loop)
    return load_settings(**data)


def run_units(settings, replies, units=(0,), run_id="t"):
    """A run of `units` labelled with a scripted LLM: (run, chat model, states)."""
    from agent.llm import ScriptedChatModel
    from agent.runs.context import build_context
    from agent.runs.engine_factory import build_engine
    from agent.runs.run import Run

    engine = build_engine(settings)
    chat = ScriptedChatModel(replies=replies)
    run = Run.create(settings, list(units), run_id)
    return run, chat, run.label(build_context(settings, engine, chat=chat))


def searched(state):
    """The search's steps: one per iteration, proposed by the LLM or an operator."""
    return [s for s in state.steps if s.source in ("llm", "operator")]


def write_config(path: Path, replies: list[str], **loop) -> Path:
    """A config file with a scripted LLM and a small loop (without the vocabulary sweep, 1,084
    images in a test's fresh cache, unless `sweep=True`)."""
    loop = {"images_per_concept": 2, "init_top": 1, "init_random": 0, "bank_top": 0, "max_iterations": 2,
            "dedup": False, "summary": False, "sweep": False} | loop
    path.write_text("[llm]\nprovider = 'scripted'\nscript = " + json.dumps(replies) + "\n[loop]\n"
                    + "".join(f"{k} = {json.dumps(v)}\n" for k, v in loop.items()))
    return path


# --- the command line -----------------------------------------------------------------------------
def line(capsys, *argv) -> tuple[int, str, str]:
    """`line ARGV` in-process: exit code, stdout, stderr (argparse's exits included)."""
    from agent.ui.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *words: str) -> bool:
    """Whether a command failed as bad input should: exit 2, one line, naming `words`."""
    return code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and all(w in err for w in words)


# --- the layout of the code -------------------------------------------------------------------
PACKAGES = ("agent", "tools", "prompts", "evals", "line_agent")
# Who may import whom: a module imports only modules of its layer or below. Inside agent/:
# config and llm serve all; the loop; runs (which run the loop); the chat (on runs); the UI.
LAYERS = {"prompts": 0, "tools": 0, "agent.config": 1, "agent.llm": 1, "agent": 1, "agent.loop": 2, "agent.runs": 3,
          "agent.chat": 4, "agent.ui": 5, "line_agent": 6, "evals": 7}


def our_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every module of our packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module named by an import statement outside `if TYPE_CHECKING:` blocks,
    function-level imports included (they run too)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.extend(f"{base}.{alias.name}" for alias in node.names)
            names.append(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports at run time. Importing `a.b.c` runs the
    `__init__` of `a` and `a.b` too, so those count, except the importer's own packages."""
    modules = our_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for imported in _runtime_imports(tree, name, path.name == "__init__.py"):
            while imported and imported not in modules:  # `from a.b import name`: the module a.b
                imported = imported.rpartition(".")[0]
            if not imported:
                continue
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in modules and not (name == target or name.startswith(target + ".")):
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """The strongly connected groups of more than one module in the import graph (Tarjan)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def layer_of(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(module)


def imports_up_the_layers(root: Path) -> list[str]:
    """'importer -> imported' for every import of a module from a higher layer (`LAYERS`)."""
    return [f"{name} -> {target}" for name, targets in sorted(import_graph(root).items()) for target in sorted(targets)
            if layer_of(target) > layer_of(name)]


def long_modules(root: Path, limit: int) -> list[str]:
    """Our modules longer than `limit` lines."""
    return [f"{name}: {n} lines" for name, path in our_modules(root).items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]


def as_in_a_terminal() -> None:
    """`preexec_fn` for a `line` process a test stops with SIGINT: Ctrl-C reaches it as it
    reaches a terminal's foreground process. (A background job of a non-interactive shell,
    `make test &`, inherits SIGINT ignored, and Python keeps it ignored.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# a factory file (`file.py:net`) of the colour net whose unit 3 is always NaN
NAN_NET = """
import torch
from torch import nn
from tests.colour_net import colour_net


class NanUnit(nn.Module):
    def forward(self, x):
        x = x.clone()
        x[:, 3] = float("nan")
        return x


def net():
    model = colour_net()
    model.relu = nn.Sequential(nn.ReLU(), NanUnit())
    return model
"""
