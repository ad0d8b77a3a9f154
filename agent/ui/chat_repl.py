"""`line chat`: the terminal conversation (read, send, print) over a ChatSession."""

import sys
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langgraph.types import Command

from agent.chat import STALL_NOTE, ChatSession, chat_context, is_chat_thread
from agent.chat.answer import text_of
from agent.runs.run import Run
from agent.loop.state import NeuronState
from agent.ui.terminal import printable, safe
from tools.errors import LineError


def cmd_chat(args) -> None:
    from agent.ui.console import console, progress, settings_from_args
    from agent.runs.engine_factory import build_engine

    runs_dir = "runs" if args.runs_dir is None else args.runs_dir
    trusted = True
    if args.thread:
        run = Run.open(args.thread, runs_dir)
        if not is_chat_thread(run):
            raise LineError(f"{run.id} is a labelling run, not a chat thread: line chat --thread would write into it.",
                            f"Start a chat from its history instead: line chat --run {run.id} --unit {run.units[0]}{run.flag}.")
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
    if not args.thread:
        engine.check_unit(args.unit or 0)  # before the LLM starts
    context = chat_context(settings, engine)
    if args.thread:
        session = ChatSession(run, context)
    else:
        session = ChatSession.start(settings, context, args.unit or 0, history)
    printer = ConsolePrinter(console, context.tool_calling, verbose=getattr(args, "verbose", False))
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
    resume = safe(f"Resume with: line chat --thread {session.run.id}{session.run.flag}")
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
        if not sys.stdin.isatty():  # piped questions: the transcript shows them
            console.print(safe(text), highlight=False)
        try:
            session.send(text, printer)
        except KeyboardInterrupt:
            console.print(f"\ninterrupted: what was measured is saved. {resume}")
            return
        except LineError as error:
            console.print(f"[red]error:[/] {safe(error)}")
        printer.end_turn()


class ConsolePrinter:
    """Shows a turn as it happens: the agent's tokens, tool calls, results, notes and the
    answer. Each tool result takes one line (`verbose`: all of it); a call the agent repeats
    is shown once, and its repeats are counted in one line at the end of the turn."""

    def __init__(self, console, stream_tokens: bool, verbose: bool = False):
        self.console, self.stream_tokens, self.verbose = console, stream_tokens, verbose
        self.streamed = ""
        self._calls: dict[str, int] = {}  # this turn's calls (name and arguments) -> times asked
        self._hidden: set[str] = set()  # ids of repeated calls whose results are not shown
        self._substitutes: list[dict] = []  # what the graph scored for the hidden repeats

    def __call__(self, mode: str, chunk: Any) -> None:
        if mode == "messages":
            message, meta = chunk
            if self.stream_tokens and meta.get("langgraph_node") == "agent" and isinstance(message, AIMessageChunk) \
                    and isinstance(message.content, str) and message.content:
                self.console.print(printable(message.content), end="", markup=False, highlight=False)
                self.streamed += message.content
            return
        for node, update in chunk.items():
            for message in _messages_of(update):
                self.message(node, message)

    def message(self, node: str, message: BaseMessage) -> None:
        if isinstance(message, ToolMessage):
            self._result(message)
        elif isinstance(message, AIMessage):
            self._ai(message)
        elif isinstance(message, HumanMessage) and message.name == STALL_NOTE:
            text = message.content if self.verbose else _short(message.content.removeprefix("Note from the stall detector: "))
            self.console.print(f"  [yellow]stall: {safe(text)}[/]" if not self.verbose else f"  [yellow]{safe(text)}[/]",
                               highlight=False)

    def _ai(self, message: AIMessage) -> None:
        text = text_of(message)
        if self.streamed:
            rest = text[len(self.streamed):] if text.startswith(self.streamed) else f"\n{text}"
            self.console.print(safe(rest) if rest.strip() else "", highlight=False)
            self.streamed = ""
        elif text:
            speaker = "line" if message.name == "line" else "agent"
            self.console.print(f"[bold]{speaker}>[/] {safe(text)}", highlight=False)
        for call in message.tool_calls:
            args = ", ".join(f"{k}={v!r}" for k, v in call["args"].items())
            key = f"{call['name']}({args})"
            self._calls[key] = self._calls.get(key, 0) + 1
            if self._calls[key] > 1 and not self.verbose:
                self._hidden.add(call["id"])
                continue
            self.console.print(f"  [cyan]-> {safe(key)}[/]", highlight=False)

    def _result(self, message: ToolMessage) -> None:
        if message.tool_call_id in self._hidden:
            if isinstance(message.artifact, dict) and "auc" in message.artifact:
                self._substitutes.append(message.artifact)
            return
        style = "red" if message.status == "error" else "green"
        text = message.content if self.verbose else _result_line(message)
        self.console.print(f"  [{style}]<- {safe(message.name)}:[/] {safe(text)}", highlight=False)

    def recap(self, session: ChatSession) -> None:
        """Where a resumed thread stands: its best concepts and the last words said."""
        state = session.state()
        if not (state.steps or state.messages):
            return
        best = ", ".join(f"{s.concept} ({s.scores.auc:.3f})" for s in state.ranked(session.run.settings.loop.judge())[:3])
        self.console.print(f"history: {len(state.steps)} concepts scored; best: {safe(best or '-')}")
        for message in state.messages[-4:]:
            self.message("recap", message)
        self.end_turn()

    def end_turn(self) -> None:
        """The repeats of this turn in one line each; then a fresh count for the next turn."""
        if self.streamed:
            self.console.print()
            self.streamed = ""
        for key, times in self._calls.items():
            if times > 1 and not self.verbose:
                line = f"  (the agent asked {key} {times} times; each repeat was answered from the history"
                if self._substitutes:
                    best = max(self._substitutes, key=lambda r: (r["auc"], r["mad"]))
                    line += (f" or with an untried concept, {len(self._substitutes)} scored, best "
                             f"{best['concept']!r}: AUC {best['auc']:.3f}, MAD {best['mad']:.2f}")
                self.console.print(safe(line + ")"), highlight=False)
        self._calls, self._hidden, self._substitutes = {}, set(), []


def _result_line(message: ToolMessage) -> str:
    """A tool result in one line: its figures from the result's data, or its first line."""
    data = message.artifact if isinstance(message.artifact, dict) else {}
    if "auc" in data and "drop_mean" not in data:
        figures = f"AUC {data['auc']:.3f}, MAD {data['mad']:.2f} ({data['images']} images, {data['rendered']} new)"
        if "repeated" in data:
            return f"{data['repeated']!r} again: scored the untried {data['concept']!r} in its place: {figures}"
        if "served" in data:
            return f"{data['served']!r} repeats {data['concept']!r}, from the history: {figures}"
        return f"{data['concept']!r}: {figures}"
    if "drop_mean" in data:
        return (f"without {data['concept']!r} in {data['scene']!r}: AUC {data['auc_with']:.3f} -> "
                f"{data['auc_without']:.3f}, drop {data['drop_mean']:.4f}; "
                + ("it drives the unit" if data["removed"] else "not what drives the unit"))
    lines = str(message.content).splitlines() or [""]
    more = f" (+{len(lines) - 1} lines; line chat -v shows all)" if len(lines) > 2 else ""
    return _short(lines[0]) + more if len(lines) > 2 else _short(" ".join(lines))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _messages_of(update: Any) -> list[BaseMessage]:
    """The messages in a node's update (a dict, a Command, or a list of them)."""
    if isinstance(update, list):
        return [m for part in update for m in _messages_of(part)]
    if isinstance(update, Command):
        return _messages_of(update.update)
    if isinstance(update, dict):
        return list(update.get("messages", []))
    return []

