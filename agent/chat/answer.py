"""Every turn ends with an answer in words, grounded in the history.

The answer names the best concepts so far with their scores and image counts, says what
the turn tested and what that showed (attribute experiments with their numbers), and what
stays uncertain; a turn stopped on its budget says what was found so far.

Who writes it: models driven by JSON actions (the embedded one) never do; the graph
writes the answer from the history through `prompts/chat_answer.txt`. A model with tool
calling writes its own, and the graph checks it in code (`problems`): every number it
states must be one the history holds (as stored, at the precision stated), every concept it
names (in quotes, or as the generator's colour and pattern words) one scored, ablated or
said in the conversation; an empty answer, or one that repeats an earlier answer or itself,
fails too. A failing answer is replaced by the history's answer, with a note saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

import prompts
from agent.llm import message_text as text_of
from agent.chat.probe import ATTRIBUTE_NAMES, HARDLY, PROBE_KEY, Outcome, outcomes
from tools.generators.base import SlotReader, slot_reader
from tools.history import History, Step
from tools.text import normalise

if TYPE_CHECKING:
    from agent.chat.graph import ChatContext, ChatState

LISTED = 3  # best concepts an answer lists
LISTED_NEW = 4  # new concepts of the turn it lists
REFERENCE_NUMBERS = (0.5, 1.0)  # AUC's chance level and ceiling: an answer may name them
OPEN_QUESTIONS = ("colour", "kind", "size", "background")  # attributes an answer says are untested
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
_QUOTED = re.compile(r"\"([^\"\n]{2,80})\"|“([^”\n]{2,80})”|(?<!\w)'([^'\n]{2,80})'(?!\w)")
_PROSE_WORDS = {"one", "plain", "noise", "gradient", "heart", "cross", "star", "form", "ring"}  # vocabulary
# words common in prose: not taken for a concept


def turn_messages(messages: list[BaseMessage], stall_note: str) -> list[BaseMessage]:
    """The messages since the researcher's last message."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage) and messages[i].name != stall_note:
            return messages[i + 1:]
    return list(messages)


# --- groundedness ----------------------------------------------------------------------------
@dataclass
class Grounding:
    """What an answer may state: the history's numbers and concepts, and the conversation's words."""

    numbers: list[float]
    concepts: set[str]
    said: str  # the researcher's messages, in plain lower-case words
    reader: SlotReader | None  # the generator's slots (None for open vocabularies)

    @classmethod
    def of(cls, state: ChatState, reader: SlotReader | None, extra: Iterable[float] = ()) -> "Grounding":
        numbers: list[float] = [float(state.unit), float(len(state.steps)), *REFERENCE_NUMBERS, *extra]
        concepts: set[str] = set()
        for step in state.steps:
            s = step.scores
            numbers += [s.auc, s.mad, s.mean, s.u, s.p, s.mad_se, s.top_share, s.images, step.iteration,
                        len(step.image_keys), step.images_rendered, step.activations.mean, step.activations.std,
                        step.activations.min, step.activations.max, *step.activations.per_image]
            concepts.add(step.concept)
        for finalist in state.finalists:
            numbers += [finalist.scores.auc, finalist.scores.mad, finalist.fresh, len(finalist.image_keys),
                        *finalist.activations]
            concepts.add(finalist.concept)
        for event in state.events:
            numbers += [event.iteration, *_numbers_in(f"{event.detail} {event.reason}")]
            concepts.update(c for c in (event.concept, event.duplicate_of) if c)
            concepts.update(re.findall(r"scene '([^']+)'", event.detail))
        said = []
        for message in state.messages:
            if isinstance(message, (ToolMessage, HumanMessage)):  # measured results, notes, the researcher's words
                numbers += _numbers_in(text_of(message))
            if isinstance(message, HumanMessage) and message.name is None:
                said.append(text_of(message))
        return cls(numbers, {normalise(c) for c in concepts}, _plain(" ".join(said)), reader)

    def holds_number(self, token: str) -> bool:
        percent = token.endswith("%")
        digits = token.rstrip("%")
        value = float(digits)
        decimals = len(digits.split(".")[1]) if "." in digits and "e" not in digits.lower() else 0
        if "e" in digits.lower():  # scientific notation: two significant digits are enough
            return any(v != 0 and abs(v - value) <= 0.05 * abs(value) for v in self.numbers)
        candidates = [(value, decimals)] + ([(value / 100, decimals + 2)] if percent else [])
        for x, k in candidates:
            tolerance = 0.5 * 10 ** -k + 1e-9
            for v in self.numbers:
                if k == 0 and abs(v - x) > 1e-9 and abs(v) < 2:
                    continue  # "1" is no rounding of AUC 0.73
                if abs(v - x) <= tolerance:
                    return True
        return False

    def holds_concept(self, phrase: str) -> bool:
        return normalise(phrase) in self.concepts or f" {_plain(phrase)} " in f" {self.said} "

    def holds_words(self, parts: dict[str, list[str]]) -> bool:
        """Whether some known concept (or the researcher) holds every attribute value of `parts`."""
        if self.reader is None:
            return False
        wanted = {(_as_colour(g), v) for g, values in parts.items() for v in values}
        said = [parts for parts, _ in _attribute_runs(self.said, self.reader)]  # every attribute the researcher named
        for known_parts in [*(self.reader.slots(c) for c in self.concepts), _union(said)]:
            known = {(_as_colour(g), v) for g, values in known_parts.items() for v in values}
            if wanted <= known:
                return True
        return False


def problems(text: str, grounding: Grounding, earlier: list[str]) -> list[str]:
    """Why an answer is not grounded in the history, in words (empty: it is)."""
    if not text.strip():
        return ["it is empty"]
    found = []
    if _plain(text) in {_plain(e) for e in earlier}:
        found.append("it repeats an earlier answer")
    sentences = [_plain(s) for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]
    if len(sentences) != len(set(sentences)):
        found.append("it repeats itself")
    numbers = [t for t in _NUMBER.findall(text) if not grounding.holds_number(t)]
    if numbers:
        found.append(f"it states {', '.join(dict.fromkeys(numbers))}, which the history does not hold")
    quoted = [q for q in _quoted(text) if not grounding.holds_concept(q)]
    named = [" ".join(v for vs in parts.values() for v in vs) for parts in _named_concepts(text, grounding.reader)
             if not grounding.holds_words(parts)]
    unknown = list(dict.fromkeys(quoted + named))
    if unknown:
        found.append(f"it names {', '.join(repr(c) for c in unknown)}, which nothing in the history measured")
    return found


def _numbers_in(text: str) -> list[float]:
    values = []
    for token in _NUMBER.findall(text):
        value = float(token.rstrip("%"))
        values += [value, value / 100] if token.endswith("%") else [value]
    return values


def _quoted(text: str) -> list[str]:
    """Quoted phrases short enough to be concepts."""
    phrases = ["".join(groups) for groups in _QUOTED.findall(text)]
    return [p for p in phrases if 0 < len(p.split()) <= 6 and not _NUMBER.fullmatch(p.strip())]


def _named_concepts(text: str, reader: SlotReader | None) -> list[dict[str, list[str]]]:
    """Runs of the generator's attribute words in `text` that name a colour or a pattern
    (e.g. "green stripes"), as slots holding only the values the words name (not those the
    generator infers, such as the count one of a singular shape); words common in prose are
    left out."""
    named = []
    for parts, forms in _attribute_runs(_QUOTED.sub(" | ", text), reader):  # quoted phrases are checked as such
        parts = {slot: kept for slot, values in parts.items()
                 if (kept := [v for v in values if {v, f"{v}s", f"{v}es"} & forms])}
        if "colour" in parts or "kind" in parts:
            named.append(parts)
    return named


def _attribute_runs(text: str, reader: SlotReader | None) -> list[tuple[dict[str, list[str]], set[str]]]:
    """(slots, words) of each run of the generator's attribute values (or their plurals) in
    `text`, runs split by other words and punctuation; none without a slot reader."""
    if reader is None:
        return []
    known = {form for values in reader.slot_values().values() for w in values if w not in _PROSE_WORDS
             for form in (w, f"{w}s", f"{w}es")}
    runs = []
    for segment in re.split(r"[.,;:!?()\[\]]", text):
        words, current, i = _plain(segment).split(), [], 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            size = 2 if pair in known else 1 if words[i] in known else 0
            if size:
                current.append(" ".join(words[i:i + size]))
            elif current:
                runs.append(current)
                current = []
            i += size or 1
        if current:
            runs.append(current)
    return [(reader.slots(" ".join(run)), set(run)) for run in runs]


def _union(parts: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    """Every slot value of any of `parts`."""
    union: dict[str, list[str]] = {}
    for one in parts:
        for slot, values in one.items():
            union.setdefault(slot, []).extend(v for v in values if v not in union[slot])
    return union


def _plain(text: str) -> str:
    """Lower-case words in their order, without punctuation."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _as_colour(group: str) -> str:
    return "colour" if group == "background" else group


# --- the history's answer --------------------------------------------------------------------
def history_answer(ctx: ChatContext, state: ChatState, turn: list[BaseMessage], stopped: str = "") -> str:
    """The answer written from the history through prompts/chat_answer.txt."""
    ranked = state.ranked(ctx.criterion)
    start = state.turn_steps
    new = state.steps[start:]
    found = outcomes(turn, state)
    text = prompts.render("chat_answer", stopped=f"{stopped} " if stopped else "",
                          best=_best_line(ranked), tested=_tested_line(new, ranked, turn),
                          attributes="\n".join(_outcome_line(o) for o in found),
                          uncertain=_uncertain_line(ctx, state, ranked))
    return "\n".join(line for line in text.splitlines() if line.strip())


def _scores(step: Step | dict) -> str:
    if isinstance(step, dict):
        return f"MAD {step['mad']:.2f}, AUC {step['auc']:.3f}, {step['images']} images"
    return f"MAD {step.scores.mad:.2f}, AUC {step.scores.auc:.3f}, {len(step.image_keys)} images"


def _best_line(ranked: list[Step]) -> str:
    if not ranked:
        return "Nothing has been scored yet."
    listed = "; ".join(f'"{s.concept}" ({_scores(s)})' for s in ranked[:LISTED])
    return f"Best so far: {listed}."


def _tested_line(new: list[Step], ranked: list[Step], turn: list[BaseMessage]) -> str:
    ablations = [m.artifact for m in turn if isinstance(m, ToolMessage) and m.name == "ablate_concept"
                 and isinstance(m.artifact, dict) and not _probe_call(turn, m.tool_call_id)]
    parts = []
    if new:
        shown = ranked[:LISTED]
        listed = "; ".join(f'"{s.concept}"' + ("" if s in shown else f" ({_scores(s)})") for s in
                           sorted(new, key=lambda s: ranked.index(s) if s in ranked else 0)[:LISTED_NEW])
        more = f", and {len(new) - LISTED_NEW} more" if len(new) > LISTED_NEW else ""
        parts.append(f"This turn scored {len(new)} new concept{'s' * (len(new) != 1)}: {listed}{more}.")
        if ranked and ranked[0] in new:
            parts.append(f'"{ranked[0].concept}" is the new best.')
    for a in ablations:
        parts.append(f"Removing {a['concept']!r} from {a['scene']!r} changed the activation by "
                     f"{-a['drop_mean']:.4f} (AUC {a['auc_with']:.3f} -> {a['auc_without']:.3f}): "
                     f"{'it drives the unit' if a['removed'] else 'it is not what drives the unit'}.")
    if not parts and not any(m.additional_kwargs.get(PROBE_KEY) for m in turn if isinstance(m, AIMessage)):
        parts.append("This turn measured nothing new.")
    return " ".join(parts)


def _probe_call(turn: list[BaseMessage], call_id: str) -> bool:
    return any(call_id in plan["roles"] for m in turn if isinstance(m, AIMessage)
               for plan in m.additional_kwargs.get(PROBE_KEY, []))


def _outcome_line(o: Outcome) -> str:
    name = ATTRIBUTE_NAMES.get(o.attribute, o.attribute)
    if o.base is None:
        return f"The {name} test on {o.concept!r} gave no score."
    said = [f"The {name}, tested on \"{o.concept}\" ({_scores(o.base)}) at the same seeds:"]
    if o.variants:
        said.append("; ".join(f"{value}: \"{v['concept']}\" MAD {v['mad']:.2f}, AUC {v['auc']:.3f}"
                              for value, v in o.variants) + ".")
    if o.ablation:
        a = o.ablation
        said.append(f"With {a['concept']!r} removed: AUC {a['auc_with']:.3f} -> {a['auc_without']:.3f}, "
                    f"activation drop {a['drop_mean']:.4f}.")
    better = [v for _, v in o.variants if o.base["mad"] > 0 and v["mad"] > o.base["mad"] / HARDLY]
    if better:
        top = max(better, key=lambda v: v["mad"])
        said.append(f"\"{top['concept']}\" fires more strongly than \"{o.concept}\" (MAD {top['mad']:.2f}).")
    verdict = o.verdict()
    said.append({"hardly matters": f"So the {name} hardly matters.",
                 "matters": f"So the {name} matters.",
                 "matters somewhat": f"So the {name} matters somewhat.",
                 "untested": f"{o.concept!r} does not drive the unit enough for this test to say much."}[verdict])
    return " ".join(said)


def _uncertain_line(ctx: ChatContext, state: ChatState, ranked: list[Step]) -> str:
    if not ranked:
        return ""
    doubts = []
    best = ranked[0]
    images = len(best.image_keys)
    if images < 10:
        doubts.append(f"each score rests on {images} images")
    if len(ranked) > 1:
        second = ranked[1]
        if abs(best.scores.mad - second.scores.mad) <= 2 * max(best.scores.mad_se, second.scores.mad_se):
            doubts.append(f'"{best.concept}" and "{second.concept}" are within their error '
                          f"(MAD {best.scores.mad:.2f} ± {best.scores.mad_se:.2f} vs {second.scores.mad:.2f})")
    tested = {plan["attribute"] for m in state.messages if isinstance(m, AIMessage)
              for plan in m.additional_kwargs.get(PROBE_KEY, []) if plan["concept"] == best.concept}
    if slot_reader(ctx.engine.generator) is not None:
        untested = [ATTRIBUTE_NAMES[a] for a in OPEN_QUESTIONS if a not in tested]
        if untested:
            doubts.append(f'not tested yet on "{best.concept}": {", ".join(untested)}')
    return f"Uncertain: {'; '.join(doubts)}." if doubts else ""


# --- the answer node's work --------------------------------------------------------------------
def final_answer(ctx: ChatContext, state: ChatState, stall_note: str) -> list[AIMessage]:
    """The messages that end a turn: the LLM's answer kept (checked, completed) or replaced
    by the history's answer, or the history's answer after a failure or the budget's stop."""
    turn = turn_messages(state.messages, stall_note)
    last = state.messages[-1]
    answered = isinstance(last, AIMessage) and not last.tool_calls
    if not answered:
        stopped = f"(Stopped after {ctx.max_rounds} tool rounds of new work; ask again to continue.) What was found so far:"
        return [AIMessage(history_answer(ctx, state, turn, stopped), name="line")]
    if last.name == "line":  # a failure note of the graph's: the answer follows it
        return [AIMessage(history_answer(ctx, state, turn), name="line")]
    text = text_of(last)
    if not ctx.tool_calling:  # JSON actions: the graph writes the answer
        return [AIMessage(history_answer(ctx, state, turn), id=last.id, name="line",
                          additional_kwargs={"llm_reply": text})]
    earlier = [t for m in state.messages[:-1] if isinstance(m, AIMessage) and not m.tool_calls
               for t in (text_of(m), m.additional_kwargs.get("llm_text"), m.additional_kwargs.get("replaced")) if t]
    grounding = Grounding.of(state, slot_reader(ctx.engine.generator))
    found = problems(text, grounding, earlier)
    if found:
        note = f"(The agent's own answer was set aside: {'; '.join(found)}.)"
        return [AIMessage(f"{history_answer(ctx, state, turn)}\n{note}", id=last.id, name="line",
                          additional_kwargs={"replaced": text, "problems": found})]
    extra = _missing_facts(ctx, state, turn, text, grounding)
    if not extra and isinstance(last.content, str):
        return []
    return [AIMessage("\n".join([text, *extra]), id=last.id, name=last.name, tool_calls=[],
                      additional_kwargs={"llm_text": text})]


def _missing_facts(ctx: ChatContext, state: ChatState, turn: list[BaseMessage], text: str,
                   grounding: Grounding) -> list[str]:
    """What a grounded answer of the LLM's lacks: a scored concept with its score, and the
    numbers of the attribute experiments run this turn."""
    extra = []
    lowered = f" {_plain(text)} "
    names_one = any(f" {_plain(s.concept)} " in lowered for s in state.steps)
    if state.steps and not (names_one and _NUMBER.search(text)):
        extra.append(_best_line(state.ranked(ctx.criterion)))
    for o in outcomes(turn, state):
        figures = [f"{v['mad']:.2f}" for _, v in o.variants]
        if not any(f in text for f in figures):
            extra.append(_outcome_line(o))
    return extra
