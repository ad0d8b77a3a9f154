"""The one error type users see: what went wrong, with which value, and how to fix it."""


class LineError(Exception):
    """A user-facing error. The CLI prints it as one line and exits with code 2."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


class UntrustedCode(LineError):
    """Loading the model would run code named in data nobody vouched for (a run folder)."""


def check_unit_index(unit: object, units: int, layer: str = "") -> int:
    """`unit` as an int, or a LineError when a layer of `units` units has no such unit."""
    try:
        index = int(unit)  # type: ignore[call-overload]
        whole = index == unit and not isinstance(unit, bool)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise LineError(f"unit {unit!r} is not a unit number ({units} units{f' in layer {layer}' if layer else ''}: "
                        f"0..{units - 1}).", f"Pass a whole number between 0 and {units - 1}.")
    if not 0 <= index < units:
        where = f" for layer {layer}" if layer else ""
        raise LineError(f"unit {unit} is out of range{where} ({units} units: 0..{units - 1}).",
                        f"Pick a unit between 0 and {units - 1}.")
    return index
