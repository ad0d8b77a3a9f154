"""A chat thread: its run folder, its runtime context and its one writer."""

import json
import uuid
from contextlib import ExitStack
from typing import Any, Callable

from langchain_core.messages import BaseMessage, HumanMessage

from agent.chat.graph import ROUND_LIMIT, ChatContext, ChatState, build_chat_graph
from agent.config import Settings
from agent.runs.context import build_context
from agent.runs.run import Run, new_run_id
from agent.loop.state import NeuronState
from tools.cache import atomic_write
from tools.errors import LineError

CHAT_KIND = "chat"  # run.json's "kind" of a chat thread (labelling runs have none)
CONVERSATION_LLM_CALLS = 2**31  # no budget of LLM calls across a thread (see chat_context)


def is_chat_thread(run: Run) -> bool:
    """Whether `run` is a chat thread (marked so in its run.json; threads from before the
    mark: their checkpoint holds a conversation, or their name says so)."""
    meta = json.loads((run.folder / "run.json").read_text())
    if "kind" in meta:
        return meta["kind"] == CHAT_KIND
    if run.id.startswith("chat-"):
        return True
    if not run.store.exists():  # nothing to tell by (and reading creates nothing)
        return False
    with run.store.checkpointer() as checkpointer:
        values = build_chat_graph(checkpointer).get_state(chat_config(run, run.units[0])).values
    return bool(values.get("messages")) if isinstance(values, dict) else bool(getattr(values, "messages", None))


def chat_config(run: Run, unit: int) -> dict:
    """The thread, named like a labelling run's so that `line history` reads it too."""
    return {"configurable": {"thread_id": run.store.thread_id(unit)}}


def chat_context(settings: Settings, engine, chat=None) -> ChatContext:
    """The labelling context plus the chat's way of calling tools: native tool calls for
    providers that have them, the JSON action schema for the embedded model."""
    on = settings.loop.model_copy(update={"llm_proposals": "on"})  # a conversation is with the LLM, whichever it is
    base = build_context(settings.model_copy(update={"loop": on}), engine, chat)
    if base.chat is None:
        raise LineError("the chat needs an LLM, but loop.max_llm_calls is 0.", "Set loop.max_llm_calls above 0.")
    tool_calling = settings.llm.provider != "local"
    # A conversation's messages are bounded by chat.max_rounds each, not by the autonomous
    # loop's LLM call budget: once spent, that budget would call every round a stall.
    loop = base.loop.model_copy(update={"patience": settings.chat.patience, "max_llm_calls": CONVERSATION_LLM_CALLS})
    return ChatContext(**vars(base) | {"loop": loop}, tool_calling=tool_calling, max_rounds=settings.chat.max_rounds,
                       min_experiments=0 if tool_calling else settings.chat.min_experiments)


# --- a conversation --------------------------------------------------------------------------------
Printer = Callable[[str, Any], None]


class ChatSession:
    """One chat thread: a run folder holding one unit's history and conversation."""

    def __init__(self, run: Run, context: ChatContext | None):
        """`context` may be None to read the thread only; otherwise the session is the
        thread's one writer until `close()` (agent.runs.lock)."""
        self.run, self.context, self.unit = run, context, run.units[0]
        self._writing = run.writer() if context is not None else None
        if self._writing is not None:
            self._writing.__enter__()
        self._open = ExitStack()
        self.graph = build_chat_graph(self._open.enter_context(run.store.checkpointer()))
        self.config = chat_config(run, self.unit)

    @classmethod
    def start(cls, settings: Settings, context: ChatContext, unit: int, history: NeuronState | None = None,
              thread_id: str | None = None) -> "ChatSession":
        """A new thread, empty or continuing `history` (e.g. a unit of an autonomous run)."""
        context.engine.check_unit(unit)
        context.engine.check_finite([unit])  # before the thread exists: a unit with NaN activations has nothing to study
        run = Run.create(settings, [unit], thread_id or f"chat-{new_run_id(settings)}-u{unit}-{uuid.uuid4().hex[:4]}")
        meta = json.loads((run.folder / "run.json").read_text())
        atomic_write(run.folder / "run.json", json.dumps(meta | {"kind": CHAT_KIND}, indent=2).encode())
        session = cls(run, context)
        held = {"unit": unit, "held_unit": unit}  # the thread's unit (agent.loop.nodes.hold_unit)
        seed = history.model_copy(update=held) if history else NeuronState(**held)
        session.graph.update_state(session.config, {k: getattr(seed, k) for k in NeuronState.model_fields},
                                   as_node="stall")
        return session

    def state(self) -> ChatState:
        values = self.graph.get_state(self.config).values
        return ChatState.model_validate(values) if isinstance(values, dict) else values

    def send(self, text: str, show: Printer | None = None) -> list[BaseMessage]:
        """One message of the researcher; returns the messages the turn added."""
        before = len(self.state().messages)
        self._stream({"messages": [HumanMessage(text)]}, show)
        return self.state().messages[before:]

    def finish_interrupted_turn(self, show: Printer | None = None) -> bool:
        """Complete a turn cut off by a crash or Ctrl-C (tool calls left unanswered)."""
        if not self.graph.get_state(self.config).tasks:
            return False
        self._stream(None, show)
        return True

    def _stream(self, inputs, show: Printer | None) -> None:
        try:
            config = self.config | {"recursion_limit": 4 * (ROUND_LIMIT * self.context.max_rounds + 2)}
            for mode, chunk in self.graph.stream(inputs, config, context=self.context,
                                                 stream_mode=["messages", "updates"], durability="sync"):
                if show:
                    show(mode, chunk)
        finally:
            self.run.export()

    def close(self) -> None:
        self._open.close()
        if self._writing is not None:
            self._writing.__exit__(None, None, None)
            self._writing = None


