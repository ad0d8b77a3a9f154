"""The one error type users see: what went wrong, with which value, and how to fix it."""


class LineError(Exception):
    """A user-facing error. The CLI prints it as one line and exits with code 2."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


class UntrustedCode(LineError):
    """Loading the model would run code named in data nobody vouched for (a run folder)."""


def no_units(layer: str = "") -> LineError:
    """The error for a layer whose output has no units (nothing to score or label)."""
    return LineError(f"layer {layer or 'chosen'} has no units (its output is empty).",
                     "Pick a layer with units: line layers --model MODEL lists them.")


def check_unit_index(unit: object, units: int, layer: str = "") -> int:
    """`unit` as an int, or a LineError when a layer of `units` units has no such unit."""
    if units <= 0:
        raise no_units(layer)
    try:
        index = int(unit)
        ok = index == unit and 0 <= index < units
    except (TypeError, ValueError):
        ok = False
    if not ok:
        where = f" for layer {layer}" if layer else ""
        raise LineError(f"unit {unit} is out of range{where} ({units} units: 0..{units - 1}).",
                        f"Pick a unit between 0 and {units - 1}.")
    return index
