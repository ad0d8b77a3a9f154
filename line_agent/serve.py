"""The labelling and chat graphs for LangGraph's Agent Server (`langgraph.json` names the
two factories below; `langgraph dev` serves them).

Settings come from the server's environment (`LINE_*` variables, set in the shell or in
the file that langgraph.json's "env" names), never from a request: no request can make the
server import code or read a file. A thread is one neuron: the first input names its unit
(`{"unit": 17}` for `label`; `{"unit": 17, "messages": [...]}` for `chat`).

Heavy objects live in the runtime context, never in the state. For a run
(`ServerRuntime.execution_runtime`) a factory builds the context once per process (engine,
LLM client, text encoder) and returns the graph with a context schema that stands for it:
LangGraph coerces each run's context (on the server, a dict of the run's configurable values)
into the graph's context schema, so every run gets the one built here. Reading state, schemas
and drawing get the same graph without a context, and load nothing.

Bad settings in the environment stop the server at start (importing this module checks
them). A LineError in a run (a unit the layer lacks, an input that names another unit than
its thread's, a model that will not load) reaches the client as its text, a `ServedError`.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache, wraps
from typing import Any

from langgraph_sdk.runtime import ServerRuntime
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import core_schema

from agent.chat import build_chat_graph, chat_context
from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from agent.loop.graph import build_label_graph, recursion_limit
from agent.runs.context import build_context
from tools.errors import LineError


class ServedError(ValueError):
    """A LineError in a served run: the server shows a ValueError's text to the client (and
    hides an unknown exception's as "An internal error occurred")."""


def _served(node):
    """`node` with its LineError raised as a ServedError of the same text."""

    @wraps(node)
    def run(*args, **kwargs):
        try:
            return node(*args, **kwargs)
        except LineError as error:
            raise ServedError(str(error)) from error

    return run


def _check_environment() -> None:
    """The LINE_* settings, checked when the server imports the graphs: a bad one stops it
    there, with the LineError's line, instead of failing every run later."""
    try:
        load_settings()
    except LineError as error:
        raise ServedError(f"line_agent.serve: {error}") from error


class RunContext(BaseModel):
    """What a run may bring as context: nothing (the server's environment sets everything)."""


async def label_graph(runtime: ServerRuntime):
    """The labelling graph (`line label`, one unit per thread)."""
    if runtime.execution_runtime is None:
        return build_label_graph().copy(update={"context_schema": RunContext})
    return await asyncio.to_thread(served_graph, "label")


async def chat_graph(runtime: ServerRuntime):
    """The chat graph (`line chat`, one unit per thread)."""
    if runtime.execution_runtime is None:
        return build_chat_graph().copy(update={"context_schema": RunContext})
    return await asyncio.to_thread(served_graph, "chat")


@lru_cache(maxsize=None)
def served_graph(kind: str):
    """The graph of `kind` with its runtime context, built once per process from the
    environment's settings."""
    return _served(_build)(kind)


def _build(kind: str):
    settings = load_settings()
    engine = build_engine(settings)
    if kind == "chat":
        return with_context(build_chat_graph(wrap=_served), chat_context(settings, engine))
    graph = with_context(build_label_graph(wrap=_served), build_context(settings, engine))
    return graph.with_config(recursion_limit=recursion_limit(settings.loop))


def with_context(graph, context: Any):
    """`graph` whose every run gets `context`, whatever context the run brings."""

    class Served(type(context)):
        def __new__(cls, **_run_context: Any):
            return context

        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
            return handler.generate_schema(RunContext)

    return graph.copy(update={"context_schema": Served})


_check_environment()
