"""The chat graph: a researcher and an LLM agent investigate one neuron together.

    START -> intake --(message)--> agent --(tool calls)--> dedup -> tools -> stall -> agent ...
              |  |                   \\--(its answer)--> answer -> END  ^       |  \\--> answer (budget spent)
              |  \\--(attribute question: the probe's calls)------------/        \\--> END (a slash command's turn)
              \\--(slash command)-------------------------------------/

`intake` turns slash commands (`/score red stripes`) into tool calls without the LLM, and a
question about an attribute ("does the colour matter?") into the graph's own experiments on
the best concept (agent.chat.probe) before the LLM acts;
`agent` asks the LLM for tool calls (native tool calling, or a JSON action schema for
models without it); `dedup` checks each proposed concept on the one path (agent.loop.concept_path): the
LLM's repeat is answered with a new concept, the next operator proposal, scored in its
place; `tools` runs the four typed tools of `tools.agent_tools` through ToolNode's public
interface; `stall` applies the labelling loop's stall test and, on a stall, scores the next
operator proposal and says so; `answer` ends every turn of a question with an answer in words,
grounded in the history (agent.chat.answer). The state is the neuron's generation history (NeuronState)
plus the conversation, checkpointed in the run's store (agent.runs.store): a thread lives in
`runs/chat-.../` like a run, and resumes on another day.
"""

import random
import uuid
from dataclasses import dataclass
from typing import Annotated

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import ToolException
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from pydantic import Field, ValidationError

import prompts
from agent.loop import concept_path as path
from agent.chat.actions import ChatAction, ChatExperiment, Reply, plain_transcript, slash_call, tool_catalogue
from agent.chat.answer import final_answer, text_of
from agent.chat.probe import PROBE_KEY, asked_attributes, plan_probes, probe_message
from agent.llm import ask_structured, check_reachable, describe_failure, transport_failure
from agent.loop.context import LineContext
from agent.loop.nodes import hold_unit
from agent.loop.proposal import vocabulary_hint
from agent.loop.stall import stall_trigger
from agent.llm import Usage
from agent.loop.state import NeuronState, Proposal
from tools.agent_tools import PROBE_CALL_PREFIX, TOOLS, USER_CALL_PREFIX, ScoreConceptArgs, ScoreResult
from tools.errors import LineError
from tools.generators.base import slot_reader
from tools.history import Event

STALL_NOTE = "stall-detector"  # name of the messages the stall node adds
TRANSCRIPT_FOR_ACTIONS = 16  # recent messages a model without tool calling sees
ROUND_LIMIT = 2  # rounds that only read the history may add this many times the budget


class ChatState(NeuronState):
    """The neuron's history plus the conversation about it."""

    messages: Annotated[list[AnyMessage], add_messages] = Field(default_factory=list)
    turn_start: int = Field(0, description="work_done() when the researcher's last message came")
    turn_steps: int = Field(0, description="len(steps) when the researcher's last message came")


@dataclass
class ChatContext(LineContext):
    """LineContext plus how the chat LLM is driven."""

    tool_calling: bool = True  # False: choose tools through the JSON action schema
    max_rounds: int = 8  # LLM tool rounds of new work per message of the researcher
    min_experiments: int = 0  # JSON actions: new scores or ablations before the agent may answer


# --- intake: slash commands or the LLM ------------------------------------------------------
def intake(state: ChatState, runtime: Runtime[ChatContext]) -> Command:
    """A slash command becomes a tool call of the person's; a question about an attribute
    first gets the graph's experiments on it (agent.chat.probe); anything else goes to the LLM.
    The thread's unit is checked first (a served thread's input may name one)."""
    ctx = runtime.context
    held = hold_unit(state, ctx.engine)
    last = state.messages[-1]
    text = text_of(last)
    if not (isinstance(last, HumanMessage) and text.startswith("/")):
        update: dict = held | {"turn_start": work_done(state), "turn_steps": len(state.steps)}
        probes = plan_probes(ctx, state, asked_attributes(text, slot_reader(ctx.engine.generator)))
        if probes:
            return Command(goto="dedup", update=update | {"messages": [probe_message(probes)]})
        return Command(goto="agent", update=update)
    try:
        call = slash_call(text, ctx.engine.check_unit)
    except LineError as error:
        return Command(goto=END, update=held | {"messages": [AIMessage(f"Not run: {error}", name="line")]})
    if call is None:
        return Command(goto=END, update=held | {"messages": [AIMessage(prompts.text("chat_help"), name="line")]})
    return Command(goto="dedup", update=held | {"messages": [AIMessage("", tool_calls=[call], name="line")]})


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
    except LineError:
        raise
    except Exception as error:  # a failed request, or a reply that could not be read (an empty stream)
        check_reachable(error, "Check the server or llm.base_url; slash commands work without it.")
        kind = transport_failure(error)
        detail = describe_failure(error) + (" (after the client's retries)" if kind else "")
        usage = Usage(llm_calls=1, llm_failures=1, llm_http_errors=int(kind == "http"), llm_timeouts=int(kind == "timeout"))
        return {"messages": [AIMessage(f"(The LLM failed: {detail})", name="line")], "usage": usage,
                "events": [Event(iteration=state.iteration, kind="llm_failure", detail=detail)]}
    for call in reply.tool_calls:  # what the checkpoint cannot store (an int beyond 64 bits) reaches the tool as text
        call["args"] = _storable(call["args"])
    usage = reply.usage_metadata or {}
    return {"messages": [reply], "usage": Usage(llm_calls=1, input_tokens=usage.get("input_tokens", 0),
                                                output_tokens=usage.get("output_tokens", 0))}


def _storable(value):
    """`value` with every integer the checkpointer cannot store (beyond 64 bits) as its text:
    the tool's argument check then answers the LLM, and the turn goes on."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -2**63 <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


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
        return update | {"messages": [AIMessage(f"(The LLM gave no usable action: {detail})", name="line")],
                         "events": [Event(iteration=state.iteration, kind="llm_failure", source="llm", reason=detail)]}
    action = reply.value.action
    if isinstance(action, Reply):
        return update | {"messages": [AIMessage(action.reply)]}
    call = {"name": action.tool, "args": action.arguments.model_dump(exclude_none=True),
            "id": f"call-{uuid.uuid4().hex[:12]}", "type": "tool_call"}
    return update | {"messages": [AIMessage("", tool_calls=[call])]}



def after_agent(state: ChatState) -> str:
    last = state.messages[-1]
    return "dedup" if isinstance(last, AIMessage) and last.tool_calls else "answer"


# --- dedup: a repeat is acted on, not replayed -----------------------------------------------
def dedup(state: ChatState, runtime: Runtime[ChatContext]) -> Command:
    """Number each proposal (a score of the neuron's unit) and check it on the one path
    (agent.loop.concept_path). The LLM's repeat is acted on: the next operator proposal is scored in its
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
        if source_of_call(call) == "operator" and state.step(concept) is None:  # the graph's own experiment
            iteration += 1
            accepted.append(call)
            numbered[call["id"]] = iteration
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
            result = ScoreResult.of_step(step, state.unit)
            text = prompts.render("chat_repeat", concept=offered.concept, earlier=rejected.duplicate_of,
                                  reason=rejected.reason, substitute=step.concept, how=substitute.reasoning,
                                  score=result.text())
            messages.append(ToolMessage(text, tool_call_id=call["id"], name=call["name"],
                                        artifact=result.model_dump() | {"repeated": offered.concept}))
        elif rejected.kind == "undrawable":
            messages.append(ToolMessage(f"Not scored: {concept!r} cannot be drawn ({rejected.reason}). "
                                        "inspect_history lists the words the generator draws.",
                                        tool_call_id=call["id"], name=call["name"], status="error"))
        else:
            text, result = duplicate_answer(working, concept, rejected.duplicate_of, rejected.reason)
            messages.append(ToolMessage(text, tool_call_id=call["id"], name=call["name"],
                                        artifact=result and result.model_dump() | {"served": concept}))
    update = {"iteration": iteration, "call_iterations": numbered, "messages": messages, "events": events,
              "steps": steps}
    return Command(update=update, goto=Send("tools", accepted) if accepted else "stall")


def source_of_call(call: dict) -> str:
    """Who made a tool call: the person (a slash command), the graph (a probe) or the LLM."""
    call_id = str(call["id"])
    return "user" if call_id.startswith(USER_CALL_PREFIX) else "operator" if call_id.startswith(PROBE_CALL_PREFIX) \
        else "llm"


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


def duplicate_answer(state: NeuronState, concept: str, earlier: str, reason: str) -> tuple[str, ScoreResult | None]:
    """The answer to a repeated score call, from the history: its text, and the earlier score."""
    step = state.step(earlier)
    if step is None:  # proposed twice in the same round
        return f"Not scored again: {concept!r} repeats {earlier!r} ({reason}), scored by another call just now.", None
    note = f"Served from the history: {concept!r} repeats {earlier!r} ({reason}); no new images were made."
    result = ScoreResult.of_step(step, state.unit, note=note)
    return result.text(), result


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
        return Command(update=update, goto="answer")  # which says what was found so far
    return Command(update=update, goto="agent")


# --- answer: every turn of a question ends with an answer in words ---------------------------
def answer(state: ChatState, runtime: Runtime[ChatContext]) -> dict:
    """The LLM's answer, checked against the history (kept, completed or replaced), or the
    history's answer where the LLM gave none (agent.chat.answer)."""
    return {"messages": final_answer(runtime.context, state, STALL_NOTE)}


def _this_turn(state: ChatState) -> list[AIMessage]:
    """The tool rounds since the researcher's last message (the LLM's, or a slash command's),
    not the graph's own experiments."""
    rounds = []
    for message in reversed(state.messages):
        if isinstance(message, HumanMessage) and message.name != STALL_NOTE:
            break
        if isinstance(message, AIMessage) and message.tool_calls and not message.additional_kwargs.get(PROBE_KEY):
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
def build_chat_graph(checkpointer=None, wrap=None):
    """The chat graph; `wrap` (a served graph's) wraps each node function."""
    wrap = wrap or (lambda node: node)
    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("intake", wrap(intake), destinations=("agent", "dedup", END))
    graph.add_node("agent", wrap(agent))
    graph.add_node("dedup", wrap(dedup), destinations=("tools", "stall"))
    graph.add_node("tools", ToolNode(TOOLS, handle_tool_errors=tool_error))
    graph.add_node("stall", wrap(stall), destinations=("agent", "answer", END))
    graph.add_node("answer", wrap(answer))
    graph.add_edge(START, "intake")
    graph.add_conditional_edges("agent", after_agent, ["dedup", "answer"])
    graph.add_edge("tools", "stall")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer)


