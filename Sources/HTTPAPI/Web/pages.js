// Projects, runs, artifacts and runners.

import { LiveStream, announce, can, formatDuration, formatTime, get, h, post, query, statusBadge, triggerText } from './api.js';
import { artifactTable } from './run.js';

function runRow(run) {
  return h('tr', { dataset: { run: String(run.id) } },
    h('td', {}, h('a', { href: `#/runs/${run.id}` }, `${run.id}`)),
    h('td', {}, statusBadge(run.status)),
    h('td', {}, `${run.project} / ${run.pipeline}`),
    h('td', {}, run.branch, run.commit ? h('code', { class: 'commit' }, ` ${run.commit.slice(0, 10)}`) : ''),
    h('td', {}, `${run.attempt}`),
    h('td', { class: 'trigger' }, run.trigger === 'schedule' ? h('span', { title: triggerText(run.trigger, run.triggeredBy) }, 'schedule')
      : [run.trigger, run.triggeredBy ? h('span', { class: 'muted' }, ` by ${run.triggeredBy}`) : '']),
    h('td', {}, formatTime(run.createdAt)),
    h('td', { class: 'duration' }, formatDuration(run.durationMs)));
}

function runTable(runs) {
  return h('table', { class: 'runs' },
    h('thead', {}, h('tr', {}, ['Run', 'Status', 'Pipeline', 'Branch', 'Attempt', 'Trigger', 'Created', 'Duration'].map((t) => h('th', {}, t)))),
    h('tbody', {}, runs.map(runRow)));
}

/// The fields of a pipeline's inputs: a choice for one with options, else a text field (its
/// default filled in; required when it has none).
function inputFields(pipeline) {
  return (pipeline?.inputs || []).map((input, index) => {
    const id = `run-input-${index}`;
    const field = input.options.length
      ? h('select', { id, name: input.name }, input.options.map((o) => h('option', { value: o, selected: o === input.default }, o)))
      : h('input', { id, name: input.name, value: input.default ?? '', required: input.default === undefined });
    return { name: input.name, field, label: h('label', { for: id, title: input.description || '' }, `Input ${input.name}`) };
  });
}

/// The Run button's dialog: pipeline, branch and the pipeline's inputs; on success, the new
/// run's page.
function runDialog(project, pipelines, navigate) {
  const dialog = h('dialog', { class: 'run-dialog', 'aria-labelledby': 'run-dialog-title' });
  const select = h('select', { id: 'run-pipeline', name: 'pipeline' }, pipelines.map((p) => h('option', { value: p.name }, p.name)));
  const branch = h('input', { id: 'run-branch', name: 'branch', value: 'main', required: true });
  const inputsBox = h('div', { class: 'run-inputs' });
  let inputs = [];
  const showInputs = () => {
    inputs = inputFields(pipelines.find((p) => p.name === select.value));
    inputsBox.replaceChildren(...inputs.flatMap((i) => [i.label, i.field]));
  };
  select.addEventListener('change', showInputs);
  showInputs();
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { method: 'dialog', onsubmit: async (event) => {
    event.preventDefault();
    try {
      const body = { branch: branch.value.trim() || 'main' };
      if (inputs.length) body.inputs = Object.fromEntries(inputs.map((i) => [i.name, i.field.value]));
      const created = await post(`/projects/${encodeURIComponent(project)}/pipelines/${encodeURIComponent(select.value)}/runs`,
        body);
      dialog.close();
      dialog.remove();
      announce(`run ${created.run} queued`);
      navigate(`#/runs/${created.run}`);
    } catch (failure) { error.textContent = failure.message; }
  } },
  h('h2', { id: 'run-dialog-title' }, `Run a pipeline of ${project}`),
  h('label', { for: 'run-pipeline' }, 'Pipeline'), select,
  h('label', { for: 'run-branch' }, 'Branch'), branch,
  inputsBox,
  error,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Run'),
    h('button', { type: 'button', onclick: () => { dialog.close(); dialog.remove(); } }, 'Cancel')));
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  select.focus();
}

export async function projectsPage(main, params, { navigate }) {
  const { projects } = await get('/projects');
  const sections = [];
  for (const project of projects) {
    const { pipelines } = await get(`/projects/${encodeURIComponent(project.name)}/pipelines`);
    // Each pipeline with its last runs (newest first), each a link to its page.
    const lastRuns = await Promise.all(pipelines.map((p) =>
      get(`/runs${query({ project: project.name, pipeline: p.name, limit: 5 })}`).then((page) => page.runs)));
    sections.push(h('section', { class: 'project', dataset: { project: project.name } },
      h('h2', {}, h('a', { href: `#/projects/${encodeURIComponent(project.name)}` }, project.name),
        can('trigger') && pipelines.length ? h('button', { type: 'button', class: 'run-button primary',
          'aria-label': `Run a pipeline of ${project.name}`, onclick: () => runDialog(project.name, pipelines, navigate) }, 'Run') : null),
      h('p', { class: 'muted' }, project.repository || 'no repository (jobs run in an empty workspace)'),
      pipelines.length ? h('table', { class: 'pipelines' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Pipeline'), h('th', {}, 'Version'), h('th', {}, 'Jobs'), h('th', {}, 'Last runs'))),
        h('tbody', {}, pipelines.map((p, index) => h('tr', { dataset: { pipeline: p.name } },
          h('td', {}, p.name), h('td', {}, `${p.version}`), h('td', {}, p.jobs.join(', ')),
          h('td', { class: 'last-runs' }, lastRuns[index].length ? lastRuns[index].map((run) =>
            h('a', { href: `#/runs/${run.id}`, title: `run ${run.id}: ${run.status}, ${run.branch}`,
              'aria-label': `run ${run.id}: ${run.status}` }, statusBadge(run.status), ` ${run.id}`)) : h('span', { class: 'muted' }, 'no runs yet'))))))
        : h('p', { class: 'muted' }, 'No pipelines yet: heddle pipeline push FILE.act --project ' + project.name)));
  }
  main.replaceChildren(h('h1', {}, 'Projects'), ...(sections.length ? sections : [h('p', {}, 'No projects yet: heddle project create NAME --repo URL')]));
}

export async function projectPage(main, params, { navigate }) {
  const name = params.project;
  const { project, pipelines } = await get(`/projects/${encodeURIComponent(name)}`);
  const { runs } = await get(`/runs${query({ project: name, limit: 20 })}`);
  const deliveries = project.webhook ? (await get(`/projects/${encodeURIComponent(name)}/deliveries`).catch(() => ({ deliveries: [] }))).deliveries : [];
  const { schedules } = await get(`/schedules${query({ project: name })}`);
  main.replaceChildren(
    h('h1', {}, `Project ${name} `, can('trigger') && pipelines.length ? h('button', { type: 'button', class: 'run-button primary',
      onclick: () => runDialog(name, pipelines, navigate) }, 'Run') : null),
    h('dl', { class: 'facts' }, h('dt', {}, 'Repository'), h('dd', {}, project.repository || '—'),
      h('dt', {}, 'Webhook'), h('dd', {}, project.webhookUrl ? h('code', { class: 'webhook-url' }, project.webhookUrl)
        : project.webhook ? 'set (the coordinator has no public URL)' : 'none (heddle project webhook NAME --rotate)')),
    h('h2', {}, 'Pipelines'),
    h('ul', {}, pipelines.map((p) => h('li', {}, `${p.name} — version ${p.version}, jobs: ${p.jobs.join(', ')}`))),
    ...(schedules.length ? [h('h2', {}, 'Schedules'), h('table', { class: 'schedules' },
      h('thead', {}, h('tr', {}, ['Pipeline', 'Cron', 'Time zone', 'Branch', 'Next due', 'Last started'].map((t) => h('th', {}, t)))),
      h('tbody', {}, schedules.map((s) => h('tr', { dataset: { pipeline: s.pipeline } },
        h('td', {}, s.pipeline), h('td', {}, h('code', {}, s.cron)), h('td', {}, s.timezone), h('td', {}, s.branch),
        h('td', { class: 'next-due' }, s.nextDue ? formatTime(s.nextDue) : 'never'),
        h('td', {}, s.lastRun ? [formatTime(s.lastDue), ' (', h('a', { href: `#/runs/${s.lastRun}` }, `run ${s.lastRun}`), ')']
          : h('span', { class: 'muted' }, 'not yet'))))))] : []),
    h('h2', {}, 'Recent runs'), runs.length ? runTable(runs) : h('p', { class: 'muted' }, 'No runs yet.'),
    h('h2', {}, 'Recent deliveries'),
    deliveries.length ? h('table', { class: 'deliveries' },
      h('thead', {}, h('tr', {}, ['Received', 'Forge', 'Event', 'Delivery', 'Outcome', 'Detail', 'Runs'].map((t) => h('th', {}, t)))),
      h('tbody', {}, deliveries.map((d) => h('tr', {},
        h('td', {}, formatTime(d.receivedAt)), h('td', {}, d.forge), h('td', {}, d.event), h('td', {}, h('code', {}, d.delivery)),
        h('td', {}, h('span', { class: `outcome outcome-${d.outcome}` }, d.outcome)), h('td', {}, d.detail),
        h('td', {}, d.runs.map((run) => h('a', { href: `#/runs/${run}` }, `${run} `)))))))
      : h('p', { class: 'muted' }, 'No deliveries yet.'));
}

export async function runsPage(main, params, { navigate }) {
  const filters = { project: params.project || '', pipeline: params.pipeline || '', branch: params.branch || '',
    status: params.status || '', trigger: params.trigger || '' };
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the runs', onsubmit: (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    navigate(`#/runs${query(data)}`);
  } },
  ...['project', 'pipeline', 'branch'].map((key) => h('label', {}, key[0].toUpperCase() + key.slice(1), ' ',
    h('input', { name: key, value: filters[key] }))),
  h('label', {}, 'Status ', h('select', { name: 'status' }, ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled']
    .map((s) => h('option', { value: s, selected: s === filters.status }, s || 'any')))),
  h('label', {}, 'Trigger ', h('select', { name: 'trigger' }, ['', 'manual', 'api', 'webhook', 'schedule']
    .map((s) => h('option', { value: s, selected: s === filters.trigger }, s || 'any')))),
  h('button', { type: 'submit' }, 'Filter'));
  const body = h('div');
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Older runs');
  main.replaceChildren(h('h1', {}, 'Runs'), form, body, more);
  let pages = [];
  let next = null;
  async function load() {
    const first = await get(`/runs${query({ ...filters, limit: 50 })}`);
    pages = first.runs;
    next = first.next;
    draw();
  }
  function draw() {
    body.replaceChildren(pages.length ? runTable(pages) : h('p', { class: 'muted' }, 'No runs match.'));
    more.hidden = !next;
  }
  more.addEventListener('click', async () => {
    const page = await get(`/runs${query({ ...filters, limit: 50, cursor: next })}`);
    pages = pages.concat(page.runs);
    next = page.next;
    draw();
  });
  await load();
  // Live: a job queued, claimed or finished changes a run's status: read the first page again.
  let timer = null;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const first = await get(`/runs${query({ ...filters, limit: 50 })}`).catch(() => null);
      if (!first) return;
      const ids = new Set(first.runs.map((r) => r.id));
      pages = first.runs.concat(pages.filter((r) => !ids.has(r.id) && r.id < (first.runs[first.runs.length - 1]?.id ?? 0)));
      draw();
    }, 300);
  };
  const stream = new LiveStream('/api/v1/events', { queue: changed, subscribed: changed });
  return () => { stream.close(); clearTimeout(timer); };
}

export async function artifactsPage(main, params, { navigate }) {
  const fields = ['name', 'project', 'pipeline', 'branch', 'sha256', 'minSize', 'maxSize', 'after', 'before', 'sort'];
  const values = Object.fromEntries(fields.map((f) => [f, params[f] || '']));
  const input = (name, label, attributes = {}) => h('label', {}, label, ' ', h('input', { name, value: values[name], ...attributes }));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search the artifacts', onsubmit: (event) => {
    event.preventDefault();
    const data = Object.fromEntries([...new FormData(form).entries()].filter(([, v]) => v !== ''));
    navigate(`#/artifacts${query(data)}`);
  } },
  input('name', 'Name', { placeholder: 'part or glob: *.whl' }), input('project', 'Project'), input('pipeline', 'Pipeline'),
  input('branch', 'Branch'), input('sha256', 'SHA-256', { placeholder: 'hex prefix' }),
  input('minSize', 'Min bytes', { type: 'number', min: 0 }), input('maxSize', 'Max bytes', { type: 'number', min: 0 }),
  input('after', 'After', { type: 'date' }), input('before', 'Before', { type: 'date' }),
  h('label', {}, 'Sort ', h('select', { name: 'sort' }, ['newest', 'oldest', 'largest', 'smallest', 'name']
    .map((s) => h('option', { value: s, selected: s === (values.sort || 'newest') }, s)))),
  h('button', { type: 'submit', class: 'primary' }, 'Search'));
  const results = h('div', { class: 'results' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Next page');
  main.replaceChildren(h('h1', {}, 'Artifacts'), form, results, more);
  const search = { ...Object.fromEntries(Object.entries(values).filter(([, v]) => v)), limit: 50 };
  for (const key of ['after', 'before']) if (search[key]) search[key] = new Date(search[key]).toISOString();
  let items = [];
  let next = null;
  async function page(cursor) {
    try {
      const answer = await get(`/artifacts${query({ ...search, cursor })}`);
      items = items.concat(answer.artifacts);
      next = answer.next;
      results.replaceChildren(items.length ? artifactTable(items) : h('p', { class: 'muted' }, 'No artifact matches.'));
      more.hidden = !next;
    } catch (error) {
      results.replaceChildren(h('p', { class: 'error', role: 'alert' }, error.message));
    }
  }
  more.addEventListener('click', () => page(next));
  await page();
}

export async function runnersPage(main) {
  const table = h('div');
  main.replaceChildren(h('h1', {}, 'Runners'), table);
  async function load() {
    const { runners } = await get('/runners');
    table.replaceChildren(runners.length ? h('table', { class: 'runners' },
      h('thead', {}, h('tr', {}, ['Runner', 'Labels', 'Capacity', 'Running', 'Version', 'Last heartbeat', 'State', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, runners.map((runner) => h('tr', { dataset: { runner: runner.name } },
        h('td', {}, runner.name), h('td', {}, runner.labels.join(', ')), h('td', {}, `${runner.capacity}`),
        h('td', {}, `${runner.running}`),
        h('td', { class: 'version' }, runner.protocol ? `${runner.version ?? '?'} (protocol ${runner.protocol})` : ''),
        h('td', {}, formatTime(runner.lastHeartbeat)),
        h('td', {}, runner.drained ? 'drained' : 'taking jobs', runner.stalled ? h('span', { class: 'error' }, ` — ${runner.stalled}`) : ''),
        h('td', {}, can('drain') ? h('button', { type: 'button', onclick: async () => {
          try {
            await post(`/runners/${encodeURIComponent(runner.name)}/${runner.drained ? 'undrain' : 'drain'}`);
            announce(`${runner.name} ${runner.drained ? 'takes jobs again' : 'is drained'}`);
          } catch (error) { announce(error.message, { error: true }); }
          load();
        } }, runner.drained ? 'Undrain' : 'Drain') : null)))))
      : h('p', { class: 'muted' }, 'No runner is connected.'));
  }
  await load();
  const interval = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(interval);
}
