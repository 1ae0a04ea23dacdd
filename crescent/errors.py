"""Errors the harness reports to the user as one line (no traceback)."""


class CrescentError(Exception):
    """A problem with the user's input: config, files or environment. Printed as one line."""


class ConfigError(CrescentError):
    """An invalid config value; the message names the key and what is allowed."""


class InputError(CrescentError):
    """An unreadable or malformed input file; the message names the file and the line."""
