"""Questions about attributes, answered by experiments.

"Does the colour matter?", "Is it the pattern?", "Does size matter?", "Is it the
background?": the question's attribute is recognised by plain matching on words for the
generator's attribute slots (`tools.generators.base.SlotReader`: colour, kind, size, ...),
so a weak LLM that cannot pick the experiment still gets it run. The graph then tests the
attribute on the best concept so far, on the same seeds:

- swap it: the best concept with the attribute's value replaced by others of its kind
  ("small vertical polka dots" -> "small vertical orange polka dots"), or added where the
  concept leaves it to chance;
- remove it: `ablate_concept` of the value from the best concept (the generator's own
  counterfactual: the colour neutralised, the pattern turned into blobs, the size flipped).

The plan travels as ordinary tool calls (ids with PROBE_CALL_PREFIX) in one AIMessage whose
`additional_kwargs["line_probe"]` names the attribute, the concept and each call's role; the
answer (agent.chat.answer) reads the results back from the tool messages.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, ToolMessage

from agent.loop import concept_path as path
from tools.agent_tools import PROBE_CALL_PREFIX
from tools.generators.base import SlotReader, slot_reader

if TYPE_CHECKING:
    from agent.chat.graph import ChatContext, ChatState

PROBE_KEY = "line_probe"  # where an AIMessage carries its probe's plan
VARIANTS = 2  # other values of the attribute scored per probe
MAX_ATTRIBUTES = 2  # attributes tested for one question ("colour or pattern?")
HARDLY = 0.75  # every variant keeps this share of the concept's MAD: the attribute hardly matters
MATTERS = 0.5  # a variant (or the ablation) falls below this share: the attribute matters

# The question's words for each attribute slot of the generator (`SlotReader.slot_values`).
ATTRIBUTE_WORDS = {
    "colour": ("colour", "color", "colours", "colors", "coloured", "colored", "hue", "hues", "tint"),
    "kind": ("pattern", "patterns", "shape", "shapes", "texture", "textures", "form", "motif"),
    "size": ("size", "sizes", "scale", "bigger", "smaller"),
    "background": ("background", "backgrounds", "backdrop", "surround"),
    "orientation": ("orientation", "orientations", "oriented", "direction", "rotation", "tilt", "angle"),
    "thickness": ("thickness", "thick", "thin", "width"),
    "count": ("count", "counts", "how many"),
}
_ASKING = re.compile(r"\?|\b(matters?|test|check|depends?|cares?|about|difference|effect|role)\b")  # a question
ATTRIBUTE_NAMES = {"colour": "colour", "kind": "pattern", "size": "size", "background": "background",
                   "orientation": "orientation", "thickness": "thickness", "count": "count"}  # slots in words
_NOT_VARIANTS = {"kind": {"plain"}}  # values a probe does not swap in: a plain fill has no pattern


def asked_attributes(text: str, reader: SlotReader | None) -> list[str]:
    """The attribute slots a question asks about, in the order it names them (at most
    MAX_ATTRIBUTES); none for a generator without slots (`reader` None), or for a message
    that neither asks (a question mark) nor talks of testing or mattering."""
    lowered = text.lower()
    if reader is None or not _ASKING.search(lowered):
        return []
    slots = reader.slot_values()
    found: list[tuple[int, str]] = []
    for group, words in ATTRIBUTE_WORDS.items():
        if slots.get(group):
            hits = [m.start() for w in words for m in re.finditer(rf"\b{re.escape(w)}\b", lowered)]
            if hits:
                found.append((min(hits), group))
    return [group for _, group in sorted(found)][:MAX_ATTRIBUTES]


@dataclass
class Probe:
    """One attribute tested on one concept: the tool calls and what each is for."""

    attribute: str
    concept: str
    calls: list[dict] = field(default_factory=list)
    roles: dict[str, dict] = field(default_factory=dict)  # call id -> {"role": base|variant|ablation, "value": ...}

    def add(self, name: str, args: dict, role: str, value: str = "") -> None:
        call_id = f"{PROBE_CALL_PREFIX}{uuid.uuid4().hex[:12]}"
        self.calls.append({"name": name, "args": args, "id": call_id, "type": "tool_call"})
        self.roles[call_id] = {"role": role, "value": value}

    def plan(self) -> dict:
        return {"attribute": self.attribute, "concept": self.concept, "roles": self.roles}


def plan_probes(ctx: ChatContext, state: ChatState, attributes: list[str]) -> list[Probe]:
    """The experiments for `attributes` on the best concept so far (or, before anything is
    scored, on the scene of the images the unit fires on most)."""
    reader = slot_reader(ctx.engine.generator)
    best = state.best(ctx.criterion)
    base = path.canonical(ctx, best.concept) if best else _first_concept(ctx, state)
    if base is None or reader is None:
        return []
    probes = []
    for attribute in attributes:
        probe = Probe(attribute, base)
        if best is None and not probes:
            probe.add("score_concept", {"concept": base}, "base")
        parts = reader.slots(base)
        present = parts.get(attribute, [])
        for value in _other_values(ctx, state, attribute, parts, reader):
            changed = parts | {attribute: [value] + present[1:]}
            probe.add("score_concept", {"concept": reader.compose(changed)}, "variant", value)
        if present and attribute != "background":
            probe.add("ablate_concept", {"concept": present[0], "scene": base}, "ablation", present[0])
        elif present:
            probe.add("ablate_concept", {"concept": f"{present[0]} background", "scene": base}, "ablation",
                      present[0])
        if probe.calls:
            probes.append(probe)
    return probes


def probe_message(probes: list[Probe]) -> AIMessage:
    """The probes' tool calls, as the graph's own round."""
    words = " and ".join(f"the {ATTRIBUTE_NAMES[p.attribute]} of {p.concept!r}" for p in probes)
    return AIMessage(f"Testing {words} on the same seeds.", name="line",
                     tool_calls=[c for p in probes for c in p.calls],
                     additional_kwargs={PROBE_KEY: [p.plan() for p in probes]})


def _first_concept(ctx: ChatContext, state: ChatState) -> str | None:
    import random

    proposal = next(path.operator_proposals(ctx, state, random.Random(state.iteration)), None)
    return proposal.concept if proposal else None


def _other_values(ctx: ChatContext, state: ChatState, attribute: str, parts: dict, reader: SlotReader) -> list[str]:
    """VARIANTS values of `attribute` other than the concept's, each giving a drawable
    concept that keeps every other value of the concept (no orientation for circles, no
    count for stripes); untried ones first, then contrasting ones (spread over the slot's
    values)."""
    values = [v for v in reader.slot_values().get(attribute, []) if v not in _NOT_VARIANTS.get(attribute, ())]
    present = set(parts.get(attribute, [])) | set(parts.get("colour", []) if attribute == "background" else [])
    tried = {path.canonical(ctx, c) for c in state.tried()}
    candidates = []
    step = max(1, len(values) // (VARIANTS + 1))
    order = values[::step] + [v for v in values if v not in values[::step]]  # contrasting values first
    for value in order:
        if value in present:
            continue
        changed = {slot: values for slot, values in (parts | {attribute: [value] + parts.get(attribute, [])[1:]}).items()
                   if values}
        concept = reader.compose(changed)
        if reader.slots(concept) == changed and path.fully_drawn(ctx, concept):  # every value applies
            candidates.append((path.canonical(ctx, concept) in tried, value))
    return [value for _, value in sorted(candidates, key=lambda c: c[0])][:VARIANTS]


# --- reading the results back ---------------------------------------------------------------
@dataclass
class Outcome:
    """What one probe measured: the concept's scores and each variant's, and the ablation."""

    attribute: str
    concept: str
    base: dict | None  # ScoreResult fields of the concept
    variants: list[tuple[str, dict]]  # (value, ScoreResult fields)
    ablation: dict | None  # AblationResult fields

    def verdict(self) -> str:
        """'hardly matters', 'matters', 'matters somewhat' or 'untested' (the concept does not drive the unit)."""
        if not self.base or self.base["mad"] <= 0 or self.base["auc"] < 0.6:
            return "untested"
        shares = [v["mad"] / self.base["mad"] for _, v in self.variants]
        removed = bool(self.ablation and self.ablation.get("removed"))
        if removed or (shares and min(shares) < MATTERS):
            return "matters"
        if shares and min(shares) >= HARDLY and not removed:
            return "hardly matters"
        return "matters somewhat" if shares else "untested"


def outcomes(messages: list, history) -> list[Outcome]:
    """The probes run among `messages` (one turn's), with their results."""
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    found = []
    for message in messages:
        for plan in (message.additional_kwargs.get(PROBE_KEY, []) if isinstance(message, AIMessage) else []):
            base, variants, ablation = None, [], None
            step = history.step(plan["concept"])
            if step is not None:
                base = _step_fields(step)
            for call_id, role in plan["roles"].items():
                result = results.get(call_id)
                data = result.artifact if result is not None and isinstance(result.artifact, dict) else None
                if data is None or result.status == "error":
                    continue
                if role["role"] == "base":
                    base = data
                elif role["role"] == "variant" and "auc" in data:
                    variants.append((role["value"], data))
                elif role["role"] == "ablation":
                    ablation = data
            found.append(Outcome(plan["attribute"], plan["concept"], base, variants, ablation))
    return found


def _step_fields(step) -> dict:
    s = step.scores
    return {"concept": step.concept, "auc": s.auc, "mad": s.mad, "mean": s.mean, "p": s.p,
            "images": len(step.image_keys)}
