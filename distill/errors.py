"""Errors users see: each names where the problem is and what was expected."""


class DistillError(Exception):
    """Base class; the CLI prints the message and exits with status 2."""


class ConfigError(DistillError):
    pass


class DataError(DistillError):
    pass


class TeacherError(DistillError):
    pass


class OutputError(ValueError):
    """A model's output that does not fit the task's schema; `kind` is the row's error type."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
