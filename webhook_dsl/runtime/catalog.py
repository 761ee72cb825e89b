"""The triggers a service (or ``webhook-dsl session get --triggers``) knows, per company.

``TriggerCatalog.load(directory)`` compiles ``DIR/*.json`` (triggers every company has) and
``DIR/<company_id>/*.json`` (that company's own, which win over a shared trigger of the same name),
once, reporting every file's errors together.

Over the folder lies each company's uploaded triggers (``PUT /triggers/{name}``, kept as versions in the
store): ``compile_uploads`` turns the store's current versions into triggers, ``replace_uploads`` swaps
them in, ``apply_upload`` applies one change at once. Every reader (``for_company``, ``get``,
``protected_keys``, ``secret_names``) sees folder and uploads together, so the service, the tool calls
and MCP find a company's uploads by the one mechanism. A name has one source: a folder trigger the
company sees cannot be uploaded, and an upload that a folder trigger later shadows is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DiagnosticsError
from ..storage.base import TriggerVersion, company_id_problem
from .trigger import Trigger, compile_trigger

__all__ = ["CompiledUploads", "TriggerCatalog", "TriggerLoadError", "compile_upload", "upload_source"]

log = logging.getLogger("webhook_dsl.triggers")

#: What ``compile_uploads`` gives ``replace_uploads``: company -> name -> (version number, trigger).
CompiledUploads = dict[str, dict[str, tuple[int, Trigger]]]


class TriggerLoadError(Exception):
    """Trigger files that do not compile; str() is every error, as FILE:LINE:COLUMN like ``check``."""


@dataclass(frozen=True)
class TriggerCatalog:
    """Compiled triggers: the folder's (those every company has, and each company's own) and, over them,
    each company's uploads (see the module's docstring)."""

    shared: Mapping[str, Trigger] = field(default_factory=dict)
    companies: Mapping[str, Mapping[str, Trigger]] = field(default_factory=dict)
    _secret_names: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protected_keys: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: Uploaded triggers: company -> name -> (version number, trigger). Replaced whole or changed one name at a
    #: time, always on the event loop's thread, so a reader sees one state or the next, never half of one.
    _uploads: dict[str, dict[str, tuple[int, Trigger]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: The newest version number applied per (company, name), deletions included: an older one never wins.
    _applied: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: Stored versions that did not compile, and uploads a folder trigger shadows: each logged once.
    _failed: set[tuple[str, str, int]] = field(default_factory=set, init=False, repr=False, compare=False)
    _shadowed: set[tuple[str, str, int]] = field(default_factory=set, init=False, repr=False, compare=False)

    def for_company(self, company_id: str) -> dict[str, Trigger]:
        uploads = self._uploads.get(company_id)
        if not uploads:
            return {**self.shared, **self.companies.get(company_id, {})}
        own = {name: trigger for name, (_, trigger) in uploads.items()}
        return {**own, **self.shared, **self.companies.get(company_id, {})}  # a folder trigger's name wins

    def folder_trigger(self, company_id: str, name: str) -> Trigger | None:
        """The folder's trigger ``name`` as the company sees it (its own folder's, else the shared one)."""
        own = self.companies.get(company_id)
        if own is not None and name in own:
            return own[name]
        return self.shared.get(name)

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
        found = self.folder_trigger(company_id, name)
        if found is not None:
            return found
        upload = self._uploads.get(company_id, {}).get(name)
        return upload[1] if upload is not None else None

    def __len__(self) -> int:
        folder = len(self.shared) + sum(len(t) for t in self.companies.values())
        return folder + sum(len(t) for t in self._uploads.values())

    def compile_uploads(self, versions: Iterable[TriggerVersion]) -> CompiledUploads:
        """The store's current versions (``Store.current_triggers``) compiled, ready for ``replace_uploads``.

        A version compiled before is reused (a version never changes), so a reload after one upload compiles
        one document. A stored document that no longer compiles (a newer release checks more) is logged
        once and left out; the others stay. Touches no state a reader sees, so it may run in a thread.
        """
        previous = self._uploads
        compiled: CompiledUploads = {}
        for each in versions:
            if each.document is None:
                continue
            known = previous.get(each.company_id, {}).get(each.name)
            if known is not None and known[0] == each.version:
                compiled.setdefault(each.company_id, {})[each.name] = known
                continue
            key = (each.company_id, each.name, each.version)
            if key in self._failed:
                continue
            try:
                trigger = compile_upload(each.document, each.name)
            except DiagnosticsError as error:
                self._failed.add(key)
                log.warning(
                    "company %s: version %d of uploaded trigger %r no longer compiles and is left out: %s",
                    each.company_id,
                    each.version,
                    each.name,
                    " ".join(str(error).split())[:1000],
                )
                continue
            compiled.setdefault(each.company_id, {})[each.name] = (each.version, trigger)
        return compiled

    def replace_uploads(self, compiled: CompiledUploads) -> None:
        """Put ``compile_uploads``' result in place of every company's uploads (a replica's reload)."""
        for company_id, uploads in compiled.items():
            for name in uploads:
                if self.folder_trigger(company_id, name) is not None:
                    key = (company_id, name, uploads[name][0])
                    if key not in self._shadowed:
                        self._shadowed.add(key)
                        log.warning(
                            "company %s: uploaded trigger %r is left out: the trigger folder has one of that name",
                            company_id,
                            name,
                        )
        self._uploads.clear()
        self._uploads.update(compiled)
        self._applied.clear()
        self._applied.update(
            ((company_id, name), number)
            for company_id, uploads in compiled.items()
            for name, (number, _) in uploads.items()
        )
        self._secret_names.clear()
        self._protected_keys.clear()

    def apply_upload(self, version: TriggerVersion, trigger: Trigger | None) -> bool:
        """Apply one new version at once (the replica that stored it): ``trigger`` for an upload or rollback,
        None for a deletion. Ignored (False) when a newer version of that name was applied already."""
        key = (version.company_id, version.name)
        if self._applied.get(key, 0) >= version.version:
            return False
        self._applied[key] = version.version
        uploads = self._uploads.setdefault(version.company_id, {})
        if trigger is None:
            uploads.pop(version.name, None)
        else:
            uploads[version.name] = (version.version, trigger)
        self._secret_names.pop(version.company_id, None)
        self._protected_keys.pop(version.company_id, None)
        return True

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


def upload_source(name: str) -> str:
    """What an uploaded trigger's errors name as their file: ``upload:NAME``."""
    return f"upload:{name}"


def compile_upload(document: str | bytes, name: str) -> Trigger:
    """Compile an uploaded trigger document as the folder's files are compiled (references included);
    ``ConfigError`` lists every problem with its line and column, under the source ``upload:NAME``."""
    trigger = compile_trigger(document, source=upload_source(name))
    undefined = trigger.undefined_references()
    if undefined:
        raise ConfigError(undefined)
    return trigger


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
