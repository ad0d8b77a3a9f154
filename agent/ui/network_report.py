"""What the report page of a network run (agent.runs.network) shows, as plain data.

One row per layer (units labelled, the share explained among those judged, mean AUC, the
most common words of its labels, how many labels came from the vocabulary, a link to the
layer's report) and one row per unit for the page's search box, which the page carries as
JSON in a `<script type="application/json">` element (`script_json`). Everything is read
from the run's stored states: no model is loaded here. `agent.ui.report` renders the page.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from markupsafe import Markup

if TYPE_CHECKING:
    from agent.loop.state import NeuronState

TOP_WORDS = 5
# Words that say nothing about what a unit responds to ("red on black background" -> red, black).
STOP_WORDS = frozenset("a an and or of on in at with the to by for from over under near its their is are background "
                       "backgrounds image images photo picture".split())
WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")  # letters and digits, hyphenated compounds kept whole
# In a <script> element the HTML parser ends the script at "</script" and "<!--" opens an escape:
# JSON's own \u escapes keep such text out of the markup while JSON.parse reads it back unchanged.
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def network_context(layers: list[str], states: dict[str, dict[int, NeuronState]], sizes: dict[str, int],
                    reports: dict[str, str], unit_page: Callable[[int], str]) -> dict:
    """The page's layers and units. `sizes`: layer -> units in its run; `reports`: layer ->
    the relative link of its report folder (ending in "/"); `unit_page`: a unit's page name."""
    rows = [layer_row(layer, states[layer], sizes[layer], reports[layer]) for layer in layers]
    units = [unit_row(layer, state, reports[layer] + unit_page(unit))
             for layer in layers for unit, state in sorted(states[layer].items())]
    return {"layers": rows, "units": units, "labelled": sum(r["labelled"] for r in rows),
            "total": sum(r["size"] for r in rows)}


def layer_row(layer: str, states: dict[int, NeuronState], size: int, report: str) -> dict:
    """One layer's summary: its labelled units' verdicts, mean AUC, words and sources."""
    labels = [s.label for s in states.values() if s.label is not None]
    judged = [label.explained for label in labels if label.explained is not None]
    aucs = [label.scores.auc for label in labels if finite(label.scores.auc) is not None]
    return {"layer": layer, "size": size, "started": len(states), "labelled": len(labels),
            "explained": sum(judged), "judged": len(judged), "mean_auc": sum(aucs) / len(aucs) if aucs else None,
            "words": common_words([label.concept for label in labels]),
            "vocabulary": sum(1 for s in states.values() if s.label is not None and s.label_source() == "sweep"),
            "link": report + "index.html"}


def unit_row(layer: str, state: NeuronState, link: str) -> dict:
    """One unit as the search table shows it (no label yet: an empty one)."""
    label = state.label
    return {"layer": layer, "unit": state.unit, "label": label.concept if label else "",
            "auc": finite(label.scores.auc) if label else None, "explained": label.explained if label else None,
            "source": state.label_source(), "link": link}


def common_words(labels: list[str], top: int = TOP_WORDS) -> list[tuple[str, int]]:
    """The `top` most frequent words of `labels` (lowercased, stop words left out) with their
    counts; ties in order of first appearance."""
    words = Counter(w for label in labels for w in WORD.findall(label.lower()) if w not in STOP_WORDS)
    return words.most_common(top)


def finite(value: float | None) -> float | None:
    """The value, or None where it could not be computed (NaN): JSON has no NaN."""
    return value if value is not None and math.isfinite(value) else None


def script_json(value: Any) -> Markup:
    """`value` as JSON that is safe inside a `<script>` element of an HTML page: labels are
    text an LLM wrote, and one saying `</script>` must not end the element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return Markup(re.sub("[<>&\u2028\u2029]", lambda m: SCRIPT_ESCAPES[m.group()], text))
