"""The dashboard in a real browser against the real binaries: sign-in, the Run button, live
logs with colours, the graph, the queue (drag, keyboard, a second browser), bulk cancel,
re-run and attempts, artifact search and download, what a viewer sees, CSRF."""

import hashlib
import json
import re

from playwright.sync_api import expect

from conftest import pipeline, screenshot, signed_in, wait_for


def waiting_pipeline(name):
    """A pipeline no runner can take: its jobs stay queued."""
    return pipeline(name, label="nobody")


def queued_ids(fabric, project):
    """The coordinator's order of the project's queued jobs, read through the CLI."""
    entries = json.loads(fabric.cli("queue", "list", "--json", "--limit", "1000"))["jobs"]
    return [entry["job"] for entry in entries if entry["status"] == "queued" and entry["project"] == project]


def finished(fabric, run):
    status, detail = fabric.api("GET", f"/runs/{run}")
    return detail["run"]["status"] in ("succeeded", "failed", "cancelled")


def test_run_button_live_log_with_colours_and_graph(admin_page, fabric):
    first, second = fabric.gate("colours-1"), fabric.gate("colours-2")
    fabric.push("web", f"""name: colours
jobs:
  build:
    labels: [linux]
    nodes:
      prepare:
        run: |
          echo "waiting for the test"
          for i in $(seq 1 1200); do [ -f {first} ] && break; sleep 0.05; done
          printf 'plain \\033[31mred text\\033[0m and \\033[1;32mbold green\\033[0m\\n'
      compile:
        needs: [prepare]
        run: |
          printf 'progress 10%%\\rprogress 50%%\\rprogress 100%%\\n'
          for i in $(seq 1 1200); do [ -f {second} ] && break; sleep 0.05; done
          echo compiled
""")
    page = admin_page
    page.goto(fabric.url + "/#/projects")
    page.get_by_role("button", name="Run a pipeline of web").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Pipeline", exact=True).select_option("colours")
    dialog.get_by_label("Branch", exact=True).fill("main")
    dialog.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"#/runs/\d+"))
    run = int(re.search(r"#/runs/(\d+)", page.url).group(1))

    prepare = page.locator("svg.graph .node[data-node=prepare]")
    compile_ = page.locator("svg.graph .node[data-node=compile]")
    expect(prepare).to_have_class(re.compile(r"status-running"), timeout=30_000)
    expect(compile_).to_have_class(re.compile(r"status-(queued|pending)"))
    # The running node's log is open, live.
    expect(page.locator(".log-lines")).to_contain_text("waiting for the test")
    first.touch()
    red = page.locator(".log-lines .line .tx span", has_text="red text")
    expect(red).to_be_visible()
    assert red.evaluate("e => getComputedStyle(e).color") == "rgb(224, 96, 96)"
    green = page.locator(".log-lines .line .tx span", has_text="bold green")
    assert green.evaluate("e => [getComputedStyle(e).color, getComputedStyle(e).fontWeight]") == ["rgb(0, 205, 0)", "700"]
    expect(prepare).to_have_class(re.compile(r"status-succeeded"))
    expect(compile_).to_have_class(re.compile(r"status-running"))
    screenshot(page, "run-live")

    # A click on a node opens its log: the carriage returns drew one line, as a terminal does.
    compile_.click()
    line = page.locator(".log-lines .line .tx", has_text="progress")
    expect(line).to_have_text("progress 100%")
    second.touch()
    expect(page.locator(".log-lines")).to_contain_text("compiled")
    expect(compile_).to_have_class(re.compile(r"status-succeeded"))
    expect(page.locator(".run-header h1 .status")).to_have_text("succeeded")
    # The colours stay after the run: the finished log, opened again.
    page.goto(fabric.url + f"/#/runs/{run}?job=build&node=prepare")
    expect(page.locator(".log-lines .line .tx span", has_text="red text")).to_have_css("color", "rgb(224, 96, 96)")
    expect(page.locator(".log-lines .line .ln").first).to_have_text("1")


def test_queue_drag_and_keyboard_moves_seen_by_a_second_browser(admin_page, browser, fabric):
    fabric.push("qmove", waiting_pipeline("wait"))
    runs = [fabric.trigger("qmove", "wait") for _ in range(5)]
    ids = wait_for(lambda: (lambda q: q if len(q) == 5 else None)(queued_ids(fabric, "qmove")), 30, "five queued jobs")
    page = admin_page
    other = signed_in(browser, fabric, fabric.admin_token)
    try:
        for p in (page, other):
            p.goto(fabric.url + "/#/queue")
            p.get_by_label("Project", exact=True).fill("qmove")
        rows = page.locator(".vlist .row.queued")
        expect(rows).to_have_count(5)
        last, top = ids[-1], ids[0]
        page.locator(f'.row[data-job="{last}"] .handle').drag_to(page.locator(f'.row[data-job="{top}"]'),
                                                                 target_position={"x": 200, "y": 4})
        wait_for(lambda: queued_ids(fabric, "qmove")[0] == last, 15, "the dragged job is first in the coordinator's queue")
        expect(other.locator(".vlist .row.queued").first).to_have_attribute("data-job", str(last))
        expect(rows.first).to_have_attribute("data-job", str(last))

        # The keyboard: the job at place 2 goes one down.
        second = queued_ids(fabric, "qmove")[1]
        handle = page.locator(f'.row[data-job="{second}"] .handle')
        handle.focus()
        handle.press("Alt+ArrowDown")
        wait_for(lambda: queued_ids(fabric, "qmove")[2] == second, 15, "the job moved by keys is third")
        expect(other.locator(".vlist .row.queued").nth(2)).to_have_attribute("data-job", str(second))
        expect(page.locator(f'.row[data-job="{second}"] .handle')).to_be_focused()
        screenshot(page, "queue")
    finally:
        other.context.close()
        for run in runs:
            fabric.api("POST", f"/runs/{run}/cancel")


def test_bulk_cancel_selected_and_matching_a_filter(admin_page, fabric):
    fabric.push("bulk", waiting_pipeline("wait"))
    fabric.push("bulk2", waiting_pipeline("wait"))
    selected_runs = [fabric.trigger("bulk", "wait") for _ in range(3)]
    kept = fabric.trigger("bulk", "wait")
    filtered_runs = [fabric.trigger("bulk2", "wait") for _ in range(4)]
    page = admin_page
    page.goto(fabric.url + "/#/queue")
    page.get_by_label("Project", exact=True).fill("bulk")
    expect(page.locator(".vlist .row.queued")).to_have_count(4)
    jobs = wait_for(lambda: (lambda q: q if len(q) == 4 else None)(queued_ids(fabric, "bulk")), 30, "four queued jobs")
    by_run = {}
    for entry in fabric.api("GET", "/queue?limit=10000")[1]["jobs"]:
        by_run[entry["run"]] = entry["job"]
    for run in selected_runs:
        page.locator(f'.row[data-job="{by_run[run]}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Cancel selected (3)").click()
    wait_for(lambda: all(fabric.api("GET", f"/runs/{r}")[1]["run"]["status"] == "cancelled" for r in selected_runs), 15,
             "the three selected runs are cancelled")
    assert fabric.api("GET", f"/runs/{kept}")[1]["run"]["status"] == "queued"
    expect(page.locator(".vlist .row.queued")).to_have_count(1)

    page.get_by_label("Project", exact=True).fill("bulk2")
    expect(page.locator(".vlist .row.queued")).to_have_count(4)
    page.get_by_role("button", name="Cancel all matching…").click()
    expect(page.locator(".confirm")).to_contain_text("This cancels 4 queued jobs (project bulk2)")
    screenshot(page, "queue-bulk-cancel")
    page.get_by_role("button", name="Cancel 4").click()
    wait_for(lambda: all(fabric.api("GET", f"/runs/{r}")[1]["run"]["status"] == "cancelled" for r in filtered_runs), 15,
             "every bulk2 run is cancelled")
    assert fabric.api("GET", f"/runs/{kept}")[1]["run"]["status"] == "queued"
    fabric.api("POST", f"/runs/{kept}/cancel")


def test_rerun_makes_attempt_2_and_attempt_1_stays_readable(admin_page, fabric):
    fabric.push("again", """name: twice
jobs:
  j:
    labels: [linux]
    nodes:
      say:
        run: echo "this is attempt $HEDDLE_ATTEMPT, nonce $(od -An -N6 -tx1 /dev/urandom | tr -d ' ')"
""")
    run = fabric.trigger("again", "twice")
    wait_for(lambda: finished(fabric, run), 60, "attempt 1 finished")
    page = admin_page
    page.goto(fabric.url + f"/#/runs/{run}")
    expect(page.locator(".log-lines")).to_contain_text("this is attempt 1")
    first_line = page.locator(".log-lines .line .tx").first.inner_text()
    page.get_by_role("button", name="Re-run").click()
    page.wait_for_url(re.compile(rf"#/runs/{run}\?attempt=2"))
    expect(page.locator(".run-header .trigger")).to_have_text("manual by admin-token")
    expect(page.locator(".run-header h1 .status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator(".log-lines")).to_contain_text("this is attempt 2")
    screenshot(page, "run-attempt-2")
    page.get_by_label("Attempt", exact=True).select_option("1")
    page.wait_for_url(re.compile(rf"#/runs/{run}\?attempt=1"))
    expect(page.locator(".log-lines .line .tx").first).to_have_text(first_line)
    # An earlier attempt has no Re-run (only the latest does).
    expect(page.get_by_role("button", name="Re-run")).to_have_count(0)


def test_artifacts_found_across_projects_by_name_and_sha256_and_downloaded(admin_page, fabric):
    content = "release notes for the browser test\n" * 100
    digest = hashlib.sha256(content.encode()).hexdigest()
    fabric.push("makers", f"""name: make
jobs:
  j:
    labels: [linux]
    nodes:
      write:
        run: |
          mkdir -p out
          yes 'release notes for the browser test' | head -n 100 > out/notes-7f3a.txt
        artifacts: ["out/*.txt"]
""")
    run = fabric.trigger("makers", "make")
    wait_for(lambda: finished(fabric, run), 60, "the run that makes the artifact finished")
    page = admin_page
    page.goto(fabric.url + "/#/artifacts")
    page.get_by_label("Name", exact=True).fill("notes-7f3a")
    page.get_by_role("button", name="Search").click()
    row = page.locator(".artifact-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("makers / make")
    screenshot(page, "artifacts")
    page.goto(fabric.url + "/#/artifacts")
    page.get_by_label("SHA-256", exact=True).fill(digest[:10])
    page.get_by_role("button", name="Search").click()
    expect(row).to_have_count(1)
    expect(row.locator(".name")).to_have_text("out/notes-7f3a.txt")
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    data = open(download.value.path(), "rb").read()
    assert hashlib.sha256(data).hexdigest() == digest
    assert download.value.suggested_filename == "notes-7f3a.txt"


def test_a_viewer_sees_no_action_and_the_api_refuses_it(viewer_page, fabric):
    fabric.push("viewing", waiting_pipeline("wait"))
    queued = fabric.trigger("viewing", "wait")
    fabric.push("viewing", pipeline("quick", run="echo done"), file_name="quick.act")
    done = fabric.trigger("viewing", "quick")
    wait_for(lambda: finished(fabric, done), 60, "the quick run finished")
    page = viewer_page
    page.goto(fabric.url + "/#/projects")
    expect(page.locator(".project[data-project=viewing]")).to_be_visible()
    expect(page.locator(".run-button")).to_have_count(0)
    page.goto(fabric.url + f"/#/runs/{done}")
    expect(page.locator(".run-header h1 .status")).to_have_text("succeeded")
    expect(page.get_by_role("button", name="Re-run")).to_have_count(0)
    page.goto(fabric.url + f"/#/runs/{queued}")
    expect(page.locator(".run-header h1 .status")).to_have_text("queued")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    page.goto(fabric.url + "/#/queue")
    expect(page.locator(f'.vlist .row[data-job]').first).to_be_visible()
    expect(page.locator(".handle")).to_have_count(0)
    expect(page.locator(".vlist input[type=checkbox]")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
    screenshot(page, "queue-viewer")
    # The API refuses anyway, with the session's own CSRF value.
    answer = page.evaluate("""async (run) => {
        const session = await (await fetch('/api/v1/session')).json();
        const response = await fetch(`/api/v1/runs/${run}/cancel`, {method: 'POST', headers: {'X-Heddle-CSRF': session.csrf}});
        return [response.status, (await response.json()).code];
    }""", queued)
    assert answer == [403, "permission_denied"]
    fabric.api("POST", f"/runs/{queued}/cancel")


def test_a_cookie_request_without_the_csrf_header_is_refused_and_sign_out_ends_the_session(admin_page, fabric):
    fabric.push("csrf", waiting_pipeline("wait"))
    run = fabric.trigger("csrf", "wait")
    page = admin_page
    answer = page.evaluate("""async (run) => {
        const response = await fetch(`/api/v1/runs/${run}/cancel`, {method: 'POST'});
        return [response.status, (await response.json()).code];
    }""", run)
    assert answer == [403, "permission_denied"]
    assert fabric.api("GET", f"/runs/{run}")[1]["run"]["status"] == "queued"
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "heddle_session")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token", exact=True)).to_be_visible()
    # The old cookie no longer opens anything, even sent again.
    page.context.add_cookies([session])
    status = page.evaluate("async () => (await fetch('/api/v1/runs')).status")
    assert status == 401
    fabric.api("POST", f"/runs/{run}/cancel")


def test_the_log_viewer_searches_links_lines_and_downloads_the_raw_bytes(admin_page, fabric):
    fabric.push("viewer-tools", pipeline("lines", run="for i in $(seq 1 300); do echo line $i; done; printf \"\\\\033[33mwarning: last\\\\033[0m\""))
    run = fabric.trigger("viewer-tools", "lines")
    wait_for(lambda: finished(fabric, run), 60, "the run finished")
    page = admin_page
    page.goto(fabric.url + f"/#/runs/{run}?job=j&node=n")
    lines = page.locator(".log-lines .line")
    # Opened at its end: the coordinator numbered the lines; only those in view are in the page.
    expect(lines.last.locator(".ln")).to_have_text("301")
    assert lines.count() < 120, lines.count()
    # The last line has no newline and keeps its colour.
    expect(lines.last.locator(".tx span")).to_have_css("color", "rgb(205, 205, 0)")
    # Search, over the whole log on the coordinator: the first match, then the next.
    search = page.get_by_label("Search the whole log")
    search.fill("line 15")
    search.press("Enter")
    expect(page.locator(".line.current-match .tx")).to_have_text("line 15")
    expect(page.locator(".match-count")).to_have_text("line 15 · 11 matching lines")  # 15, 150 to 159
    search.press("Enter")
    expect(page.locator(".line.current-match .tx")).to_have_text("line 150")
    # A line's link: its number in the address; opened again, that line is marked.
    page.locator(".log-lines .line.current-match .ln").click()
    assert "line=150" in page.url, page.url
    page.goto(fabric.url + "/#/runs")
    page.goto(fabric.url + f"/#/runs/{run}?job=j&node=n&line=150")
    expect(page.locator(".line.target .tx")).to_have_text("line 150")
    expect(page.locator(".line.target .ln")).to_have_text("150")
    # The older links by byte offset still open their line.
    offset = sum(len(f"line {i}\n") for i in range(1, 150))
    page.goto(fabric.url + "/#/runs")
    page.goto(fabric.url + f"/#/runs/{run}?job=j&node=n&at={offset + 2}")
    expect(page.locator(".line.target .tx")).to_have_text("line 150")
    # Times: each line with when it was written, remembered across pages.
    page.get_by_label("Times").check()
    expect(lines.first.locator(".ts")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    page.reload()
    expect(page.get_by_label("Times")).to_be_checked()
    page.get_by_label("Times").uncheck()
    # Jump to start and to end.
    page.get_by_role("button", name="Jump to start").click()
    expect(lines.first.locator(".ln")).to_have_text("1")
    expect(lines.first.locator(".tx")).to_have_text("line 1")
    page.get_by_role("button", name="Jump to end").click()
    expect(lines.last.locator(".ln")).to_have_text("301")
    # Raw: the bytes as the node wrote them.
    with page.expect_download() as download:
        page.get_by_role("link", name="Raw").click()
    raw = open(download.value.path(), "rb").read()
    assert raw == b"".join(f"line {i}\n".encode() for i in range(1, 301)) + b"\x1b[33mwarning: last\x1b[0m"


def test_the_run_page_shows_what_people_look_for(admin_page, fabric):
    gate = fabric.gate("run-page-fails")
    fabric.push("looks", f"""name: looks
jobs:
  build:
    labels: [linux]
    nodes:
      compile:
        run: |
          echo started
          for i in $(seq 1 1200); do [ -f {gate} ] && break; sleep 0.05; done
          echo "giving up"
          exit 3
  later:
    labels: [nowhere-to-run]
    nodes:
      n: {{ run: "true" }}
""")
    run = fabric.trigger("looks", "looks")
    page = admin_page
    page.goto(fabric.url + f"/#/runs/{run}?job=build&node=compile")
    expect(page.locator(".log-lines")).to_contain_text("started", timeout=30_000)
    # The status in the tab's title and icon.
    expect(page).to_have_title(re.compile(f"Run {run} running"))
    assert page.locator("link[rel=icon]").get_attribute("href").startswith("data:image/svg+xml")
    # Durations tick while running: the run's, the job's and the node's (table and graph).
    job_duration = page.locator("tr.job-row[data-job=build] .duration")
    first = job_duration.inner_text()
    wait_for(lambda: job_duration.inner_text() != first, 10, "the job's duration to tick")
    node_row = page.locator("tr.node-row[data-node=compile]")
    expect(node_row.locator(".duration")).not_to_have_text("")
    expect(page.locator("svg.graph .node[data-node=compile] .duration")).not_to_have_text("")
    # A queued job says why it waits.
    expect(page.locator("tr.job-row[data-job=later] .why")).to_contain_text("nowhere-to-run")
    # Keyboard focus on a graph node shows.
    node = page.locator("svg.graph .node[data-node=compile]")
    node.focus()
    assert node.locator("rect").evaluate("e => getComputedStyle(e).stroke") == "rgb(240, 165, 0)"
    # The coordinator out of reach: a banner, and an action that says so in words.
    page.route("**/healthz", lambda route: route.abort())
    page.route("**/api/v1/**", lambda route: route.abort())
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#unreachable")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("cannot be reached")
    page.unroute("**/api/v1/**")
    page.unroute("**/healthz")
    expect(page.locator("#unreachable")).to_be_hidden(timeout=10_000)
    # The failed node's log ends with its exit code and why.
    gate.touch()
    expect(page.locator(".log-lines .tx.ending")).to_contain_text("exit code 3", timeout=30_000)
    expect(page.locator(".log-lines .tx.ending")).to_contain_text("node 'compile' failed with exit code 3")
    screenshot(page, "run-page-failed-node")
    fabric.api("POST", f"/runs/{run}/cancel")


def test_every_page_fits_a_390_px_screen_and_the_dark_theme_follows_the_system(admin_page, fabric):
    fabric.push("narrow", waiting_pipeline("narrow-queue"))
    queued = fabric.trigger("narrow", "narrow-queue")
    fabric.push("narrow", pipeline("narrow-run", run="echo a fairly long line of output that is wider than a phone screen is, to scroll"))
    done = fabric.trigger("narrow", "narrow-run")
    wait_for(lambda: finished(fabric, done), 60, "the run finished")
    page = admin_page
    page.set_viewport_size({"width": 390, "height": 844})
    for address, name in [("#/projects", "projects"), ("#/runs", "runs"), (f"#/runs/{done}?job=j&node=n", "run"),
                          ("#/queue", "queue"), ("#/artifacts", "artifacts"), ("#/runners", "runners")]:
        page.goto(fabric.url + "/" + address)
        page.locator("main h1").first.wait_for()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{name}: the page is {width} px wide"
        sign_out = page.get_by_role("button", name="Sign out").bounding_box()
        assert sign_out and sign_out["x"] + sign_out["width"] <= 390, f"{name}: Sign out is off screen: {sign_out}"
        runners = page.get_by_role("link", name="Runners").bounding_box()
        assert runners and runners["y"] < 200, f"{name}: {runners}"
        screenshot(page, f"narrow-{name}")
    # The queue's rows keep the job's name.
    page.goto(fabric.url + "/#/queue")
    row = page.locator(".vlist .row", has_text="narrow-queue").first
    expect(row).to_be_visible()
    name = row.locator(".job-name")
    expect(name).to_have_text("j")
    box, cell = name.bounding_box(), row.locator(".what").bounding_box()
    assert box["x"] + box["width"] <= cell["x"] + cell["width"] and cell["x"] + cell["width"] <= 390, (box, cell)
    # Dark, when the system says so.
    page.emulate_media(color_scheme="dark")
    page.goto(fabric.url + f"/#/runs/{done}")
    page.locator("main h1").first.wait_for()
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    text = page.evaluate("() => getComputedStyle(document.body).color")
    assert background == "rgb(21, 23, 28)" and text == "rgb(230, 230, 230)", (background, text)
    screenshot(page, "narrow-dark-run")
    fabric.api("POST", f"/runs/{queued}/cancel")


def test_log_sections_fold_with_their_duration(admin_page, fabric):
    fabric.push("sections", """name: folds
jobs:
  j:
    labels: [linux]
    nodes:
      n:
        run: |
          echo '::group::Install deps'
          for i in $(seq 1 50); do echo install $i; done
          echo '::endgroup::'
          printf '\\033[0Ksection_start:1700000000:build[collapsed=true]\\r\\033[0KBuilding\\n'
          echo compiling
          printf '\\033[0Ksection_end:1700000042:build\\r\\033[0K\\n'
          echo '::group::Open one'
          echo inside
          echo '::endgroup::'
          echo after all
""")
    run = fabric.trigger("sections", "folds")
    wait_for(lambda: finished(fabric, run), 60, "the run finished")
    page = admin_page
    page.goto(fabric.url + f"/#/runs/{run}?job=j&node=n")
    rows = page.locator(".log-lines .line")
    install = page.locator(".line.section-start", has_text="Install deps")
    expect(install).to_be_visible()
    # Folded at first (a GitHub group; a GitLab section that asks to be), with its length.
    expect(install).to_contain_text("50 lines")
    expect(page.locator(".log-lines")).not_to_contain_text("install 25")
    build = page.locator(".line.section-start", has_text="Building")
    expect(build).to_contain_text("42 s")
    expect(page.locator(".log-lines")).not_to_contain_text("compiling")
    expect(rows.last.locator(".tx")).to_have_text("after all")
    # Unfolded by its toggle: its lines are back, numbered as in the log.
    install.get_by_role("button", name="Unfold Install deps").click()
    expect(page.locator(".log-lines .line", has_text="install 25").locator(".ln")).to_have_text("26")
    page.locator(".line.section-start", has_text="Install deps").get_by_role("button", name="Fold Install deps").click()
    expect(page.locator(".log-lines")).not_to_contain_text("install 25")
    # A link into a folded section unfolds it.
    page.goto(fabric.url + "/#/runs")
    page.goto(fabric.url + f"/#/runs/{run}?job=j&node=n&line=54")
    expect(page.locator(".line.target .tx")).to_have_text("compiling")
    screenshot(page, "log-sections")


def test_run_dialog_sets_the_pipelines_inputs(admin_page, fabric):
    fabric.push("web", """name: deploy
inputs:
  target: { default: staging, options: [staging, prod], description: Where to deploy }
  note: { default: "" }
jobs:
  ship:
    labels: [linux]
    nodes:
      go: { run: 'echo "deploying to $HEDDLE_INPUT_TARGET ($HEDDLE_INPUT_NOTE)"' }
""")
    page = admin_page
    page.goto(fabric.url + "/#/projects")
    page.get_by_role("button", name="Run a pipeline of web").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Pipeline", exact=True).select_option("deploy")
    target = dialog.get_by_label("Input target", exact=True)
    expect(target).to_have_value("staging")
    target.select_option("prod")
    dialog.get_by_label("Input note", exact=True).fill("from the browser")
    screenshot(page, "run-dialog-inputs")
    dialog.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"#/runs/\d+"))
    run = int(re.search(r"#/runs/(\d+)", page.url).group(1))
    expect(page.locator("dd.inputs")).to_have_text("note=from the browser target=prod")
    wait_for(lambda: finished(fabric, run), 60, "the run to finish")
    status, detail = fabric.api("GET", f"/runs/{run}")
    assert detail["run"]["inputs"] == {"target": "prod", "note": "from the browser"}
    assert detail["run"]["status"] == "succeeded"
    log = fabric.cli("logs", str(run))
    assert "deploying to prod (from the browser)" in log, log


def test_a_matrix_jobs_instances_are_grouped_in_the_graph(admin_page, fabric):
    fabric.push("web", """name: grid
jobs:
  test:
    matrix: { os: [debian, alpine], py: ["3.11", "3.12"] }
    labels: [linux]
    nodes:
      show: { run: 'echo "$HEDDLE_MATRIX_OS $HEDDLE_MATRIX_PY"' }
  lint:
    labels: [linux]
    nodes:
      check: { run: 'true' }
""")
    run = json.loads(fabric.cli("trigger", "web/grid", "--json"))["run"]
    wait_for(lambda: finished(fabric, run), 60, "the run to finish")
    page = admin_page
    page.goto(f"{fabric.url}/#/runs/{run}")
    group = page.locator("section.matrix-group[data-matrix=test]")
    expect(group.locator("h3")).to_have_text("test — matrix of 4")
    expect(group.locator("figure.job-graph")).to_have_count(4)
    assert group.locator("figure.job-graph").evaluate_all("fs => fs.map(f => f.dataset.job)") == [
        "test (debian, 3.11)", "test (debian, 3.12)", "test (alpine, 3.11)", "test (alpine, 3.12)"]
    expect(page.locator("figure.job-graph[data-job=lint]")).to_have_count(1)
    screenshot(page, "run-matrix")
    # A click on an instance's node opens its log.
    group.locator("figure.job-graph[data-job='test (alpine, 3.12)'] .node[data-node=show]").click()
    expect(page.locator(".log-lines")).to_contain_text("alpine 3.12")


def test_rerun_failed_jobs_carries_over_the_others(admin_page, fabric):
    fabric.push("again", """name: halfway
jobs:
  good:
    labels: [linux]
    nodes:
      n: { run: 'echo "good ran in attempt $HEDDLE_ATTEMPT"' }
  flaky:
    labels: [linux]
    nodes:
      n: { run: 'echo "flaky ran in attempt $HEDDLE_ATTEMPT"; [ "$HEDDLE_ATTEMPT" -ge 2 ]' }
""")
    run = fabric.trigger("again", "halfway")
    wait_for(lambda: finished(fabric, run), 60, "attempt 1 finished")
    page = admin_page
    page.goto(fabric.url + f"/#/runs/{run}")
    expect(page.locator(".run-header h1 .status")).to_have_text("failed")
    page.get_by_role("button", name="Re-run failed jobs").click()
    page.wait_for_url(re.compile(rf"#/runs/{run}\?attempt=2"))
    expect(page.locator(".run-header h1 .status")).to_have_text("succeeded", timeout=60_000)
    good = page.locator("tr.job-row[data-job=good]")
    expect(good).to_contain_text("carried over from attempt 1")
    screenshot(page, "run-rerun-failed")
    good.locator("xpath=following-sibling::tr[1]").get_by_role("link", name="n").click()
    expect(page.locator(".log-lines")).to_contain_text("good ran in attempt 1")
    # Nothing failed in attempt 2: no such button.
    expect(page.get_by_role("button", name="Re-run failed jobs")).to_have_count(0)


def test_the_project_page_lists_its_schedules_and_when_they_are_next_due(admin_page, fabric):
    fabric.push("timed", """name: nightly
on:
  schedule:
    - cron: "@yearly"
      timezone: Europe/Berlin
      branch: release
jobs:
  build:
    labels: [linux]
    nodes:
      make: { run: 'true' }
""")
    status, listed = fabric.api("GET", "/schedules?project=timed")
    assert status == 200 and len(listed["schedules"]) == 1, listed
    schedule = listed["schedules"][0]
    assert (schedule["cron"], schedule["timezone"], schedule["branch"]) == ("@yearly", "Europe/Berlin", "release")
    assert "lastRun" not in schedule and schedule["nextDue"].endswith("Z"), schedule
    page = admin_page
    page.goto(f"{fabric.url}/#/projects/timed")
    row = page.locator("table.schedules tbody tr[data-pipeline=nightly]")
    expect(row.locator("td")).to_have_text(["nightly", "@yearly", "Europe/Berlin", "release", re.compile(r"\d"), "not yet"])
    screenshot(page, "project-schedules")
    # The runs filter offers the schedule trigger.
    page.goto(f"{fabric.url}/#/runs")
    expect(page.get_by_label("Trigger")).to_contain_text("schedule")
