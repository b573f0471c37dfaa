"""Where library messages go: ``logging`` under ``flowsci`` (and the first-party domains'
``flowsci_domains``), routed to stderr by the command line (``-q`` / ``-v``), by sweep worker
processes, or by a notebook that calls :func:`configure_logging`."""

from __future__ import annotations

import logging
import sys

LOGGERS = ("flowsci", "flowsci_domains")


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # set by StreamHandler.__init__; the property decides
        pass


_HANDLER = _StderrHandler()


def configure_logging(level: int = logging.INFO) -> None:
    """Show flowsci's messages of ``level`` and above on stderr (other libraries' stay at
    warning level). Calling it again changes the level; it never adds a second handler."""
    _HANDLER.setFormatter(logging.Formatter("%(message)s" if level >= logging.INFO
                                            else "%(name)s: %(message)s"))
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)


def current_level() -> int:
    """The level of flowsci's messages now (to configure a worker process the same way)."""
    return logging.getLogger(LOGGERS[0]).getEffectiveLevel()
