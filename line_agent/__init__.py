"""line-agent from Python: label single neurons of vision models, in a notebook or a script.

    import line_agent
    s = line_agent.score(model, "layer3.1", "red polka dots", unit=17, input_size=224,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    s.auc, s.mad                      # floats; in Jupyter `s` shows its images
    run = line_agent.label(model, model.layer3[1], units=[17, 42], ...)
    run.labels[0].concept, run.to_pandas(), run.report()
    net = line_agent.label(model, layers="layer3.*", units="all", ...)   # several layers, one run
    net.labels["layer3.1"], net.layer("layer3.1").history(17), net.to_pandas()
    chat = line_agent.investigate(model, "layer3.1", 17, ...); chat.ask("What does it respond to?")
    found = line_agent.find("red stripes", model, "layer3.*", top=5)   # units per layer and overall
    found[0].layer, found[0].unit, found.layers["layer3.1"], found.to_pandas()

`model` is a spec string (as for the `line` command) or a torch module in memory; `layer`
a dotted name or the submodule. Keyword settings override the config as the command's
flags do (see `line_agent.api`). The code lives in `agent` and `tools`; this package
re-exports what a user needs.
"""

from agent.config import Settings, load_settings
from agent.llm import ScriptedChatModel
from line_agent.api import (
    Answer,
    ConceptScore,
    Conversation,
    LabelRun,
    NetworkLabelRun,
    ScoreTable,
    ToolCall,
    UnitLabel,
    investigate,
    label,
    open_run,
    score,
)
from line_agent.find import UnitsFound, find
from tools.errors import LineError
from tools.scoring import Scores

__all__ = ["Answer", "ConceptScore", "Conversation", "LabelRun", "LineError", "NetworkLabelRun", "ScoreTable", "Scores",
           "ScriptedChatModel", "Settings", "ToolCall", "UnitLabel", "UnitsFound", "find", "investigate", "label",
           "load_settings", "open_run", "score"]
