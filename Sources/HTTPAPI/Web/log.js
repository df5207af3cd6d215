// A node's log: opened at its tail (a Range request of the last 256 KiB, so a log of any
// size opens at once), earlier pages fetched on demand, live bytes by Server-Sent Events from
// the byte the tail ended at (the browser resumes with Last-Event-ID after a drop: nothing
// lost, nothing twice). Each line links to its byte offset; line numbers are shown once the
// start of the log is loaded (before that they are not known).

import { ANSIRenderer, renderLine } from './ansi.js';
import { LiveStream, h } from './api.js';

const PAGE = 256 * 1024;
const MAXIMUM_LINES = 50000;

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/// Renders bytes that start at a line start into line elements.
class Block {
  constructor(view, start) {
    this.view = view;
    this.start = start;
    this.element = h('div', { class: 'block' });
    this.decoder = new TextDecoder('utf-8');
    this.starts = [];
    this.lineStart = start;
    this.renderer = new ANSIRenderer((line) => this.finishLine(line));
    this.currentElement = null;
  }

  /// Bytes at `offset` (the block's end so far).
  feed(bytes, offset) {
    for (let i = 0; i < bytes.length; i += 1) if (bytes[i] === 10) this.starts.push(offset + i + 1);
    this.renderer.feed(this.decoder.decode(bytes, { stream: true }));
    this.showCurrent();
  }

  finishLine(line) {
    const element = this.currentElement || this.view.lineElement(this.lineStart);
    if (!this.currentElement) this.element.append(element);
    renderLine(line, element.lastChild);
    this.currentElement = null;
    this.lineStart = this.starts.shift();
  }

  showCurrent() {
    const line = this.renderer.current;
    if (line.chars.length === 0 && !this.currentElement) return;
    if (!this.currentElement) {
      this.currentElement = this.view.lineElement(this.lineStart);
      this.element.append(this.currentElement);
    }
    renderLine(line, this.currentElement.lastChild);
  }

  /// The end of a page: the last line, even without its newline.
  close() {
    this.renderer.feed(this.decoder.decode());
    if (this.renderer.current.chars.length > 0 || this.currentElement) this.finishLine(this.renderer.current);
  }
}

export class LogView {
  /// `url`: the node log's API path with its attempt; `live`: follow it while its job runs;
  /// `link(offset)`: the address of a line.
  constructor({ url, live, link, at, title }) {
    this.url = url;
    this.live = live;
    this.link = link;
    this.at = at;
    this.blocks = [];
    this.follow = live;
    this.matches = [];
    this.matchIndex = -1;

    this.followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: live, onchange: () => {
      this.follow = this.followBox.checked;
      if (this.follow) this.scrollToEnd();
    } });
    this.searchBox = h('input', { type: 'search', id: 'log-search', placeholder: 'Search the log', 'aria-label': 'Search the log',
      oninput: () => this.search(), onkeydown: (event) => {
        if (event.key === 'Enter') { event.preventDefault(); this.nextMatch(event.shiftKey ? -1 : 1); }
      } });
    this.matchCount = h('span', { class: 'match-count', 'aria-live': 'polite' });
    this.earlier = h('button', { type: 'button', class: 'earlier', hidden: true, onclick: () => this.loadEarlier() },
      'Load earlier');
    this.status = h('span', { class: 'log-status', 'aria-live': 'polite' });
    this.lines = h('div', { class: 'log-lines', role: 'region', tabindex: '0', 'aria-label': title || 'Log',
      onscroll: () => this.scrolled() });
    this.empty = h('p', { class: 'log-empty' }, live ? 'No output yet.' : 'No output.');
    this.element = h('section', { class: 'logview' },
      h('div', { class: 'log-toolbar' },
        h('label', { for: 'log-follow', class: 'follow' }, this.followBox, ' Follow'),
        this.searchBox,
        h('button', { type: 'button', 'aria-label': 'Previous match', onclick: () => this.nextMatch(-1) }, '↑'),
        h('button', { type: 'button', 'aria-label': 'Next match', onclick: () => this.nextMatch(1) }, '↓'),
        this.matchCount,
        h('a', { href: url, download: '', class: 'raw' }, 'Raw'),
        this.status),
      this.earlier,
      this.empty,
      this.lines);
  }

  lineElement(offset) {
    this.empty.hidden = true;
    const element = h('div', { class: 'line', dataset: { at: String(offset) } },
      h('a', { class: 'ln', href: this.link(offset), tabindex: '-1', onclick: (event) => {
        event.preventDefault();
        history.replaceState(null, '', this.link(offset));
        this.target(offset);
      } }),
      h('span', { class: 'tx' }));
    return element;
  }

  async open() {
    const response = await fetch(this.url, { headers: { Range: `bytes=-${PAGE}` }, credentials: 'same-origin' });
    let start = 0;
    let length = 0;
    let bytes = new Uint8Array();
    if (response.status === 206) {
      const match = /bytes (\d+)-(\d+)\/(\d+)/.exec(response.headers.get('Content-Range') || '');
      start = Number(match?.[1] || 0);
      length = Number(match?.[3] || 0);
      bytes = new Uint8Array(await response.arrayBuffer());
    } else if (response.status === 200) {
      bytes = new Uint8Array(await response.arrayBuffer());
      length = bytes.length;
    } else if (response.status !== 416) {
      const problem = await response.json().catch(() => null);
      throw new Error(problem?.detail || `the log answered ${response.status}`);
    }
    // A page that starts inside a line shows it from the next one.
    let skip = 0;
    if (start > 0) {
      const newline = bytes.indexOf(10);
      skip = newline < 0 ? bytes.length : newline + 1;
    }
    const block = new Block(this, start + skip);
    block.feed(bytes.subarray(skip), start + skip);
    this.blocks.push(block);
    this.lines.append(block.element);
    this.end = start + bytes.length;
    this.updateEarlier();
    this.number();
    if (this.at !== undefined) await this.reveal(this.at);
    else this.scrollToEnd();
    if (this.live) this.goLive(length);
  }

  goLive(from) {
    const separator = this.url.includes('?') ? '&' : '?';
    this.status.textContent = 'live';
    this.stream = new LiveStream(`${this.url}${separator}offset=${from}`, {
      log: (data) => this.append(data),
    }, { onEnd: () => { this.status.textContent = 'finished'; this.finish(); } });
  }

  append(data) {
    const block = this.blocks[this.blocks.length - 1];
    if (data.dropped) {
      block.close();
      block.lineStart = data.offset;
      const notice = h('div', { class: 'line dropped' }, h('span', { class: 'ln' }),
        h('span', { class: 'tx' }, `[… ${data.dropped} bytes dropped: the log passed its size limit …]`));
      block.element.append(notice);
    }
    const bytes = base64Bytes(data.bytes);
    block.feed(bytes, data.offset);
    this.end = data.offset + bytes.length;
    this.trim();
    this.number();
    if (this.follow) this.scrollToEnd();
    if (this.matches.length || this.searchBox.value) this.search({ keepPosition: true });
  }

  finish() {
    const block = this.blocks[this.blocks.length - 1];
    block?.close();
    this.number();
    if (this.follow) this.scrollToEnd();
  }

  /// Too many lines held (a long live log): the oldest go; "Load earlier" brings them back.
  trim() {
    const all = this.lines.querySelectorAll('.line[data-at]');
    if (all.length <= MAXIMUM_LINES) return;
    const drop = all.length - MAXIMUM_LINES + 10000;
    for (let i = 0; i < drop; i += 1) all[i].remove();
    const first = this.lines.querySelector('.line[data-at]');
    const removedBlocks = this.blocks.filter((block) => !block.element.querySelector('.line'));
    for (const block of removedBlocks) block.element.remove();
    this.blocks = this.blocks.filter((block) => !removedBlocks.includes(block));
    this.blocks[0].start = Number(first.dataset.at);
    this.blocks[0].trimmed = true;
    this.updateEarlier();
  }

  async loadEarlier() {
    const first = this.blocks[0];
    if (!first || first.start === 0) return;
    this.earlier.disabled = true;
    const from = Math.max(0, first.start - PAGE);
    const response = await fetch(this.url, { headers: { Range: `bytes=${from}-${first.start - 1}` }, credentials: 'same-origin' });
    let bytes = new Uint8Array(await response.arrayBuffer());
    if (!response.ok) { this.earlier.disabled = false; return; }
    let skip = 0;
    if (from > 0) {
      const newline = bytes.indexOf(10);
      skip = newline < 0 ? bytes.length : newline + 1;
    }
    bytes = bytes.subarray(skip);
    const block = new Block(this, from + skip);
    block.feed(bytes, from + skip);
    block.close();
    const height = this.lines.scrollHeight;
    const top = this.lines.scrollTop;
    this.blocks.unshift(block);
    this.lines.insertBefore(block.element, first.element);
    this.lines.scrollTop = top + (this.lines.scrollHeight - height);
    this.earlier.disabled = false;
    this.updateEarlier();
    this.numbered = 0;
    this.number();
  }

  updateEarlier() {
    const start = this.blocks[0]?.start ?? 0;
    this.earlier.hidden = start === 0;
    this.earlier.textContent = `Load earlier (${start.toLocaleString()} bytes before)`;
  }

  /// Line numbers, once the log's first byte is loaded.
  number() {
    if (this.blocks[0]?.start !== 0 || this.blocks[0]?.trimmed) return;
    const lines = this.lines.querySelectorAll('.line[data-at] > .ln');
    for (let i = this.numbered || 0; i < lines.length; i += 1) lines[i].textContent = String(i + 1);
    this.numbered = Math.max(0, lines.length - 1); // the last line may still change
  }

  async reveal(offset) {
    while (this.blocks[0].start > offset) {
      const before = this.blocks[0].start;
      await this.loadEarlier();
      if (this.blocks[0].start === before) break;
    }
    this.target(offset);
  }

  target(offset) {
    this.lines.querySelector('.line.target')?.classList.remove('target');
    let found = null;
    for (const line of this.lines.querySelectorAll('.line[data-at]')) {
      if (Number(line.dataset.at) > offset) break;
      found = line;
    }
    if (!found) return;
    found.classList.add('target');
    this.follow = false;
    this.followBox.checked = false;
    found.scrollIntoView({ block: 'center' });
  }

  scrollToEnd() {
    this.lines.scrollTop = this.lines.scrollHeight;
  }

  scrolled() {
    const atEnd = this.lines.scrollHeight - this.lines.scrollTop - this.lines.clientHeight < 30;
    if (!atEnd && this.follow && this.live) {
      this.follow = false;
      this.followBox.checked = false;
    } else if (atEnd && !this.follow && this.live && this.stream && !this.stream.closed) {
      this.follow = true;
      this.followBox.checked = true;
    }
  }

  search({ keepPosition = false } = {}) {
    const term = this.searchBox.value.toLowerCase();
    for (const line of this.matches) line.classList.remove('match', 'current-match');
    this.matches = [];
    if (!term) { this.matchCount.textContent = ''; this.matchIndex = -1; return; }
    for (const line of this.lines.querySelectorAll('.line')) {
      if (line.lastChild.textContent.toLowerCase().includes(term)) {
        line.classList.add('match');
        this.matches.push(line);
      }
    }
    if (!keepPosition) this.matchIndex = -1;
    this.matchCount.textContent = this.matches.length ? `${this.matches.length} lines` : 'no match in the loaded lines';
  }

  nextMatch(direction) {
    if (!this.matches.length) return;
    this.matches[this.matchIndex]?.classList.remove('current-match');
    this.matchIndex = (this.matchIndex + direction + this.matches.length) % this.matches.length;
    const line = this.matches[this.matchIndex];
    line.classList.add('current-match');
    this.follow = false;
    this.followBox.checked = false;
    line.scrollIntoView({ block: 'center' });
    this.matchCount.textContent = `${this.matchIndex + 1} of ${this.matches.length} lines`;
  }

  close() {
    this.stream?.close();
  }
}
