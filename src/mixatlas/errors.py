"""The one error type for user mistakes; the CLI prints it as a single line, without a traceback."""


class MixAtlasError(Exception):
    """A mistake in the user's input or configuration (bad file, wrong column, infeasible recipe...).

    The message must name the file/row (or option) and say how to fix it.
    """
