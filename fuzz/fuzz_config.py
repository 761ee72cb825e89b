"""Coverage-guided fuzzing (atheris/libFuzzer) of the config parser and of render.

    python fuzz/fuzz_config.py -max_total_time=30 fuzz/corpus

Invariants: compiling any text raises nothing but ConfigError (with positions); a compiled plan,
rendered with variables derived from the same input (flat, or nested for a dotted name to descend
into), raises nothing but RenderError, and what it renders keeps the URL's scheme and host, carries
no CR/LF in headers, and has a body that parses with no object repeating a member name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    import webhook_dsl
    from webhook_dsl import ConfigError, RenderError


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    text = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 2000))
    try:
        plan = webhook_dsl.compile_webhook(text, source="fuzz.json")
    except ConfigError as error:
        assert error.diagnostics and all(d.line >= 1 and d.column >= 1 for d in error.diagnostics), error
        return
    names = [slot.candidates[0] for slot in plan.slots()]
    variables: dict[str, object] = {}
    for name in names:
        choice = provider.ConsumeIntInRange(0, 5)
        if choice == 0:
            variables[name] = provider.ConsumeUnicode(40)
        elif choice == 1:
            variables[name] = provider.ConsumeInt(8)
        elif choice == 2:
            variables[name] = [provider.ConsumeUnicode(10) for _ in range(provider.ConsumeIntInRange(0, 3))]
        elif choice == 3:
            variables[name] = None
        elif choice == 4 and "." in name:  # nested, for the reference to descend into
            root, _, rest = name.partition(".")
            value: object = provider.ConsumeUnicode(10)
            for segment in reversed(rest.split(".")):
                value = {segment: value}
            variables.setdefault(root, value)
    for lenient in (False, True):
        try:
            request = plan.render(variables, lenient=lenient)
        except RenderError:
            continue
        assert request == plan.render_careful(variables, lenient=lenient)
        for key, value in request.headers:
            assert "\r" not in key + value and "\n" not in key + value, (key, value)
        if request.body is not None:
            json.loads(request.body, object_pairs_hook=_unique)
        parts = urlsplit(request.url)
        assert parts.scheme in ("http", "https") and parts.hostname, request.url


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    names = [name for name, _ in pairs]
    assert len(set(names)) == len(names), names
    return dict(pairs)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
