// The queue: running jobs, then queued ones in dispatch order, with why each waits. Only the
// rows in view are in the page (a queue of 10,000 scrolls as one of 10). A queued job is
// moved by dragging its handle, or with the keyboard on the handle (Alt+↑/↓ one place,
// Alt+Home/End to the top or bottom); the list is then read again, so the order shown is the
// coordinator's, and so are moves made by others (live, by /api/v1/events).

import { LiveStream, announce, api, can, get, h, post, statusBadge } from './api.js';

const ROW = 38;

export async function queuePage(main) {
  let entries = [];
  let total = 0;
  const selected = new Set();
  const filters = { project: '', pipeline: '', branch: '', label: '' };
  let focusJob = null;
  let dragged = null;
  let rowCache = new Map();

  const count = h('span', { class: 'count' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the queue', onsubmit: (event) => event.preventDefault() },
    ...['project', 'pipeline', 'branch', 'label'].map((key) => h('label', {}, key[0].toUpperCase() + key.slice(1), ' ',
      h('input', { name: key, type: 'text', oninput: (event) => { filters[key] = event.target.value.trim(); shownCache = null; draw(); } }))));
  const cancelSelected = h('button', { type: 'button', class: 'cancel-selected danger', disabled: true, onclick: () => cancelJobs() },
    'Cancel selected');
  const cancelMatching = h('button', { type: 'button', class: 'cancel-matching danger', onclick: () => cancelMatchingFilters() },
    'Cancel all matching…');
  const confirmBox = h('div', { class: 'confirm', hidden: true, role: 'alertdialog', 'aria-live': 'assertive' });
  const bar = h('div', { class: 'bulk' }, can('cancel') && cancelSelected, can('bulkCancel') && cancelMatching, confirmBox);
  const spacer = h('div', { class: 'spacer' });
  const list = h('div', { class: 'vlist', role: 'list', 'aria-label': 'Jobs in dispatch order', onscroll: () => drawRows() }, spacer);
  const help = h('p', { class: 'muted help' }, can('move')
    ? 'Drag a queued job by its handle, or focus the handle and press Alt+↑ / Alt+↓ (Alt+Home / Alt+End: top / bottom).'
    : '');
  const head = h('div', { class: 'queue-head', 'aria-hidden': 'true' }, h('span'), h('span'), h('span', {}, 'Place'),
    h('span', {}, 'Status'), h('span', {}, 'Job · pipeline'), h('span', {}, 'Branch'), h('span', {}, 'Labels'),
    h('span', {}, 'Runner, or why it waits'));
  main.replaceChildren(h('h1', {}, 'Queue ', count), form, bar, help, head, list);

  // The rows the filters let through, computed again only when the list or a filter changes
  // (not at each scroll).
  let shownCache = null;
  const visible = () => {
    shownCache ||= entries.filter((entry) =>
      (!filters.project || entry.project === filters.project) && (!filters.pipeline || entry.pipeline === filters.pipeline)
      && (!filters.branch || entry.branch === filters.branch) && (!filters.label || entry.labels.includes(filters.label)));
    return shownCache;
  };

  async function load() {
    const queue = await get('/queue?limit=10000');
    entries = queue.jobs;
    shownCache = null;
    total = queue.total;
    for (const job of [...selected]) if (!entries.some((entry) => entry.job === job && entry.status === 'queued')) selected.delete(job);
    draw();
  }

  let timer = null;
  const reload = () => {
    clearTimeout(timer);
    timer = setTimeout(() => load().catch((error) => announce(error.message, { error: true })), 200);
  };

  function draw() {
    const shown = visible();
    const queued = entries.filter((entry) => entry.status === 'queued').length;
    const n = (value) => value.toLocaleString();
    count.textContent = `— ${n(entries.length - queued)} running, ${n(queued)} queued${total > entries.length ? ` (${n(total)} in all)` : ''}`;
    spacer.style.height = `${shown.length * ROW}px`;
    cancelSelected.disabled = selected.size === 0;
    cancelSelected.textContent = selected.size ? `Cancel selected (${selected.size})` : 'Cancel selected';
    drawRows();
  }

  function drawRows() {
    const shown = visible();
    const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
    const last = Math.min(shown.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + 5);
    // Rows already drawn for the same state of the same job are kept (scrolling only moves them).
    const rows = [];
    const drawn = new Map();
    for (let index = first; index < last; index += 1) {
      const entry = shown[index];
      const key = `${entry.job}|${entry.status}|${entry.position}|${entry.runner || ''}|${entry.waitingReason || ''}|${selected.has(entry.job)}`;
      const element = rowCache.get(key) || row(entry);
      element.style.top = `${index * ROW}px`;
      drawn.set(key, element);
      rows.push(element);
    }
    rowCache = drawn;
    // The rows are made anew: the focus stays on the same job's control.
    const active = spacer.contains(document.activeElement) ? document.activeElement : null;
    const activeJob = active?.closest('.row')?.dataset.job;
    const activeControl = active?.classList.contains('handle') ? '.handle' : 'input';
    spacer.replaceChildren(...rows);
    if (focusJob !== null) {
      const handle = spacer.querySelector(`.row[data-job="${focusJob}"] .handle`);
      if (handle) { handle.focus({ preventScroll: true }); focusJob = null; }
    } else if (activeJob) {
      spacer.querySelector(`.row[data-job="${activeJob}"] ${activeControl}`)?.focus({ preventScroll: true });
    }
  }

  function row(entry) {
    const queued = entry.status === 'queued';
    const element = h('div', { class: `row ${entry.status}`, role: 'listitem', dataset: { job: String(entry.job) } },
    h('span', { class: 'select' }, queued && can('cancel') ? h('input', { type: 'checkbox', checked: selected.has(entry.job),
      'aria-label': `Select job ${entry.job} (${entry.pipeline} / ${entry.name})`, onchange: (event) => {
        if (event.target.checked) selected.add(entry.job); else selected.delete(entry.job);
        draw();
      } }) : null),
    h('span', { class: 'grip' }, queued && can('move') ? h('button', { type: 'button', class: 'handle', draggable: 'true',
      'aria-label': `Move job ${entry.job}, place ${entry.position}`, title: 'Drag, or Alt+↑ / Alt+↓',
      ondragstart: (event) => { dragged = entry; event.dataTransfer.setData('text/plain', String(entry.job)); event.dataTransfer.effectAllowed = 'move'; },
      ondragend: () => { dragged = null; },
      onkeydown: (event) => keyMove(event, entry) }, '⠿') : null),
    h('span', { class: 'position' }, queued ? `${entry.position}` : ''),
    h('span', { class: 'state' }, statusBadge(entry.status)),
    // The job's name first, so a narrow screen that cuts the cell still shows it.
    h('span', { class: 'what' }, h('strong', { class: 'job-name' }, entry.name), ' · ',
      h('a', { href: `#/runs/${entry.run}?attempt=${entry.attempt}` }, `${entry.project} / ${entry.pipeline}`), ` · #${entry.job}`),
    h('span', { class: 'branch' }, entry.branch),
    h('span', { class: 'labels' }, entry.labels.join(', ')),
    h('span', { class: 'why' }, entry.runner ? `on ${entry.runner}` : (entry.waitingReason || '')));
    if (queued && can('move')) {
      element.addEventListener('dragover', (event) => {
        if (!dragged || dragged.job === entry.job) return;
        event.preventDefault();
        const box = element.getBoundingClientRect();
        const after = event.clientY > box.top + box.height / 2;
        element.classList.toggle('drop-before', !after);
        element.classList.toggle('drop-after', after);
      });
      element.addEventListener('dragleave', () => element.classList.remove('drop-before', 'drop-after'));
      element.addEventListener('drop', (event) => {
        event.preventDefault();
        const after = element.classList.contains('drop-after');
        element.classList.remove('drop-before', 'drop-after');
        const job = dragged || entries.find((e) => String(e.job) === event.dataTransfer.getData('text/plain'));
        if (!job || job.job === entry.job) return;
        move(job, { to: after ? 'after' : 'before', job: entry.job });
      });
    }
    return element;
  }

  function keyMove(event, entry) {
    if (!event.altKey) return;
    const moves = { ArrowUp: { to: 'position', position: Math.max(1, entry.position - 1) },
      ArrowDown: { to: 'position', position: entry.position + 1 }, Home: { to: 'top' }, End: { to: 'bottom' } };
    const request = moves[event.key];
    if (!request) return;
    event.preventDefault();
    focusJob = entry.job;
    move(entry, request);
  }

  async function move(entry, request) {
    try {
      const moved = await post(`/queue/${entry.job}/move`, request);
      announce(`job ${entry.job} is now at place ${moved.position}`);
      focusJob = entry.job;
      await load();
      const index = visible().findIndex((e) => e.job === entry.job);
      if (index >= 0 && (index * ROW < list.scrollTop || index * ROW > list.scrollTop + list.clientHeight - ROW)) {
        list.scrollTop = index * ROW - list.clientHeight / 2;
      }
      drawRows();
    } catch (error) {
      announce(error.message, { error: true });
      await load();
    }
  }

  async function cancelJobs() {
    const jobs = [...selected];
    let cancelled = 0;
    for (const job of jobs) {
      try {
        const result = await post(`/jobs/${job}/cancel`);
        cancelled += result.count;
        selected.delete(job);
      } catch (error) { announce(error.message, { error: true }); }
    }
    announce(`${cancelled} job${cancelled === 1 ? '' : 's'} cancelled`);
    await load();
  }

  async function cancelMatchingFilters() {
    const body = Object.fromEntries(Object.entries(filters).filter(([, value]) => value));
    try {
      const preview = await api('POST', '/queue/cancel', { ...body, dryRun: true });
      const what = Object.keys(body).length ? Object.entries(body).map(([k, v]) => `${k} ${v}`).join(', ') : 'no filter: every queued job';
      const yes = h('button', { type: 'button', class: 'danger confirm-yes', onclick: async () => {
        confirmBox.hidden = true;
        try {
          const result = await api('POST', '/queue/cancel', body);
          announce(`${result.count} queued job${result.count === 1 ? '' : 's'} cancelled`);
        } catch (error) { announce(error.message, { error: true }); }
        await load();
      } }, `Cancel ${preview.count}`);
      const no = h('button', { type: 'button', class: 'confirm-no', onclick: () => { confirmBox.hidden = true; cancelMatching.focus(); } }, 'Keep them');
      confirmBox.replaceChildren(h('p', {}, `This cancels ${preview.count} queued job${preview.count === 1 ? '' : 's'} (${what}).`), yes, ' ', no);
      confirmBox.hidden = false;
      (preview.count ? yes : no).focus();
    } catch (error) { announce(error.message, { error: true }); }
  }

  await load();
  // Subscribed (also after a reconnection): read again, then every change reads again.
  const stream = new LiveStream('/api/v1/events', { queue: reload, subscribed: reload });
  return () => { stream.close(); clearTimeout(timer); };
}
