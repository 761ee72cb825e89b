"""Errors that carry positions, so every failure points at the text that caused it.

Hierarchy::

    WebhookDslError                  base of everything we raise on purpose
    ├── DiagnosticsError (ValueError)  one or more positioned problems
    │   ├── ConfigError                a config that cannot become a plan
    │   │   └── ConfigSyntaxError      text that is not a config template at all
    │   └── RenderError                variables that cannot make a correct request
    └── PlanFormatError (ValueError)   a serialized plan we refuse to load

A ``DiagnosticsError`` holds *every* problem found, not only the first. Messages
name variables and fields but never quote a substituted value, so a secret
cannot leak through an error.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigSyntaxError",
    "Diagnostic",
    "DiagnosticsError",
    "PlanFormatError",
    "RenderError",
    "WebhookDslError",
]

#: How many diagnostics ``str(error)`` prints before summarising the rest.
MAX_PRINTED = 20


class WebhookDslError(Exception):
    """Base class of every error webhook-dsl raises on purpose."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem at one place: ``FILE:LINE:COLUMN: message``, then the line and a caret."""

    message: str
    source: str = "<config>"
    line: int = 0
    column: int = 0
    width: int = 1
    source_line: str | None = None
    field: str | None = None
    variable: str | None = None

    def __str__(self) -> str:
        head = f"{self.source}:{self.line}:{self.column}: {self.message}"
        if self.source_line is None or self.line < 1:
            return head
        text = self.source_line.expandtabs(1)
        caret_at = max(self.column - 1, 0)
        width = max(1, min(self.width, len(text) - caret_at))
        return f"{head}\n    {text}\n    {' ' * caret_at}{'^' * width}"

    def to_dict(self) -> dict[str, object]:
        """Machine-readable form for JSON output (``--format json``)."""
        return {
            "source": self.source,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "field": self.field,
            "variable": self.variable,
        }


class DiagnosticsError(WebhookDslError, ValueError):
    """Several positioned problems raised together, so users fix them in one pass."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__(self.diagnostics)

    def __str__(self) -> str:
        shown = [str(d) for d in self.diagnostics[:MAX_PRINTED]]
        rest = len(self.diagnostics) - len(shown)
        if rest > 0:
            shown.append(f"... and {rest} more")
        return "\n".join(shown)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.diagnostics)} problem(s): {self.diagnostics[0].message!r})"


class ConfigError(DiagnosticsError):
    """A config that parses but cannot be compiled (bad field, bad URL, bad header...)."""


class ConfigSyntaxError(ConfigError):
    """Text that is not a webhook config template: JSON or ``$`` syntax is broken."""


class RenderError(DiagnosticsError):
    """The variables given cannot produce a correct request; nothing may be sent."""


class PlanFormatError(WebhookDslError, ValueError):
    """A serialized plan that is damaged, foreign or made by another grammar or format."""
