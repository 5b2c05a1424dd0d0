"""The base of every error dtenant reports as one clear line instead of a traceback."""


class DtenantError(Exception):
    """An expected failure whose message names the culprit (file and key, user, path, pid)."""
