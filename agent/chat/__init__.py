"""The conversational graph: a researcher and an LLM agent investigate one neuron together.

- `graph`: the chat graph (`build_chat_graph`), its state (`ChatState`: the neuron's
  history plus the conversation) and runtime context (`ChatContext`), and its nodes.
- `actions`: the JSON action schema for models without native tool calling, and the
  person's slash commands, both turned into ordinary tool calls.
- `session`: a thread in its run folder (`ChatSession`), its context (`chat_context`) and
  configuration (`chat_config`).

The terminal conversation (`line chat`) is `agent.ui.chat_repl`; the Python API's
`line_agent.investigate` and the served `chat` graph (`line_agent.serve`) use this package.
"""

from agent.chat.actions import ChatAction, ChatExperiment, slash_call
from agent.chat.graph import STALL_NOTE, ChatContext, ChatState, build_chat_graph
from agent.chat.session import ChatSession, chat_config, chat_context, is_chat_thread

__all__ = ["STALL_NOTE", "ChatAction", "ChatContext", "ChatExperiment", "ChatSession", "ChatState",
           "build_chat_graph", "chat_config", "chat_context", "is_chat_thread", "slash_call"]
