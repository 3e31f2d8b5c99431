"""Exports of registry versions for other runtimes (``evergreen export …``)."""
