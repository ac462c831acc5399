// The workflow graph: laid out by dagre (vendored, see cli/ui/vendor/dagre),
// drawn as SVG. Nodes carry their kind and status as classes and data
// attributes, so colours come from the style sheet and live updates only
// change attributes.
import dagre from './vendor/dagre.esm.js';

const SVG = 'http://www.w3.org/2000/svg';
const NODE_W = 220;
const LINE_H = 16;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

/**
 * Draws `graph` ({nodes, edges} from /ui/.../graph) into `container`.
 * Returns {update(statusOf)}: `statusOf(node)` gives {status, text, order}
 * for a node; `onSelect(node)` is called when a node is clicked.
 */
export function createGraph(container, graph, onSelect) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 28, ranksep: 36, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) {
    const lines = n.label.split('\n').length + 1 + (n.condition ? 1 : 0);
    g.setNode(n.id, { width: NODE_W, height: 14 + lines * LINE_H, data: n });
  }
  for (const e of graph.edges) g.setEdge(e.from, e.to, { kind: e.kind });
  dagre.layout(g);
  const size = g.graph();

  const root = svg('svg', {
    class: 'graph', width: size.width, height: size.height,
    viewBox: `0 0 ${size.width} ${size.height}`, role: 'img', 'aria-label': `graph of ${graph.workflow}`,
  });
  root.append(svg('defs', {},
    svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));

  for (const id of g.edges()) {
    const edge = g.edge(id);
    const d = edge.points.map((p, i) => `${i ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    root.append(svg('path', { d, class: `edge edge-${edge.kind}`, 'marker-end': 'url(#arrow)' }));
  }

  const shapes = new Map();
  for (const id of g.nodes()) {
    const box = g.node(id);
    const n = box.data;
    const x = box.x - box.width / 2;
    const y = box.y - box.height / 2;
    const group = svg('g', {
      class: `node kind-${n.kind}`, transform: `translate(${x},${y})`, tabindex: 0,
      'data-node-id': n.id, 'data-step': n.step, 'data-kind': n.kind,
    });
    const shape = n.kind === 'compensation'
      ? svg('path', { class: 'shape', d: `M10,0 H${box.width} L${box.width - 10},${box.height} H0 Z` })
      : svg('rect', { class: 'shape', width: box.width, height: box.height, rx: n.kind === 'wait' || n.kind === 'signal' ? 18 : 6 });
    group.append(shape);
    const text = svg('text', { x: 12, y: 4 });
    const lines = n.label.split('\n');
    lines.forEach((line, i) => {
      text.append(svg('tspan', { x: 12, dy: LINE_H, class: i === 0 ? 'title' : 'sub' }, line));
    });
    if (n.condition) text.append(svg('tspan', { x: 12, dy: LINE_H, class: 'sub' }, `if ${n.condition}`));
    const status = svg('tspan', { x: 12, dy: LINE_H, class: 'state' });
    text.append(status);
    group.append(text);
    const order = svg('text', { class: 'order', x: box.width - 10, y: 16, 'text-anchor': 'end' });
    group.append(order);
    group.append(svg('title', {}, `${n.kind}: ${n.label.replace('\n', ' — ')}`));
    group.addEventListener('click', () => onSelect && onSelect(n));
    group.addEventListener('keydown', (e) => { if (e.key === 'Enter') onSelect && onSelect(n); });
    root.append(group);
    shapes.set(n.id, { group, status, order, node: n });
  }
  container.append(root);

  return {
    update(statusOf) {
      for (const { group, status, order, node } of shapes.values()) {
        const s = statusOf(node) || { status: 'pending', text: 'pending' };
        group.setAttribute('data-status', s.status);
        group.setAttribute('class', `node kind-${node.kind} status-${s.status}`);
        status.textContent = s.text ?? s.status;
        order.textContent = s.order ? `#${s.order}` : '';
      }
    },
    select(id) {
      for (const { group, node } of shapes.values()) group.classList.toggle('selected', node.id === id);
    },
  };
}
