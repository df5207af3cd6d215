"""A real fabric for the dashboard's browser tests: the debug heddle-coordinator (with its
HTTP front on 127.0.0.1, port chosen by the OS), a heddle-runner, the heddle CLI, and
Debian's Chromium driven by Playwright. Every process started here is stopped here, by pid.

Environment: HEDDLE_BIN (the folder of the binaries), CHROMIUM (the browser), and
HEDDLE_TEST_OUTPUT (where screenshots go; test-output/ when absent)."""

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

BIN = Path(os.environ.get("HEDDLE_BIN", ".build/debug"))
OUTPUT = Path(os.environ.get("HEDDLE_TEST_OUTPUT", "test-output")) / "screenshots"


def pipeline(name, run="true", label="linux"):
    """An .act of one job with one node `n` that runs `run` on a runner labelled `label`."""
    return f"""name: {name}
jobs:
  j:
    labels: [{label}]
    nodes:
      n: {{ run: '{run}' }}
"""


def wait_for(predicate, timeout, what):
    """Polls `predicate` until it is true, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


class Fabric:
    def __init__(self, root: Path):
        self.root = root
        self.processes = []
        self.certs = root / "certs"
        self.gates = root / "gates"
        self.gates.mkdir()
        self.cli("certs", "init", "--dir", str(self.certs), env=False)
        self.cli("certs", "issue", "--dir", str(self.certs), "--role", "runner", "--name", "r1", env=False)
        out = root / "coordinator.out"
        self.coordinator = self.start(
            [BIN / "heddle-coordinator", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", root / "data",
             "--ca", self.certs / "ca.pem", "--cert", self.certs / "coordinator.pem", "--key", self.certs / "coordinator.key",
             "--heartbeat-interval", "1"], stdout=out, stderr=root / "coordinator.log")

        def listening():
            text = out.read_text() if out.exists() else ""
            if self.coordinator.poll() is not None:
                raise AssertionError("the coordinator exited: " + (root / "coordinator.log").read_text()[-2000:])
            lines = text.splitlines()
            binary = [l[len("listening on "):] for l in lines if l.startswith("listening on ")]
            http = [l[len("http listening on "):] for l in lines if l.startswith("http listening on ")]
            return (binary[0], http[0]) if binary and http else None

        self.address, self.url = wait_for(listening, 60, "the coordinator listens")
        self.ssl = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        self.admin_token = self.token("admin-token", "admin")
        self.viewer_token = self.token("viewer-token", "viewer")

    def env(self):
        return {**os.environ, "HEDDLE_COORDINATOR": self.address, "HEDDLE_CA": str(self.certs / "ca.pem"),
                "HEDDLE_CERT": str(self.certs / "admin.pem"), "HEDDLE_KEY": str(self.certs / "admin.key"), "NO_COLOR": "1"}

    def cli(self, *args, env=True, check=True):
        result = subprocess.run([str(BIN / "heddle"), *args], capture_output=True, text=True, timeout=60,
                                env=self.env() if env else os.environ)
        if check and result.returncode != 0:
            raise AssertionError(f"heddle {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def start(self, command, stdout, stderr):
        process = subprocess.Popen([str(part) for part in command], stdout=open(stdout, "w"), stderr=open(stderr, "w"))
        self.processes.append(process)
        return process

    def start_runner(self, name="r1", labels="linux", capacity=4):
        return self.start([BIN / "heddle-runner", "--coordinator", self.address, "--ca", self.certs / "ca.pem",
                           "--cert", self.certs / f"{name}.pem", "--key", self.certs / f"{name}.key",
                           "--labels", labels, "--capacity", str(capacity), "--work-dir", self.root / f"work-{name}",
                           # Nodes here wait for gate files the test writes under the host's /tmp,
                           # which a node's sandbox does not see (README, "The job sandbox").
                           "--isolation", "none"],
                          stdout=self.root / f"{name}.out", stderr=self.root / f"{name}.log")

    def token(self, name, role):
        out = self.cli("tokens", "create", "--name", name, "--role", role, "--json")
        return json.loads(out)["secret"]

    def api(self, method, path, body=None, token=None, headers=None):
        """A request to /api/v1 with a bearer token (the admin's when not given): (status, JSON or bytes)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, context=self.ssl, timeout=30) as response:
                raw = response.read()
                status = response.status
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            raw = error.read()
            status = error.code
            kind = error.headers.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in kind and raw else raw)

    def push(self, project, source, file_name="pipeline.act"):
        status, answer = self.api("POST", f"/projects/{project}/pipelines", {"source": source, "fileName": file_name})
        if status == 404:
            assert self.api("POST", "/projects", {"name": project})[0] == 201
            status, answer = self.api("POST", f"/projects/{project}/pipelines", {"source": source, "fileName": file_name})
        assert status in (200, 201), answer
        return answer

    def trigger(self, project, pipeline, branch="main"):
        status, answer = self.api("POST", f"/projects/{project}/pipelines/{pipeline}/runs", {"branch": branch})
        assert status == 201, answer
        return answer["run"]

    def gate(self, name):
        """A file a pipeline's node waits for (bounded): the test opens it when it wants the node to go on."""
        return self.gates / name

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def fabric():
    root = Path(tempfile.mkdtemp(prefix="heddle-browser."))
    fabric = Fabric(root)
    fabric.start_runner()
    wait_for(lambda: fabric.api("GET", "/runners")[1].get("runners"), 60, "the runner is connected")
    yield fabric
    fabric.stop()
    if os.environ.get("KEEP_BROWSER_TEST") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def signed_in(browser, fabric, token, base=None):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000},
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto((base or fabric.url) + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").wait_for()
    return page


@pytest.fixture
def admin_page(browser, fabric):
    page = signed_in(browser, fabric, fabric.admin_token)
    yield page
    page.context.close()


@pytest.fixture
def viewer_page(browser, fabric):
    page = signed_in(browser, fabric, fabric.viewer_token)
    yield page
    page.context.close()


def screenshot(page, name):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
