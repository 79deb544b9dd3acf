"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


def first_line(exc: Exception) -> str:
    """An exception's message for a one-line error: its first line, at most 200 characters (the
    libraries' own messages can run to thousands of lines, with tensor values)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


class ExporterError(Exception):
    """A problem with the user's input or environment, described in one line."""

    exit_code = 2


class UnknownModelError(ExporterError):
    pass


class DataError(ExporterError):
    """Bad or inconsistent training/validation data (names the offending file)."""


class WeightsError(ExporterError):
    pass


class ConversionError(ExporterError):
    exit_code = 3


class ParityError(ExporterError):
    """An artifact failed its accuracy gate."""

    exit_code = 4
