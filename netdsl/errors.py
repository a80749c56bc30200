"""Source spans, diagnostics and the one error hierarchy of netdsl.

Every message a user sees about their input is a :class:`Diagnostic`. It renders
like a compiler's::

    resnet.net:12:9: error: residual body outputs 256x56x56 but its shortcut outputs 64x56x56
       12 |         conv3: conv width*4 1x1 -> bn3: bn
          |         ^^^^^^^^^^^^^^^^^^^^^^^
    note: in block `bottleneck` called from resnet.net:20:12
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MAX_QUOTED = 150  # characters of a source line a diagnostic quotes; longer lines show a window around the span


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file: 1-based line and column, end exclusive."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class Sources:
    """The text of every file read in this compilation, so diagnostics can quote it."""

    _texts: dict[str, str] = {}

    @classmethod
    def register(cls, path: str, text: str) -> None:
        cls._texts[path] = text

    @classmethod
    def line(cls, path: str, line: int) -> str | None:
        text = cls._texts.get(path)
        if text is None:
            return None
        lines = text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message about the input, anchored at a span, with optional notes."""

    severity: str  # "error" or "warning"
    message: str
    span: Span | None = None
    notes: tuple[str, ...] = ()

    def render(self, color: bool = False) -> str:
        """Return the message in compiler style: location, quoted source line, carets, notes."""
        sev = self.severity
        if color:
            code = "31" if sev == "error" else "35"
            sev = f"\x1b[1;{code}m{sev}\x1b[0m"
        where = f"{self.span}: " if self.span else "netdsl: "
        out = [f"{where}{sev}: {self.message}"]
        if self.span is not None:
            text = Sources.line(self.span.path, self.span.line)
            if text is not None:
                text = text.expandtabs(1)
                gutter = f"{self.span.line:>5} | "
                start = self.span.column - 1
                if self.span.end_line == self.span.line:
                    width = max(1, self.span.end_column - self.span.column)
                else:
                    width = max(1, len(text.rstrip()) - start)
                if len(text) > MAX_QUOTED:  # quote a window of a very long line around the span
                    first = max(0, min(start - MAX_QUOTED // 3, len(text) - MAX_QUOTED))
                    shown = ("..." if first else "") + text[first:first + MAX_QUOTED]
                    shown += "..." if first + MAX_QUOTED < len(text) else ""
                    start = start - first + (3 if first else 0)
                    width = min(width, MAX_QUOTED - (start - (3 if first else 0)))
                    text = shown
                out.append(gutter + text)
                out.append(" " * (len(gutter) - 2) + "| " + " " * start + "^" * width)
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


class NetdslError(Exception):
    """Base of every error netdsl raises about its input or environment.

    Holds one or more diagnostics; ``str()`` renders all of them.
    """

    kind = "error"

    def __init__(self, message: str | None = None, span: Span | None = None,
                 notes: tuple[str, ...] = (), diagnostics: list[Diagnostic] | None = None):
        if diagnostics is None:
            diagnostics = [Diagnostic("error", message or "", span, tuple(notes))]
        self.diagnostics = diagnostics
        super().__init__(self.render())

    def render(self, color: bool = False) -> str:
        return "\n".join(d.render(color) for d in self.diagnostics)


class NetdslSyntaxError(NetdslError):
    """The text is not a well-formed .net program."""


class SemanticError(NetdslError):
    """The program is well formed but wrong: unknown names, shape mismatches, limits."""


class WeightsError(NetdslError):
    """A weight file is missing, malformed, or does not match the network."""


class EngineError(NetdslError):
    """An execution engine is missing, misconfigured or failed."""


class UsageError(NetdslError):
    """A bad command-line option or API argument (exit code 2 in the CLI)."""


@dataclass
class DiagnosticBag:
    """Collects independent diagnostics so one run reports all of them."""

    items: list[Diagnostic] = field(default_factory=list)
    _seen: set = field(default_factory=set)

    def error(self, message: str, span: Span | None, notes: tuple[str, ...] = ()) -> None:
        self._add(Diagnostic("error", message, span, notes))

    def warning(self, message: str, span: Span | None, notes: tuple[str, ...] = ()) -> None:
        self._add(Diagnostic("warning", message, span, notes))

    def _add(self, d: Diagnostic) -> None:
        key = (d.severity, d.message, d.span)
        if key not in self._seen:  # a block instantiated many times reports once
            self._seen.add(key)
            self.items.append(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self, cls: type[NetdslError] = SemanticError) -> None:
        errs = self.errors
        if errs:
            raise cls(diagnostics=errs)


def display_path(path: str) -> str:
    """A path as diagnostics show it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
