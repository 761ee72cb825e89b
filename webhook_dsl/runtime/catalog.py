"""The triggers a service (or ``webhook-dsl session get --triggers``) knows, per company.

``TriggerCatalog.load(directory)`` compiles ``DIR/*.json`` (triggers every company has) and
``DIR/<company_id>/*.json`` (that company's own, which win over a shared trigger of the same name),
once, reporting every file's errors together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DiagnosticsError
from ..storage.base import company_id_problem
from .trigger import Trigger, compile_trigger

__all__ = ["TriggerCatalog", "TriggerLoadError"]


class TriggerLoadError(Exception):
    """Trigger files that do not compile; str() is every error, as FILE:LINE:COLUMN like ``check``."""


@dataclass(frozen=True)
class TriggerCatalog:
    """Compiled triggers: those every company has, and each company's own."""

    shared: Mapping[str, Trigger] = field(default_factory=dict)
    companies: Mapping[str, Mapping[str, Trigger]] = field(default_factory=dict)
    _secret_names: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protected_keys: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def for_company(self, company_id: str) -> dict[str, Trigger]:
        return {**self.shared, **self.companies.get(company_id, {})}

    def secret_names(self, company_id: str) -> frozenset[str]:
        """The names the company's triggers declare secret (their ``secrets``, their webhooks' ``secrets``):
        the client_data keys whose values a session view masks. Worked out once per company."""
        names = self._secret_names.get(company_id)
        if names is None:
            names = frozenset(n for t in self.for_company(company_id).values() for n in t.secret_names)
            if len(self._secret_names) > 10_000:  # company ids come from keys; bounded all the same
                self._secret_names.clear()
            self._secret_names[company_id] = names
        return names

    def protected_keys(self, company_id: str) -> frozenset[str]:
        """The client_data keys no response may set for this company: every trigger's declared secrets and
        destination keys (``Trigger.protected_keys``), so one API's answer cannot move another trigger's
        calls or swap its credential. A trigger's own ``clientDataWrites`` still lets it write its keys."""
        keys = self._protected_keys.get(company_id)
        if keys is None:
            keys = frozenset(k for t in self.for_company(company_id).values() for k in t.protected_keys)
            if len(self._protected_keys) > 10_000:
                self._protected_keys.clear()
            self._protected_keys[company_id] = keys
        return keys

    def get(self, company_id: str, name: str) -> Trigger | None:
        own = self.companies.get(company_id)
        if own is not None and name in own:
            return own[name]
        return self.shared.get(name)

    def __len__(self) -> int:
        return len(self.shared) + sum(len(t) for t in self.companies.values())

    @classmethod
    def load(cls, path: str | Path) -> TriggerCatalog:
        """Compile ``DIR/*.json`` (shared) and ``DIR/<company_id>/*.json``; a file is one shared trigger.

        Raises ``TriggerLoadError`` listing every problem in every file.
        """
        root = Path(path)
        problems: list[str] = []
        if root.is_file():
            shared = _compile_all([root], problems)
            companies: dict[str, dict[str, Trigger]] = {}
        elif root.is_dir():
            shared = _compile_all(sorted(root.glob("*.json")), problems)
            companies = {}
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                problem = company_id_problem(folder.name)
                if problem is not None:
                    problems.append(f"{folder}: a folder of triggers is named after a company id; {problem}")
                    continue
                companies[folder.name] = _compile_all(sorted(folder.glob("*.json")), problems)
        else:
            raise TriggerLoadError(f"{root}: no such file or directory")
        if problems:
            raise TriggerLoadError("\n".join(problems))
        return cls(shared, companies)


def _compile_all(paths: Iterable[Path], problems: list[str]) -> dict[str, Trigger]:
    triggers: dict[str, Trigger] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read: {error}")
            continue
        try:
            trigger = compile_trigger(text, source=str(path))
            undefined = trigger.undefined_references()
            if undefined:
                raise ConfigError(undefined)
        except DiagnosticsError as error:
            problems.append(str(error))
            continue
        if trigger.name in triggers:
            problems.append(f"{path}: trigger name {trigger.name!r} is also used by {triggers[trigger.name].source}")
            continue
        triggers[trigger.name] = trigger
    return triggers
