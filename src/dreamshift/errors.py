"""Errors a user can act on. The CLI prints their message and exits with status 2."""


class DreamshiftError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class BadInputError(DreamshiftError):
    """One input file (image, mask) cannot be used. A batch run records it and goes on."""
