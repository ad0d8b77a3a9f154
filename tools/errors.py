"""The one error type users see: what went wrong, with which value, and how to fix it."""


class LineError(Exception):
    """A user-facing error. The CLI prints it as one line and exits with code 2."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())
