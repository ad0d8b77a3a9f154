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


# --- the file system and SQLite, in words ----------------------------------------------------------
CACHE_DIR = "--cache-dir (cache_dir)"  # the settings an OSError's fix names
RUNS_DIR = "--runs-dir (runs_dir)"


def os_error(error: OSError, setting: str = "") -> LineError:
    """One line for a failed file operation: the path, what went wrong and the fix;
    `setting` names the folder's setting (e.g. "--cache-dir (cache_dir)") for the fix."""
    import errno

    path = error.filename or "a file"
    elsewhere = f"or point {setting} at another folder" if setting else "or use another folder"
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return LineError(f"no space left on the device to write {path}.", f"Free some space there, {elsewhere}.")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "read-only file system" if code == errno.EROFS else "permission denied"
        return LineError(f"cannot write {path} ({why}).", f"Make it writable, {elsewhere}.")
    if code == errno.ENOTDIR:
        return LineError(f"cannot use {path}: a part of that path is a file, not a folder.",
                         f"Move the file away, {elsewhere}.")
    if code == errno.EISDIR:
        return LineError(f"{path} is a folder where a file belongs.", "Remove or rename that folder.")
    if code == errno.ENOENT:
        return LineError(f"{path} does not exist (removed while line was using it?).",
                         f"Check the folder is still there, {elsewhere}.")
    return LineError(f"cannot use {path} ({error.strerror or error}).", f"Check the path, {elsewhere}.")


def sqlite_error(error: Exception, path: object) -> LineError:
    """One line for a failed SQLite operation on the file at `path` (a store or a run's
    checkpoints): damaged, full, read-only or not openable, and the fix."""
    text = str(error)
    if "not a database" in text or "malformed" in text:
        return LineError(f"{path} is damaged ({text}).",
                         "Restore it from a backup or start a new run; the run's history.json keeps the histories "
                         "exported so far.")
    if "disk is full" in text or "disk I/O" in text:
        return LineError(f"cannot write {path} ({text}).", "Free some space on its device, then go on.")
    if "readonly" in text:
        return LineError(f"cannot write {path} ({text}).", "Make the file and its folder writable.")
    if "unable to open" in text:
        return LineError(f"cannot open the SQLite file {path} ({text}).",
                         "Check that its folder exists and is writable, and that the path names a file.")
    return LineError(f"SQLite failed on {path} ({text}).", "Check the file; restore it from a backup if it is damaged.")
