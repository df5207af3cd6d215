// A job's nodes as an SVG graph: each node in the column of its longest chain of `needs`
// (so every edge points right), ordered in its column by where its needs sit (fewer
// crossings), coloured by status; running nodes pulse. Nodes are buttons: a click or Enter
// opens that node's log.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 170;
const HEIGHT = 44;
const GAP_X = 60;
const GAP_Y = 14;

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  element.append(...children);
  return element;
}

/// Columns and rows for nodes [{name, needs}]: a layered layout.
export function layout(nodes) {
  const byName = new Map(nodes.map((node) => [node.name, node]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle cannot be pushed; drawn anyway
    visiting.add(name);
    const node = byName.get(name);
    const value = node ? Math.max(-1, ...node.needs.filter((need) => byName.has(need)).map(depthOf)) + 1 : 0;
    visiting.delete(name);
    depth.set(name, value);
    return value;
  };
  const columns = [];
  for (const node of nodes) {
    const column = depthOf(node.name);
    (columns[column] ||= []).push(node.name);
  }
  const row = new Map();
  columns.forEach((names, column) => {
    if (column > 0) {
      const weight = (name) => {
        const needs = byName.get(name).needs.filter((need) => row.has(need));
        return needs.length ? needs.reduce((sum, need) => sum + row.get(need), 0) / needs.length : Infinity;
      };
      names.sort((a, b) => weight(a) - weight(b));
    }
    names.forEach((name, index) => row.set(name, index));
  });
  const position = new Map();
  for (const [name, value] of depth) position.set(name, { column: value, row: row.get(name) });
  const rows = Math.max(1, ...columns.map((names) => names?.length || 0));
  return { position, columns: columns.length, rows };
}

/// The SVG of one job's nodes. `onOpen(node)` opens a node's log; `selected` is outlined.
export function drawJob(job, { onOpen, selected, durationOf }) {
  const { position, columns, rows } = layout(job.nodes);
  const width = columns * (WIDTH + GAP_X) - GAP_X + 20;
  const height = rows * (HEIGHT + GAP_Y) - GAP_Y + 20;
  const root = svg('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group',
    'aria-label': `Nodes of job ${job.name}` });
  const at = (name) => {
    const place = position.get(name);
    return { x: 10 + place.column * (WIDTH + GAP_X), y: 10 + place.row * (HEIGHT + GAP_Y) };
  };
  const edges = svg('g', { class: 'edges' });
  for (const node of job.nodes) {
    const to = at(node.name);
    for (const need of node.needs) {
      if (!position.has(need)) continue;
      const from = at(need);
      const x1 = from.x + WIDTH;
      const y1 = from.y + HEIGHT / 2;
      const x2 = to.x;
      const y2 = to.y + HEIGHT / 2;
      const bend = (x2 - x1) / 2;
      edges.append(svg('path', { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
        class: `edge status-${node.status}` }));
    }
  }
  root.append(edges);
  for (const node of job.nodes) {
    const { x, y } = at(node.name);
    const label = node.name.length > 20 ? node.name.slice(0, 19) + '…' : node.name;
    const group = svg('g', { class: `node status-${node.status}${node.name === selected ? ' selected' : ''}`,
      transform: `translate(${x},${y})`, tabindex: '0', role: 'button', 'data-node': node.name,
      'aria-label': `node ${node.name}: ${node.status}${node.exitCode !== undefined ? `, exit ${node.exitCode}` : ''}; open its log` },
    svg('title', {}, `${node.name}: ${node.status}`),
    svg('rect', { width: WIDTH, height: HEIGHT, rx: 6 }),
    svg('circle', { class: 'dot', cx: 14, cy: HEIGHT / 2, r: 5 }),
    svg('text', { x: 26, y: 19 }, label),
    svg('text', { class: 'duration', x: 26, y: 35, 'data-tick-node': node.name },
      durationOf ? durationOf(node) : ''));
    group.addEventListener('click', () => onOpen(node));
    group.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); onOpen(node); }
    });
    root.append(group);
  }
  return root;
}
