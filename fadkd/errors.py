"""One base class for every mistake a user can fix.

The CLI catches FadkdError (and only it) and prints its message without a traceback: a
message must therefore say what is wrong, where, and how to fix it. Anything else is a bug
in fadkd and keeps its traceback.
"""


class FadkdError(ValueError):
    """A problem with the user's input (config, data, models), explained in the message."""
