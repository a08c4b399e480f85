"""The one exception type for bad input: the CLIs print its message on one line and exit non-zero."""


class FineGrainError(ValueError):
    """Input that mteb-finegrain cannot use: a card, a data file, a model or an option.

    The message says what is wrong and where (file, line, key or option), so the command-line
    entry points print it without a traceback.
    """
