"""Running the tool calls an LLM made: the SDKs' own call objects in, replies the SDKs' own types accept out.

Calls are built as each SDK builds them (``ChatCompletionMessageToolCall``, ``ResponseFunctionToolCall``,
``ToolUseBlock``...) or as plain dicts; replies are validated with pydantic's ``TypeAdapter`` against
``REPLY_TYPES``; the webhooks answer from a loopback stub. The README's three loops run here, word for
word, with each SDK's client against a scripted model (``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import anthropic.types
import httpx
import httpx2
import openai
import openai.types.chat
import openai.types.responses
import pytest
from openai.types.chat.chat_completion_message_function_tool_call import Function
from openai.types.responses.response_input_param import FunctionCallOutput
from pydantic import TypeAdapter
from starlette.testclient import TestClient

from tests.http_stub import Request, StubServer, response
from tests.service_support import StoreFactory, make_key, put_secrets, write_triggers
from tests.test_service import check
from webhook_dsl.runtime.calls import Runtime
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.runtime.dispatch import (
    ToolCall,
    ToolCallFormatError,
    read_tool_calls,
    run_tool_calls,
    run_tool_calls_sync,
)
from webhook_dsl.runtime.tools import tool_definitions
from webhook_dsl.runtime.trigger import Trigger, compile_trigger
from webhook_dsl.service.app import create_app
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.storage.base import SessionNotFound
from webhook_dsl.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ["127.0.0.0/8"]
FORMATS = ("openai", "openai-responses", "anthropic")

#: Each format's reply is checked against the SDK type of one reply and the union a request's input takes.
REPLY_TYPES: dict[str, tuple[Any, ...]] = {
    "openai": (openai.types.chat.ChatCompletionToolMessageParam, openai.types.chat.ChatCompletionMessageParam),
    "openai-responses": (FunctionCallOutput, openai.types.responses.ResponseInputItemParam),
    "anthropic": (anthropic.types.ToolResultBlockParam, anthropic.types.ContentBlockParam),
}
SDK_REPLY_TYPES_CHECKED = sum(map(len, REPLY_TYPES.values()))
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}

pytestmark = pytest.mark.usefixtures("each_event_loop")


def conforms(value: Any, sdk_type: Any) -> None:
    """``value`` is the SDK's type exactly: it validates, and comes back equal (no key ignored or coerced)."""
    adapter = _ADAPTERS.setdefault(sdk_type, TypeAdapter(sdk_type))
    # dumped, so that an Iterable field (validated lazily) is validated and compared item by item
    assert adapter.dump_python(adapter.validate_python(value), mode="json") == value, sdk_type


def test_six_sdk_reply_types_are_checked() -> None:
    assert SDK_REPLY_TYPES_CHECKED == 6


# -- the calls, as each SDK makes them ------------------------------------------------------------------------


def sdk_call(fmt: str, call_id: str, name: str, arguments: dict[str, Any] | str) -> Any:
    """One call as the SDK's own object; ``arguments`` as the model wrote them (text, for the OpenAI formats)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    if fmt == "openai":
        return openai.types.chat.ChatCompletionMessageToolCall(
            id=call_id, type="function", function=Function(name=name, arguments=text)
        )
    if fmt == "openai-responses":
        return openai.types.responses.ResponseFunctionToolCall(
            type="function_call", id=f"fc_{call_id}", call_id=call_id, name=name, arguments=text, status="completed"
        )
    assert isinstance(arguments, dict)
    return anthropic.types.ToolUseBlock(type="tool_use", id=call_id, name=name, input=arguments)


def reply_of(fmt: str, reply: Any) -> tuple[str, str, bool | None]:
    """A reply's call id, content and error flag (None where the format has none)."""
    for sdk_type in REPLY_TYPES[fmt]:
        conforms(reply, sdk_type)
    if fmt == "openai":
        assert set(reply) == {"role", "tool_call_id", "content"} and reply["role"] == "tool"
        return reply["tool_call_id"], reply["content"], None
    if fmt == "openai-responses":
        assert set(reply) == {"type", "call_id", "output"} and reply["type"] == "function_call_output"
        return reply["call_id"], reply["output"], None
    assert set(reply) == {"type", "tool_use_id", "content", "is_error"} and reply["type"] == "tool_result"
    return reply["tool_use_id"], reply["content"], reply["is_error"]


# -- a loopback API and a session ---------------------------------------------------------------------------


@dataclass
class Api:
    """The stub's bookkeeping: requests in flight now and at most."""

    delay: float = 0.0
    in_flight: int = 0
    most: int = 0
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: Request, writer: asyncio.StreamWriter) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.seen.append(request.target)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.target.startswith("/fail"):
                writer.write(response(500, {"error": "the API is down"}))
            else:
                writer.write(
                    response(200, {"target": request.target, "body": request.json() if request.body else None})
                )
        finally:
            self.in_flight -= 1


def triggers_for(port: int) -> dict[str, Trigger]:
    base = f"http://127.0.0.1:{port}"
    lookup = compile_trigger(
        {
            "name": "lookup",
            "description": "Look up an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
                "required": ["order_number"],
            },
            "webhook": {"url": f"{base}/orders/$order_number", "method": "GET"},
        }
    )
    create = compile_trigger(
        {
            "name": "create",
            "description": "Open a ticket.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "priority": {"type": "string", "enum": ["low", "high"]},
                },
                "required": ["title"],
            },
            "webhook": {"url": f"{base}/tickets", "method": "POST", "body": {"title": "$title"}},
        }
    )
    fail = compile_trigger(
        {"name": "fail", "description": "Always fails.", "webhook": {"url": f"{base}/fail", "method": "GET"}}
    )
    return {t.name: t for t in (lookup, create, fail)}


@dataclass
class World:
    runtime: Runtime
    triggers: dict[str, Trigger]
    api: Api
    store: SQLiteStore
    database: Path


@asynccontextmanager
async def world(tmp_path: Path, delay: float = 0.0) -> AsyncIterator[World]:
    api = Api(delay)
    database = tmp_path / "w.db"
    store = SQLiteStore(database)
    await store.put_session("S1", company_id="cmp_1", assistant_id="asst_1", client_data={})
    async with StubServer(api.handle) as stub, Runtime(store, allow_networks=LOOPBACK) as runtime:
        yield World(runtime, triggers_for(stub.port), api, store, database)
    await store.close()


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


# -- the three formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_calls_become_replies_the_sdk_accepts_in_order(tmp_path: Path, fmt: str) -> None:
    calls = [
        sdk_call(fmt, "c1", "lookup", {"order_number": "A-1"}),
        sdk_call(fmt, "c2", "create", {"title": "Jam"}),
        sdk_call(fmt, "c3", "fail", {}),
        sdk_call(fmt, "c4", "lookup", {"order_number": "B-22"}),
    ]

    async def main() -> list[Any]:
        async with world(tmp_path) as w:
            replies = await run_tool_calls(w.runtime, w.triggers, "S1", calls)
            logs = await w.store.logs("S1")
            assert [record["trigger"] for record in logs] and len(logs) == 4  # each call logged on the session
            return replies

    replies = [reply_of(fmt, reply) for reply in run(main())]
    assert [r[0] for r in replies] == ["c1", "c2", "c3", "c4"]
    assert replies[0][1].startswith('The tool "lookup" succeeded (HTTP 200 OK).')
    assert '"target":"/orders/A-1"' in replies[0][1] and '"target":"/orders/B-22"' in replies[3][1]
    assert '"body":{"title":"Jam"}' in replies[1][1]
    assert replies[2][1].startswith('The tool "fail" answered with an error status (HTTP 500')
    if fmt == "anthropic":
        assert [r[2] for r in replies] == [False, False, True, False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_plain_dicts_are_read_as_the_sdk_objects_are(tmp_path: Path, fmt: str) -> None:
    objects = [sdk_call(fmt, "c1", "lookup", {"order_number": "A-1"}), sdk_call(fmt, "c2", "nope", {})]
    dicts = [call.model_dump(mode="json", by_alias=True) for call in objects]
    assert read_tool_calls(objects) == read_tool_calls(dicts)

    async def main() -> tuple[list[Any], list[Any]]:
        async with world(tmp_path) as w:
            return (
                await run_tool_calls(w.runtime, w.triggers, "S1", objects),
                await run_tool_calls(w.runtime, w.triggers, "S1", dicts),
            )

    from_objects, from_dicts = run(main())
    assert from_objects == from_dicts


def test_items_that_are_not_trigger_calls_are_passed_over() -> None:
    reasoning = openai.types.responses.ResponseReasoningItem(id="rs_1", type="reasoning", summary=[])
    call = sdk_call("openai-responses", "c1", "lookup", {"order_number": "A-1"})
    assert [c.call_id for c in read_tool_calls([reasoning, call, {"type": "web_search_call", "id": "ws"}])] == ["c1"]
    text = anthropic.types.TextBlock(type="text", text="Let me look.")
    use = sdk_call("anthropic", "toolu_1", "lookup", {"order_number": "A-1"})
    assert read_tool_calls([text, use]) == [ToolCall("anthropic", "toolu_1", "lookup", {"order_number": "A-1"})]
    custom = {"id": "c9", "type": "custom", "custom": {"name": "grep", "input": "x"}}  # the app's own tool
    assert read_tool_calls([custom]) == []


# -- what the model got wrong is a reply ------------------------------------------------------------------------


MISTAKES: list[tuple[str, dict[str, Any] | str, str]] = [
    ("nope", {}, 'There is no tool "nope", so nothing was run. The tools you can call are: create, fail, lookup.'),
    (
        "lookup",
        '{"order_number": "A-1"',
        "its arguments are unusable: they are not valid JSON (Expecting ',' delimiter",
    ),
    ("lookup", "[1, 2]", "its arguments are unusable: they are an array, not a JSON object."),
    ("lookup", '"A-1"', "they are a string, not a JSON object"),
    ("lookup", '{"order_number": NaN}', "they are not valid JSON"),
    ("lookup", "[" * 40 + "]" * 40, "they are an array, not a JSON object"),
    ("lookup", '{"a":' * 40 + "1" + "}" * 40, "they nest deeper than 32 levels"),
    ("lookup", {"order_number": "bad"}, "its arguments are invalid (argument 'order_number': 'bad' does not match"),
    ("lookup", {}, "its arguments are invalid ('order_number' is a required property)"),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_tools_unusable_and_invalid_arguments_are_replies_the_model_can_act_on(
    tmp_path: Path, fmt: str
) -> None:
    cases = [(n, a, words) for n, a, words in MISTAKES if fmt != "anthropic" or isinstance(a, dict)]
    calls = [sdk_call(fmt, f"c{i}", name, arguments) for i, (name, arguments, _) in enumerate(cases)]
    calls.append(sdk_call(fmt, "ok", "lookup", {"order_number": "A-7"}))

    async def main() -> tuple[list[Any], list[str]]:
        async with world(tmp_path) as w:
            return await run_tool_calls(w.runtime, w.triggers, "S1", calls), w.api.seen

    replies, seen = run(main())
    assert seen == ["/orders/A-7"]  # nothing else reached the API
    for (name, _, words), reply in zip(cases, replies[:-1], strict=True):
        _, content, is_error = reply_of(fmt, reply)
        assert words in content, (name, content)
        assert is_error in (True, None)
    _, content, is_error = reply_of(fmt, replies[-1])
    assert "succeeded" in content and is_error in (False, None)
    if fmt != "anthropic":
        assert "Call it again with its arguments as one JSON object." in reply_of(fmt, replies[1])[1]
    assert "Ask the user" in reply_of(fmt, replies[-2])[1]  # schema failures: the runtime's own words


def test_empty_argument_text_is_no_arguments(tmp_path: Path) -> None:
    async def main() -> Any:
        async with world(tmp_path) as w:
            return await run_tool_calls(w.runtime, w.triggers, "S1", [sdk_call("openai", "c1", "fail", "")])

    (reply,) = run(main())
    assert reply["content"].startswith('The tool "fail" answered with an error status')


# -- strict tools' nulls ---------------------------------------------------------------------------------------


def test_the_nulls_a_strict_model_sends_for_arguments_not_given_are_dropped(tmp_path: Path) -> None:
    async def main() -> tuple[list[Any], list[str]]:
        async with world(tmp_path) as w:
            (tool,) = tool_definitions([w.triggers["create"]], "openai", strict=True)
            assert tool["function"]["parameters"]["required"] == ["title", "tags", "priority"]
            calls = [
                sdk_call("openai", "c1", "create", {"title": "Jam", "tags": None, "priority": None}),
                sdk_call("openai", "c2", "create", {"title": None, "tags": None, "priority": None}),
                sdk_call("openai", "c3", "create", {"title": "Jam", "tags": ["a"], "priority": "high"}),
            ]
            return await run_tool_calls(w.runtime, w.triggers, "S1", calls), w.api.seen

    replies, seen = run(main())
    assert "succeeded" in replies[0]["content"] and "succeeded" in replies[2]["content"]
    # a required argument sent as null is the model's mistake, told as what it sent
    assert "argument 'title': None is not of type 'string'" in replies[1]["content"]
    assert seen == ["/tickets", "/tickets"]


# -- concurrency -----------------------------------------------------------------------------------------------


def test_the_calls_of_one_turn_run_concurrently_and_come_back_in_order(tmp_path: Path) -> None:
    numbers = [f"A-{n}" for n in range(6)]
    calls = [sdk_call("anthropic", f"t{n}", "lookup", {"order_number": number}) for n, number in enumerate(numbers)]

    async def main() -> tuple[list[Any], int]:
        async with world(tmp_path, delay=0.3) as w:
            replies = await run_tool_calls(w.runtime, w.triggers, "S1", calls)
            return replies, w.api.most

    replies, most = run(main())
    assert most == len(calls)  # the API had all six in flight at once
    assert [r["tool_use_id"] for r in replies] == [f"t{n}" for n in range(6)]
    assert all(f'"target":"/orders/{number}"' in r["content"] for r, number in zip(replies, numbers, strict=True))


# -- what the caller got wrong raises ----------------------------------------------------------------------------


def test_several_formats_or_unknown_items_are_the_caller_s_mistake() -> None:
    chat = sdk_call("openai", "c1", "lookup", {"order_number": "A-1"})
    use = sdk_call("anthropic", "t1", "lookup", {"order_number": "A-1"})
    with pytest.raises(
        ToolCallFormatError,
        match="calls of several formats: an OpenAI chat tool call and, at item 1, an Anthropic tool_use block",
    ):
        read_tool_calls([chat, use])
    with pytest.raises(ToolCallFormatError, match="item 0 is not a tool call"):
        read_tool_calls([42])
    with pytest.raises(ToolCallFormatError, match="item 0 is not a tool call"):
        read_tool_calls([{"name": "lookup", "arguments": "{}"}])
    with pytest.raises(
        ToolCallFormatError, match="an OpenAI Responses function_call needs call_id, name and arguments"
    ):
        read_tool_calls([{"type": "function_call", "name": "lookup", "arguments": "{}"}])
    with pytest.raises(ToolCallFormatError, match=re.escape("an Anthropic tool_use block needs id, name and input")):
        read_tool_calls([{"type": "tool_use", "id": "t", "name": "lookup", "input": "{}"}])


def test_an_unknown_session_raises_whatever_the_calls(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            for calls in (
                [sdk_call("openai", "c1", "lookup", {"order_number": "A-1"})],
                [sdk_call("openai", "c", "nope", {})],
                [],
            ):
                with pytest.raises(SessionNotFound):
                    await run_tool_calls(w.runtime, w.triggers, "S404", calls)

    run(main())


# -- a catalog, and synchronous code ----------------------------------------------------------------------------


def test_a_catalog_gives_the_session_company_s_triggers(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        async with world(tmp_path) as w:
            own = {"create": w.triggers["create"]}
            catalog = TriggerCatalog(
                shared={"lookup": w.triggers["lookup"]}, companies={"cmp_1": own, "other": {"fail": w.triggers["fail"]}}
            )
            calls = [sdk_call("openai", "c1", "create", {"title": "T"}), sdk_call("openai", "c2", "fail", {})]
            return await run_tool_calls(w.runtime, catalog, "S1", calls)

    first, second = run(main())
    assert "succeeded" in first["content"]
    assert (
        second["content"] == 'There is no tool "fail", so nothing was run. The tools you can call are: create, lookup.'
    )


def test_run_tool_calls_sync(tmp_path: Path) -> None:
    async def prepare() -> None:  # the database and its session S1
        async with world(tmp_path):
            pass

    run(prepare())

    async def serve_and_call() -> Any:
        api = Api()
        async with StubServer(api.handle) as stub:
            triggers = triggers_for(stub.port)
            call = sdk_call("openai-responses", "c1", "lookup", {"order_number": "A-1"})
            return await asyncio.to_thread(
                run_tool_calls_sync, triggers, "S1", [call], database=str(tmp_path / "w.db"), allow_networks=LOOPBACK
            )

    (reply,) = run(serve_and_call())
    assert reply["call_id"] == "c1" and "succeeded" in reply["output"]


# -- the README's loops, with each SDK's client ------------------------------------------------------------------


def readme_loop(heading: str) -> str:
    """The ``ask`` function the README shows under ``### heading``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n### {heading}\n", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "async def ask(" in code
    return code


class ScriptedModel:
    """An LLM API that calls ``lookup`` once, then answers with text; records the requests it got."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        """An ``httpx`` request to an ``httpx`` response (OpenAI's SDK), or ``httpx2`` to ``httpx2`` (Anthropic's)."""
        body = json.loads(request.content)
        self.requests.append(body)
        first = len(self.requests) == 1
        arguments = {"order_number": "A-1"}
        if self.fmt == "openai":
            assert request.url.path == "/v1/chat/completions"
            message: dict[str, Any] = {"role": "assistant", "content": None if first else "It is on its way."}
            if first:
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps(arguments)},
                    }
                ]
            answer = {
                "id": "cc_1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4.1",
                "choices": [{"index": 0, "finish_reason": "tool_calls" if first else "stop", "message": message}],
            }
        elif self.fmt == "openai-responses":
            assert request.url.path == "/v1/responses"
            if first:
                output: list[dict[str, Any]] = [
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {
                        "type": "function_call",
                        "id": "fc_1",
                        "call_id": "call_1",
                        "name": "lookup",
                        "arguments": json.dumps(arguments),
                        "status": "completed",
                    },
                ]
            else:
                output = [
                    {
                        "type": "message",
                        "id": "msg_1",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "It is on its way.", "annotations": []}],
                    }
                ]
            answer = {
                "id": "resp_1",
                "object": "response",
                "created_at": 0,
                "model": "gpt-4.1",
                "status": "completed",
                "output": output,
            }
        else:
            assert request.url.path == "/v1/messages"
            content: list[dict[str, Any]] = [{"type": "text", "text": "Let me look." if first else "It is on its way."}]
            if first:
                content.append({"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": arguments})
            answer = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": content,
                "stop_reason": "tool_use" if first else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
        library = httpx2 if self.fmt == "anthropic" else httpx
        return library.Response(200, json=answer)


def client_for(fmt: str, model: ScriptedModel) -> Any:
    if fmt == "anthropic":
        http2 = httpx2.AsyncClient(transport=httpx2.MockTransport(model))
        return anthropic.AsyncAnthropic(api_key="test", base_url="http://llm.test", http_client=http2)
    http = httpx.AsyncClient(transport=httpx.MockTransport(model))
    return openai.AsyncOpenAI(api_key="test", base_url="http://llm.test/v1", http_client=http)


HEADINGS = {"openai": "OpenAI chat", "openai-responses": "OpenAI Responses", "anthropic": "Anthropic"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_readme_loop_runs_with_the_sdk_s_client(tmp_path: Path, fmt: str) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(readme_loop(HEADINGS[fmt]), f"README.md ### {HEADINGS[fmt]}", "exec"), namespace)
    ask: Callable[..., Awaitable[str]] = namespace["ask"]
    model = ScriptedModel(fmt)

    async def main() -> str:
        async with world(tmp_path) as w:
            client = client_for(fmt, model)
            try:
                answer = await ask(client, w.runtime, w.triggers, "S1", "Where is my order A-1?")
            finally:
                await client.close()
            assert w.api.seen == ["/orders/A-1"]
            first = model.requests[0]
            assert first["tools"] == json.loads(json.dumps(tool_definitions(w.triggers, fmt)))  # type: ignore[call-overload]
            return answer

    assert run(main()) == "It is on its way."
    second = model.requests[1]
    conversation = second["input"] if fmt == "openai-responses" else second["messages"]
    # what went back, item by item, is what the SDK's request types take (the union each item is one of)
    for item in conversation:
        if fmt == "anthropic":
            assert item["role"] in ("user", "assistant")
            for block in item["content"] if isinstance(item["content"], list) else ():
                conforms(block, REPLY_TYPES[fmt][1])
        else:
            conforms(item, REPLY_TYPES[fmt][1])
    if fmt == "openai":
        assistant, reply = conversation[1], conversation[2]
        assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
        assert reply["role"] == "tool" and reply["tool_call_id"] == "call_1"
        content = reply["content"]
    elif fmt == "openai-responses":
        assert [item.get("type") for item in conversation[1:]] == ["reasoning", "function_call", "function_call_output"]
        assert conversation[3]["call_id"] == "call_1"
        content = conversation[3]["output"]
    else:
        assert conversation[1]["role"] == "assistant" and conversation[1]["content"][1]["type"] == "tool_use"
        (result,) = conversation[2]["content"]
        assert result["tool_use_id"] == "toolu_1" and result["is_error"] is False
        content = result["content"]
    assert content.startswith('The tool "lookup" succeeded (HTTP 200 OK).')


# -- the service ----------------------------------------------------------------------------------------------

SECRET = "erp-SECRET-41d2c9"


@pytest.fixture
def service(tmp_path: Path, stand_in: int) -> Any:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    app = create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(max_body_bytes=64 * 1024, access_log=False),
        allow_networks=LOOPBACK,
    )
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        put_secrets(client, key, {"erp_token": SECRET})
        assert client.put("/session/S1", headers=auth, json={"client_data": {}}).status_code == 200
        yield client, auth


def post_calls(service: Any, body: Any, session: str = "S1") -> tuple[int, Any]:
    client, auth = service
    answer = client.post(f"/session/{session}/tool-calls", headers=auth, json=body)
    return answer.status_code, check(answer, "/session/{session_id}/tool-calls", "POST")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_service_runs_each_format(service: Any, fmt: str) -> None:
    calls = [
        sdk_call(fmt, "c1", "check_order", {"order_number": "A-1001"}).model_dump(mode="json", by_alias=True),
        sdk_call(fmt, "c2", "nope", {}).model_dump(mode="json", by_alias=True),
    ]
    status, body = post_calls(service, {"calls": calls})
    assert status == 200
    (first_id, first, _), (second_id, second, error) = (reply_of(fmt, r) for r in body["replies"])
    assert (first_id, second_id) == ("c1", "c2")
    assert first.startswith('The tool "check_order" succeeded (HTTP 200 OK).') and SECRET not in first
    assert second.startswith('There is no tool "nope"') and error in (True, None)


def test_the_service_refuses_what_is_not_one_turn_s_calls(service: Any) -> None:
    chat = sdk_call("openai", "c1", "check_order", {"order_number": "A-1"}).model_dump(mode="json")
    use = sdk_call("anthropic", "t1", "check_order", {"order_number": "A-1"}).model_dump(mode="json")
    for body, words in (
        ({"calls": [chat, use]}, "calls of several formats"),
        ({"calls": [7]}, "item 0 is not a tool call"),
        ({"calls": {}}, 'the body must be a JSON object {"calls": [...]}'),
        ({"calls": [], "extra": 1}, "unknown field"),
        ({"calls": [chat] * 129}, "at most 128 calls at once"),
    ):
        status, answer = post_calls(service, body)
        assert status == 400 and words in answer["error"]["message"], answer
    status, answer = post_calls(service, {"calls": [chat]}, session="S404")
    assert status == 404 and answer["error"]["code"] == "session_not_found"
    status, answer = post_calls(service, {"calls": []}, session="S404")
    assert status == 404
    assert post_calls(service, {"calls": []}) == (200, {"replies": []})


def test_the_trigger_endpoint_takes_arguments_as_json_text(service: Any) -> None:
    client, auth = service
    url = "/session/S1/triggers/check_order"
    answer = client.post(url, headers=auth, json={"arguments": '{"order_number": "A-1001"}'})
    result = check(answer, "/session/{session_id}/triggers/{name}", "POST")["result"]
    assert answer.status_code == 200 and result["ok"] and result["status"] == 200
    answer = client.post(url, headers=auth, json={"arguments": "{order_number: A-1001}"})
    body = check(answer, "/session/{session_id}/triggers/{name}", "POST")
    assert answer.status_code == 200 and body["result"]["category"] == "bad_arguments"
    assert body["result"]["ok"] is False and body["result"]["log_seq"] is None
    assert body["message_for_llm"].startswith('The tool "check_order" was not called: its arguments are unusable')
    logs = client.get("/session/S1/logs", headers=auth).json()["logs"]
    assert len(logs) == 1  # the refused one reached nothing, and is not logged
    answer = client.post("/session/S404/triggers/check_order", headers=auth, json={"arguments": "nope"})
    assert answer.status_code == 404
