"""The Python API: `score`, `label`, `open_run` and `investigate`, on a model spec or a
torch module in memory, with results that display themselves in Jupyter.

A thin layer over `agent` and `tools`: the same engine, caches, runs, graphs and report
templates as the `line` command. Keyword settings override the config file (and the
`LINE_*` environment) as the command's flags do: a top-level setting (`control=`,
`cache_dir=`, `runs_dir=`, `device=`), a section as a dict (`loop={"max_iterations": 4}`),
or a key that only one section has (`max_iterations=4`, `provider="openai"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from agent.config import MAX_IMAGES_PER_CONCEPT
from agent.runs.engine_factory import build_engine
from line_agent.setup import (Setup, chat_model, layer_name, live_model, overrides, pandas_module, run_unit,
                              settings_of, text_setting, unit_list)
from tools.concepts import check_concept
from tools.engine import Engine, ImageRef
from tools.errors import LineError
from tools.scoring import Scores

if TYPE_CHECKING:
    import pandas
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from agent.chat import ChatSession
    from agent.runs.network import NetworkRun
    from agent.runs.run import Run
    from agent.loop.state import NeuronState
    from tools.history import Finalist
    from tools.models import TargetModel
    from tools.polysemantic import Polysemanticity


# --- score --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConceptScore:
    """One unit's scores for one concept: AUC, MAD, mean activation and p against the control
    set, with the concept's images and the unit's activation on each."""

    concept: str
    unit: int
    layer: str
    model: str
    scores: Scores
    activations: list[float]
    understood: list[str]
    ignored: list[str]
    refs: list[ImageRef] = field(repr=False)
    engine: Engine = field(repr=False, compare=False)

    auc = property(lambda self: self.scores.auc)
    mad = property(lambda self: self.scores.mad)
    mean = property(lambda self: self.scores.mean)
    p = property(lambda self: self.scores.p)

    @property
    def images(self) -> list[str]:
        """Paths of the concept's images in the cache."""
        return [ref.path for ref in self.refs]

    def _repr_html_(self) -> str:
        from line_agent.display import score_html

        return score_html(self)


class ScoreTable(Sequence[ConceptScore]):
    """One concept scored for several units of a layer: a `ConceptScore` per unit, in the
    order asked; `table.unit(17)` finds one by its unit."""

    def __init__(self, concept: str, layer: str, model: str, rows: list[ConceptScore]):
        self.concept, self.layer, self.model, self.rows = concept, layer, model, rows

    def __getitem__(self, index):
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def unit(self, unit: int) -> ConceptScore:
        found = next((row for row in self.rows if row.unit == unit), None)
        if found is None:
            raise LineError(f"unit {unit} is not in this table ({len(self.rows)} units).", "Score it with units= that include it.")
        return found

    def top(self, k: int = 10, by: str = "auc") -> list[ConceptScore]:
        """The k units the concept drives most, by a score's name (auc, mad, mean, top_share)."""
        return sorted(self.rows, key=lambda row: -getattr(row.scores, by))[:k]

    def to_pandas(self) -> pandas.DataFrame:
        pandas = pandas_module()
        return pandas.DataFrame([{"unit": row.unit, **row.scores.model_dump()} for row in self.rows]).set_index("unit")

    def __repr__(self) -> str:
        best = ", ".join(f"{row.unit}: {row.auc:.3f}" for row in self.top(3))
        return f"ScoreTable({self.concept!r}, {len(self)} units of {self.layer}; best AUC {best})"

    def _repr_html_(self) -> str:
        from line_agent.display import table_html

        return table_html(self)


def score(model: Any, layer: Any, concept: str, unit: int | None = None, units: int | str | Iterable[int] | None = None,
          *, config: str | Path | None = None, images: int | None = None, **settings: Any) -> ConceptScore | ScoreTable:
    """Score `concept` for `unit` of `layer` (a `ConceptScore`), or for `units` (a
    `ScoreTable`: 'all', '0-9', a list; all units when neither is given), like `line score`.

    `model`: a spec string ('efficientnet-lite0', 'timm:resnet50', 'pkg.mod:factory') or a
    torch module in memory, with `preprocess=` (a callable on PIL images) or `input_size=`,
    `mean=`, `std=` (timm and transformers modules bring theirs). `layer`: a dotted name or
    the submodule. `images`: how many images of the concept (default loop.images_per_concept)."""
    if unit is not None and units is not None:
        raise LineError("unit= and units= exclude each other.", "Pass unit=17 for one unit, or units='0-9' for a table.")
    setup = Setup.of(model, layer, config, settings)
    engine = setup.engine
    chosen = unit_list(units if units is not None else ("all" if unit is None else unit), engine)
    concept = check_concept(concept, engine.generator)
    if images is not None and not (isinstance(images, int) and not isinstance(images, bool)
                                   and 1 <= images <= MAX_IMAGES_PER_CONCEPT):
        raise LineError(f"images={images!r} is not a whole number of images from 1 to {MAX_IMAGES_PER_CONCEPT}.",
                        "Pass images=4, say.")
    evidence = engine.evaluate(concept, engine.seeds(images))
    if unit is not None:
        engine.check_finite(chosen, evidence.activations)
    nonfinite = set(engine.nonfinite_units(chosen, evidence.activations))  # their scores: NaN, not a made-up AUC 0
    nan = Scores(**{k: float("nan") for k in ("auc", "mad", "mean", "u", "p", "mad_se", "top_share")})
    rows = [ConceptScore(concept, u, engine.layer, engine.model_name, nan if u in nonfinite else evidence.scores(u),
                         [float(a) for a in evidence.activations[:, u]], evidence.interpretation.understood,
                         evidence.interpretation.ignored, evidence.images, engine) for u in chosen]
    return rows[0] if unit is not None else ScoreTable(concept, engine.layer, engine.model_name, rows)


# --- label, open_run --------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitLabel:
    """A unit's label (or, while the unit is not finished, its best concept so far), how
    strongly the unit fires on it, the runners-up, polysemanticity and the finalists'
    evidence on fresh images."""

    unit: int
    concept: str
    scores: Scores | None
    runners_up: list[tuple[str, float]]
    polysemanticity: Polysemanticity | None = field(repr=False)
    reason: str
    finalists: list[Finalist] = field(repr=False)
    finished: bool
    state: NeuronState = field(repr=False)
    run: LabelRun = field(repr=False, compare=False)

    auc = property(lambda self: self.scores.auc if self.scores else None)
    mad = property(lambda self: self.scores.mad if self.scores else None)
    polysemantic = property(lambda self: bool(self.polysemanticity and self.polysemanticity.polysemantic))
    explained = property(lambda self: self.state.label.explained if self.state.label else None)
    confidence = property(lambda self: self.state.label.confidence if self.state.label else None)
    meanings = property(lambda self: self.polysemanticity.meanings if self.polysemanticity else [])

    @classmethod
    def of(cls, state: NeuronState, run: LabelRun) -> "UnitLabel":
        label, best = state.label, state.best(run.report_view().criterion())
        chosen = label or best
        return cls(state.unit, chosen.concept if chosen else "", chosen.scores if chosen else None,
                   label.runners_up if label else [], label.polysemanticity if label else None,
                   label.reason if label else "", state.finalists, label is not None, state, run)

    def _repr_html_(self) -> str:
        from line_agent.display import label_html

        return label_html(self.run.report_view(), self.state)


class LabelRun:
    """A labelling run (`runs/<id>/`): its labels, histories, report and table."""

    def __init__(self, run: Run, engine: Engine, target: TargetModel | None = None):
        self._run, self._engine, self._target = run, engine, target
        self._report = None

    id = property(lambda self: self._run.id)
    folder = property(lambda self: self._run.folder)
    settings = property(lambda self: self._run.settings)
    units = property(lambda self: list(self._run.units))

    @property
    def labels(self) -> list[UnitLabel]:
        """The units started so far, in the run's order."""
        states = self._run.states()
        return [UnitLabel.of(states[u], self) for u in self._run.units if u in states]

    def label(self, unit: int) -> UnitLabel:
        return UnitLabel.of(self.history(unit), self)

    def history(self, unit: int) -> NeuronState:
        """The unit's generation history, as `line history <run> --unit N --json` prints it."""
        unit = run_unit(unit)
        states = self._run.states()
        if unit not in states:
            started = ", ".join(map(str, sorted(states))) or "none yet"
            raise LineError(f"unit {unit} has no history in run {self.id} (units started: {started}).",
                            "Pass one of them, or resume the run.")
        return states[unit]

    def report(self, unit: int | None = None) -> Path:
        """Write the HTML report (`line report`); returns the index, or the unit's page."""
        from agent.ui.report import write_report

        return write_report(self._run, None if unit is None else run_unit(unit), trust=True, engine=self._engine)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per started unit: the summary table of `line label`."""
        from agent.ui.summaries import summary_row

        states = self._run.states()
        return pandas_module().DataFrame([summary_row(states[u], self._run.settings.loop.judge()) for u in self._run.units if u in states]).set_index("unit")

    def resume(self, *, chat: BaseChatModel | None = None, **changes: Any) -> "LabelRun":
        """Go on labelling where the run stopped, with its own settings (as `line label
        --resume`): `cache_dir`, `runs_dir` and `concurrency` may change, nothing that
        changes what is scored. A run on a module in memory needs it: open_run(id, model=...)."""
        from agent.runs.run import Run, resume_settings
        from agent.runs.backends import label as label_run
        from agent.runs.context import labelling_context

        if self._engine.model_name.startswith("live:") and self._target is None:
            raise LineError(f"run {self.id} labels a torch module in memory ({self._engine.model_name}).",
                            f"Pass it again: line_agent.open_run({self.id!r}, model=module, ...).resume().")
        chat = chat_model(chat)
        settings = resume_settings(self._run, overrides(changes))
        engine = build_engine(settings, model=self._target)  # resuming trusts the run's model, as `line label --resume`
        run = Run(self._run.folder, settings, self._run.units, self._run.id)  # a network run's layer keeps its id
        run.on_export = self._run.on_export  # ... and its run's history.json follows
        label_run(run, labelling_context(settings, engine, chat))
        return LabelRun(run, engine, self._target)

    def report_view(self):
        """The report's view of the run (agent.ui.report.Report), for the displays."""
        from agent.ui.report import Report
        from line_agent.display import LazyEmbedder

        if self._report is None:
            self._report = Report(self._run, self._engine, LazyEmbedder())
        return self._report

    def __repr__(self) -> str:
        return f"LabelRun({self.id!r}, {self.settings.model} / {self.settings.layer}, units {self._run.units})"

    def _repr_html_(self) -> str:
        from line_agent.display import run_html

        states = self._run.states()
        return run_html(self.report_view(), [states[u] for u in self._run.units if u in states], self.folder / "report")


def label(model: Any, layer: Any = None, units: int | str | Iterable[int] | None = None,
          config: str | Path | None = None, *, layers: str | Sequence[Any] | None = None,
          chat: BaseChatModel | None = None, run_id: str | None = None, **settings: Any) -> LabelRun | NetworkLabelRun:
    """Label `units` of `layer` with the LINE loop (`line label`); returns the run. With
    `layers` (a list of names or submodules, or text with names and globs: '_blocks.*')
    instead of `layer`: `units` of each of them as one run (`line label --layers`), a
    `NetworkLabelRun`.

    `units`: 17, '0-9', '1,5,9-12', 'all' or a list. `chat`: a LangChain chat model to use
    instead of the one `llm.provider` configures. Ctrl-C (interrupting the kernel) keeps every
    finished step: `open_run(run_id).resume()` goes on."""
    from agent.runs.run import Run
    from agent.runs.backends import label as label_run
    from agent.runs.context import labelling_context

    chat = chat_model(chat)
    run_id = None if run_id is None else text_setting(run_id, "run_id", "resnet-layer4")
    if layer is not None and layers is not None:
        raise LineError("layer= and layers= exclude each other.",
                        "Pass one layer, label(model, '_blocks.6', units='0-9'), or several: layers='_blocks.*'.")
    if layers is not None:
        return _label_layers(model, layers, units, config, chat, run_id, settings)
    setup = Setup.of(model, layer, config, settings)
    chosen = unit_list(units, setup.engine)
    if setup.settings.cluster.backend == "local":  # on Ray the workers compute the control set (their init checks)
        setup.engine.check_finite(chosen)
    context = labelling_context(setup.settings, setup.engine, chat)  # before the run exists: a failed start leaves nothing
    run = Run.create(setup.settings, chosen, run_id)
    label_run(run, context)
    return LabelRun(run, setup.engine, setup.target)


def open_run(run_id: str, runs_dir: str | Path = "runs", *, model: Any = None, trust: bool = False,
             **preprocessing: Any) -> LabelRun:
    """A finished or interrupted run, to read (`.labels`, `.history(unit)`, `.report()`) or to
    `.resume()`. A run folder is data: a model spec that names code is not imported unless
    `trust` (activations come from the cache). A run on a module in memory reads from the
    cache too; pass `model=` (and its `preprocess=` or `input_size=`, `mean=`, `std=`) to
    resume it: the module must be the one the run labelled (same weights)."""
    from agent.runs.network import NetworkRun, layer_engines, open_run as open_any

    run = open_any(str(run_id), text_setting(runs_dir, "runs_dir", "runs"))
    target = live_model(model, preprocessing)
    if preprocessing:
        raise LineError(f"open_run takes no setting {next(iter(preprocessing))!r}.",
                        "Pass changes to .resume(), e.g. open_run(id).resume(cache_dir=...).")
    if target is None and model is not None and model != run.settings.model:
        raise LineError(f"model {model!r} is not the run's model ({run.settings.model}).", "Leave model= out.")
    if target is not None and target.name != run.settings.model:
        raise LineError(f"the module is not the one run {run.id} labelled ({target.name}, the run: {run.settings.model}).",
                        "Pass the same module with the same weights and preprocessing, or start a new run.")
    if isinstance(run, NetworkRun):
        return NetworkLabelRun(run, layer_engines(run.settings, run.layers, trust_code=trust or model is not None,
                                                  model=target), target)
    return LabelRun(run, build_engine(run.settings, trust_code=trust or model is not None, model=target), target)


# --- several layers ---------------------------------------------------------------------------
class NetworkLabelRun:
    """A labelling run over several layers (`line label --layers`, `runs/<id>/`): a `LabelRun`
    per layer (`.runs`, `.layer(name)`), their labels by layer, one table, one report."""

    def __init__(self, run: NetworkRun, engines: dict[str, Engine], target: TargetModel | None = None):
        self._run, self._target = run, target
        self.runs = {layer: LabelRun(run.children[layer], engines[layer], target) for layer in run.layers}

    id = property(lambda self: self._run.id)
    folder = property(lambda self: self._run.folder)
    settings = property(lambda self: self._run.settings)
    layers = property(lambda self: list(self._run.layers))

    def layer(self, layer: str) -> LabelRun:
        """The run of one layer (a LineError naming the run's layers otherwise)."""
        return self.runs[self._run.layer(layer).settings.layer]

    @property
    def labels(self) -> dict[str, list[UnitLabel]]:
        """Each layer's started units, by layer."""
        return {layer: run.labels for layer, run in self.runs.items()}

    def to_pandas(self) -> pandas.DataFrame:
        """One row per started unit of every layer, indexed by (layer, unit)."""
        frames = [run.to_pandas().assign(layer=layer) for layer, run in self.runs.items() if run.labels]
        return pandas_module().concat(frames).reset_index().set_index(["layer", "unit"])

    def report(self) -> Path:
        """Write every layer's report and a network page linking them (`line report`); returns the index."""
        from agent.ui.report import write_network_report

        return write_network_report(self._run, trust=True)

    def resume(self, *, chat: BaseChatModel | None = None, **changes: Any) -> "NetworkLabelRun":
        """Go on labelling every layer where it stopped (as `line label --resume`; see `LabelRun.resume`)."""
        from agent.runs.network import network_contexts

        if self.settings.model.startswith("live:") and self._target is None:
            raise LineError(f"run {self.id} labels a torch module in memory ({self.settings.model}).",
                            f"Pass it again: line_agent.open_run({self.id!r}, model=module, ...).resume().")
        chat = chat_model(chat)
        settings = self._run.resume_settings(overrides(changes))
        with self._run.writer():
            self._run.mend(settings)
            contexts, engines = network_contexts(self._run, chat=chat, model=self._target)
            self._run.label(contexts)
        return NetworkLabelRun(self._run, engines, self._target)

    def __repr__(self) -> str:
        return f"NetworkLabelRun({self.id!r}, {self.settings.model}, layers {', '.join(self.layers)})"

    def _repr_html_(self) -> str:
        from html import escape

        return "".join(f"<h3>{escape(layer)}</h3>{run._repr_html_()}" for layer, run in self.runs.items())


def _label_layers(model: Any, layers: str | Sequence[Any], units: int | str | Iterable[int], config: str | Path | None,
                  chat: BaseChatModel | None, run_id: str | None, keywords: dict[str, Any]) -> NetworkLabelRun:
    """`label` over several layers, as one network run (agent.runs.network)."""
    from agent.runs.network import start_network

    settings, target = settings_of(model, None, config, keywords)
    if not isinstance(layers, str):
        layers = [layer_name(layer, target) for layer in layers] if isinstance(layers, Sequence) else layers
    run, contexts, engines = start_network(settings, layers, lambda engine: unit_list(units, engine), run_id, chat=chat,
                                           model=target)
    run.label(contexts)
    return NetworkLabelRun(run, engines, target)


# --- investigate ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """A tool the agent (or a slash command) called in a turn, and what came back."""

    name: str
    args: dict[str, Any]
    result: str
    ok: bool


@dataclass(frozen=True)
class Answer:
    """One turn of a conversation: the agent's answer and the tools it called."""

    text: str
    tool_calls: list[ToolCall]
    messages: list[BaseMessage] = field(repr=False)

    @classmethod
    def of(cls, messages: list[BaseMessage]) -> "Answer":
        from langchain_core.messages import AIMessage, ToolMessage

        results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
        calls, text = [], ""
        for message in messages:
            if not isinstance(message, AIMessage):
                continue
            for call in message.tool_calls:
                result = results.get(call["id"])
                calls.append(ToolCall(call["name"], call["args"], str(result.content) if result else "",
                                      result is not None and result.status != "error"))
            if not message.tool_calls and message.content:
                text = str(message.content)
        return cls(text, calls, messages)

    def __str__(self) -> str:
        return self.text


class Conversation:
    """An investigation of one neuron with the chat agent (`line chat`). The thread lives in
    `runs/<id>/` like a run; close it (or use `with`) to release it."""

    def __init__(self, session: ChatSession):
        self._session = session

    id = property(lambda self: self._session.run.id)
    unit = property(lambda self: self._session.unit)

    def ask(self, text: str) -> Answer:
        """One message (or slash command: /score, /ablate, /images, /history); the agent's
        answer and the tool calls it made."""
        if not isinstance(text, str):
            raise LineError(f"ask({text!r}): a message is text, not a {type(text).__name__}.",
                            "Pass a question or a slash command, e.g. ask('/score red stripes').")
        return Answer.of(self._session.send(text))

    def history(self) -> NeuronState:
        """The neuron's generation history, as `line history <thread> --unit N --json` prints it."""
        return self._session.run.states()[self.unit]

    @property
    def messages(self) -> list[BaseMessage]:
        return list(self._session.state().messages)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Conversation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Conversation({self.id!r}, unit {self.unit})"


def investigate(model: Any, layer: Any, unit: int, config: str | Path | None = None, *,
                chat: BaseChatModel | None = None, thread_id: str | None = None, **settings: Any) -> Conversation:
    """Start investigating `unit` of `layer` with the chat agent (`line chat`). `chat`: a
    LangChain chat model to use instead of the one `llm.provider` configures (it calls tools
    natively unless llm.provider is 'local', whose model answers in JSON actions)."""
    from agent.chat import ChatSession, chat_context

    chat = chat_model(chat)
    thread_id = None if thread_id is None else text_setting(thread_id, "thread_id", "chat-red-unit")
    setup = Setup.of(model, layer, config, settings)
    context = chat_context(setup.settings, setup.engine, chat)
    return Conversation(ChatSession.start(setup.settings, context, setup.engine.check_unit(unit), thread_id=thread_id))



__all__ = ["Answer", "ConceptScore", "Conversation", "LabelRun", "NetworkLabelRun", "ScoreTable", "ToolCall", "UnitLabel",
           "investigate", "label", "open_run", "score"]
