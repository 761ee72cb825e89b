"""Schema patterns in linear time: a tenant's pattern never runs on a backtracking engine.

A tenant's ``"pattern": "^(a+)+$"`` and an LLM's ``"aaaa...!"`` take Python's backtracking ``re``
seconds, on the event loop, while every other request waits. So no schema pattern ever runs on it:
each is parsed once with Python's own regex parser (the one that defines what the reference
validator means by it) and written out for engines that cannot backtrack, RE2 (the reference
validator's ``pattern``, ``patternProperties``, ``additionalProperties``, ``unevaluatedProperties``)
and Rust's ``regex`` crate (jsonschema_rs with ``RegexOptions``). Both then get the same text, so the
quick answer and the worded one cannot disagree. What neither engine can run (backreferences,
lookaround, atomic groups, possessive repeats, a ``$`` with more pattern after it) is refused when
the trigger is compiled, at the pattern's line and column.
"""

from __future__ import annotations

import functools
import heapq
import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jsonschema
import jsonschema_rs
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from ..errors import Diagnostic
from . import syntax
from .parse import SourceText

__all__ = [
    "NOT_SCHEMAS",
    "LinearValidator",
    "PatternError",
    "RUST_REGEX",
    "linear_pattern",
    "linear_schema",
    "pattern_matches",
    "pattern_problem",
    "pattern_problems",
]

#: Keywords whose value is data, whatever keys it holds: never walked as a schema.
NOT_SCHEMAS = frozenset({"const", "enum", "default", "examples"})

_re_parser: Any = importlib.import_module("re._parser")  # private but stable since 3.11; unknown shapes are refused
_MAXREPEAT: int = _re_parser.MAXREPEAT
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
_ASCII_CLASSES = {
    "CATEGORY_DIGIT": ((0x30, 0x39),),
    "CATEGORY_WORD": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "CATEGORY_SPACE": ((0x09, 0x0D), (0x20, 0x20)),
}
_UNICODE_TESTS: dict[str, Callable[[str], bool]] = {
    "CATEGORY_DIGIT": str.isdecimal,  # what re's \d tests (Py_UNICODE_ISDECIMAL)
    "CATEGORY_WORD": lambda c: c.isalnum() or c == "_",
    "CATEGORY_SPACE": str.isspace,
}
_REFUSED = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group (?(...)...)",
    "ATOMIC_GROUP": "an atomic group (?>...)",
    "POSSESSIVE_REPEAT": "a possessive repeat (*+, ++, ?+)",
}
_Ranges = tuple[tuple[int, int], ...]
#: I, i, U+0130 and U+0131 (the Turkish dotted and dotless i) are one letter to Python's case-insensitive re;
#: Unicode's simple case folding, which RE2 and Rust's regex crate follow, splits them.
_DOTTED_I = (0x49, 0x69, 0x130, 0x131)
_ATOMS = frozenset({"LITERAL", "NOT_LITERAL", "IN", "ANY", "SUBPATTERN", "BRANCH"})  # written as one unit


class PatternError(ValueError):
    """A schema pattern that cannot be matched in linear time; the message says which construct."""


class _Unsupported(PatternError):
    """A construct (named by the message) that only a backtracking engine can run."""


@functools.cache
def _unicode_class(category: str) -> _Ranges:
    """The code points Python's ``re`` puts in ``\\d``, ``\\w`` or ``\\s``, read from Python's own tables
    (RE2's and Rust's follow other Unicode versions), once per process."""
    test = _UNICODE_TESTS[category]
    ranges: list[tuple[int, int]] = []
    start = -1
    for point in range(_LAST_CODE_POINT + 2):
        inside = point <= _LAST_CODE_POINT and test(chr(point))
        if inside and start < 0:
            start = point
        elif not inside and start >= 0:
            ranges.append((start, point - 1))
            start = -1
    return tuple(ranges)


def _normalized(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    result, start = [], 0
    for low, high in _normalized(ranges):
        if low > start:
            result.append((start, low - 1))
        start = high + 1
    if start <= _LAST_CODE_POINT:
        result.append((start, _LAST_CODE_POINT))
    return result


def _without_surrogates(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """UTF-8 text, which both engines match, cannot hold a lone surrogate (arguments holding one are
    matched with U+FFFD in its place, and never rendered into a request)."""
    low_s, high_s = _SURROGATES
    result = []
    for low, high in ranges:
        if low < low_s:
            result.append((low, min(high, low_s - 1)))
        if high > high_s:
            result.append((max(low, high_s + 1), high))
    return result


def _ascii_case_closed(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """With ``re.ASCII | re.IGNORECASE`` only ASCII letters match their other case."""
    ranges = list(ranges)
    extra = []
    for low, high in ranges:
        for first, last, shift in ((0x61, 0x7A, -32), (0x41, 0x5A, 32)):
            if low <= last and high >= first:
                extra.append((max(low, first) + shift, min(high, last) + shift))
    return _normalized(ranges + extra)


def _char(point: int) -> str:
    if _SURROGATES[0] <= point <= _SURROGATES[1]:
        raise PatternError("it holds a lone surrogate, which UTF-8 text (all an argument can be) never holds")
    return chr(point) if point < 0x80 and chr(point).isalnum() else f"\\x{{{point:x}}}"


def _class(ranges: Iterable[tuple[int, int]], negate: bool = False) -> str:
    ranges = _without_surrogates(_normalized(ranges))
    if not ranges:  # an empty set matches nothing, its negation everything
        return "[\\x{0}-\\x{10ffff}]" if negate else "[^\\x{0}-\\x{10ffff}]"
    items = "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)
    return f"[^{items}]" if negate else f"[{items}]"


class _Translation:
    """One pattern written out for RE2 (``dialect="re2"``) or Rust's regex crate (``"rust"``); the
    two differ only in how an ASCII word boundary is spelled."""

    def __init__(self, dialect: str) -> None:
        self.boundary = "\\b" if dialect == "re2" else "(?-u:\\b)"
        self.not_boundary = "\\B" if dialect == "re2" else "(?-u:\\B)"

    def sequence(self, items: Sequence[tuple[Any, Any]], flags: int, tail: bool) -> str:
        last = len(items) - 1
        return "".join(self.item(str(op), value, flags, tail and i == last) for i, (op, value) in enumerate(items))

    def item(self, op: str, value: Any, flags: int, tail: bool) -> str:
        """``tail``: nothing of the pattern can follow this item, so a ``$`` here may consume the one
        newline Python's ``$`` lets it stand before."""
        ignore_case = flags & re.IGNORECASE
        if op == "LITERAL" or op == "NOT_LITERAL" or op == "IN" or op == "ANY":
            # Case is folded before a set is negated, as in Python: (?i)[^a] matches neither a nor A.
            ranges, negate = self.ranges(op, value, flags)
            if ignore_case and flags & re.ASCII:
                ranges = _ascii_case_closed(ranges)
            elif ignore_case and op != "ANY":
                if any(low <= point <= high for low, high in ranges for point in _DOTTED_I):
                    ranges = _normalized([*ranges, *((point, point) for point in _DOTTED_I)])
                text = _char(value) if op == "LITERAL" and len(ranges) == 1 else _class(ranges, negate)
                return f"(?i:{text})"
            if op == "LITERAL" and len(ranges) == 1:
                return _char(value)
            return _class(_complement(ranges) if negate else ranges)
        if op == "SUBPATTERN":
            _group, add, remove, pattern = value
            return "(?:" + self.sequence(pattern.data, (flags | add) & ~remove, tail) + ")"
        if op == "BRANCH":
            return "(?:" + "|".join(self.sequence(branch.data, flags, tail) for branch in value[1]) + ")"
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, pattern = value
            inner = self.sequence(pattern.data, flags, tail and high <= 1)
            if len(pattern.data) != 1 or str(pattern.data[0][0]) not in _ATOMS:
                inner = f"(?:{inner})"
            if high == _MAXREPEAT:
                quantifier = {0: "*", 1: "+"}.get(low, f"{{{low},}}")
            else:
                quantifier = "?" if (low, high) == (0, 1) else f"{{{low}}}" if low == high else f"{{{low},{high}}}"
            return inner + quantifier + ("?" if op == "MIN_REPEAT" else "")
        if op == "AT":
            return self.anchor(str(value), flags, tail)
        if op in ("ASSERT", "ASSERT_NOT"):
            kind = "lookahead" if value[0] == 1 else "lookbehind"
            raise _Unsupported(f"a {'negative ' if op == 'ASSERT_NOT' else ''}{kind}")
        raise _Unsupported(_REFUSED.get(op, f"{op.lower().replace('_', ' ')}"))

    def ranges(self, op: str, value: Any, flags: int) -> tuple[list[tuple[int, int]], bool]:
        """The set an item matches one character of, before negation, and whether it is negated."""
        if op == "LITERAL":
            return [(value, value)], False
        if op == "NOT_LITERAL":
            return [(value, value)], True
        if op == "ANY":
            return ([], True) if flags & re.DOTALL else ([(0x0A, 0x0A)], True)
        negate = False
        ranges: list[tuple[int, int]] = []
        for kind, item in value:
            kind = str(kind)
            if kind == "NEGATE":
                negate = True
            elif kind == "LITERAL":
                ranges.append((item, item))
            elif kind == "RANGE":
                ranges.append(item)
            elif kind == "CATEGORY":
                name = str(item)
                positive = name.replace("CATEGORY_NOT_", "CATEGORY_")
                base = _ASCII_CLASSES[positive] if flags & re.ASCII else _unicode_class(positive)
                ranges.extend(_complement(base) if positive != name else base)
            else:
                raise _Unsupported(f"a character set item {kind.lower()}")
        return _normalized(ranges), negate

    def anchor(self, at: str, flags: int, tail: bool) -> str:
        if at == "AT_BEGINNING":
            return "(?m:^)" if flags & re.MULTILINE else "\\A"
        if at == "AT_BEGINNING_STRING":
            return "\\A"
        if at == "AT_END_STRING":
            return "\\z"
        if at == "AT_END":
            if flags & re.MULTILINE:
                return "(?m:$)"
            if not tail:
                raise _Unsupported("a $ with more pattern after it (\\Z, the end of the text, works anywhere)")
            return "(?:\\n?\\z)"  # Python's $: the end, or before a newline that ends the text
        if at == "AT_BOUNDARY":
            return self.boundary
        if at == "AT_NON_BOUNDARY":
            return self.not_boundary
        raise _Unsupported(f"the anchor {at.lower()}")


@functools.lru_cache(maxsize=1024)
def linear_pattern(pattern: str, dialect: str = "re2") -> str:
    """*pattern* as RE2 (or, with ``dialect="rust"``, Rust's regex crate) reads it, meaning what Python's
    ``re.search`` means by it, or ``PatternError`` naming what no linear-time engine can run.

    Differences left: ``\\b`` is an ASCII word boundary (as ECMA-262, the JSON Schema dialect, has it;
    RE2 has no other), and case-insensitive matching folds as Unicode's simple case folding does.

    >>> linear_pattern("^(a+)+$")
    '\\\\A(?:a+)+(?:\\\\n?\\\\z)'
    """
    try:
        parsed = _re_parser.parse(pattern)
    except re.error as error:
        raise PatternError(f"not a regular expression ({error})") from None
    try:
        return _Translation(dialect).sequence(parsed.data, parsed.state.flags, tail=True)
    except _Unsupported as error:
        raise PatternError(f"{error} cannot be matched in linear time") from None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the tenant, not written to stderr
_RE2_OPTIONS.never_capture = True
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    """The RE2 program for a schema pattern (UTF-8 bytes in, the cheaper of the wrapper's two ways)."""
    try:
        return re2.compile(linear_pattern(pattern).encode("utf-8"), _RE2_OPTIONS)
    except re2.error as error:  # a repeat over 1,000, a program over RE2's memory budget
        detail = error.args[0] if error.args else error
        detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise PatternError(f"RE2 cannot compile it ({detail})") from None


def pattern_matches(pattern: str, text: str) -> bool:
    """``re.search(pattern, text)``, answered by RE2 in time linear in the text.

    Raises ``PatternError`` for a pattern ``linear_pattern`` refuses.

    >>> pattern_matches("^(a+)+$", "a" * 40 + "!")
    False
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")
    return _compiled(pattern).search(data) is not None


def pattern_problem(pattern: str) -> str | None:
    """Why *pattern* cannot be used in a trigger's schema, or None when it can."""
    try:
        _compiled(pattern)
    except PatternError as error:
        return str(error)
    return None


_Errors = Iterator[jsonschema.ValidationError]


def _search(pattern: str, text: str) -> bool:
    """For the keywords below: a pattern that cannot run (only in a Trigger built by hand, since
    compile_trigger refuses it) matches nothing, and ``pattern`` then reports why."""
    try:
        return pattern_matches(pattern, text)
    except PatternError:
        return False


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> _Errors:
    if validator.is_type(instance, "string"):
        problem = pattern_problem(pattern)
        if problem is not None:
            yield jsonschema.ValidationError(f"the schema's pattern {pattern!r} cannot be checked: {problem}")
        elif not pattern_matches(pattern, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> _Errors:
    if validator.is_type(instance, "object"):
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if _search(pattern, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The keys neither ``properties`` nor ``patternProperties`` covers, in the instance's order."""
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    if not patterns:
        return [key for key in instance if key not in properties]
    return [key for key in instance if key not in properties and not any(_search(p, key) for p in patterns)]


#: At most this many offending keys are quoted in a message; the rest are counted.
SHOWN_KEYS = 5
#: A quoted key longer than this is cut, with its length said.
_SHOWN_KEY_CHARS = 100


def _some_keys(keys: Sequence[Any]) -> str:
    """``'a', 'b', ... and 59,995 more``: the first few keys in sorted order, quoted, and how many others.

    Arguments may hold any number of keys (up to the body limit); quoting and sorting all of them made a
    message as large as the request, built on the event loop, that the LLM then reads in full. The few
    keys are picked with ``heapq.nsmallest`` (no sort of them all), so the message reads as before when
    there are only a few."""
    shown = heapq.nsmallest(SHOWN_KEYS, keys, key=str)
    text = ", ".join(_quoted(str(key)) for key in shown)
    rest = len(keys) - len(shown)
    return f"{text} and {rest:,} more" if rest else text


def _quoted(key: str) -> str:
    return repr(key) if len(key) <= _SHOWN_KEY_CHARS else f"{key[:_SHOWN_KEY_CHARS]!r}... ({len(key):,} characters)"


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> _Errors:
    """jsonschema's own, with its one ``re.search`` (over the patterns joined by ``|``) done by RE2, and a
    message that quotes a few of the extra keys (``_some_keys``), not every one."""
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield jsonschema.ValidationError(f"{_some_keys(extras)} {verb} not match any of the regexes: {patterns}")
        else:
            yield jsonschema.ValidationError(
                f"Additional properties are not allowed ({_some_keys(extras)} "
                f"{'was' if len(extras) == 1 else 'were'} unexpected)"
            )


def _evaluated_keys(validator: Any, instance: Mapping[str, Any], schema: Any) -> list[str]:
    """jsonschema's ``find_evaluated_property_keys_by_schema``, with RE2 for ``patternProperties``."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef"):
        reference = schema.get(keyword)
        if reference is not None:
            resolved = validator._resolver.lookup(reference)
            keys += _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver), instance, resolved.contents
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys += (k for k, v in instance.items() if next(validator.descend(v, subschema), None) is None)
    for pattern in schema.get("patternProperties", ()):
        keys += (k for k in instance if _search(pattern, k))
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if next(validator.descend(instance, subschema), None) is None:
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(validator: Any, unevaluated: Any, instance: Any, schema: Any) -> _Errors:
    """jsonschema's own, with the evaluated keys found by ``_evaluated_keys``; its message quotes a few of
    the offending keys (``_some_keys``)."""
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    bad = [
        key
        for key in instance
        if key not in evaluated
        and next(validator.descend(instance[key], unevaluated, path=key, schema_path=key), None) is not None
    ]
    if bad:
        verb = "was" if len(bad) == 1 else "were"
        if unevaluated is False:
            yield jsonschema.ValidationError(
                f"Unevaluated properties are not allowed ({_some_keys(bad)} {verb} unexpected)"
            )
        else:
            yield jsonschema.ValidationError(
                f"Unevaluated properties are not valid under the given schema ({_some_keys(bad)} {verb} unevaluated "
                "and invalid)"
            )


#: The reference validator with every keyword that runs a pattern answered by RE2.
LinearValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    {
        "pattern": _pattern_keyword,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
    },
)
RUST_REGEX = jsonschema_rs.RegexOptions()  # Rust's regex crate: linear time, no backtracking
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "dependentSchemas", "dependencies"})


def linear_schema(node: Any) -> Any:
    """The schema with every pattern written for Rust's regex crate, for jsonschema_rs (``PatternError``
    if one cannot be). Anything not known to be data is walked as a schema, as ``$ref`` may reach it."""
    if isinstance(node, list):
        return [linear_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "pattern" and isinstance(value, str):
            result[key] = linear_pattern(value, "rust")
        elif key in NOT_SCHEMAS:
            result[key] = value
        elif key == "patternProperties" and isinstance(value, dict):
            rewritten: dict[str, Any] = {}
            for pattern, subschema in value.items():
                text, subschema = linear_pattern(pattern, "rust"), linear_schema(subschema)
                # two spellings of one pattern ("a", "\\x61") become one key: both schemas apply
                rewritten[text] = {"allOf": [rewritten[text], subschema]} if text in rewritten else subschema
            result[key] = rewritten
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            result[key] = {name: linear_schema(subschema) for name, subschema in value.items()}
        else:
            result[key] = linear_schema(value)
    return result


def _pattern_places(node: syntax.JsonNode) -> Iterator[tuple[syntax.Span, str]]:
    """Every pattern in a schema (``pattern`` values, ``patternProperties`` keys) and where it is written;
    the same walk as ``linear_schema``."""
    if isinstance(node, syntax.JsonArray):
        for item in node.items:
            yield from _pattern_places(item)
    if not isinstance(node, syntax.JsonObject):
        return
    for member in node.members:
        key, value = member.key.literal, member.value
        if key == "pattern":
            if isinstance(value, syntax.StringTemplate):
                yield value.span, value.literal
        elif key in NOT_SCHEMAS:
            continue
        elif key == "patternProperties" and isinstance(value, syntax.JsonObject):
            for inner in value.members:
                yield inner.key.span, inner.key.literal
                yield from _pattern_places(inner.value)
        elif key in _SCHEMA_MAPS and isinstance(value, syntax.JsonObject):
            for inner in value.members:
                yield from _pattern_places(inner.value)
        else:
            yield from _pattern_places(value)


def pattern_problems(parameters: syntax.JsonMember | None, src: SourceText) -> list[Diagnostic]:
    """A diagnostic for each schema pattern that cannot run in linear time, at the pattern."""
    problems = []
    for span, pattern in _pattern_places(parameters.value) if parameters is not None else ():
        try:
            _re_parser.parse(pattern)
        except re.error:
            continue  # not a regex at all: the metaschema check reports it
        problem = pattern_problem(pattern)
        if problem is not None:
            message = f"pattern {pattern!r}: {problem}; rewrite it without that (arguments are matched with RE2)"
            problems.append(src.at(span, message, field="parameters"))
    return problems
