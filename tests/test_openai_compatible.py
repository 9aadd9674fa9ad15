"""The production generator option, `openai_compatible`, against a local stand-in that speaks
OpenAI's chat-completions API on 127.0.0.1. The stand-in is this test's own (a hosted model
cannot be reached from here); behind it the real SmolLM2 generates, so the answers are real."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shipway.data.help_centre import generate
from shipway.errors import BadGateway, PolicyError
from shipway.processes import free_port
from shipway.serving.assistant import Application, GeneratorSpec
from shipway.serving.generation import local_generator, smollm2_path
from tests.test_applications import settings

pytestmark = pytest.mark.integration

KEY_ENV = "SHIPWAY_TEST_LLM_KEY"
KEY = "sk-test-123"


def _stand_in(delay: dict[str, float]) -> Starlette:
    model = local_generator(smollm2_path())

    async def completions(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        body = await request.json()
        await asyncio.sleep(delay["seconds"])
        out = model.generate(body["messages"], int(body["max_tokens"]), 30.0)
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": out.prompt_tokens,
                          "completion_tokens": out.completion_tokens,
                          "total_tokens": out.tokens},
            }
        )  # fmt: skip

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, dict[str, float]]]:
    delay = {"seconds": 0.0}
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_stand_in(delay), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", delay
    server.should_exit = True
    thread.join(timeout=10)


def _app(base_url: str) -> Application:
    spec = GeneratorSpec("openai_compatible", "smollm2-135m-instruct", base_url, KEY_ENV)
    return Application(replace(settings(), generator=spec), generate().documents)


def test_an_openai_compatible_generator_answers_like_the_local_one(
    stand_in: tuple[str, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    question = "What is my daily cash withdrawal limit at ATMs?"
    remote = _app(stand_in[0]).answer(question, "public")
    local = Application(settings(), generate().documents).answer(question, "public")
    assert remote.answer == local.answer and not remote.fell_back
    assert remote.prompt_tokens == local.prompt_tokens > 0


def test_a_slow_remote_generator_falls_back_and_a_failing_one_is_named(
    stand_in: tuple[str, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, delay = stand_in
    app = _app(base_url)
    app = Application(replace(app.settings, timeout_seconds=0.5), generate().documents)
    monkeypatch.setenv(KEY_ENV, KEY)
    delay["seconds"] = 2.0
    try:
        slow = app.answer("What is my daily cash withdrawal limit at ATMs?", "public")
    finally:
        delay["seconds"] = 0.0
    assert slow.fell_back and slow.answer == app.settings.fallback_answer
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(BadGateway, match=r"generator smollm2-135m-instruct at .*: HTTP 401"):
        app.answer("What is my daily cash withdrawal limit at ATMs?", "public")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(PolicyError, match=f"environment variable {KEY_ENV} is not set"):
        app.answer("What is my daily cash withdrawal limit at ATMs?", "public")
