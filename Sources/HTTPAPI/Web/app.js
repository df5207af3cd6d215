// The dashboard: sign-in, the header, and the pages by address (#/runs/12, #/queue, ...).

import { announce, currentSession, get, h, onSignedOut, setSession, signIn, signOut } from './api.js';
import { artifactsPage, projectPage, projectsPage, runnersPage, runsPage } from './pages.js';
import { queuePage } from './queue.js';
import { runPage } from './run.js';

const routes = [
  [/^#?\/?$/, projectsPage, 'projects'],
  [/^#\/projects$/, projectsPage, 'projects'],
  [/^#\/projects\/([^/?]+)$/, projectPage, 'projects', ['project']],
  [/^#\/runs$/, runsPage, 'runs'],
  [/^#\/runs\/(\d+)$/, runPage, 'runs', ['run']],
  [/^#\/queue$/, queuePage, 'queue'],
  [/^#\/artifacts$/, artifactsPage, 'artifacts'],
  [/^#\/runners$/, runnersPage, 'runners'],
];

const main = document.getElementById('main');
const who = document.getElementById('who');
const nav = document.getElementById('nav');
let leave = null;
let rendering = 0;

function navigate(address) {
  if (location.hash === address) render();
  else location.hash = address;
}

async function render() {
  const ticket = ++rendering;
  if (typeof leave === 'function') leave();
  leave = null;
  if (!currentSession()) { showSignIn(); return; }
  const [path, search = ''] = location.hash.split('?');
  const params = Object.fromEntries(new URLSearchParams(search));
  for (const [pattern, page, section, names = []] of routes) {
    const match = pattern.exec(path || '#/');
    if (!match) continue;
    names.forEach((name, index) => { params[name] = decodeURIComponent(match[index + 1]); });
    for (const link of nav.querySelectorAll('a')) {
      if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    // Each page draws into its own element: a page still loading when another is asked for
    // draws into an element no longer shown.
    const container = h('div', { class: 'page' }, h('p', { class: 'muted' }, 'Loading…'));
    main.replaceChildren(container);
    try {
      const cleanup = await page(container, params, { navigate });
      if (ticket !== rendering) { if (typeof cleanup === 'function') cleanup(); return; }
      leave = cleanup;
    } catch (error) {
      if (ticket !== rendering) return;
      container.replaceChildren(h('h1', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, error.message));
    }
    return;
  }
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, `There is no page ${location.hash}.`));
}

function showHeader() {
  const session = currentSession();
  nav.hidden = !session;
  who.replaceChildren(...(session ? [
    h('span', { class: 'who' }, `${session.name} (${session.role})`),
    h('button', { type: 'button', class: 'sign-out', onclick: async () => {
      await signOut().catch(() => {});
      showHeader();
      showSignIn();
    } }, 'Sign out'),
  ] : []));
}

function showSignIn(message) {
  if (typeof leave === 'function') leave();
  leave = null;
  showHeader();
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    placeholder: 'heddle_…' });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'sign-in', onsubmit: async (event) => {
    event.preventDefault();
    try {
      await signIn(input.value.trim());
      showHeader();
      render();
    } catch (failure) {
      error.textContent = failure.message;
      input.select();
    }
  } },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'Paste an API token (', h('code', {}, 'heddle tokens create --name NAME --role viewer'),
    '). It is sent once; the browser then keeps a session cookie for 12 hours.'),
  h('label', { for: 'token' }, 'API token'), input, error,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  main.replaceChildren(form);
  input.focus();
}

onSignedOut(() => {
  showHeader();
  showSignIn('Your session has ended: sign in again.');
});

async function start() {
  try {
    const session = await get('/session');
    setSession(session.csrf ? session : null);
  } catch {
    setSession(null);
  }
  showHeader();
  if (currentSession()) render(); else showSignIn();
}

window.addEventListener('hashchange', () => render());
// The skip link moves the focus without changing the address (which names the page).
document.querySelector('.skip')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener('unhandledrejection', (event) => announce(String(event.reason?.message || event.reason), { error: true }));
start();
