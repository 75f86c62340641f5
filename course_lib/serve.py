"""An OpenAI-compatible HTTP server for a :class:`~course_lib.chat.ChatModel`.

    POST /v1/chat/completions   {"model", "messages", "max_tokens", "temperature", "top_p", "seed",
                                 "stop", "stream"} -> a chat.completion, or server-sent events
                                 (also "top_k" and "repetition_penalty", as llama.cpp and vLLM take)
    GET  /v1/models             the one model this server holds

Any OpenAI client can talk to it (``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")``).
Bad requests get a 4xx answer with OpenAI's error body ``{"error": {"message", "type", "code"}}``.
Generation is CPU-bound, so it runs on one worker thread that owns the model: requests queue for it
in order while the event loop stays free to accept, validate and stream.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from course_lib.chat import DEFAULT_STOP, ChatModel, ChatStream, PromptTooLongError, load_chat_model

MAX_BODY_BYTES = 1_000_000  # a larger request body is refused (413) before it is parsed
DEFAULT_MAX_TOKENS = 512  # answer length when a request sets neither max_tokens nor max_completion_tokens


# ----------------------------------------------------------------------------------------------------
# The request, as OpenAI defines it (the fields this server uses; others are accepted and ignored).


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False  # one more chunk, before [DONE], with the token counts


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)  # not in OpenAI's API; llama.cpp's servers take it too
    repetition_penalty: float = Field(1.0, gt=0.0)  # not in OpenAI's API; vLLM's takes it
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)  # one answer per request


class APIError(Exception):
    """An error answered with OpenAI's JSON error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


async def read_request(request: Request, limit: int = MAX_BODY_BYTES) -> ChatCompletionRequest:
    """The body, read up to ``limit`` bytes, parsed and validated; APIError otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(
            413, f"the request body has {declared} bytes; the limit is {limit}", "request_too_large"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is over the limit of {limit} bytes", "request_too_large")
    try:
        return ChatCompletionRequest.model_validate_json(bytes(body))
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {first['msg']}", "invalid_json") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise APIError(400, f"{where}: {first['msg']}", "invalid_value", param=where) from None


# ----------------------------------------------------------------------------------------------------
# The app.


def create_app(chat_model: ChatModel, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> FastAPI:
    """A FastAPI app serving ``chat_model`` under the model id ``chat_model.name``."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="course-lib-chat")  # owns the model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title=f"course_lib chat: {chat_model.name}", lifespan=lifespan)
    created = int(time.time())

    async def on_worker(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            worker, functools.partial(fn, *args, **kwargs)
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # 404 and 405 of routing
        return APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(e).__name__}: {e}").response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": chat_model.name, "object": "model", "created": created, "owned_by": "course_lib"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = await read_request(request)
        if req.model != chat_model.name:
            raise APIError(
                404,
                f"the model {req.model!r} does not exist here; this server serves {chat_model.name!r}",
                "model_not_found",
                param="model",
            )
        stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        try:
            stream: ChatStream = await on_worker(
                chat_model.stream,
                [{"role": m.role, "content": m.text()} for m in req.messages],
                max_new_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
                temperature=req.temperature,
                top_k=req.top_k,
                top_p=req.top_p,
                seed=req.seed,
                repetition_penalty=req.repetition_penalty,
                stop=(*DEFAULT_STOP, *stop),
            )
        except PromptTooLongError as e:
            raise APIError(400, str(e), "context_length_exceeded", param="messages") from None
        except ValueError as e:
            raise APIError(400, str(e), "invalid_value") from None
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": chat_model.name}
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            events = _events(head, _pieces(stream, worker), stream, usage)
            return StreamingResponse(events, media_type="text/event-stream")
        text = await on_worker(lambda: "".join(stream))
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": stream.finish_reason}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(stream)}

    return app


def _usage(stream: ChatStream) -> dict[str, int]:
    total = stream.prompt_tokens + stream.completion_tokens
    return {
        "prompt_tokens": stream.prompt_tokens,
        "completion_tokens": stream.completion_tokens,
        "total_tokens": total,
    }


async def _pieces(stream: ChatStream, worker: ThreadPoolExecutor) -> AsyncGenerator[str, None]:
    """The stream's text pieces, generated on the worker thread and handed over one by one.

    If the client goes away, the consumer stops, and the worker stops after its current token.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done, closed = object(), threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

    def produce() -> None:
        try:
            for piece in stream:
                if closed.is_set():
                    break
                put(piece)
            put(done)
        except Exception as e:  # handed to the event loop, which raises it in the response
            put(e)
        finally:
            stream.close()

    loop.run_in_executor(worker, produce)
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        closed.set()


async def _events(
    head: dict[str, Any], pieces: AsyncGenerator[str, None], stream: ChatStream, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, one chunk per text piece, a finish chunk, then [DONE]."""

    def chunk(delta: dict[str, str] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
        body = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in pieces:
            yield chunk({"content": piece})
    finally:  # also when the client went away: stop the generation
        await pieces.aclose()
    yield chunk({}, stream.finish_reason)
    if include_usage:
        yield chunk(None, usage=_usage(stream))
    yield "data: [DONE]\n\n"


# ----------------------------------------------------------------------------------------------------
# Running it.


class PortInUseError(OSError):
    """The address to listen on is taken (another server, or an earlier one still running)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. PortInUseError if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse the port
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use; stop what runs there or pick another --port"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class BackgroundServer:
    """Serve an app with uvicorn on a background thread (tests, notebooks)::

    with BackgroundServer(create_app(chat_model)) as server:
        httpx.get(server.url + "/v1/models")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> None:
        import uvicorn

        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.timeout = timeout
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"uvicorn-{self.port}", daemon=True
        )

    def start(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start within {self.timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to finish (open requests complete), wait for it, release the port."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(self.timeout)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now (the system picks it; another program could still take it)."""
    with bind_socket(host, 0) as sock:
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m course_lib serve`` as a child process, stopped however the block ends::

    with ServerProcess("smollm2") as server:      # a free port on 127.0.0.1
        httpx.post(server.url + "/v1/chat/completions", json={...})

    :meth:`start` refuses a port in use (PortInUseError) before starting anything, waits until
    ``GET /v1/models`` answers, and raises RuntimeError with the server's own error lines if it exits
    first or does not answer within ``timeout`` seconds; the process is then already stopped.
    """

    def __init__(
        self, model: str = "smollm2", host: str = "127.0.0.1", port: int = 0, timeout: float = 180.0
    ) -> None:
        self.model, self.host, self.timeout = model, host, timeout
        self.port = port
        self.process: Any = None
        self.log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerProcess:
        import subprocess
        import tempfile

        import httpx

        if self.port == 0:
            self.port = free_port(self.host)
        else:
            bind_socket(self.host, self.port).close()  # PortInUseError now, before any process starts
        self.log = tempfile.TemporaryFile()
        command = [sys.executable, "-m", "course_lib", "serve", "--model", self.model]
        command += ["--host", self.host, "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                output = self.output()
                self.stop()
                raise RuntimeError(f"the server exited with status {self.process.returncode}:\n{output}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not answer within {self.timeout} s")
            time.sleep(0.2)

    def output(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn finishes open requests and exits), then SIGKILL after ``timeout`` s."""
        import subprocess

        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self.log is not None:
            self.log.close()
            self.log = None


def serve(name: str, host: str = "127.0.0.1", port: int = 8000, device: Any = None) -> None:
    """Load the chat model ``name`` and serve it on http://host:port/v1 until Ctrl-C.

    The port is taken first, so a port in use fails at once (PortInUseError) without loading weights.
    """
    import uvicorn

    from course_lib.chat import CHAT_MODELS

    if name not in CHAT_MODELS:
        raise ValueError(f"unknown chat model {name!r}; known models are {sorted(CHAT_MODELS)}")
    sock = bind_socket(host, port)
    try:
        chat_model = load_chat_model(name, device)
        print(f"serving {name} at http://{host}:{port}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)
        uvicorn.Server(uvicorn.Config(create_app(chat_model), log_level="info")).run(sockets=[sock])
    finally:
        sock.close()


def serve_main(args: argparse.Namespace) -> int:
    """``python -m course_lib serve``: returns the exit status; errors are one ``error:`` line."""
    try:
        serve(args.model, args.host, args.port, args.device)
        return 0
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
