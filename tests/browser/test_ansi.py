"""The dashboard's ANSI renderer (ansi.js, in the browser) against the table of cases the
server's renderer is held to as well (Tests/Shared/ansi-cases.json, ANSISharedTableTests)."""

import json
from pathlib import Path

CASES = json.loads((Path(__file__).resolve().parents[2] / "Tests" / "Shared" / "ansi-cases.json").read_text())

RENDER = """async (cases) => {
  const { ANSIRenderer, declarations } = await import('/assets/ansi.js');
  return cases.map((test) => {
    const lines = [];
    const renderer = new ANSIRenderer((line) => lines.push(line));
    renderer.feed(test.input);
    if (renderer.current.chars.length > 0) lines.push(renderer.current);
    return lines.map((line) => {
      const runs = [];
      line.chars.forEach((ch, index) => {
        const css = declarations(line.styles[index]).map(([property, value]) => `${property}:${value}`).join(';');
        const last = runs[runs.length - 1];
        if (last && last[1] === css) last[0] += ch; else runs.push([ch, css]);
      });
      return runs;
    });
  });
}"""


def test_the_dashboard_renders_each_case_as_the_table_says(browser, fabric):
    assert len(CASES) >= 20
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(fabric.url + "/")
        rendered = page.evaluate(RENDER, CASES)
        for case, lines in zip(CASES, rendered):
            assert lines == case["lines"], case["name"]
    finally:
        context.close()


def test_every_text_colour_is_readable_on_the_log_background(browser, fabric):
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(fabric.url + "/")
        worst = page.evaluate("""async () => {
          const { ANSIRenderer, declarations, contrast } = await import('/assets/ansi.js');
          let worst = 99;
          for (let index = 0; index < 256; index += 1) {
            const renderer = new ANSIRenderer(() => {});
            renderer.feed(`\\x1b[38;5;${index}mx`);
            const colour = declarations(renderer.current.styles[0]).find(([property]) => property === 'color')[1];
            const [r, g, b] = [1, 3, 5].map((at) => parseInt(colour.slice(at, at + 2), 16));
            worst = Math.min(worst, contrast(r, g, b));
          }
          return worst;
        }""")
        assert worst >= 4.5, worst
    finally:
        context.close()
