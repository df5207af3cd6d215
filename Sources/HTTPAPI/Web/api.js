// The dashboard's only way to the coordinator: the documented /api/v1, signed in by the
// session cookie, with the CSRF value on every request that changes something.

let session = null;
const signedOutListeners = [];

export function currentSession() { return session; }
export function setSession(value) { session = value; }
export function onSignedOut(listener) { signedOutListeners.push(listener); }

/// The session ended (signed out elsewhere, expired, token revoked): the page signs in again.
function endSession() {
  if (!session) return;
  session = null;
  signedOutListeners.forEach((listener) => listener());
}

export class APIError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `the coordinator answered ${status}`);
    this.status = status;
    this.code = problem?.code || '';
    this.field = problem?.field;
  }
}

/// A JSON request under /api/v1. Problems become APIError with the coordinator's sentence.
/// A banner while the coordinator cannot be reached: shown when a request or a stream fails
/// for want of an answer, checked every 3 s (`/healthz`), gone once it answers.
let unreachableSince = null;
let probe = null;

function banner() {
  let element = document.getElementById('unreachable');
  if (!element) {
    element = document.createElement('div');
    element.id = 'unreachable';
    element.setAttribute('role', 'alert');
    document.body.prepend(element);
  }
  return element;
}

function reachable() {
  if (unreachableSince === null) return;
  unreachableSince = null;
  clearTimeout(probe);
  banner().hidden = true;
}

function unreachable() {
  if (unreachableSince === null) unreachableSince = Date.now();
  const element = banner();
  element.hidden = false;
  element.textContent = 'The coordinator cannot be reached: what is shown may be out of date. Trying again every 3 seconds…';
  clearTimeout(probe);
  probe = setTimeout(checkReachable, 3000);
}

export async function checkReachable() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store' });
    if (response.ok) reachable(); else unreachable();
  } catch {
    unreachable();
  }
}

export async function api(method, path, body, { headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && session?.csrf) init.headers['X-Heddle-CSRF'] = session.csrf;
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch {
    // No answer at all (the coordinator is down, the network is): said in words.
    unreachable();
    throw new APIError(0, { detail: method === 'GET'
      ? 'the coordinator cannot be reached; try again once it is back'
      : 'the coordinator cannot be reached, so this was not done (or its answer was lost); check once it is back' });
  }
  reachable();
  if (raw && response.ok) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (response.status === 401 && path !== '/session') endSession();
    throw new APIError(response.status, data);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});

/// Roles in order: who may do what is decided by the coordinator; the page only hides what
/// the role cannot use (the API refuses it anyway).
const ranks = { viewer: 0, automation: 1, admin: 2 };
const needs = { trigger: 'automation', rerun: 'automation', cancel: 'automation', move: 'admin', bulkCancel: 'admin',
  drain: 'admin' };
export function can(action) {
  if (!session) return false;
  return (ranks[session.role] ?? -1) >= ranks[needs[action]];
}

export async function signIn(token) {
  session = await api('POST', '/session', { token });
  return session;
}

export async function signOut() {
  try { await api('DELETE', '/session'); } finally { session = null; }
}

/// Query string from an object, leaving out empty values.
export function query(params) {
  const entries = Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== '');
  return entries.length ? '?' + new URLSearchParams(entries).toString() : '';
}

/// An EventSource that comes back by itself: the browser reconnects on a dropped connection
/// (with Last-Event-ID, so log streams resume at the byte they stopped at); when the server
/// refused the stream (it is then closed for good), this opens it again after a pause. The
/// run and queue streams begin with `subscribed` (also after a reconnection): a page reads
/// what it shows then, and misses nothing.
export class LiveStream {
  constructor(url, handlers, { onEnd, onError, onOpen } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.onEnd = onEnd;
    this.onError = onError;
    this.onOpen = onOpen;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const source = new EventSource(this.url, { withCredentials: true });
    this.source = source;
    for (const [name, handler] of Object.entries(this.handlers)) {
      source.addEventListener(name, (event) => {
        let data = null;
        try { data = JSON.parse(event.data); } catch { return; }
        handler(data, event);
      });
    }
    source.addEventListener('end', () => {
      this.close();
      this.onEnd?.();
    });
    source.onopen = () => { reachable(); this.onOpen?.(); };
    source.onerror = () => {
      this.onError?.();
      if (!this.closed) checkReachable();
      if (source.readyState === EventSource.CLOSED && !this.closed) {
        // Refused: a session that ended shows the sign-in; anything else is tried again.
        api('GET', '/session').catch((error) => { if (error.status === 401) endSession(); });
        this.retry = setTimeout(() => this.connect(), 3000);
      }
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    this.source?.close();
  }
}

export function formatDuration(ms) {
  if (ms === undefined || ms === null) return '';
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

/// Who started a run or an attempt, as words: "manual by admin", "webhook by github delivery
/// 12", or for a schedule what it says itself ("schedule '0 3 * * *' due ...").
export function triggerText(trigger, triggeredBy) {
  if (!triggeredBy) return trigger;
  return trigger === 'schedule' && triggeredBy.startsWith('schedule') ? triggeredBy : `${trigger} by ${triggeredBy}`;
}

/// An element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child, ...).
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(key, '');
    else element.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function statusBadge(status) {
  return h('span', { class: `status status-${status}` }, status);
}

/// A short message for everyone, screen readers included.
export function announce(text, { error = false } = {}) {
  const toast = document.getElementById('toast');
  if (!toast) return;
  toast.textContent = text;
  toast.classList.toggle('error', error);
  toast.hidden = false;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => { toast.hidden = true; }, error ? 8000 : 4000);
}
