"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


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
