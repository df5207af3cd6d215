// The run page: status, attempts, jobs, the graph of each job's nodes (live), a node's log
// (live), artifacts; Re-run and Cancel for those who may.

import { LiveStream, announce, can, formatDuration, formatSize, formatTime, get, h, post, query, statusBadge, triggerText } from './api.js';
import { drawJob } from './graph.js';
import { LogView } from './log.js';

/// A job with more nodes lists them only when asked (its graph shows them all).
const NODES_SHOWN = 12;

const finished = (status) => ['succeeded', 'failed', 'cancelled', 'skipped'].includes(status);

/// From start to finish, or to now while running (so it ticks).
export function elapsed(item) {
  if (!item?.startedAt) return item?.durationMs;
  const start = Date.parse(item.startedAt);
  const end = item.finishedAt ? Date.parse(item.finishedAt) : Date.now();
  return Math.max(0, end - start);
}

const icons = { succeeded: '✓', failed: '✗', cancelled: '⊘', running: '▶', queued: '…', pending: '…', skipped: '–' };
const colours = { succeeded: '#1f8a4c', failed: '#c93434', cancelled: '#a36a00', running: '#2f74d0', queued: '#8a8a8a',
  pending: '#8a8a8a', skipped: '#9a9a9a' };

/// The tab's title and icon say the run's status.
export function showStatusInTab(title, status) {
  document.title = `${icons[status] || ''} ${title} — Heddle`.trim();
  const colour = colours[status] || '#8a8a8a';
  const icon = `data:image/svg+xml,${encodeURIComponent(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${colour}"/></svg>`)}`;
  let link = document.querySelector('link[rel=icon]');
  if (!link) { link = document.createElement('link'); link.rel = 'icon'; document.head.append(link); }
  link.href = icon;
}

export async function runPage(main, params, { navigate }) {
  const runID = Number(params.run);
  const wanted = params.attempt ? Number(params.attempt) : undefined;
  let detail = await get(`/runs/${runID}${query({ attempt: wanted })}`);
  // The attempt shown: the one asked for, else the latest (the API answers it as run.attempt).
  const shown = detail.run.attempt;
  const isLatest = shown === detail.attempts[detail.attempts.length - 1]?.number;
  let selected = params.job && params.node ? { job: params.job, node: params.node } : null;
  let log = null;
  let stream = null;

  const header = h('div', { class: 'run-header' });
  const jobs = h('div', { class: 'jobs' });
  const graphs = h('div', { class: 'graphs', 'aria-label': 'Graph of the nodes' });
  const logPane = h('div', { class: 'log-pane' });
  const artifacts = h('div', { class: 'artifacts' });
  const logHeading = h('h2', { id: 'log-heading' }, 'Log');
  main.replaceChildren(header, h('h2', {}, 'Jobs'), jobs, h('h2', {}, 'Graph'), graphs, logHeading,
    logPane, h('h2', {}, 'Artifacts'), artifacts);

  const link = (extra) => `#/runs/${runID}${query({ attempt: shown, ...extra })}`;

  function drawHeader() {
    const run = detail.run;
    const switcher = h('select', { id: 'attempt', 'aria-label': 'Attempt', onchange: (event) => navigate(`#/runs/${runID}?attempt=${event.target.value}`) },
      detail.attempts.map((a) => h('option', { value: a.number, selected: a.number === shown },
        `attempt ${a.number} — ${a.status} (${triggerText(a.trigger, a.triggeredBy)})`)));
    const actions = h('div', { class: 'actions' });
    if (can('rerun') && finished(run.status) && isLatest) {
      const rerun = (failed) => async () => {
        try {
          const created = await post(`/runs/${runID}/rerun${failed ? '?failed=true' : ''}`);
          announce(`attempt ${created.attempt} queued${failed ? ' (the failed jobs)' : ''}`);
          navigate(`#/runs/${runID}?attempt=${created.attempt}`);
        } catch (error) { announce(error.message, { error: true }); }
      };
      actions.append(h('button', { type: 'button', class: 'rerun', onclick: rerun(false) }, 'Re-run'));
      // Only the jobs that failed or were cancelled; those that succeeded are carried over.
      if (detail.jobs.some((job) => job.status !== 'succeeded')) {
        actions.append(' ', h('button', { type: 'button', class: 'rerun-failed', onclick: rerun(true) }, 'Re-run failed jobs'));
      }
    }
    if (can('cancel') && !finished(run.status) && isLatest) {
      actions.append(h('button', { type: 'button', class: 'cancel danger', onclick: async () => {
        try {
          const result = await post(`/runs/${runID}/cancel`);
          announce(`${result.count} job${result.count === 1 ? '' : 's'} cancelled`);
        } catch (error) { announce(error.message, { error: true }); }
      } }, 'Cancel'));
    }
    header.replaceChildren(
      h('h1', {}, `Run ${runID} `, statusBadge(run.status)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Pipeline'), h('dd', {}, h('a', { href: `#/projects/${encodeURIComponent(run.project)}` }, run.project), ' / ', run.pipeline),
        h('dt', {}, 'Branch'), h('dd', {}, run.branch, run.commit ? ` @ ${run.commit.slice(0, 12)}` : ''),
        h('dt', {}, 'Trigger'), h('dd', { class: 'trigger' }, triggerText(run.trigger, run.triggeredBy)),
        ...(Object.keys(run.inputs || {}).length ? [h('dt', {}, 'Inputs'), h('dd', { class: 'inputs' },
          Object.entries(run.inputs).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => h('code', {}, `${k}=${v}`))
            .flatMap((c, i) => (i ? [' ', c] : [c])))] : []),
        h('dt', {}, 'Attempt'), h('dd', {}, switcher, ` of ${detail.attempts.length}`),
        h('dt', {}, 'Created'), h('dd', {}, formatTime(run.createdAt)),
        h('dt', {}, 'Duration'), h('dd', { class: 'duration', dataset: { tick: 'run' } }, elapsed(run) === undefined ? '—' : formatDuration(elapsed(run)))),
      actions);
    showStatusInTab(`Run ${runID} ${run.status} · ${run.project}/${run.pipeline}`, run.status);
  }

  /// Each job, then its nodes, with their durations (ticking while running) and why a job
  /// failed or waits.
  function drawJobs() {
    jobs.replaceChildren(h('div', { class: 'table-scroll' }, h('table', { class: 'jobs-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Job / node'), h('th', {}, 'Status'), h('th', {}, 'Runner / exit'), h('th', {}, 'Duration'),
        h('th', {}, 'Why'))),
      h('tbody', {}, detail.jobs.flatMap((job) => [
        h('tr', { dataset: { job: job.name }, class: 'job-row' },
          h('td', {}, job.name, job.nodes.length > NODES_SHOWN ? h('button', { type: 'button', class: 'nodes-toggle',
            'aria-expanded': String(expanded.has(job.name)), onclick: () => {
              if (expanded.has(job.name)) expanded.delete(job.name); else expanded.add(job.name);
              drawJobs();
            } }, `${expanded.has(job.name) ? '▾' : '▸'} ${job.nodes.length} nodes`) : null),
          h('td', {}, statusBadge(job.status)), h('td', {}, job.runner || ''),
          h('td', { class: 'duration', dataset: { tick: `job:${job.name}` } }, formatDuration(elapsed(job))),
          h('td', { class: 'why' }, job.reason || (job.status === 'queued' ? waiting.get(job.id) || 'waiting for a runner' : ''))),
        ...(job.nodes.length <= NODES_SHOWN || expanded.has(job.name) ? job.nodes : []).map((node) => h('tr', { dataset: { job: job.name, node: node.name }, class: 'node-row' },
          h('td', {}, h('a', { href: link({ job: job.name, node: node.name }), onclick: (event) => {
            event.preventDefault();
            openLog(job.name, node.name, { scroll: true });
          } }, node.name)),
          h('td', {}, statusBadge(node.status)), h('td', {}, node.exitCode !== undefined ? `exit ${node.exitCode}` : ''),
          h('td', { class: 'duration', dataset: { tick: `node:${job.name}:${node.name}` } }, formatDuration(elapsed(node))),
          h('td', {}))),
      ])))));
  }

  /// Jobs whose nodes are listed though they have many (more than NODES_SHOWN).
  const expanded = new Set();

  /// Why each queued job of the run waits, as the queue says.
  const waiting = new Map();
  async function readWaiting() {
    if (!detail.jobs.some((job) => job.status === 'queued')) return;
    const list = await get('/queue?limit=10000').catch(() => null);
    for (const entry of list?.jobs || []) if (entry.run === runID && entry.waitingReason) waiting.set(entry.job, entry.waitingReason);
    drawJobs();
  }

  /// Durations of what runs tick every second.
  function tick() {
    for (const cell of main.querySelectorAll('[data-tick]')) {
      const [kind, jobName, nodeName] = cell.dataset.tick.split(':');
      const job = kind === 'run' ? null : detail.jobs.find((j) => j.name === jobName);
      const item = kind === 'run' ? detail.run : kind === 'job' ? job : job?.nodes.find((n) => n.name === nodeName);
      if (item && item.startedAt && !item.finishedAt) cell.textContent = formatDuration(elapsed(item));
    }
    for (const figure of graphs.querySelectorAll('.job-graph')) {
      const job = detail.jobs.find((j) => j.name === figure.dataset.job);
      for (const text of figure.querySelectorAll('[data-tick-node]')) {
        const node = job?.nodes.find((n) => n.name === text.dataset.tickNode);
        if (node?.startedAt && !node.finishedAt) text.textContent = formatDuration(elapsed(node));
      }
    }
  }
  const ticker = setInterval(tick, 1000);

  /// Each job's graph; a matrix job's instances (`test (debian, 3.11)`, ...) together under
  /// the matrix job's name, side by side.
  function drawGraphs() {
    const figure = (job) => h('figure', { class: 'job-graph', dataset: { job: job.name } },
      h('figcaption', {}, job.name, ' ', statusBadge(job.status)),
      h('div', { class: 'graph-scroll' }, drawJob(job, {
        selected: selected?.job === job.name ? selected.node : undefined,
        durationOf: (node) => (node.startedAt ? formatDuration(elapsed(node)) : ''),
        onOpen: (node) => openLog(job.name, node.name, { scroll: true }),
      })));
    const groups = [];
    for (const job of detail.jobs) {
      const base = /^([A-Za-z0-9._-]+) \(.+\)$/.exec(job.name)?.[1];
      const last = groups[groups.length - 1];
      if (base && last?.base === base) last.jobs.push(job); else groups.push({ base, jobs: [job] });
    }
    graphs.replaceChildren(...groups.map((group) => (group.base
      ? h('section', { class: 'matrix-group', dataset: { matrix: group.base }, 'aria-label': `Matrix ${group.base}` },
        h('h3', {}, `${group.base} — matrix of ${group.jobs.length}`), h('div', { class: 'matrix-jobs' }, ...group.jobs.map(figure)))
      : figure(group.jobs[0]))));
  }

  /// What the log of a node that failed (or was cancelled) ends with: its exit code, and why.
  function ending(job, node) {
    if (node.status !== 'failed' && node.status !== 'cancelled') return '';
    const why = job.reason && job.reason.includes(`'${node.name}'`) ? job.reason : '';
    const code = node.exitCode !== undefined ? `exit code ${node.exitCode}` : node.status;
    return why ? `${code} — ${why}` : code;
  }

  function openLog(jobName, nodeName, { scroll = false, at, line } = {}) {
    selected = { job: jobName, node: nodeName };
    history.replaceState(null, '', link({ job: jobName, node: nodeName }));
    log?.close();
    const job = detail.jobs.find((j) => j.name === jobName);
    const node = job?.nodes.find((n) => n.name === nodeName);
    const url = `/api/v1/runs/${runID}/jobs/${encodeURIComponent(jobName)}/nodes/${encodeURIComponent(nodeName)}/log?attempt=${shown}`;
    log = new LogView({ url, live: !!node && !finished(node.status) && !finished(job.status), at, line,
      ending: node && finished(node.status) ? ending(job, node) : '',
      title: `Log of ${jobName}/${nodeName}`,
      link: (number) => link({ job: jobName, node: nodeName, line: number }) });
    logHeading.textContent = `Log — ${jobName} / ${nodeName}`;
    logPane.replaceChildren(log.element);
    log.open().catch((error) => logPane.replaceChildren(h('p', { class: 'error' }, error.message)));
    drawGraphs();
    if (scroll) logPane.scrollIntoView({ block: 'start' });
  }

  async function drawArtifacts() {
    const list = await get(`/runs/${runID}/artifacts`).catch(() => ({ artifacts: [] }));
    // This attempt's, and those of the jobs it carried over (from the attempt they ran in).
    const carried = new Map(detail.jobs.filter((job) => job.carriedFromAttempt).map((job) => [job.name, job.carriedFromAttempt]));
    const items = (list.artifacts || []).filter((artifact) => artifact.attempt === shown
      || carried.get(artifact.jobName) === artifact.attempt);
    if (!items.length) { artifacts.replaceChildren(h('p', { class: 'muted' }, 'No artifacts.')); return; }
    artifacts.replaceChildren(artifactTable(items, { showRun: false }));
  }

  function defaultNode() {
    const all = detail.jobs.flatMap((job) => job.nodes.map((node) => ({ job, node })));
    const pick = all.find(({ node }) => node.status === 'running') || all.find(({ node }) => node.status === 'failed')
      || all.find(({ node }) => node.status !== 'queued' && node.status !== 'pending') || all[0];
    return pick ? { job: pick.job.name, node: pick.node.name } : null;
  }

  async function reload() {
    detail = await get(`/runs/${runID}${query({ attempt: shown })}`);
    drawHeader();
    drawJobs();
    drawGraphs();
    readWaiting();
    const job = detail.jobs.find((j) => j.name === selected?.job);
    const node = job?.nodes.find((n) => n.name === selected?.node);
    if (node && finished(node.status)) log?.setEnding(ending(job, node));
  }

  /// A job event: the job's fields, and its nodes' (a node event carries only that node).
  function apply(event) {
    const job = detail.jobs.find((j) => j.id === event.id || j.name === event.name);
    if (!job) return;
    job.status = event.status;
    if (event.runner) job.runner = event.runner;
    if (event.reason) job.reason = event.reason;
    const now = new Date().toISOString();
    if (event.status === 'running' && !job.startedAt) job.startedAt = now;
    if (finished(event.status) && !job.finishedAt) job.finishedAt = now;
    for (const change of event.nodes || []) {
      const node = job.nodes.find((n) => n.name === change.name);
      if (node) {
        node.status = change.status;
        if (change.exitCode !== undefined) node.exitCode = change.exitCode;
        if (change.status === 'running' && !node.startedAt) node.startedAt = now;
        if (finished(change.status) && !node.finishedAt) node.finishedAt = now;
      }
    }
    // The selected node's ending, with the job's reason once it came.
    const shownNode = selected?.job === job.name && job.nodes.find((n) => n.name === selected.node);
    if (shownNode && finished(shownNode.status)) log?.setEnding(ending(job, shownNode));
    drawJobs();
    drawGraphs();
  }

  drawHeader();
  drawJobs();
  drawGraphs();
  selected = selected || defaultNode();
  if (selected) {
    openLog(selected.job, selected.node, { at: params.at !== undefined ? Number(params.at) : undefined,
      line: params.line !== undefined ? Number(params.line) : undefined });
  }
  drawArtifacts();
  readWaiting();
  if (!finished(detail.run.status)) {
    // Once subscribed (also after a reconnection), the run is read again; the events that
    // arrive meanwhile are applied after it, in order, so nothing is missed or undone.
    let reading = false;
    let waiting = [];
    const subscribed = async () => {
      reading = true;
      try { await reload(); } finally {
        reading = false;
        const events = waiting;
        waiting = [];
        events.forEach(apply);
      }
    };
    stream = new LiveStream(`/api/v1/runs/${runID}/events?attempt=${shown}`, {
      subscribed,
      job: (event) => { if (reading) waiting.push(event); else apply(event); },
    }, {
      onEnd: async () => {
        await reload();
        drawArtifacts();
        // The log's own stream ends with the attempt as well.
      },
    });
  }
  return () => { stream?.close(); log?.close(); clearInterval(ticker); };
}

export function artifactTable(items, { showRun = true } = {}) {
  return h('table', { class: 'artifact-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Name'), showRun && h('th', {}, 'Run'), showRun && h('th', {}, 'Project'),
      showRun && h('th', {}, 'Branch'), h('th', {}, 'Size'), h('th', {}, 'SHA-256'), h('th', {}, 'Created'), h('th', {}, ''))),
    h('tbody', {}, items.map((artifact) => h('tr', { dataset: { artifact: String(artifact.id) } },
      h('td', { class: 'name' }, artifact.name),
      showRun && h('td', {}, h('a', { href: `#/runs/${artifact.run}?attempt=${artifact.attempt}` }, `${artifact.run}`)),
      showRun && h('td', {}, `${artifact.project} / ${artifact.pipeline}`),
      showRun && h('td', {}, artifact.branch),
      h('td', { class: 'size', title: `${artifact.size} bytes` }, formatSize(artifact.size)),
      h('td', { class: 'sha' }, h('code', { title: artifact.sha256 }, artifact.sha256.slice(0, 16) + '…'), ' ',
        h('button', { type: 'button', class: 'copy', 'aria-label': `Copy the SHA-256 of ${artifact.name}`, onclick: async () => {
          try { await navigator.clipboard.writeText(artifact.sha256); announce('SHA-256 copied'); } catch { announce(artifact.sha256); }
        } }, 'Copy')),
      h('td', {}, formatTime(artifact.createdAt)),
      h('td', {}, h('a', { href: `/api/v1/artifacts/${artifact.id}/content`, download: '', class: 'download' }, 'Download'))))));
}
