"""Live pages through connections that break: a TCP proxy between the browser and the
coordinator cuts every connection while a log streams; the page must come back by itself and
show every byte once. Also the runs, projects (deliveries) and runners pages."""

import hashlib
import hmac
import json
import re
import socket
import threading
import urllib.request

from playwright.sync_api import expect

from conftest import pipeline, screenshot, signed_in, wait_for


class CuttingProxy:
    """Forwards 127.0.0.1:PORT (chosen by the OS) to the coordinator's HTTPS port, byte for
    byte (TLS passes through), and cuts every open connection on demand."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.open = []
        self.cuts = 0
        self.running = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    def pipe(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.cuts += 1

    def close(self):
        self.running = False
        self.server.close()
        self.cut()


def test_a_live_log_comes_back_after_its_connection_is_cut_with_every_byte_once(browser, fabric):
    gates = [fabric.gate(f"cut-{i}") for i in range(3)]
    fabric.push("cut", f"""name: cut
jobs:
  j:
    labels: [linux]
    nodes:
      talk:
        run: |
          for part in 0 1 2; do
            for i in $(seq 1 40); do echo "part $part line $i"; done
            gate={fabric.gates}/cut-$part
            for i in $(seq 1 1200); do [ -f $gate ] && break; sleep 0.05; done
          done
          echo "the end"
""")
    run = fabric.trigger("cut", "cut")
    proxy = CuttingProxy(int(fabric.url.rsplit(":", 1)[1]))
    page = signed_in(browser, fabric, fabric.admin_token, base=f"https://127.0.0.1:{proxy.port}")
    try:
        page.goto(f"https://127.0.0.1:{proxy.port}/#/runs/{run}?job=j&node=talk")
        text = page.locator(".log-lines .line .tx")
        expect(text.filter(has_text="part 0 line 40")).to_have_count(1, timeout=30_000)
        for part in range(3):
            proxy.cut()
            gates[part].touch()
            if part < 2:
                expect(text.filter(has_text=f"part {part + 1} line 40")).to_have_count(1, timeout=30_000)
        expect(text.filter(has_text="the end")).to_have_count(1, timeout=30_000)
        # Every line the viewer holds (it holds them all, this log being short), in order.
        lines = page.evaluate("() => document.querySelector('.logview').logView.loadedLines()")
        expected = [f"part {p} line {i}" for p in range(3) for i in range(1, 41)] + ["the end"]
        assert lines == expected, f"{len(lines)} lines, first differences: {[l for l in lines if l not in expected][:3]}"
        expect(page.locator("svg.graph .node[data-node=talk]")).to_have_class(re.compile("status-succeeded"), timeout=30_000)
        assert proxy.cuts == 3
    finally:
        page.context.close()
        proxy.close()


def test_runs_projects_and_runners_pages(admin_page, fabric):
    status, project = fabric.api("POST", "/projects", {"name": "hooked"})
    assert status == 201, project
    status, hook = fabric.api("POST", "/projects/hooked/webhook")
    assert status == 200, hook
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    signature = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{fabric.url}/hooks/hooked", data=body, method="POST", headers={
        "X-GitHub-Event": "ping", "X-GitHub-Delivery": "delivery-for-the-browser", "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=fabric.ssl, timeout=30) as response:
        assert response.status == 200
    fabric.push("hooked", pipeline("quick", run="echo hi"))
    run = fabric.trigger("hooked", "quick")
    page = admin_page
    page.goto(fabric.url + "/#/projects/hooked")
    expect(page.locator(".webhook-url")).to_have_text(f"{fabric.url}/hooks/hooked")
    expect(page.locator("table.deliveries")).to_contain_text("delivery-for-the-browser")
    expect(page.locator("table.deliveries")).to_contain_text("ping")
    screenshot(page, "project")

    page.goto(fabric.url + "/#/projects")
    last = page.locator('.project[data-project=hooked] tr[data-pipeline=quick] .last-runs a').first
    expect(last).to_have_attribute("href", f"#/runs/{run}")
    screenshot(page, "projects")

    page.goto(fabric.url + "/#/runs?project=hooked")
    row = page.locator(f'table.runs tr[data-run="{run}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".trigger")).to_have_text("manual by admin-token")
    screenshot(page, "runs")

    page.goto(fabric.url + "/#/runners")
    runner = page.locator('table.runners tr[data-runner="r1"]')
    expect(runner).to_contain_text("taking jobs")
    runner.get_by_role("button", name="Drain").click()
    expect(runner).to_contain_text("drained")
    assert fabric.api("GET", "/runners")[1]["runners"][0]["drained"] is True
    runner.get_by_role("button", name="Undrain").click()
    expect(runner).to_contain_text("taking jobs")
    assert fabric.api("GET", "/runners")[1]["runners"][0]["drained"] is False
