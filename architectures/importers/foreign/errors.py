"""The one error of foreign files (`convert --from`)."""

from exporter.errors import ExporterError


class ForeignModelError(ExporterError):
    """A --from file we cannot read or convert, in one line (file name and cause, never tensor values)."""
