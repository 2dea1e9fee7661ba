"""One base class for every mistake a user can fix.

The CLI catches FadkdError (and only it) and prints its message without a traceback: a
message must therefore say what is wrong, where, and how to fix it. Anything else is a bug
in fadkd and keeps its traceback.

FadkdError is not a ValueError: code that turns a library's ValueError or OSError into a
FadkdError with context (`except (OSError, ValueError)`) would otherwise catch fadkd's own
errors raised inside the same block and prefix their message a second time.
"""


class FadkdError(Exception):
    """A problem with the user's input (config, data, models), explained in the message."""
