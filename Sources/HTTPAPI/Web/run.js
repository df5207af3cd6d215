// The run page: status, attempts, jobs, the graph of each job's nodes (live), a node's log
// (live), artifacts; Re-run and Cancel for those who may.

import { LiveStream, announce, can, formatDuration, formatSize, formatTime, get, h, post, query, statusBadge } from './api.js';
import { drawJob } from './graph.js';
import { LogView } from './log.js';

const finished = (status) => ['succeeded', 'failed', 'cancelled', 'skipped'].includes(status);

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
        `attempt ${a.number} — ${a.status} (${a.trigger}${a.triggeredBy ? ` by ${a.triggeredBy}` : ''})`)));
    const actions = h('div', { class: 'actions' });
    if (can('rerun') && finished(run.status) && isLatest) {
      actions.append(h('button', { type: 'button', class: 'rerun', onclick: async () => {
        try {
          const created = await post(`/runs/${runID}/rerun`);
          announce(`attempt ${created.attempt} queued`);
          navigate(`#/runs/${runID}?attempt=${created.attempt}`);
        } catch (error) { announce(error.message, { error: true }); }
      } }, 'Re-run'));
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
        h('dt', {}, 'Trigger'), h('dd', { class: 'trigger' }, run.trigger, run.triggeredBy ? ` by ${run.triggeredBy}` : ''),
        h('dt', {}, 'Attempt'), h('dd', {}, switcher, ` of ${detail.attempts.length}`),
        h('dt', {}, 'Created'), h('dd', {}, formatTime(run.createdAt)),
        h('dt', {}, 'Duration'), h('dd', { class: 'duration' }, run.durationMs === undefined ? '—' : formatDuration(run.durationMs))),
      actions);
  }

  function drawJobs() {
    jobs.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Status'), h('th', {}, 'Runner'), h('th', {}, 'Duration'),
        h('th', {}, 'Why'))),
      h('tbody', {}, detail.jobs.map((job) => h('tr', { dataset: { job: job.name } },
        h('td', {}, job.name), h('td', {}, statusBadge(job.status)), h('td', {}, job.runner || ''),
        h('td', {}, formatDuration(job.durationMs)), h('td', {}, job.reason || ''))))));
  }

  function drawGraphs() {
    graphs.replaceChildren(...detail.jobs.map((job) => h('figure', { class: 'job-graph' },
      h('figcaption', {}, job.name, ' ', statusBadge(job.status)),
      h('div', { class: 'graph-scroll' }, drawJob(job, {
        selected: selected?.job === job.name ? selected.node : undefined,
        onOpen: (node) => openLog(job.name, node.name, { scroll: true }),
      })))));
  }

  function openLog(jobName, nodeName, { scroll = false, at, line } = {}) {
    selected = { job: jobName, node: nodeName };
    history.replaceState(null, '', link({ job: jobName, node: nodeName }));
    log?.close();
    const job = detail.jobs.find((j) => j.name === jobName);
    const node = job?.nodes.find((n) => n.name === nodeName);
    const url = `/api/v1/runs/${runID}/jobs/${encodeURIComponent(jobName)}/nodes/${encodeURIComponent(nodeName)}/log?attempt=${shown}`;
    log = new LogView({ url, live: !!node && !finished(node.status) && !finished(job.status), at, line,
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
    const items = (list.artifacts || []).filter((artifact) => artifact.attempt === shown);
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
  }

  /// A job event: the job's fields, and its nodes' (a node event carries only that node).
  function apply(event) {
    const job = detail.jobs.find((j) => j.id === event.id || j.name === event.name);
    if (!job) return;
    job.status = event.status;
    if (event.runner) job.runner = event.runner;
    if (event.reason) job.reason = event.reason;
    for (const change of event.nodes || []) {
      const node = job.nodes.find((n) => n.name === change.name);
      if (node) { node.status = change.status; if (change.exitCode !== undefined) node.exitCode = change.exitCode; }
    }
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
  return () => { stream?.close(); log?.close(); };
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
