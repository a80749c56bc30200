"""Source spans, diagnostics and the one error hierarchy of netdsl.

Every message a user sees about their input is a :class:`Diagnostic`. It renders
like a compiler's::

    resnet.net:12:9: error: residual body outputs 256x56x56 but its shortcut outputs 64x56x56
       12 |         conv3: conv width*4 1x1 -> bn3: bn
          |         ^^^^^^^^^^^^^^^^^^^^^^^
    note: in block `bottleneck` called from resnet.net:20:12
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUOTED = 150  # characters of a source line a diagnostic quotes; longer lines show a window around the span


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file's text as it was read, so the diagnostics about it can quote it."""

    path: str
    text: str

    @classmethod
    def read(cls, path: str) -> SourceFile | None:
        """The file at ``path`` as UTF-8 text, or None when it cannot be read."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls(path, f.read())
        except (OSError, UnicodeDecodeError):
            return None

    def line(self, line: int) -> str | None:
        """Line ``line`` (1-based) without its line break, or None when there is no such line."""
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file: 1-based line and column, end exclusive.

    ``path`` is the file's path as diagnostics show it. Built from a :class:`SourceFile` in its place
    (``Span(source, 3, 1, 3, 5)``), the span also holds that file's text (``source``), which a diagnostic
    quotes; ``source`` takes no part in comparing or hashing spans.
    """

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    source: SourceFile | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.path, SourceFile):
            object.__setattr__(self, "source", self.path)
            object.__setattr__(self, "path", self.path.path)

    def at(self, line: int, column: int, end_line: int, end_column: int) -> Span:
        """Another region of the same file."""
        return Span(self.path, line, column, end_line, end_column, self.source)

    def quoted_line(self) -> str | None:
        """The text of the span's first line, when its file's text is known."""
        return None if self.source is None else self.source.line(self.line)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls but tab and line feed


def visible(text: str, newlines: bool = True) -> str:
    """``text`` with control characters shown as escapes (ESC as ``\\x1b``), so that text taken from the
    input cannot move the cursor, recolour or retitle the terminal a diagnostic is printed on. Tabs are
    kept, and line feeds too unless ``newlines`` is false."""
    out = _CONTROL.sub(_escape, text)
    return out if newlines else out.replace("\n", "\\x0a")


def _escape(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


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
        out = [f"{visible(where)}{sev}: {visible(self.message)}"]
        if self.span is not None:
            text = self.span.quoted_line()
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
                if _CONTROL.search(text):  # escapes are wider than the characters they show: move the carets
                    end = start + width
                    width = len(visible(text[start:end], False)) + max(0, end - max(start, len(text)))
                    start = len(visible(text[:start], False)) + max(0, start - len(text))
                    text = visible(text, False)
                out.append(gutter + text)
                out.append(" " * (len(gutter) - 2) + "| " + " " * start + "^" * width)
        out.extend(f"note: {visible(n)}" for n in self.notes)
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
        """Raise ``cls`` when there are errors, with every diagnostic in the order reported: the warnings too,
        since a warning often explains an error (``conv 16 3 x 3`` repeats the layer, and a shape breaks)."""
        if self.errors:
            raise cls(diagnostics=list(self.items))

