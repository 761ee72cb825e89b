"""Turns a plan into a Python function that renders the common case at hand-written speed.

The generated function handles the case where every reference resolves to its
full name and every value is acceptable. On anything else it raises one of the
two misses it was built for: ``Fallback`` (a shorter name, a missing variable,
a value shape it leaves alone, a size limit, a repeated member name...) or
``encode.ValueProblem`` (a value refused where it lands). ``WebhookPlan.render``
then asks the careful renderer, which gives the exact result or ``RenderError``.
Any other exception is a bug here and propagates. So the generated code only
has to be *right when it returns*, which the property tests check against the
careful renderer. The source is built from ``repr`` of plan data only: names
and literals can never become code. Helpers keep readable names, so a traceback
through the generated function (``<webhook-dsl plan SOURCE>``, lines of
``generate_source(plan)``) can be read.

What makes it fast (each measured against the previous generated code):

* every value is read once, by a plain ``v[name]`` (a ``dict`` subscript is the
  cheapest lookup; a missing name raises ``KeyError``, turned into ``Fallback``);
  a dotted name's ``KeyError`` is caught to descend into nested objects (a
  ``try`` costs nothing in CPython 3.11+ until something raises);
* a value used in several places is converted and checked once;
* a JSON body is, when that provably gives the same bytes, one ``orjson.dumps``
  of a dict/list display mirroring the template, as a hand-written renderer
  would do, instead of one ``dumps`` per string joined with the literal text;
* no check is emitted that cannot fail (the length of a constant URL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from .encode import (
    check_header_name,
    check_header_value,
    check_host,
    check_port,
    check_whole_url,
    json_value,
    percent_encode,
    to_text,
)
from .layout import (
    MAX_BODY_BYTES,
    MAX_HEADERS_SIZE,
    MAX_URL_LENGTH,
    MISSING,
    BodyPiece,
    HeaderPlan,
    JsonStringPlan,
    MemberNames,
    Piece,
    RenderedRequest,
    Slot,
    UrlGroup,
    descend,
)
from .syntax import Context, UrlPartKind

__all__ = ["Fallback", "RenderFunction", "generate_render_function", "generate_source"]


class Fallback(Exception):
    """The generated function leaves this render to the careful renderer: a miss it was built for."""


RenderFunction = Callable[[Mapping[str, Any]], RenderedRequest]


class PlanParts(Protocol):
    """What the generator reads of a ``WebhookPlan`` (a protocol: this module never imports ``plan``)."""

    @property
    def method(self) -> str: ...
    @property
    def url(self) -> tuple[str | UrlGroup, ...]: ...
    @property
    def headers(self) -> tuple[HeaderPlan, ...]: ...
    @property
    def body(self) -> tuple[BodyPiece, ...] | None: ...
    @property
    def objects(self) -> tuple[MemberNames, ...]: ...
    @property
    def source(self) -> str: ...
    def slots(self) -> list[Slot]: ...


def read_mapping(variables: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The full names a mapping that is not a plain dict defines, read with ``.get`` as the careful path does.

    (A dict subclass may have ``__missing__``; ``v[name]`` would call it, ``.get`` does not.)
    """
    if not isinstance(variables, Mapping):
        raise Fallback  # the careful renderer words the TypeError
    found = {}
    for name in names:
        value = variables.get(name, MISSING)
        if value is MISSING and "." in name:
            value = descend(variables, name)[1]
        if value is not MISSING:
            found[name] = value
    return found


def descend_or_fall_back(variables: dict[str, Any], name: str) -> Any:
    """The value a dotted full name reaches through nested objects, after ``v[name]`` missed."""
    value = descend(variables, name)[1]
    if value is MISSING:
        raise Fallback  # a shorter name, or none: the careful renderer decides
    return value


def list_item(value: Any, index: int) -> Any:
    """``value[index]`` when ``value`` is a list that long, else a miss (the generated code tries inline first)."""
    if value.__class__ is list and 0 <= index < len(value):
        return value[index]
    raise Fallback


def bare_json(value: Any) -> bytes:
    """JSON for a bare ``$name`` body value (the body built as joined bytes)."""
    try:
        return orjson.dumps(bare_item(value))
    except orjson.JSONEncodeError:  # a lone surrogate in a string: the careful renderer words it
        raise Fallback from None


def bare_item(value: Any) -> Any:
    """A bare ``$name`` body value as an item of a display given to ``orjson.dumps``.

    A string or a list of strings stands as itself (orjson writes it exactly as
    ``json_value`` would); anything else goes through ``json_value``'s checks and
    is put in as a ready-made ``orjson.Fragment``.
    """
    if value.__class__ is list:
        for item in value:
            if item.__class__ is not str:
                break
        else:
            return value
    elif value.__class__ is str:
        return value
    return orjson.Fragment(json_value(value))


#: The generated function's globals: every helper under a name that says what it does.
_NAMESPACE: dict[str, Any] = {
    "Fallback": Fallback,
    "JSONEncodeError": orjson.JSONEncodeError,
    "read_mapping": read_mapping,
    "descend_or_fall_back": descend_or_fall_back,
    "list_item": list_item,
    "to_text": to_text,
    "percent_encode": percent_encode,
    "check_host": check_host,
    "check_port": check_port,
    "check_whole_url": check_whole_url,
    "check_header_name": check_header_name,
    "check_header_value": check_header_value,
    "bare_json": bare_json,
    "bare_item": bare_item,
    "json_dumps": orjson.dumps,
    "Fragment": orjson.Fragment,
    "RenderedRequest": RenderedRequest,
    "tuple_new": tuple.__new__,
}

_PERCENT_CONTEXTS = (Context.URL_PATH, Context.URL_QUERY, Context.URL_FRAGMENT)


class _Writer:
    """Emits the body of ``render(v)``; every ``$reference`` becomes a local, computed once."""

    def __init__(self, plan: PlanParts) -> None:
        self.lines: list[str] = []
        self.constants: list[str] = []  # module-level lines: ready-made JSON fragments, sets of literal names
        self.count = 0
        self.header_slots: list[str] = []  # locals holding header slot texts, for the size check
        self.in_headers = False
        self.dumps_text = False  # whether the body has orjson encode text, which refuses a lone surrogate
        slots = plan.slots()
        self.names = tuple(dict.fromkeys(slot.full_name for slot in slots))
        self.raw: dict[str, str] = {}  # full name -> local holding its value
        self.values: dict[tuple[str, int | None], str] = {}  # (name, index) -> local holding the (item) value
        self.texts: dict[tuple[str, int | None], str] = {}  # -> local holding its text (``to_text``)
        self.encoded: dict[tuple[str, int | None, Context], str] = {}  # -> local holding the text for a context
        # Values needed as they are, so their text must go to a new local, not replace them.
        self.kept = {(s.full_name, s.index) for s in slots if s.context is Context.JSON_VALUE}
        self.kept |= {(s.full_name, None) for s in slots if s.index is not None}
        bare = [p for p in plan.body or () if isinstance(p, Slot)]
        self.kept |= {(s.full_name, s.index) for s in bare}

    def local(self) -> str:
        self.count += 1
        return f"x{self.count}"

    def constant(self, prefix: str, value: str) -> str:
        """A module-level name for a value built once, when the function is defined."""
        name = f"{prefix}_{len(self.constants) + 1}"
        self.constants.append(f"{name} = {value}\n")
        return name

    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("    " * indent + line)

    def fetch(self) -> None:
        """Read every full name once. Only a plain dict is read with ``v[name]``; a name it lacks is a miss."""
        self.emit(f"if v.__class__ is not dict: v = read_mapping(v, {self.names!r})")
        if not self.names:
            return
        self.emit("try:")
        for name in self.names:
            local = self.raw[name] = self.local()
            if "." in name:  # only a dotted name can descend, and only once the flat lookup missed
                self.emit(f"try: {local} = v[{name!r}]", 2)
                self.emit(f"except KeyError: {local} = descend_or_fall_back(v, {name!r})", 2)
            else:
                self.emit(f"{local} = v[{name!r}]", 2)
        self.emit("except KeyError:  # a shorter name or none: the careful renderer decides")
        self.emit("raise Fallback from None", 2)

    def value(self, slot: Slot) -> str:
        """The local holding the slot's value (its item for ``$name[N]``)."""
        key = (slot.full_name, slot.index)
        if key not in self.values:
            raw = self.raw[slot.full_name]
            if slot.index is None:
                self.values[key] = raw
            else:
                i = slot.index
                name = self.values[key] = self.local()
                if i < 0:  # no plan the compiler makes or load_plans accepts; never read from the end
                    self.emit(f"{name} = list_item({raw}, {i})")
                else:
                    inline = f"{raw}[{i}] if {raw}.__class__ is list and len({raw}) > {i}"
                    self.emit(f"{name} = {inline} else list_item({raw}, {i})")
        return self.values[key]

    def text(self, slot: Slot) -> str:
        """The local holding the slot's value as text: strings as they are, the rest through ``to_text``."""
        key = (slot.full_name, slot.index)
        if key not in self.texts:
            value = self.value(slot)
            name = value
            if key in self.kept:
                name = self.local()
                self.emit(f"{name} = {value}")
            self.emit(f"if {name}.__class__ is not str: {name} = to_text({name})")
            self.texts[key] = name
        return self.texts[key]

    def slot_text(self, slot: Slot) -> str:
        """The local holding the slot's text encoded (or checked) for its context."""
        key = (slot.full_name, slot.index, slot.context)
        name = self.encoded.get(key)
        if name is None:
            name = self.text(slot)
            context = slot.context
            if context in _PERCENT_CONTEXTS:
                text, name = name, self.local()
                self.emit(f"{name} = percent_encode({text})")
            elif context is Context.URL_WHOLE:
                self.emit(f"check_whole_url({name})")  # returns its argument or raises
            elif context is Context.HEADER_VALUE:
                self.emit(f"if not {name}.isprintable(): check_header_value({name})")  # likewise
            self.encoded[key] = name
        if self.in_headers:
            self.header_slots.append(name)
        return name

    def join(self, pieces: tuple[Piece, ...]) -> str:
        terms = [repr(p) if isinstance(p, str) else self.slot_text(p) for p in pieces]
        return _concatenation(terms)

    def url(self, plan: PlanParts) -> str:
        terms = []
        for part in plan.url:
            if isinstance(part, str):
                terms.append(repr(part))
                continue
            expression = self.join(part.pieces)
            name = expression
            if not expression.isidentifier():
                name = self.local()
                self.emit(f"{name} = {expression}")
            if part.kind is UrlPartKind.HOST:
                self.emit(f"check_host({name})")
            elif part.kind is UrlPartKind.PORT:
                self.emit(f"check_port({name})")
            elif part.kind is UrlPartKind.PATH_SEGMENT:
                literal = "".join(p for p in part.pieces if isinstance(p, str))
                if not literal.strip("."):  # only then can the segment come out as '.' or '..'
                    self.emit(f"if {name} == '.' or {name} == '..': raise Fallback")
            terms.append(name)
        return _concatenation(terms)

    def headers(self, plan: PlanParts) -> str:
        self.in_headers = True
        pairs = []
        for header in plan.headers:
            name = self.join(header.name)
            if any(isinstance(p, Slot) for p in header.name):
                local = self.local()
                self.emit(f"{local} = check_header_name({name})")
                name = local
            pairs.append(f"({name}, {self.join(header.value)})")
        self.in_headers = False
        return "[" + ", ".join(pairs) + "]"

    def body(self, plan: PlanParts) -> str:
        if plan.body is None:
            return "None"
        tree = None if plan.objects else _body_tree(plan.body)
        if tree is not None and _display_pays(tree):
            self.dumps_text = True
            return f"json_dumps({self.display(tree)})"
        keys = {position for obj in plan.objects for position in obj.keys}
        names: dict[int, str] = {}  # body position of a member name with variables -> local holding its text
        terms = []
        for position, piece in enumerate(plan.body):
            if isinstance(piece, str):
                terms.append(repr(piece.encode("utf-8")))
            elif isinstance(piece, JsonStringPlan):
                expression = self.join(piece.pieces)
                if position in keys:
                    if not expression.isidentifier():
                        local = self.local()
                        self.emit(f"{local} = {expression}")
                        expression = local
                    names[position] = expression
                terms.append(f"json_dumps({expression})")
                self.dumps_text = True
            else:
                terms.append(f"bare_json({self.value(piece)})")
        self.unique_names(plan, names)
        if len(terms) == 1:
            return terms[0]
        return "b''.join((" + ", ".join(terms) + ",))"

    def unique_names(self, plan: PlanParts, names: dict[int, str]) -> None:
        """Fall back when a member name made from variables repeats another of its object."""
        for obj in plan.objects:
            texts = [names[position] for position in obj.keys]
            conditions = []
            if obj.literal:
                literal = self.constant("LITERAL_NAMES", f"frozenset({tuple(sorted(set(obj.literal)))!r})")
                conditions += [f"{text} in {literal}" for text in texts]
            if len(texts) > 1:
                conditions.append(f"len({{{', '.join(texts)}}}) < {len(texts)}")
            if conditions:
                self.emit(f"if {' or '.join(conditions)}: raise Fallback")

    def display(self, node: Any) -> str:
        """Python source for a body tree node (see ``_body_tree``)."""
        if isinstance(node, _Hole):
            if isinstance(node.piece, JsonStringPlan):
                return self.join(node.piece.pieces)
            return f"bare_item({self.value(node.piece)})"
        if not _has_holes(node):
            if isinstance(node, (dict, list)):  # a constant object or array: serialized once, here
                return self.constant("JSON", f"Fragment({orjson.dumps(node)!r})")
            return repr(node)  # str, int, float, bool or None: repr is a Python literal of the same value
        if isinstance(node, dict):
            return "{" + ", ".join(f"{key!r}: {self.display(item)}" for key, item in node.items()) + "}"
        return "[" + ", ".join(self.display(item) for item in node) + "]"


# --- the body as one dumps of a display ---------------------------------------------

_MARK = "\ue000"  # private use: marks the holes of the body in its skeleton


class _Hole:
    """Where a body piece with a variable (a JSON string or a bare value) sits in the body tree."""

    def __init__(self, piece: JsonStringPlan | Slot) -> None:
        self.piece = piece


class _NotMirrored(Exception):
    pass


def _body_tree(body: tuple[BodyPiece, ...]) -> dict[str, Any] | list[Any] | None:
    """The body as a tree of dicts, lists, literal values and ``_Hole`` s, or None.

    Only when ``orjson.dumps`` of the tree, with any strings in the string holes
    and any bare values (as ``bare_item`` gives them) in the others, is
    byte-for-byte the join the careful renderer makes. That is checked, not
    assumed: each hole is replaced by a marker string, the text parsed, and the
    parsed tree serialized again must give back the text exactly. orjson writes
    a container as a fixed function of its items, so what holds for the markers
    holds for any values. This refuses whatever orjson would write otherwise
    (``1e5``, ``-0``, ``1.10``, integers past 64 bits, other escapes), duplicate
    keys (a dict keeps one) and keys with variables (two could render alike).
    """
    holes: dict[str, _Hole] = {}
    skeleton = []
    for piece in body:
        if isinstance(piece, str):
            if _MARK in piece:
                return None
            skeleton.append(piece)
        else:
            marker = f"{_MARK}{len(holes)}{_MARK}"
            holes[marker] = _Hole(piece)
            skeleton.append(f'"{marker}"')
    text = "".join(skeleton)
    if not holes or text[:1] not in ("{", "["):
        return None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        node = dict(items)
        if len(node) != len(items) or any(_MARK in key for key in node):
            raise _NotMirrored
        return node

    def refuse(_: str) -> Any:
        raise _NotMirrored  # NaN, Infinity: not JSON

    try:
        tree = json.loads(text, object_pairs_hook=pairs, parse_constant=refuse)
        if orjson.dumps(tree) != text.encode("utf-8"):
            return None
    except (ValueError, TypeError, _NotMirrored):  # orjson.JSONEncodeError is a TypeError
        return None
    used: list[str] = []

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(item) for key, item in node.items()}
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, str) and _MARK in node:
            if node not in holes:
                raise _NotMirrored
            used.append(node)
            return holes[node]
        return node

    try:
        filled = fill(tree)
    except _NotMirrored:
        return None
    if sorted(used) != sorted(holes):  # each marker exactly once
        return None
    assert isinstance(filled, (dict, list))
    return filled


def _has_holes(node: Any) -> bool:
    if isinstance(node, _Hole):
        return True
    if isinstance(node, dict):
        return any(_has_holes(item) for item in node.values())
    if isinstance(node, list):
        return any(_has_holes(item) for item in node)
    return False


def _display_pays(tree: Any) -> bool:
    """Whether one dumps of a display beats a dumps per hole joined with the literal text.

    Measured (CPython 3.11): building a container costs about 2 units, each of
    its items 3, and each hole saves 7 (one ``dumps`` call and its share of the
    join). Constant sub-trees count as one item (a ready-made fragment).
    """
    containers = items = holes = 0

    def walk(node: Any) -> None:
        nonlocal containers, items, holes
        if isinstance(node, _Hole):
            holes += 1
        elif isinstance(node, (dict, list)) and _has_holes(node):
            containers += 1
            children = list(node.values()) if isinstance(node, dict) else node
            items += len(children)
            for child in children:
                walk(child)

    walk(tree)
    return 2 * containers + 3 * items <= 7 * holes


#: Above this many terms an expression is written as a call over a tuple: a chain of ``+`` nests one level
#: per term in the compiler's syntax tree, and thousands of references in one string would overflow its stack.
_FLAT_TERMS = 32


def _concatenation(terms: list[str]) -> str:
    if not terms:
        return "''"
    if len(terms) <= _FLAT_TERMS:
        return " + ".join(terms)
    return "''.join((" + ", ".join(terms) + ",))"


def _sum(terms: list[str]) -> str:
    if len(terms) <= _FLAT_TERMS:
        return " + ".join(terms)
    return "sum((" + ", ".join(terms) + ",))"


def generate_source(plan: PlanParts) -> str:
    """The Python source of the plan's generated render function (deterministic)."""
    writer = _Writer(plan)
    writer.fetch()
    url = writer.url(plan)
    headers = writer.headers(plan)
    body = writer.body(plan)
    writer.emit(f"url = {url}")
    writer.emit(f"headers = {headers}")
    if writer.dumps_text:
        writer.emit("try:")
        writer.emit(f"body = {body}", 2)
        writer.emit("except JSONEncodeError:  # a lone surrogate in a string: the careful renderer words it")
        writer.emit("raise Fallback from None", 2)
    else:
        writer.emit(f"body = {body}")
    # Size limits: anything near them is rare, so the careful renderer words the error.
    checks = []
    if not all(isinstance(part, str) for part in plan.url) or len("".join(map(str, plan.url))) > MAX_URL_LENGTH:
        checks.append(f"len(url) > {MAX_URL_LENGTH}")
    if writer.header_slots:
        static = sum(len(p) for h in plan.headers for p in h.name + h.value if isinstance(p, str))
        lengths = _sum([f"len({name})" for name in writer.header_slots])
        checks.append(f"{lengths} > {MAX_HEADERS_SIZE - static}")
    if plan.body is not None:
        checks.append(f"len(body) > {MAX_BODY_BYTES}")
    if checks:
        writer.emit(f"if {' or '.join(checks)}: raise Fallback")
    # tuple.__new__: no Python-level __new__ frame
    writer.emit(f"return tuple_new(RenderedRequest, ({plan.method!r}, url, headers, body))")
    return "".join(writer.constants) + "def render(v):\n" + "\n".join(writer.lines) + "\n"


def generate_render_function(plan: PlanParts) -> RenderFunction:
    """Compile the plan's generated render function; its tracebacks name ``<webhook-dsl plan SOURCE>``."""
    namespace = dict(_NAMESPACE)
    code = compile(generate_source(plan), f"<webhook-dsl plan {plan.source}>", "exec")
    exec(code, namespace)
    function: RenderFunction = namespace["render"]
    return function
