// A node's log as a virtual list of lines: only the lines in view (and a margin) are in the
// page, whatever the log's size. The coordinator numbers the lines (`?line=N&lines=M` reads
// any of them at once, `?at=OFFSET` finds the line holding a byte), so the viewer knows how
// many lines there are from the start, opens at the end, at a linked line (`line=` or the
// older `at=`) or at the start, and fetches pages of 1,000 lines as they scroll into view
// (the 40 used last are kept). A running node's new bytes come by Server-Sent Events from
// the byte the opening read ended at (resumed with Last-Event-ID after a drop: nothing lost,
// nothing twice); they are counted into lines as they come and parsed only when shown, so
// following a node that prints as fast as it can lays out only the rows on screen. Search
// runs on the coordinator over the whole log (plain text, or a regular expression).

import { ANSIRenderer, renderLine } from './ansi.js';
import { LiveStream, formatDuration, h } from './api.js';

const PAGE_LINES = 1000;
const KEPT_PAGES = 40;
const ROW = 18;            // px: the CSS gives every row this height
const MARGIN = 20;         // rows rendered above and below the view
const MAXIMUM_HEIGHT = 8000000;  // px: taller logs scroll in proportion

const latin1 = new TextDecoder('latin1');

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function concat(a, b) {
  if (a.length === 0) return b;
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a, 0);
  joined.set(b, a.length);
  return joined;
}

/// Up to 1,000 lines: their bytes, where each starts, and (once shown) the lines parsed.
class Page {
  /// `offset`: where its first byte is in the log; `times`: the time marks among its bytes
  /// (and the one in force at its start), as the coordinator sent them.
  constructor(bytes = new Uint8Array(), breaks = [], offset = 0, times = []) {
    this.bytes = bytes;
    this.offset = offset;
    this.times = times;
    this.starts = [0];
    this.breaks = breaks;  // positions where a dropped range ended a line
    for (let i = 0; i < bytes.length; i += 1) if (bytes[i] === 10 && i + 1 < bytes.length) this.starts.push(i + 1);
    this.parsed = null;
  }

  /// Lines in it (an unfinished last one counts).
  get count() {
    if (this.bytes.length === 0) return 0;
    return this.starts.length;
  }

  /// Lines ended by a newline.
  get ended() {
    if (this.bytes.length === 0) return 0;
    return this.bytes[this.bytes.length - 1] === 10 ? this.starts.length : this.starts.length - 1;
  }

  /// Its lines, parsed with their colours (each page from a plain style: a colour left open
  /// on an earlier page does not carry over).
  lines() {
    if (this.parsed) return this.parsed;
    const lines = [];
    const renderer = new ANSIRenderer((line) => lines.push(line));
    const decoder = new TextDecoder('utf-8');
    let from = 0;
    for (const at of [...this.breaks, this.bytes.length]) {
      renderer.feed(decoder.decode(this.bytes.subarray(from, at), { stream: true }));
      if (at < this.bytes.length && this.bytes[at - 1] !== 10) renderer.feed('\n');
      from = at;
    }
    renderer.feed(decoder.decode());
    if (renderer.current.chars.length > 0 || (this.bytes.length > 0 && this.bytes[this.bytes.length - 1] !== 10)) {
      lines.push(renderer.current);
    }
    this.parsed = lines;
    return lines;
  }
}

export class LogView {
  /// `url`: the node log's API path with its attempt; `live`: follow it while its job runs;
  /// `link(line)`: the address of a line; `line` or `at` (a byte offset): open there.
  constructor({ url, live, link, at, line, title, ending = '' }) {
    this.url = url;
    this.ending = ending;    // shown after the last line once the node ended (its exit code, why it failed)
    this.live = live;
    this.link = link;
    this.at = at;
    this.line = line;
    this.follow = live && at === undefined && line === undefined;
    this.total = 0;          // lines known
    this.pages = new Map();  // page index -> Page
    this.used = new Map();   // page index -> last use
    this.clock = 0;
    this.loading = new Set();
    this.tailPage = -1;      // the page live bytes go to
    this.target = null;      // the highlighted line
    this.matches = [];       // line numbers of the current search's matches, ascending
    this.matchIndex = -1;
    this.rows = [];
    this.liveMarks = [];     // time marks that came live (and those of the opening page)
    this.sections = [];      // {name, start, end, collapsed, durationMs}, from the coordinator
    this.folded = new Set(); // start lines of the sections shown folded
    this.hidden = [];        // [first, last] line ranges hidden by folds, in order
    this.showTimes = localStorage.getItem('heddle.log.times') === 'on';

    this.followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: this.follow, onchange: () => {
      this.follow = this.followBox.checked;
      if (this.follow) this.scrollToLine(this.total);
    } });
    this.searchBox = h('input', { type: 'search', id: 'log-search', placeholder: 'Search the whole log', 'aria-label': 'Search the whole log',
      onkeydown: (event) => {
        if (event.key === 'Enter') { event.preventDefault(); this.searchOrStep(event.shiftKey ? -1 : 1); }
      } });
    this.regexBox = h('input', { type: 'checkbox', id: 'log-regex', onchange: () => this.resetSearch() });
    this.caseBox = h('input', { type: 'checkbox', id: 'log-case', onchange: () => this.resetSearch() });
    this.timesBox = h('input', { type: 'checkbox', id: 'log-times', checked: this.showTimes, onchange: () => {
      this.showTimes = this.timesBox.checked;
      localStorage.setItem('heddle.log.times', this.showTimes ? 'on' : 'off');
      this.lines.classList.toggle('with-times', this.showTimes);
      for (const slot of this.rows) slot.shown = null;
      this.render();
    } });
    this.matchCount = h('span', { class: 'match-count', 'aria-live': 'polite' });
    this.status = h('span', { class: 'log-status', 'aria-live': 'polite' });
    this.spacer = h('div', { class: 'log-spacer' });
    this.window = h('div', { class: 'log-window' });
    this.lines = h('div', { class: 'log-lines', role: 'region', tabindex: '0', 'aria-label': title || 'Log',
      onscroll: () => this.scrolled() }, this.spacer, this.window);
    this.lines.classList.toggle('with-times', this.showTimes);
    this.empty = h('p', { class: 'log-empty' }, live ? 'No output yet.' : 'No output.');
    this.element = h('section', { class: 'logview' },
      h('div', { class: 'log-toolbar' },
        h('label', { for: 'log-follow', class: 'follow' }, this.followBox, ' Follow'),
        h('label', { for: 'log-times', title: 'When each line was written' }, this.timesBox, ' Times'),
        h('button', { type: 'button', class: 'jump-start', onclick: () => this.jump(1) }, 'Jump to start'),
        h('button', { type: 'button', class: 'jump-end', onclick: () => this.jump(this.total) }, 'Jump to end'),
        this.searchBox,
        h('label', { for: 'log-regex', title: 'A POSIX extended regular expression' }, this.regexBox, ' .*'),
        h('label', { for: 'log-case', title: 'Match case' }, this.caseBox, ' Aa'),
        h('button', { type: 'button', 'aria-label': 'Previous match', onclick: () => this.searchOrStep(-1) }, '↑'),
        h('button', { type: 'button', 'aria-label': 'Next match', onclick: () => this.searchOrStep(1) }, '↓'),
        this.matchCount,
        h('a', { href: url, download: '', class: 'raw' }, 'Raw'),
        this.status),
      this.empty,
      this.lines);
    this.element.logView = this;
  }

  /// The text of every line held in memory, in order, when they run from line 1 without a
  /// page missing (a short log, or a live one followed from its start); else null.
  loadedLines() {
    const texts = [];
    for (let index = 0; index <= this.tailPage; index += 1) {
      const page = this.pages.get(index);
      if (!page) return null;
      for (const line of page.lines()) texts.push(line.text);
    }
    return texts;
  }

  separator() { return this.url.includes('?') ? '&' : '?'; }

  async fetchLines(query) {
    const response = await fetch(`${this.url}${this.separator()}${query}`, { credentials: 'same-origin' });
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      throw new Error(problem?.detail || `the log answered ${response.status}`);
    }
    const header = (name) => Number(response.headers.get(name) || 0);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const gaps = (response.headers.get('Heddle-Gaps') || '').split(',').filter(Boolean).map((pair) => Number(pair.split(':')[0]));
    const times = (response.headers.get('Heddle-Times') || '').split(',').filter(Boolean)
      .map((pair) => { const [o, ms] = pair.split(':').map(Number); return { o, ms }; });
    return { bytes, gaps, times, offset: header('Heddle-Offset'), first: header('Heddle-Line'), count: header('Heddle-Line-Count'), lines: header('Heddle-Lines'),
      length: header('Heddle-Length'), finished: response.headers.get('Heddle-Finished') === 'true' };
  }

  async open() {
    // The log's size in lines, and its last page (with the bytes the live stream continues).
    const meta = await this.fetchLines('line=1&lines=0');
    this.total = meta.lines;
    let length = meta.length;
    if (this.total > 0) {
      const last = Math.floor((this.total - 1) / PAGE_LINES);
      const page = await this.fetchLines(`line=${last * PAGE_LINES + 1}&lines=${PAGE_LINES}`);
      this.store(last, new Page(page.bytes, page.gaps, page.offset, page.times));
      this.liveMarks = page.times.slice();
      this.total = Math.max(this.total, last * PAGE_LINES + page.count);
      length = page.length;
    }
    this.tailPage = Math.floor(Math.max(0, this.total - 1) / PAGE_LINES);
    this.empty.hidden = this.total > 0;
    this.layout();
    if (this.at !== undefined) {
      const found = await this.fetchLines(`at=${this.at}&lines=0`);
      this.reveal(found.first);
    } else if (this.line !== undefined) {
      this.reveal(Math.min(Math.max(1, this.line), Math.max(1, this.total)));
    } else if (this.follow || !this.live) {
      this.scrollToLine(this.total);
    }
    if (this.live) this.goLive(length);
    this.render();
    await this.loadSections({ first: true });
  }

  store(index, page) {
    this.pages.set(index, page);
    this.used.set(index, (this.clock += 1));
    if (this.pages.size > KEPT_PAGES) {
      let oldest = null;
      for (const [key, used] of this.used) {
        if (key === this.tailPage || (oldest !== null && used >= this.used.get(oldest))) continue;
        oldest = key;
      }
      if (oldest !== null) { this.pages.delete(oldest); this.used.delete(oldest); }
    }
  }

  goLive(from) {
    this.status.textContent = 'live';
    this.stream = new LiveStream(`${this.url}${this.separator()}offset=${from}`, {
      log: (data) => this.append(data),
    }, { onEnd: () => { this.status.textContent = 'finished'; this.loadSections(); },
      onError: () => { if (!this.stream.closed) this.status.textContent = 'reconnecting…'; },
      onOpen: () => { if (!this.stream.closed) this.status.textContent = 'live'; } });
  }

  /// Live bytes: counted into lines at once (a page holds 1,000, as the coordinator
  /// numbers them), parsed only when shown.
  append(data) {
    let bytes = base64Bytes(data.bytes);
    // A section marker came: the sections are read again (at most twice a second).
    if (/group::|section_(start|end):/.test(latin1.decode(bytes))) {
      clearTimeout(this.sectionsTimer);
      this.sectionsTimer = setTimeout(() => this.loadSections(), 500);
    }
    for (const [o, ms] of data.times || []) this.liveMarks.push({ o, ms });
    let page = this.pages.get(this.tailPage) || new Page(new Uint8Array(), [], data.offset);
    if (data.dropped && page.bytes.length && page.bytes[page.bytes.length - 1] !== 10) {
      bytes = concat(Uint8Array.of(10), bytes);  // a dropped range ends the line before it
    }
    let ended = page.ended;
    let from = 0;
    for (let i = 0; i < bytes.length; i += 1) {
      if (bytes[i] !== 10) continue;
      ended += 1;
      if (ended === PAGE_LINES) {
        const full = new Page(concat(page.bytes, bytes.subarray(from, i + 1)), page.breaks, page.offset, page.times);
        this.store(this.tailPage, full);
        this.tailPage += 1;
        page = new Page(new Uint8Array(), [], full.offset + full.bytes.length);
        ended = 0;
        from = i + 1;
      }
    }
    if (from < bytes.length) page = new Page(concat(page.bytes, bytes.subarray(from)), page.breaks, page.offset, page.times);
    this.store(this.tailPage, page);
    this.total = this.tailPage * PAGE_LINES + page.count;
    this.empty.hidden = this.total > 0;
    this.scheduleRender(true);
  }

  scheduleRender(grew = false) {
    if (grew) this.grew = true;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      if (this.grew) { this.grew = false; this.layout(); if (this.follow) this.scrollToRow(this.rowCount); }
      this.render();
    });
  }

  /// Rows: the lines, and the ending when there is one.
  get rowCount() { return this.total - this.hiddenCount() + (this.ending ? 1 : 0); }

  hiddenCount() { return this.hidden.reduce((sum, [a, b]) => sum + Math.min(b, this.total) - a + 1, 0); }

  /// The line shown at row `row` (1-based), folds skipped.
  rowToLine(row) {
    let line = row;
    for (const [a, b] of this.hidden) {
      if (a <= line) line += b - a + 1; else break;
    }
    return line;
  }

  /// The row that shows line `line` (its section's header when folded away).
  lineToRow(line) {
    let row = line;
    for (const [a, b] of this.hidden) {
      if (b < line) row -= b - a + 1;
      else if (a <= line) { row -= line - a + 1; break; } else break;
    }
    return row;
  }

  /// Hidden ranges from the folded sections (a folded one inside another folded one adds nothing).
  refold() {
    const ranges = this.sections.filter((section) => this.folded.has(section.start) && section.end)
      .map((section) => [section.start + 1, section.end]).sort((x, y) => x[0] - y[0]);
    const merged = [];
    for (const range of ranges) {
      const last = merged[merged.length - 1];
      if (last && range[0] <= last[1] + 1) last[1] = Math.max(last[1], range[1]); else merged.push([...range]);
    }
    this.hidden = merged;
  }

  /// Folds or unfolds a section, its header staying where it is on the screen.
  toggle(start) {
    const fromTop = this.lineToRow(start) - this.topRow();
    if (this.folded.has(start)) this.folded.delete(start); else this.folded.add(start);
    this.refold();
    this.layout();
    for (const slot of this.rows) slot.shown = null;
    this.scrollToTopRow(this.lineToRow(start) - fromTop);
  }

  scrollToTopRow(row) {
    const range = this.lines.scrollHeight - this.lines.clientHeight;
    const lines = Math.max(0, this.rowCount - this.visibleRows());
    this.lines.scrollTop = lines > 0 ? ((Math.min(Math.max(1, row), lines + 1) - 1) / lines) * range : 0;
    this.render();
  }

  /// Unfolds what hides `line`.
  unfoldTo(line) {
    let changed = false;
    for (const section of this.sections) {
      if (this.folded.has(section.start) && section.end && section.start < line && line <= section.end) {
        this.folded.delete(section.start);
        changed = true;
      }
    }
    if (changed) { this.refold(); this.layout(); for (const slot of this.rows) slot.shown = null; }
  }

  async loadSections({ first = false } = {}) {
    const base = this.url.replace(/\/log(\?|$)/, '/log/sections$1');
    const response = await fetch(base, { credentials: 'same-origin' }).catch(() => null);
    const answer = response?.ok ? await response.json().catch(() => null) : null;
    if (!answer) return;
    const known = new Set(this.sections.map((section) => `${section.start}:${section.end ?? ''}`));
    for (const section of answer.sections) {
      // Folded at first when it asks to be and is over; a fold the reader changed stays.
      const holdsTarget = this.target !== null && section.start < this.target && this.target <= (section.end ?? Infinity);
      if (!known.has(`${section.start}:${section.end ?? ''}`) && section.collapsed && section.end && !holdsTarget) {
        this.folded.add(section.start);
      }
    }
    this.sections = answer.sections;
    this.sectionAt = new Map(this.sections.map((section) => [section.start, section]));
    this.refold();
    this.layout();
    for (const slot of this.rows) slot.shown = null;
    if (this.follow) this.scrollToRow(this.rowCount);
    else if (this.target !== null && first) this.scrollToLine(this.target, { center: true });
    else if (!this.live && first && this.at === undefined && this.line === undefined) this.scrollToRow(this.rowCount);
    else this.render();
  }

  setEnding(text) {
    if (text === this.ending) return;
    this.ending = text;
    this.layout();
    if (this.follow) this.scrollToRow(this.rowCount); else this.render();
  }

  /// The spacer's height: a row per line, or, past what a page may be tall, in proportion.
  layout() {
    this.lines.style.setProperty('--ln-width', `${String(Math.max(this.total, 999)).length + 1}ch`);
    // As tall as its rows, up to 60 % of the window.
    this.lines.style.height = `min(60vh, ${Math.max(3, this.rowCount) * ROW + 8}px)`;
    const natural = this.rowCount * ROW;
    this.scale = natural > MAXIMUM_HEIGHT ? MAXIMUM_HEIGHT / natural : 1;
    this.spacer.style.height = `${Math.max(natural * this.scale, 0)}px`;
  }

  /// Rows that fit in the view.
  visibleRows() { return (this.lines.clientHeight || 400) / ROW; }

  /// The first line in view.
  topLine() { return this.rowToLine(Math.floor(this.topRow())); }

  /// The first row in view (1-based, fractional): the scroll position in proportion, so the
  /// end of the scroll range shows the last row however tall the log.
  topRow() {
    const range = this.lines.scrollHeight - this.lines.clientHeight;
    const lines = Math.max(0, this.rowCount - this.visibleRows());
    if (range <= 0 || lines <= 0) return 1;
    return 1 + (this.lines.scrollTop / range) * lines;
  }

  scrollToLine(line, options) { this.scrollToRow(this.lineToRow(line), options); }

  scrollToRow(line, { center = false } = {}) {
    const range = this.lines.scrollHeight - this.lines.clientHeight;
    const lines = Math.max(0, this.rowCount - this.visibleRows());
    let top = center ? line - this.visibleRows() / 2 : line - this.visibleRows() + 1;
    top = Math.min(Math.max(1, top), lines + 1);
    this.lines.scrollTop = lines > 0 ? ((top - 1) / lines) * range : 0;
    this.render();
  }

  jump(line) {
    if (line >= this.total && this.live && this.stream && !this.stream.closed) {
      this.follow = true;
      this.followBox.checked = true;
      this.scrollToRow(this.rowCount);
      return;
    }
    this.follow = false;
    this.followBox.checked = false;
    if (line <= 1) { this.lines.scrollTop = 0; this.render(); } else this.scrollToLine(line);
  }

  /// Shows line `line` in the middle of the view, highlighted.
  reveal(line) {
    this.unfoldTo(line);
    this.target = line;
    this.follow = false;
    this.followBox.checked = false;
    this.scrollToLine(line, { center: true });
  }

  scrolled() {
    const atEnd = this.lines.scrollHeight - this.lines.scrollTop - this.lines.clientHeight < ROW * 2;
    if (!atEnd && this.follow && this.live) {
      this.follow = false;
      this.followBox.checked = false;
    } else if (atEnd && !this.follow && this.live && this.stream && !this.stream.closed) {
      this.follow = true;
      this.followBox.checked = true;
    }
    this.scheduleRender();
  }

  async loadPage(index) {
    if (this.loading.has(index) || index < 0) return;
    this.loading.add(index);
    try {
      const page = await this.fetchLines(`line=${index * PAGE_LINES + 1}&lines=${PAGE_LINES}`);
      if (!this.pages.has(index)) this.store(index, new Page(page.bytes, page.gaps, page.offset, page.times));
    } catch (error) {
      this.status.textContent = error.message;
    } finally {
      this.loading.delete(index);
    }
    this.scheduleRender();
  }

  /// Puts the rows in view (and a margin) in the page; nothing else is.
  render() {
    const view = this.lines.clientHeight || 400;
    const top = this.topRow();
    const first = Math.max(1, Math.floor(top) - MARGIN);
    const last = Math.min(this.rowCount, Math.ceil(top + view / ROW) + MARGIN);
    // The window sits where the first rendered row is.
    const offset = (top - Math.floor(top)) * ROW;
    this.window.style.top = `${this.lines.scrollTop - offset - (Math.floor(top) - first) * ROW}px`;
    const wanted = Math.max(0, last - first + 1);
    while (this.rows.length < wanted) {
      const number = h('a', { class: 'ln', tabindex: '-1' });
      const stamp = h('span', { class: 'ts' });
      const text = h('span', { class: 'tx' });
      const row = h('div', { class: 'line' }, number, stamp, text);
      number.addEventListener('click', (event) => {
        event.preventDefault();
        const line = Number(row.dataset.line);
        history.replaceState(null, '', this.link(line));
        this.target = line;
        this.render();
      });
      this.rows.push({ row, number, stamp, text, shown: null });
      this.window.append(row);
    }
    while (this.rows.length > wanted) this.rows.pop().row.remove();
    for (let i = 0; i < this.rows.length; i += 1) {
      const slot = this.rows[i];
      const row = first + i;
      const line = row > this.rowCount - (this.ending ? 1 : 0) ? this.total + 1 : this.rowToLine(row);
      const index = Math.floor((line - 1) / PAGE_LINES);
      const page = this.pages.get(index);
      let key;
      if (line > this.total) {
        key = `ending:${this.ending}`;
        if (slot.shown !== key) {
          slot.number.textContent = '';
          slot.text.textContent = this.ending;
          slot.text.className = 'tx ending';
        }
      } else if (!page) {
        key = `${line}:loading`;
        if (slot.shown !== key) {
          slot.number.textContent = String(line);
          slot.text.textContent = '…';
          slot.text.className = 'tx loading';
        }
        this.loadPage(index);
      } else {
        this.used.set(index, (this.clock += 1));
        const lines = page.lines();
        const parsed = lines[line - 1 - index * PAGE_LINES];
        const section = this.sectionAt?.get(line);
        key = `${line}:${page.bytes.length}:${this.showTimes}:${section ? this.folded.has(line) : ''}`;
        if (slot.shown !== key) {
          slot.number.textContent = String(line);
          slot.text.className = 'tx';
          if (parsed) renderLine(parsed, slot.text); else slot.text.textContent = '';
          if (section) this.sectionHeader(slot, section);
          slot.stamp.textContent = this.showTimes ? this.timeOf(page, line - 1 - index * PAGE_LINES) : '';
        }
      }
      if (slot.shown !== key) {
        slot.row.dataset.line = String(line);
        slot.number.href = this.link(line);
        slot.shown = key;
      }
      slot.row.classList.toggle('section-start', !!this.sectionAt?.get(line));
      slot.row.classList.toggle('target', line === this.target);
      slot.row.classList.toggle('current-match', this.matches[this.matchIndex] === line);
      slot.row.classList.toggle('match', this.matchSet?.has(line) ?? false);
    }
  }

  /// A section's first line: a fold toggle, its name and how long it took, before the text.
  sectionHeader(slot, section) {
    const folded = this.folded.has(section.start);
    const name = section.name || 'section';
    const button = h('button', { type: 'button', class: 'fold', 'aria-expanded': String(!folded),
      'aria-label': `${folded ? 'Unfold' : 'Fold'} ${name}`, onclick: (event) => { event.stopPropagation(); this.toggle(section.start); } },
      folded ? '▸' : '▾');
    // GitHub's marker line shows as the section's name; GitLab's already shows its header.
    const github = /::group::/.test(slot.text.textContent);
    if (github) slot.text.replaceChildren(h('span', { class: 'section-name' }, name));
    const about = h('span', { class: 'section-about' }, github ? '' : ` ${name}`,
      section.durationMs !== undefined ? ` · ${formatDuration(section.durationMs)}` : (section.end ? '' : ' · running'),
      folded && section.end ? ` · ${Math.max(0, section.end - section.start - 1).toLocaleString()} lines` : '');
    slot.text.prepend(button);
    slot.text.append(about);
  }

  /// When line `i` of a page was written: the time mark in force at its first byte.
  timeOf(page, i) {
    const start = page.offset + (page.starts[i] ?? 0);
    // Both lists are in offset order: the last mark at or before the start, by halving.
    const before = (marks) => {
      let low = 0;
      let high = marks.length - 1;
      let best = null;
      while (low <= high) {
        const middle = (low + high) >> 1;
        if (marks[middle].o <= start) { best = marks[middle]; low = middle + 1; } else high = middle - 1;
      }
      return best;
    };
    const candidates = [before(page.times), before(this.liveMarks)].filter(Boolean);
    const found = candidates.sort((a, b) => b.o - a.o)[0];
    if (!found) return '';
    const date = new Date(found.ms);
    const two = (n) => String(n).padStart(2, '0');
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, '0')}`;
  }

  resetSearch() {
    this.matches = [];
    this.matchSet = null;
    this.matchIndex = -1;
    this.searched = null;
    this.matchCount.textContent = '';
    this.render();
  }

  /// Enter, ↓ or ↑: a new search over the whole log when the terms changed, else the next
  /// (or previous) match, asking the coordinator for more past the ones it gave.
  async searchOrStep(direction) {
    const text = this.searchBox.value;
    if (!text) { this.resetSearch(); return; }
    const terms = `${text}\u0000${this.regexBox.checked}\u0000${this.caseBox.checked}`;
    const current = this.matches[this.matchIndex] ?? Math.floor(this.topLine());
    if (this.searched !== terms) {
      // A new search: its first match in the log (↑: its last).
      this.searched = terms;
      this.matches = [];
      this.matchIndex = -1;
      await this.searchFrom(direction > 0 ? 1 : this.total + 1, direction);
      return;
    }
    const nextIndex = this.matchIndex + direction;
    if (nextIndex >= 0 && nextIndex < this.matches.length) {
      this.matchIndex = nextIndex;
      this.showMatch();
      return;
    }
    await this.searchFrom(direction > 0 ? current + 1 : current, direction);
  }

  async searchFrom(line, direction) {
    // Percent-encoded (the coordinator reads a + as a plus, as a regular expression means it).
    let params = `q=${encodeURIComponent(this.searchBox.value)}&from=${Math.max(1, line)}&limit=200`;
    if (this.regexBox.checked) params += '&regex=true';
    if (this.caseBox.checked) params += '&case=true';
    if (direction < 0) params += '&backward=true';
    const base = this.url.replace(/\/log(\?|$)/, '/log/search$1');
    this.matchCount.textContent = 'searching…';
    const started = performance.now();
    const response = await fetch(`${base}${base.includes('?') ? '&' : '?'}${params}`, { credentials: 'same-origin' });
    const answer = await response.json().catch(() => null);
    if (!response.ok || !answer) {
      this.matchCount.textContent = answer?.detail || `the search answered ${response.status}`;
      return;
    }
    this.lastSearchMs = performance.now() - started;
    this.total = Math.max(this.total, answer.searched);
    this.matchTotal = answer.total;
    if (answer.lines.length === 0) {
      this.matchCount.textContent = answer.total
        ? `${answer.total.toLocaleString()} matching lines; none ${direction > 0 ? 'after' : 'before'} this one`
        : `no match in ${answer.searched.toLocaleString()} lines`;
      this.render();
      return;
    }
    this.matches = answer.lines;
    this.matchSet = new Set(answer.lines);
    this.matchIndex = direction > 0 ? 0 : answer.lines.length - 1;
    this.showMatch();
  }

  showMatch() {
    const line = this.matches[this.matchIndex];
    this.matchCount.textContent = `line ${line.toLocaleString()} · ${(this.matchTotal ?? this.matches.length).toLocaleString()} matching lines`;
    this.target = line;
    this.follow = false;
    this.followBox.checked = false;
    this.scrollToLine(line, { center: true });
  }

  close() {
    this.stream?.close();
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}
