"""`line chat`: the terminal conversation (read, send, print) over a ChatSession."""

from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langgraph.types import Command

from agent.chat import STALL_NOTE, ChatSession, chat_context
from agent.runner import Run
from agent.state import NeuronState
from agent.terminal import printable, safe
from tools.errors import LineError


def cmd_chat(args) -> None:
    from agent.console import console, progress, settings_from_args
    from agent.engines import build_engine

    runs_dir = args.runs_dir or "runs"
    trusted = True
    if args.thread:
        run = Run.open(args.thread, runs_dir)
        settings, history = run.settings, None
    elif args.run:  # someone else's run, maybe: its model is not imported unless trusted
        source = Run.open(args.run, runs_dir)
        settings, history = source.settings, _unit_history(source, args.unit)
        trusted = args.trust_run or args.model == settings.model
    else:
        settings, history = settings_from_args(args, runs_dir=args.runs_dir), None
    engine = build_engine(settings, progress=progress(), trust_code=trusted)
    if not trusted:
        _ = engine.model  # refuses a model that names code here, before the conversation
    context = chat_context(settings, engine)
    if args.thread:
        session = ChatSession(run, context)
    else:
        session = ChatSession.start(settings, context, args.unit or 0, history)
    printer = ConsolePrinter(console, context.tool_calling)
    console.print(f"chat [bold]{safe(session.run.id)}[/]: {safe(settings.model)} / {safe(settings.layer)}, unit {session.unit}, "
                  f"LLM {settings.llm.provider} ({'tool calls' if context.tool_calling else 'JSON actions'}). "
                  "/help lists commands.")
    try:
        printer.recap(session)
        if session.finish_interrupted_turn(printer):
            console.print("(finished the turn that was interrupted)")
        converse(session, printer, console)
    finally:
        session.close()


def _unit_history(run: Run, unit: int | None) -> NeuronState:
    states = run.states()
    if unit not in states:
        started = ", ".join(map(str, sorted(states))) or "none yet"
        raise LineError(f"unit {unit} has no history in run {run.id} (units started: {started}).",
                        "Pass one of them with --unit.")
    return states[unit]


def converse(session: ChatSession, printer: "ConsolePrinter", console) -> None:
    """Read the researcher's messages until /quit, end of input or Ctrl-C."""
    resume = f"Resume with: line chat --thread {session.run.id}"
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print(f"\nbye. {resume}")
            return
        if text in ("/quit", "/exit"):
            console.print(resume)
            return
        if not text:
            continue
        try:
            session.send(text, printer)
        except KeyboardInterrupt:
            console.print(f"\ninterrupted: what was measured is saved. {resume}")
            return
        except LineError as error:
            console.print(f"[red]error:[/] {safe(error)}")
        printer.end_turn()


class ConsolePrinter:
    """Shows a turn as it happens: the agent's tokens, tool calls, results and notes."""

    def __init__(self, console, stream_tokens: bool):
        self.console, self.stream_tokens = console, stream_tokens
        self.streamed = False

    def __call__(self, mode: str, chunk: Any) -> None:
        if mode == "messages":
            message, meta = chunk
            if self.stream_tokens and meta.get("langgraph_node") == "agent" and isinstance(message, AIMessageChunk) \
                    and isinstance(message.content, str) and message.content:
                self.console.print(printable(message.content), end="", markup=False, highlight=False)
                self.streamed = True
            return
        for node, update in chunk.items():
            for message in _messages_of(update):
                self.message(node, message)

    def message(self, node: str, message: BaseMessage) -> None:
        if isinstance(message, ToolMessage):
            style = "red" if message.status == "error" else "green"
            self.console.print(f"  [{style}]<- {safe(message.name)}:[/] {safe(message.content)}", highlight=False)
        elif isinstance(message, AIMessage):
            if self.streamed:
                self.console.print()
                self.streamed = False
            elif message.content:
                speaker = "line" if message.name == "line" else "agent"
                self.console.print(f"[bold]{speaker}>[/] {safe(message.content)}", highlight=False)
            for call in message.tool_calls:
                args = ", ".join(f"{k}={v!r}" for k, v in call["args"].items())
                self.console.print(f"  [cyan]-> {safe(call['name'])}({safe(args)})[/]", highlight=False)
        elif isinstance(message, HumanMessage) and message.name == STALL_NOTE:
            self.console.print(f"  [yellow]{safe(message.content)}[/]", highlight=False)

    def recap(self, session: ChatSession) -> None:
        """Where a resumed thread stands: its best concepts and the last words said."""
        state = session.state()
        if not (state.steps or state.messages):
            return
        best = ", ".join(f"{s.concept} ({s.scores.auc:.3f})" for s in state.ranked()[:3])
        self.console.print(f"history: {len(state.steps)} concepts scored; best: {safe(best or '-')}")
        for message in state.messages[-4:]:
            self.message("recap", message)

    def end_turn(self) -> None:
        if self.streamed:
            self.console.print()
            self.streamed = False


def _messages_of(update: Any) -> list[BaseMessage]:
    """The messages in a node's update (a dict, a Command, or a list of them)."""
    if isinstance(update, list):
        return [m for part in update for m in _messages_of(part)]
    if isinstance(update, Command):
        return _messages_of(update.update)
    if isinstance(update, dict):
        return list(update.get("messages", []))
    return []

