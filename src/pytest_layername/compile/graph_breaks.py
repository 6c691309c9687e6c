"""Graph breaks as torch reports them: the reason and the user source line of each.

Reasons come from Dynamo's ``counters["graph_break"]`` (reason -> count); where each break happened
comes from Dynamo's ``graph_breaks`` log (what ``TORCH_LOGS=graph_breaks`` prints), which a
:class:`GraphBreakLog` enables and collects while a compile session runs, without printing anything
(unless the user asked for that log, which then prints as it would anyway).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

import torch._dynamo.utils as dynamo_utils
import torch._logging

#: the modules whose ``graph_breaks`` artifact logger Dynamo writes to
LOGGING_MODULES = ("torch._dynamo.symbolic_convert", "torch._dynamo.convert_frame")
_AT = re.compile(r"in user code at (?P<location>.+:\d+)$")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in .+\n(?P<code>[^\n]*)', re.MULTILINE)
_PREAMBLE = "Encountered graph break when attempting to trace"


@dataclass(frozen=True)
class GraphBreak:
    """Graph breaks with one reason at one user source location (``None`` where torch's log did not say)."""

    reason: str  # torch's text: the graph-break type, then its explanation, hints and link
    location: str | None  # "file:line" of the user code
    user_code: str | None  # that line's source
    count: int

    @property
    def headline(self) -> str:
        """The reason's first line (with the next one where it ends in a colon, as a skipped frame's does)."""
        return " ".join(self._lines()[: self._headline_lines()])

    @property
    def details(self) -> list[str]:
        """The rest of the reason: explanations, hints, the link; without Dynamo's developer context."""
        rest = self._lines()[self._headline_lines() :]
        return [line for line in rest if not line.startswith("Developer debug context:")]

    def _lines(self) -> list[str]:
        return [line.strip() for line in self.reason.splitlines() if line.strip()]

    def _headline_lines(self) -> int:
        lines = self._lines()
        return 2 if len(lines) > 1 and lines[0].endswith(":") else 1

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.headline, "location": self.location, "count": self.count}


def _reason(text: str) -> str:
    """The reason without Dynamo's "Encountered graph break when attempting to trace ..." preamble."""
    text = text.strip()
    if text.startswith(_PREAMBLE) and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    return text.strip()


Parsed = tuple[str, str | None, str | None]  # (reason, location, user code)


def parse_record(record: logging.LogRecord) -> Parsed:
    """(reason, location, user code) from one of Dynamo's graph-break log records."""
    message = record.getMessage()
    first, _, rest = message.partition("\n")
    frames = list(_FRAME.finditer(message))
    code = frames[-1]["code"].strip() if frames else None
    if at := _AT.search(first):
        reason = rest.split("Graph Break Reason:", 1)[-1].split("\nUser code traceback:", 1)[0]
        reason = reason.split("\nStack variable source attribution:", 1)[0]
        return _reason(reason), at["location"], code
    # "torch.compile will skip tracing the frame ...": the reason is the exception, the place its last user frame
    error = record.exc_info[1] if record.exc_info else None
    location = f"{frames[-1]['file']}:{frames[-1]['line']}" if frames else None
    return _reason(str(error) if error is not None else first), location, code


class _Tap(logging.Filter):
    """The one filter on Dynamo's graph-break loggers while any :class:`GraphBreakLog` listens.

    A filter, not a handler: it sees each record first, hands it to every listening log (sessions may
    nest) and stops the records logged only because it enabled the loggers, so they reach no handler
    (torch's stderr, pytest's captured logs). Where the user enabled the log (``TORCH_LOGS=graph_breaks``)
    the records go on as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[GraphBreakLog] = []
        self._restore: list[tuple[logging.Logger, int]] = []
        self._users: set[str] = set()  # loggers the user enabled: their records go on to the user's handlers

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            parsed = parse_record(record)
        except Exception:  # a record torch words otherwise: keep it whole, never break the compile that logged it
            parsed = (str(record.msg), None, None)
        for listener in self.listeners:
            listener.records.append(parsed)
        return record.name in self._users

    def listen(self, listener: GraphBreakLog) -> None:
        if not self.listeners:
            for module in LOGGING_MODULES:
                logger = torch._logging.getArtifactLogger(module, "graph_breaks")
                self._restore.append((logger, logger.level))
                if logger.isEnabledFor(logging.DEBUG):
                    self._users.add(logger.name)
                logger.setLevel(logging.DEBUG)
                logger.addFilter(self)
        self.listeners.append(listener)

    def stop_listening(self, listener: GraphBreakLog) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            for logger, level in self._restore:
                logger.removeFilter(self)
                logger.setLevel(level)
            self._restore.clear()
            self._users.clear()


_TAP = _Tap()


class GraphBreakLog:
    """Dynamo's graph-break log records and graph-break counters between :meth:`attach` and :meth:`detach`."""

    def __init__(self) -> None:
        self.records: list[Parsed] = []
        self._reasons_before: Counter[str] = Counter()

    def attach(self) -> None:
        self._reasons_before = Counter(dynamo_utils.counters["graph_break"])
        _TAP.listen(self)

    def detach(self) -> None:
        _TAP.stop_listening(self)

    def graph_breaks(self) -> list[GraphBreak]:
        """Every graph break since :meth:`attach`, by reason and location, in the order torch hit them."""
        counted = Counter(dynamo_utils.counters["graph_break"]) - self._reasons_before
        places = Counter((reason, location) for reason, location, _ in self.records)
        code_at: dict[tuple[str, str | None], str] = {}
        for reason, location, code in self.records:  # a repeated break is logged without its user stack
            if code:
                code_at.setdefault((reason, location), code)
        found = [GraphBreak(*place, code_at.get(place), count) for place, count in places.items()]
        logged = [b.reason for b in found]
        found += [
            GraphBreak(reason, None, None, count)
            for reason, count in counted.items()
            if not any(reason.strip() in text or text in reason for text in logged)
        ]
        return found
