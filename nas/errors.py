"""The one exception family a user sees as a one-line message instead of a traceback."""


class NasError(Exception):
    """Bad input or an unmet precondition that the user can fix (file, option, spec, data)."""


class SpecError(NasError, ValueError):
    """An invalid architecture spec; the message names the offending field."""
