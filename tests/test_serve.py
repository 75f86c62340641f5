"""course_lib.serve: a real uvicorn server on 127.0.0.1 (a free port, a background thread) serving the tiny
stand-in chat model, talked to with the official openai client and with httpx: answers equal the
ChatModel's own, streaming, 8 concurrent requests, OpenAI-style 4xx errors, a clean shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest
from chat_helpers import tiny_chat_model, user

from course_lib.cli import main
from course_lib.serve import MAX_BODY_BYTES, BackgroundServer, PortInUseError, bind_socket, create_app

QUESTION = user("What is two plus two?")


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(create_app(tiny_chat_model(), default_max_tokens=16)) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference():
    return tiny_chat_model()  # the same weights as the served model, for answers computed here


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


# ------------------------------------------------------------------------------------------ the openai client


def test_openai_client_gets_the_models_answer(client, reference):
    r = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0)
    stream = reference.stream(QUESTION, 12, temperature=0)
    expected = "".join(stream)
    assert (r.object, r.model, r.id[:9]) == ("chat.completion", "tiny", "chatcmpl-")
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == stream.finish_reason
    assert r.usage.prompt_tokens == stream.prompt_tokens
    assert r.usage.completion_tokens == stream.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_client_streams_the_answer(client, reference):
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=QUESTION,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    stream = reference.stream(QUESTION, 20, temperature=0)
    assert "".join(deltas) == "".join(stream) and len(deltas) > 1
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == stream.finish_reason
    assert chunks[-1].usage.completion_tokens == stream.completion_tokens and not chunks[-1].choices


def test_seed_stop_and_default_length_reach_the_model(client, reference):
    kw = dict(model="tiny", messages=QUESTION, temperature=0.9, seed=7)
    sampled = client.chat.completions.create(max_tokens=25, **kw).choices[0].message.content
    assert sampled == reference.chat(QUESTION, 25, temperature=0.9, top_p=1.0, seed=7)
    stop = sampled[len(sampled) // 2 :][:3]
    r = client.chat.completions.create(max_tokens=25, stop=[stop], **kw)
    assert r.choices[0].message.content == sampled[: sampled.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0)  # no max_tokens
    assert r.usage.completion_tokens <= 16  # create_app(..., default_max_tokens=16)
    greedy = dict(model="tiny", messages=QUESTION, max_tokens=25, temperature=0)
    plain = client.chat.completions.create(**greedy).choices[0].message.content
    penalised = client.chat.completions.create(**greedy, extra_body={"repetition_penalty": 50.0})
    expected = reference.chat(QUESTION, 25, temperature=0, repetition_penalty=50.0)
    assert penalised.choices[0].message.content == expected != plain  # a random model's logits are small


def test_models_endpoint_lists_the_model(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_raw_event_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": QUESTION, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


# ------------------------------------------------------------------------------------------ concurrency


def test_eight_concurrent_requests_all_answered_while_the_server_stays_responsive(server, reference):
    prompts = [user(f"Hello {k}! How are you?") for k in range(8)]

    async def run() -> tuple[list[httpx.Response], list[float], float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            start = time.perf_counter()

            async def ask(messages):
                body = {"model": "tiny", "messages": messages, "max_tokens": 30, "temperature": 0}
                r = await c.post("/v1/chat/completions", json=body)
                return r, time.perf_counter() - start

            tasks = [asyncio.create_task(ask(m)) for m in prompts]
            await asyncio.sleep(0.05)
            assert (await c.get("/v1/models")).status_code == 200
            models_at = time.perf_counter() - start
            done = await asyncio.gather(*tasks)
            return [r for r, _ in done], [t for _, t in done], models_at

    responses, finished_at, models_at = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 8
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert answers == [reference.chat(m, 30, temperature=0) for m in prompts]  # no request saw another's
    assert models_at < max(finished_at), "GET /v1/models waited for the generations: the event loop blocked"


# ------------------------------------------------------------------------------------------ bad requests

GOOD = {"model": "tiny", "messages": QUESTION, "max_tokens": 4}


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b'{"model": "tiny", "messages": [', 400, "invalid_json"),
        ({**GOOD, "model": "gpt-17"}, 404, "model_not_found"),
        ({**GOOD, "max_tokens": 0}, 400, "invalid_value"),
        ({**GOOD, "temperature": -0.5}, 400, "invalid_value"),
        ({**GOOD, "repetition_penalty": 0}, 400, "invalid_value"),
        ({**GOOD, "messages": []}, 400, "invalid_value"),
        ({**GOOD, "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_value"),
        ({**GOOD, "messages": user("x" * MAX_BODY_BYTES)}, 413, "request_too_large"),
        ({**GOOD, "messages": user("the cat sat " * 300)}, 400, "context_length_exceeded"),
    ],
    ids=["malformed-json", "unknown-model", "max-tokens-0", "temperature<0", "penalty-0", "no-messages",
         "bad-role", "1MB-prompt", "over-context"],
)  # fmt: skip
def test_bad_requests_get_openai_style_errors_and_the_server_keeps_serving(server, body, status, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    r = httpx.post(server.url + "/v1/chat/completions", content=content, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    assert httpx.post(server.url + "/v1/chat/completions", json=GOOD, timeout=60).status_code == 200


def test_unknown_path_is_a_json_404(server):
    r = httpx.get(server.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_openai_client_raises_on_a_bad_request(client):
    with pytest.raises(openai.NotFoundError, match="'gpt-17' does not exist") as e:
        client.chat.completions.create(model="gpt-17", messages=QUESTION)
    assert e.value.code == "model_not_found"


# ------------------------------------------------------------------------------------------ start and stop


def test_server_shuts_down_cleanly():
    before = set(threading.enumerate())
    with BackgroundServer(create_app(tiny_chat_model())) as srv:
        body = {"model": "tiny", "messages": QUESTION, "max_tokens": 3}
        assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        port = srv.port
    assert not srv.thread.is_alive()
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker thread ends as the app's lifespan shuts it down
    assert not set(threading.enumerate()) - before, "threads left running"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_port_in_use_is_a_clear_error(capsys):
    with bind_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_socket("127.0.0.1", port)
        assert main(["serve", "--model", "smollm2", "--port", str(port)]) == 1  # fails before loading
    err = capsys.readouterr().err
    assert err.startswith(f"error: port {port} on 127.0.0.1 is already in use") and "Traceback" not in err
