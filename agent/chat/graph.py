"""`line chat`: a researcher and an LLM agent investigate one neuron together.

    START -> intake --(message)--> agent --(tool calls)--> dedup -> tools -> stall -> agent ...
               |                      \\--(answer)--> END             ^         \\
               \\--(slash command)-------------------------------------/          \\--> END (a slash
                                                                     command's turn, or its budget spent)

`intake` turns slash commands (`/score red stripes`) into tool calls without the LLM;
`agent` asks the LLM for tool calls (native tool calling, or a JSON action schema for
models without it); `dedup` checks each proposed concept on the one path (agent.path): the
LLM's repeat is answered with a new concept, the next operator proposal, scored in its
place; `tools` runs the four typed tools of `tools.agent_tools` through ToolNode's public
interface; `stall` applies the labelling loop's stall test and, on a stall, scores the next
operator proposal and says so. The state is the neuron's generation history (NeuronState)
plus the conversation, checkpointed in the run's store (agent.store): a thread lives in
`runs/chat-.../` like a run, and resumes on another day.
"""

import json
import random
import re
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import ToolException
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from pydantic import BaseModel, Field, ValidationError, create_model

import prompts
from agent.config import Settings
from agent.llm import (
    ask_structured,
    check_reachable,
    describe_failure,
    transport_failure,
)
from agent import path
from agent.nodes import LineContext, stall_trigger, vocabulary_hint
from agent.runner import Run, build_context, new_run_id
from agent.state import NeuronState, Proposal, Usage
from agent.terminal import printable, safe
from tools.agent_tools import TOOLS, USER_CALL_PREFIX, ScoreConceptArgs, ScoreResult
from tools.errors import LineError
from tools.history import Event

STALL_NOTE = "stall-detector"  # name of the messages the stall node adds
TRANSCRIPT_FOR_ACTIONS = 16  # recent messages a model without tool calling sees
ROUND_LIMIT = 2  # rounds that only read the history may add this many times the budget


class ChatState(NeuronState):
    """The neuron's history plus the conversation about it."""

    messages: Annotated[list[AnyMessage], add_messages] = Field(default_factory=list)
    turn_start: int = Field(0, description="work_done() when the researcher's last message came")


@dataclass
class ChatContext(LineContext):
    """LineContext plus how the chat LLM is driven."""

    tool_calling: bool = True  # False: choose tools through the JSON action schema
    max_rounds: int = 8  # LLM tool rounds of new work per message of the researcher
    min_experiments: int = 0  # JSON actions: new scores or ablations before the agent may answer


class Reply(BaseModel):
    tool: Literal["reply"]
    reply: str = Field(max_length=800)


def _action_schema(reply: bool) -> type[BaseModel]:
    """One action of a model without native tool calling: a tool with its typed arguments,
    or (with `reply`) an answer. Each tool's arguments are part of the schema, so a
    grammar-constrained provider cannot answer with arguments of the wrong shape."""
    choices = [create_model(f"Call_{t.name}", tool=(Literal[t.name], ...), arguments=(_own_unit(t.tool_call_schema), ...))
               for t in TOOLS]
    if not reply:
        return create_model("ChatExperiment", action=(Union[tuple(choices)], Field(discriminator="tool")))
    return create_model("ChatAction", action=(Union[(*choices, Reply)], Field(discriminator="tool")))


def _own_unit(arguments: type[BaseModel]) -> type[BaseModel]:
    """The arguments without `unit`: a model driven by actions studies the neuron at hand
    (a small one fills optional fields at random; people compare units with /score ... @N)."""
    if "unit" not in arguments.model_fields:
        return arguments
    fields = {name: (f.annotation, f) for name, f in arguments.model_fields.items() if name != "unit"}
    return create_model(arguments.__name__, **fields)


ChatAction = _action_schema(reply=True)
ChatExperiment = _action_schema(reply=False)  # before the minimum of experiments: no answer yet


# --- intake: slash commands ------------------------------------------------------------------
_UNIT_SUFFIX = re.compile(r"\s+@(\d+)\s*$")


def slash_call(text: str) -> dict | None:
    """The tool call a slash command asks for, or None when it is no known command."""
    command, _, rest = text.strip()[1:].partition(" ")
    rest = rest.strip()
    match = _UNIT_SUFFIX.search(rest)
    unit = int(match.group(1)) if match else None
    rest = rest[: match.start()] if match else rest
    if command == "score":
        args = {"concept": rest, "unit": unit}
    elif command == "ablate":
        concept, _, scene = rest.partition(" from ")
        args = {"concept": concept, "unit": unit, "scene": scene or None}
    elif command == "images":
        args = {"concepts": [c.strip() for c in rest.split(",") if c.strip()]}
    elif command == "history":
        args = {"contains": rest or None}
    else:
        return None
    name = {"score": "score_concept", "ablate": "ablate_concept", "images": "generate_images",
            "history": "inspect_history"}[command]
    return {"name": name, "args": {k: v for k, v in args.items() if v is not None},
            "id": f"{USER_CALL_PREFIX}{uuid.uuid4().hex[:12]}", "type": "tool_call"}


def intake(state: ChatState) -> Command:
    """A slash command becomes a tool call of the person's; anything else goes to the LLM."""
    last = state.messages[-1]
    if not (isinstance(last, HumanMessage) and str(last.content).startswith("/")):
        return Command(goto="agent", update={"turn_start": work_done(state)})
    call = slash_call(str(last.content))
    if call is None:
        return Command(goto=END, update={"messages": [AIMessage(prompts.text("chat_help"), name="line")]})
    return Command(goto="dedup", update={"messages": [AIMessage("", tool_calls=[call], name="line")]})


# --- agent: the LLM chooses tools -----------------------------------------------------------
def system_prompt(ctx: ChatContext, state: ChatState) -> str:
    return prompts.render("chat_system", unit=state.unit, layer=ctx.engine.layer, model=ctx.engine.model_name,
                          vocabulary=vocabulary_hint(ctx.engine.generator))


def agent(state: ChatState, runtime: Runtime[ChatContext]) -> dict:
    """One LLM turn: tool calls, or the answer to the researcher."""
    ctx = runtime.context
    system = SystemMessage(system_prompt(ctx, state))
    update = ask_with_tools(ctx, system, state) if ctx.tool_calling else ask_for_action(ctx, system, state)
    message = update["messages"][0]
    message.id = f"ai-{uuid.uuid4().hex}"  # unique even when a model reuses ids (scripted replies)
    return update


def ask_with_tools(ctx: ChatContext, system: SystemMessage, state: ChatState) -> dict:
    try:
        reply = ctx.chat.bind_tools(TOOLS).invoke([system, *state.messages], temperature=ctx.temperature)
    except Exception as error:
        check_reachable(error, "Check the server or llm.base_url; slash commands work without it.")
        kind = transport_failure(error)
        if kind is None:
            raise
        detail = describe_failure(error) + " (after the client's retries)"
        usage = Usage(llm_calls=1, llm_failures=1, llm_http_errors=int(kind == "http"), llm_timeouts=int(kind == "timeout"))
        return {"messages": [AIMessage(f"(The LLM failed: {detail})", name="line")], "usage": usage,
                "events": [Event(iteration=state.iteration, kind="llm_failure", detail=detail)]}
    usage = reply.usage_metadata or {}
    return {"messages": [reply], "usage": Usage(llm_calls=1, input_tokens=usage.get("input_tokens", 0),
                                                output_tokens=usage.get("output_tokens", 0))}


def ask_for_action(ctx: ChatContext, system: SystemMessage, state: ChatState) -> dict:
    """For models without tool calling: a JSON action, turned into the same tool call."""
    instructions = prompts.render("chat_action", tools=tool_catalogue())
    transcript = plain_transcript(state.messages[-TRANSCRIPT_FOR_ACTIONS:])
    schema = ChatAction if experiments(state) >= ctx.min_experiments else ChatExperiment
    reply = ask_structured(ctx.chat, [SystemMessage(f"{system.content}\n\n{instructions}"), *transcript],
                           schema, temperature=ctx.temperature, retries=ctx.llm_retries)
    update: dict = {"usage": reply.usage()}
    if reply.value is None:
        detail = " / ".join(reply.failures)[:500]
        return update | {"messages": [AIMessage(f"(The LLM gave no usable action: {detail})")],
                         "events": [Event(iteration=state.iteration, kind="llm_failure", source="llm", reason=detail)]}
    action = reply.value.action
    if isinstance(action, Reply):
        return update | {"messages": [AIMessage(action.reply)]}
    call = {"name": action.tool, "args": action.arguments.model_dump(exclude_none=True),
            "id": f"call-{uuid.uuid4().hex[:12]}", "type": "tool_call"}
    return update | {"messages": [AIMessage("", tool_calls=[call])]}


def tool_catalogue() -> str:
    """Each tool with its arguments (name: type = default) and description, for the action prompt."""
    lines = []
    for tool in TOOLS:
        schema = tool.tool_call_schema.model_json_schema()
        args = ", ".join(f"{name}: {_type_name(spec)}" + (f" = {json.dumps(spec['default'])}" if "default" in spec else "")
                         for name, spec in schema["properties"].items())
        lines.append(f"- {tool.name}({args}): {' '.join(tool.description.split())}")
    return "\n".join(lines)


def _type_name(spec: dict) -> str:
    """A JSON schema type in words: 'string', 'list of string', 'integer or null'."""
    if "anyOf" in spec:
        return " or ".join(_type_name(option) for option in spec["anyOf"])
    if spec.get("type") == "array":
        return f"list of {_type_name(spec.get('items', {}))}"
    return spec.get("type", "any")


def plain_transcript(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The conversation without tool-call structure: actions as JSON, results as text."""
    plain: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            plain.append(HumanMessage(f"[result of {message.name}] {message.content}"))
        elif isinstance(message, AIMessage) and message.tool_calls:
            plain.append(AIMessage("\n".join(json.dumps({"action": {"tool": c["name"], "arguments": c["args"]}})
                                             for c in message.tool_calls)))
        else:
            plain.append(message)
    return plain


def after_agent(state: ChatState) -> str:
    last = state.messages[-1]
    return "dedup" if isinstance(last, AIMessage) and last.tool_calls else END


# --- dedup: a repeat is acted on, not replayed -----------------------------------------------
def dedup(state: ChatState, runtime: Runtime[ChatContext]) -> Command:
    """Number each proposal (a score of the neuron's unit) and check it on the one path
    (agent.path). The LLM's repeat is acted on: the next operator proposal is scored in its
    place, and the answer says so. A person's repeat is answered from the history. The
    other calls go to the tools together, as ToolNode's public list of tool calls."""
    ctx = runtime.context
    iteration, accepted, numbered = state.iteration, [], {}
    messages, events, steps = [], [], []
    earlier_calls = [(c["name"], c["args"]) for m in _this_turn(state)[1:] for c in m.tool_calls]
    for call in last_tool_calls(state):
        concept = proposal(call, state.unit)
        repeated = source_of_call(call) == "llm" and (call["name"], call["args"]) in earlier_calls
        if concept is None and not repeated:
            accepted.append(call)
            continue
        iteration += 1
        working = state.model_copy(update={"steps": state.steps + steps, "iteration": iteration})
        if concept is None:  # the same call as earlier in this turn: acted on like a repeated concept
            described = f"{call['name']}({', '.join(f'{k}={v!r}' for k, v in call['args'].items())})"
            offered = Proposal(concept=described, source="llm", iteration=iteration)
            rejected = Event(iteration=iteration, kind="duplicate", concept=described, source="llm",
                             duplicate_of=described, reason="the same call again")
        else:
            offered = Proposal(concept=concept, source=source_of_call(call), iteration=iteration)
            rejected = path.rejection(ctx, working, offered, also=[proposal(c, state.unit) for c in accepted
                                                                  if c["id"] in numbered])
        if rejected is None:
            accepted.append(call)
            numbered[call["id"]] = iteration
            continue
        events.append(rejected)
        substitute = None
        if rejected.kind == "duplicate" and offered.source == "llm":
            substitute = next(path.operator_proposals(ctx, working, random.Random(iteration)), None)
        if substitute is not None:
            step = path.score(ctx, state.unit, [substitute])[0][0]
            steps.append(step)
            text = prompts.render("chat_repeat", concept=offered.concept, earlier=rejected.duplicate_of,
                                  reason=rejected.reason,
                                  substitute=step.concept, how=substitute.reasoning,
                                  score=ScoreResult.of_step(step, state.unit).text())
            messages.append(ToolMessage(text, tool_call_id=call["id"], name=call["name"]))
        elif rejected.kind == "undrawable":
            messages.append(ToolMessage(f"Not scored: {concept!r} cannot be drawn ({rejected.reason}). "
                                        "inspect_history lists the words the generator draws.",
                                        tool_call_id=call["id"], name=call["name"], status="error"))
        else:
            messages.append(ToolMessage(duplicate_answer(working, concept, rejected.duplicate_of, rejected.reason),
                                        tool_call_id=call["id"], name=call["name"]))
    update = {"iteration": iteration, "call_iterations": numbered, "messages": messages, "events": events,
              "steps": steps}
    return Command(update=update, goto=Send("tools", accepted) if accepted else "stall")


def source_of_call(call: dict) -> str:
    return "user" if str(call["id"]).startswith(USER_CALL_PREFIX) else "llm"


def last_tool_calls(state: ChatState) -> list[dict]:
    return next(m.tool_calls for m in reversed(state.messages) if isinstance(m, AIMessage))


def proposal(call: dict, unit: int) -> str | None:
    """The concept when `call` proposes a concept for the neuron under study, else None."""
    if call["name"] != "score_concept":
        return None
    try:
        args = ScoreConceptArgs.model_validate(call["args"])
    except ValidationError:
        return None  # the tool node reports the bad arguments
    return args.concept if args.unit in (None, unit) else None


def duplicate_answer(state: NeuronState, concept: str, earlier: str, reason: str) -> str:
    step = state.step(earlier)
    if step is None:  # proposed twice in the same round
        return f"Not scored again: {concept!r} repeats {earlier!r} ({reason}), scored by another call just now."
    note = f"Served from the history: {concept!r} repeats {earlier!r} ({reason}); no new images were made."
    return ScoreResult.of_step(step, state.unit, note=note).text()


def tool_error(error: ToolException | LineError) -> str:
    """What the LLM reads when a tool call fails on its arguments. (ToolNode handles the
    errors this annotation names, and re-raises others: so no postponed annotations here.)"""
    text = getattr(error, "message", None) or str(error)
    return f"Error: {text}\nFix the arguments and call the tool again, or try something else."


# --- stall: the autonomous graph's stall test, acted on ------------------------------------
def stall(state: ChatState, runtime: Runtime[ChatContext]) -> Command:
    """On a stall (the loop's test: no new best for a while, or proposals rejected in a
    row), act as the loop does: score the next operator proposal, and tell the agent and
    the researcher. Then end a slash command's turn, or one whose tool budget is spent;
    else back to the agent."""
    ctx = runtime.context
    update: dict = {"messages": []}
    trigger, _ = stall_trigger(state, ctx.loop, ctx.criterion) if ctx.loop.stall else (None, False)
    substitute = next(path.operator_proposals(ctx, state.model_copy(update={"iteration": state.iteration + 1}),
                                              random.Random(state.iteration)), None) if trigger else None
    if substitute is not None:
        step = path.score(ctx, state.unit, [substitute])[0][0]
        update |= {"iteration": substitute.iteration, "steps": [step], "events": [Event(
            iteration=state.iteration, kind="strategy", reason=trigger, strategy="operators")]}
        note = prompts.render("chat_stall", trigger=trigger, substitute=step.concept, how=substitute.reasoning,
                              score=ScoreResult.of_step(step, state.unit).text())
        update["messages"].append(HumanMessage(note, name=STALL_NOTE))
    if any(str(c["id"]).startswith(USER_CALL_PREFIX) for c in last_tool_calls(state)):
        return Command(update=update, goto=END)
    if work_rounds(state) >= ctx.max_rounds or tool_rounds(state) >= ROUND_LIMIT * ctx.max_rounds:
        note = f"(Stopped after {ctx.max_rounds} tool rounds of new work; ask again to continue.)"
        update["messages"].append(AIMessage(note, name="line"))
        return Command(update=update, goto=END)
    return Command(update=update, goto="agent")


def _this_turn(state: ChatState) -> list[AIMessage]:
    """The LLM's tool rounds since the researcher's last message."""
    rounds = []
    for message in reversed(state.messages):
        if isinstance(message, HumanMessage) and message.name != STALL_NOTE:
            break
        if isinstance(message, AIMessage) and message.tool_calls:
            rounds.append(message)
    return rounds


def tool_rounds(state: ChatState) -> int:
    return len(_this_turn(state))


def work_done(state: NeuronState) -> int:
    """Concepts scored and ablations run in the history so far."""
    return len(state.steps) + sum(e.kind == "ablation" for e in state.events)


def experiments(state: ChatState) -> int:
    """New scores and ablations since the researcher's last message."""
    return work_done(state) - state.turn_start


def work_rounds(state: ChatState) -> int:
    """Tool rounds that did new work: reading the history is not."""
    return sum(any(c["name"] != "inspect_history" for c in m.tool_calls) for m in _this_turn(state))


# --- the graph -----------------------------------------------------------------------------------
def build_chat_graph(checkpointer=None):
    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("intake", intake, destinations=("agent", "dedup", END))
    graph.add_node("agent", agent)
    graph.add_node("dedup", dedup, destinations=("tools", "stall"))
    graph.add_node("tools", ToolNode(TOOLS, handle_tool_errors=tool_error))
    graph.add_node("stall", stall, destinations=("agent", END))
    graph.add_edge(START, "intake")
    graph.add_conditional_edges("agent", after_agent, ["dedup", END])
    graph.add_edge("tools", "stall")
    return graph.compile(checkpointer=checkpointer)


def chat_config(run: Run, unit: int) -> dict:
    """The thread, named like a labelling run's so that `line history` reads it too."""
    return {"configurable": {"thread_id": run.store.thread_id(unit)}}


def chat_context(settings: Settings, engine, chat=None) -> ChatContext:
    """The labelling context plus the chat's way of calling tools: native tool calls for
    providers that have them, the JSON action schema for the embedded model."""
    base = build_context(settings, engine, chat)
    if base.chat is None:
        raise LineError("the chat needs an LLM, but loop.max_llm_calls is 0.", "Set loop.max_llm_calls above 0.")
    tool_calling = settings.llm.provider != "local"
    loop = base.loop.model_copy(update={"patience": settings.chat.patience})
    return ChatContext(**vars(base) | {"loop": loop}, tool_calling=tool_calling, max_rounds=settings.chat.max_rounds,
                       min_experiments=0 if tool_calling else settings.chat.min_experiments)


# --- a conversation --------------------------------------------------------------------------------
Printer = Callable[[str, Any], None]


class ChatSession:
    """One chat thread: a run folder holding one unit's history and conversation."""

    def __init__(self, run: Run, context: ChatContext | None):
        """`context` may be None to read the thread only; otherwise the session is the
        thread's one writer until `close()` (agent.lock)."""
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
        run = Run.create(settings, [unit], thread_id or f"chat-{new_run_id(settings)}-u{unit}-{uuid.uuid4().hex[:4]}")
        session = cls(run, context)
        seed = history.model_copy(update={"unit": unit}) if history else NeuronState(unit=unit)
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


# --- the command line -----------------------------------------------------------------------------
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
