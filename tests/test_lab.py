"""The README's first command, `make lab`, starts JupyterLab serving the course (checked over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from course_lib.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "course-test-token"
FIRST = "chapters/01_background/01_what_makes_a_model_large.ipynb"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_make_lab_serves_the_course_on_loopback(tmp_path):
    if not (ROOT / ".venv" / "bin" / "jupyter").exists():
        pytest.skip("no .venv: run `make setup` first (make test does)")
    port = free_port()
    args = (
        f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --IdentityProvider.token={TOKEN} "
        "--ServerApp.port_retries=0 --LabApp.news_url=None "
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"
    )
    env = dict(
        os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg")
    )
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        status = None
        for _ in range(120):
            if proc.poll() is not None:
                break
            try:
                status = _get(f"{base}/api/status?token={TOKEN}")
                break
            except OSError:
                time.sleep(0.5)
        assert status is not None, "JupyterLab did not answer:\n" + (tmp_path / "lab.log").read_text()[-3000:]
        listing = _get(f"{base}/api/contents/{Path(FIRST).parent}?token={TOKEN}")
        names = {item["name"] for item in listing["content"]}
        assert Path(FIRST).name in names
        notebook = _get(f"{base}/api/contents/{FIRST}?token={TOKEN}")
        assert notebook["type"] == "notebook" and notebook["content"]["cells"]
        with urllib.request.urlopen(f"{base}/?token={TOKEN}", timeout=5) as r:  # opens at chapter 1
            assert r.status == 200 and f"/lab/tree/{FIRST}" in r.url and b"JupyterLab" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
