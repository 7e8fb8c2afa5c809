"""How every command ends on a user's mistake: one `error: ...` line and a non-zero exit."""

import contextlib


def one_line(text, limit=200):
    """`text` (or an exception's message, else its name) on one line and at most `limit`
    characters: library messages can be long."""
    text = " ".join(str(text).split()) or (
        type(text).__name__ if isinstance(text, BaseException) else "")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exit_with(message):
    """End the command with `error: message` on stderr and exit status 1."""
    raise SystemExit(f"error: {message}")


@contextlib.contextmanager
def user_errors(cleanup=None):
    """A ValueError raised in the block is a user's mistake (a bad path, flag or file): end
    with its message as one `error:` line, status 1, after `cleanup()` if given."""
    try:
        yield
    except ValueError as error:
        if cleanup is not None:
            cleanup()
        raise SystemExit(f"error: {error}") from None
