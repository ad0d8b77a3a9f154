"""Text about a labelled unit that the CLI, the report, the notebook and the evals share:
its table row, and why its LLM's answers were not used."""

from __future__ import annotations

from agent.loop.state import NeuronState
from tools.criterion import Criterion
from tools.verdict import trust_row


def labelled_without_llm(state: NeuronState) -> bool:
    """Whether a label was chosen though the LLM, asked, gave nothing scored (operators and
    the initial pool chose it): every answer failed, was unusable, or was rejected."""
    return state.label is not None and state.usage.llm_calls > 0 and not any(s.source == "llm" for s in state.steps)


def unused_answers_text(state: NeuronState) -> str:
    """Why none of the LLM's answers was scored, in words: '1 got no answer (HTTP errors,
    timeouts), 2 were unusable, 5 repeated earlier concepts'."""
    usage = state.usage
    rejected = [e.kind for e in state.events if e.source == "llm" and e.kind in ("duplicate", "undrawable")]
    parts = [(usage.unanswered, "got no answer (HTTP errors, timeouts)"), (usage.llm_failures - usage.unanswered, "were unusable"),
             (rejected.count("duplicate"), "repeated earlier concepts"), (rejected.count("undrawable"), "could not be drawn")]
    return ", ".join(f"{n} {what}" for n, what in parts if n) or "none was proposed"


def llm_failures_text(state: NeuronState) -> str:
    """The LLM's failed calls in words: '12 of 12 failed (3 HTTP errors, 2 timeouts)'."""
    usage = state.usage
    kinds = [f"{n} {name}" for n, name in ((usage.llm_http_errors, "HTTP errors"), (usage.llm_timeouts, "timeouts")) if n]
    return f"{usage.llm_failures} of {usage.llm_calls} failed" + (f" ({', '.join(kinds)})" if kinds else "")


def summary_row(state: NeuronState, criterion: Criterion) -> dict:
    """The table row of one labelled neuron (its best step by the run's `criterion` until it
    has a label)."""
    label = state.label
    best = state.best(criterion)
    chosen = label.concept if label else (best.concept if best else "")
    scores = label.scores if label else (best.scores if best else None)
    return {
        "unit": state.unit,
        "label": chosen,
        "auc": round(scores.auc, 3) if scores else None,
        "mad": round(scores.mad, 2) if scores else None,
        "runners_up": [c for c, _ in label.runners_up] if label else [],
        "source": state.label_source(),  # "sweep": the vocabulary's concept; else found beyond it
        "iterations": state.iteration,
        "images": state.images_rendered(),
        "images_used": state.images_used(),
        "llm_calls": state.usage.llm_calls,
        "llm_failures": state.usage.llm_failures,
        "without_llm": labelled_without_llm(state),
        "polysemantic": bool(label and label.polysemanticity and label.polysemanticity.polysemantic),
        **trust_row(label.confidence if label else None, label.polysemanticity if label else None),
        "stop": state.stop_reason or ("waiting for review" if not label else ""),
        "seconds": round(state.elapsed, 1),
    }
