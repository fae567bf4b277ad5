"""The one exception the internal CA raises."""


class PKIError(Exception):
    """A certificate, key or CA operation failed.

    The message is meant for an operator: it names the file involved and says what to
    do, so command-line front ends can print it as-is instead of a traceback.
    """


def first_line(exc: BaseException) -> str:
    """The gist of a library exception, for embedding in a one-line PKIError message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
