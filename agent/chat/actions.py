"""The chat's actions that skip native tool calling: the JSON action schema for models
without it (the embedded SmolLM2 chooses a tool and its typed arguments, or a reply), and
the person's slash commands (`/score red stripes @3`), both turned into ordinary tool calls.
"""

import json
import re
import uuid
from typing import Callable, Literal, Union

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field, create_model

from tools.agent_tools import TOOLS, USER_CALL_PREFIX
from tools.errors import LineError

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


# --- slash commands ------------------------------------------------------------------
_UNIT_SUFFIX = re.compile(r"(?:^|\s+)@\s*(\S*)\s*$")


def slash_call(text: str, check_unit: Callable[[int], int] | None = None) -> dict | None:
    """The tool call a slash command asks for, or None when it is no known command. A unit
    (`@N`) that is no unit of the layer is a LineError (`check_unit` raises it)."""
    command, _, rest = text.strip()[1:].partition(" ")
    rest = rest.strip()
    match = _UNIT_SUFFIX.search(rest)
    unit = _unit(match.group(1), check_unit) if match else None
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
    if not (args.get("concept") or args.get("concepts") or command == "history"):
        example = {"score": "/score red stripes", "ablate": "/ablate red from blue stripes", "images": "/images red, blue"}
        raise LineError(f"/{command} needs {'concepts' if command == 'images' else 'a concept'}.",
                        f"Name it after the command, e.g. {example[command]}.")
    name = {"score": "score_concept", "ablate": "ablate_concept", "images": "generate_images",
            "history": "inspect_history"}[command]
    return {"name": name, "args": {k: v for k, v in args.items() if v is not None},
            "id": f"{USER_CALL_PREFIX}{uuid.uuid4().hex[:12]}", "type": "tool_call"}


def _unit(text: str, check_unit: Callable[[int], int] | None) -> int:
    try:
        unit = int(text)
    except ValueError:
        raise LineError(f"unit {text!r} after @ is not a number.", "Write the unit as @N, e.g. /score red @3.") from None
    return check_unit(unit) if check_unit else unit


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

