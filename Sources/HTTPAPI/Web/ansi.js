// Terminal output as a terminal shows it: SGR colours (16, 256 and 24-bit), bold, dim,
// italic, underline, inverse; a carriage return moves back to the start of the line, so a
// progress bar redrawn with \r shows its last state; a tab moves to the next multiple of 8
// columns; ESC[K erases (to the end, to the start, the whole line) and ESC[nG moves to column
// n. Other escape sequences and control characters are dropped. The same rules and the same
// styles as the server's HTML rendering (ANSIHTML.swift): both are held to one table of
// cases, Tests/Shared/ansi-cases.json.

// xterm's default palette, as the server's HTML rendering (ANSIHTML.swift) uses.
const palette16 = ['#000000', '#cd0000', '#00cd00', '#cdcd00', '#0000ee', '#cd00cd', '#00cdcd', '#e5e5e5',
  '#7f7f7f', '#ff0000', '#00ff00', '#ffff00', '#5c5cff', '#ff00ff', '#00ffff', '#ffffff'];

function hex(r, g, b) {
  return '#' + [r, g, b].map((n) => Math.max(0, Math.min(255, n)).toString(16).padStart(2, '0')).join('');
}

function color256(index) {
  if (index < 16) return palette16[index];
  if (index < 232) {
    const value = index - 16;
    const steps = [0, 95, 135, 175, 215, 255];
    return hex(steps[Math.floor(value / 36)], steps[Math.floor(value / 6) % 6], steps[value % 6]);
  }
  const grey = 8 + (index - 232) * 10;
  return hex(grey, grey, grey);
}

// The page's own colours, which an inverse without colours of its own swaps.
const defaultForeground = '#e5e5e5';
const defaultBackground = '#1e1e1e';

const plain = Object.freeze({ fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });

/// One line: its characters and, per character, the style it was written with.
export class Line {
  constructor() {
    this.chars = [];
    this.styles = [];
  }

  get text() { return this.chars.join(''); }
}

/// Feeds decoded text; completed lines go to `onLine(line)`, the line being written stays in
/// `current` (shown, and updated as more arrives).
export class ANSIRenderer {
  constructor(onLine) {
    this.onLine = onLine;
    this.style = plain;
    this.current = new Line();
    this.column = 0;
    this.pending = '';
  }

  feed(text) {
    text = this.pending + text;
    this.pending = '';
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === '\x1b') {
        if (i + 1 >= text.length) { this.pending = text.slice(i); return; }
        if (text[i + 1] === '[') {
          let j = i + 2;
          while (j < text.length && !(text.charCodeAt(j) >= 0x40 && text.charCodeAt(j) <= 0x7e)) j += 1;
          if (j >= text.length) {
            if (text.length - i > 64) { i = text.length; continue; } // not a sequence: dropped
            this.pending = text.slice(i);
            return;
          }
          this.csi(text.slice(i + 2, j), text[j]);
          i = j + 1;
        } else if (text[i + 1] === ']') {
          // OSC (window titles, links): up to BEL or ESC \, dropped.
          let j = i + 2;
          while (j < text.length && text[j] !== '\x07' && !(text[j] === '\x1b' && text[j + 1] === '\\')) j += 1;
          if (j >= text.length) {
            if (text.length - i > 4096) { i = text.length; continue; }
            this.pending = text.slice(i);
            return;
          }
          i = text[j] === '\x07' ? j + 1 : j + 2;
        } else {
          // ESC, intermediate bytes (ESC ( B), then one final byte: dropped.
          let j = i + 1;
          while (j < text.length && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x2f) j += 1;
          if (j >= text.length) { this.pending = text.slice(i); return; }
          i = j + 1;
        }
        continue;
      }
      if (ch === '\n') {
        this.onLine(this.current);
        this.current = new Line();
        this.column = 0;
      } else if (ch === '\r') {
        this.column = 0;
      } else if (ch === '\b') {
        this.column = Math.max(0, this.column - 1);
      } else if (ch === '\t') {
        const next = (Math.floor(this.column / 8) + 1) * 8;
        while (this.column < next) this.put(' ');
      } else if (ch.charCodeAt(0) >= 0x20 && ch.charCodeAt(0) !== 0x7f) {
        this.put(ch);
      }
      i += 1;
    }
  }

  put(ch) {
    const line = this.current;
    while (line.chars.length < this.column) { line.chars.push(' '); line.styles.push(plain); }
    line.chars[this.column] = ch;
    line.styles[this.column] = this.style;
    this.column += 1;
  }

  csi(parameters, final) {
    const first = parseInt(parameters.split(/[;:]/)[0], 10);
    if (final === 'K') {
      const mode = Number.isNaN(first) ? 0 : first;
      const line = this.current;
      if (mode === 0) {
        line.chars.length = Math.min(line.chars.length, this.column);
        line.styles.length = line.chars.length;
      } else if (mode === 1) {
        for (let k = 0; k <= this.column && k < line.chars.length; k += 1) { line.chars[k] = ' '; line.styles[k] = plain; }
      } else {
        line.chars = [];
        line.styles = [];
      }
      return;
    }
    if (final === 'G') { this.column = Math.max(0, (Number.isNaN(first) ? 1 : first) - 1); return; }
    if (final !== 'm') return;
    const codes = parameters === '' ? [0] : parameters.split(/[;:]/).map((part) => Number(part) || 0);
    const style = { ...this.style };
    for (let k = 0; k < codes.length; k += 1) {
      const code = codes[k];
      if (code === 0) Object.assign(style, plain);
      else if (code === 1) style.bold = true;
      else if (code === 2) style.dim = true;
      else if (code === 3) style.italic = true;
      else if (code === 4) style.underline = true;
      else if (code === 7) style.inverse = true;
      else if (code === 22) { style.bold = false; style.dim = false; }
      else if (code === 23) style.italic = false;
      else if (code === 24) style.underline = false;
      else if (code === 27) style.inverse = false;
      else if (code >= 30 && code <= 37) style.fg = code - 30;
      else if (code === 39) style.fg = null;
      else if (code >= 40 && code <= 47) style.bg = code - 40;
      else if (code === 49) style.bg = null;
      else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
      else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
      else if (code === 38 || code === 48) {
        const key = code === 38 ? 'fg' : 'bg';
        if (codes[k + 1] === 5 && k + 2 < codes.length) {
          style[key] = codes[k + 2] <= 255 ? codes[k + 2] : null;
          k += 2;
        } else if (codes[k + 1] === 2 && k + 4 < codes.length) {
          style[key] = hex(codes[k + 2], codes[k + 3], codes[k + 4]);
          k += 4;
        } else {
          style[key] = null;
          k = codes.length;  // malformed: the rest is ignored
        }
      }
    }
    this.style = Object.freeze(style);
  }
}

// Text colours are made readable on the log's background: a colour of less than 4.5:1
// contrast (WCAG AA) against it is mixed with white, a 32nd at a time, until it has that
// (ANSIHTML.swift does the same, so both renderers agree).
function luminance(r, g, b) {
  const linear = (c) => {
    const v = c / 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
}

const backgroundLuminance = luminance(0x1e, 0x1e, 0x1e);
const readableColours = new Map();

export function contrast(r, g, b) {
  const l = luminance(r, g, b);
  return (Math.max(l, backgroundLuminance) + 0.05) / (Math.min(l, backgroundLuminance) + 0.05);
}

export function readable(colour) {
  const known = readableColours.get(colour);
  if (known) return known;
  const r = parseInt(colour.slice(1, 3), 16);
  const g = parseInt(colour.slice(3, 5), 16);
  const b = parseInt(colour.slice(5, 7), 16);
  let result = '#ffffff';
  for (let k = 0; k <= 32; k += 1) {
    const mix = (c) => Math.round(c + (255 - c) * k / 32);
    if (contrast(mix(r), mix(g), mix(b)) >= 4.5) { result = hex(mix(r), mix(g), mix(b)); break; }
  }
  readableColours.set(colour, result);
  return result;
}

function cssColor(value) {
  if (value === null) return null;
  return typeof value === 'number' ? color256(value) : value;
}

/// A style's CSS, as [property, value] pairs in a fixed order (the server writes the same
/// declarations, in this order).
export function declarations(style) {
  let fg = cssColor(style.fg);
  let bg = cssColor(style.bg);
  if (style.inverse) [fg, bg] = [bg || defaultBackground, fg || defaultForeground];
  else if (fg) fg = readable(fg);
  const pairs = [];
  if (fg) pairs.push(['color', fg]);
  if (bg) pairs.push(['background-color', bg]);
  if (style.bold) pairs.push(['font-weight', 'bold']);
  if (style.dim) pairs.push(['opacity', '0.7']);
  if (style.italic) pairs.push(['font-style', 'italic']);
  if (style.underline) pairs.push(['text-decoration', 'underline']);
  return pairs;
}

/// A line's text as spans, one per run of characters in the same style (set through the DOM,
/// which the page's Content-Security-Policy allows).
export function renderLine(line, into) {
  into.replaceChildren();
  let start = 0;
  const { chars, styles } = line;
  while (start < chars.length) {
    let end = start + 1;
    while (end < chars.length && styles[end] === styles[start]) end += 1;
    const text = chars.slice(start, end).join('');
    const pairs = declarations(styles[start]);
    if (pairs.length === 0) {
      into.append(document.createTextNode(text));
    } else {
      const span = document.createElement('span');
      span.textContent = text;
      for (const [property, value] of pairs) span.style.setProperty(property, value);
      into.append(span);
    }
    start = end;
  }
}
