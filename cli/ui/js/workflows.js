// Workflows: every deployed workflow, and for one its versions, the graph and
// definition of the version chosen, and a form to start an execution of it.
import { api, ui, enc } from './api.js';
import { clear, el, notice, pretty, time } from './util.js';
import { createGraph } from './graph.js';

export function render(root, name, params) {
  if (name) return renderOne(root, name, params.get('version'));
  const body = el('tbody');
  root.append(el('h1', {}, 'Workflows'),
    el('table', { class: 'list', id: 'workflows' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Workflow'), el('th', {}, 'Latest version'), el('th', {}, 'Steps'), el('th', {}, 'Deployed'), el('th', {}, 'Description'))),
      body));
  api.get('/workflows').then((list) => {
    if (list.length === 0) body.append(el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No workflow is deployed (baton deploy FILE).')));
    for (const w of list) {
      body.append(el('tr', { 'data-name': w.name },
        el('td', {}, el('a', { href: `#/workflows/${enc(w.name)}` }, w.name)), el('td', {}, `v${w.version}`),
        el('td', {}, w.steps), el('td', {}, time(w.created_at)), el('td', {}, w.description || '')));
    }
  }).catch((e) => root.append(el('p', { class: 'notice error' }, e.message)));
  return () => {};
}

function renderOne(root, name, version) {
  const versions = el('div', { class: 'versions', id: 'versions' });
  const graphBox = el('div', { class: 'graph-box' });
  const definition = el('div', { id: 'definition' });
  const message = el('p', { class: 'notice', hidden: true });
  const input = el('textarea', { id: 'start-input', rows: 4, class: 'wide' }, '{}');
  const id = el('input', { id: 'start-id', placeholder: 'execution id (optional)' });
  const start = el('form', { class: 'start', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { input: JSON.parse(input.value || '{}') };
      if (id.value.trim()) body.id = id.value.trim();
      if (version) body.version = Number(version);
      const r = await api.post(`/workflows/${enc(name)}/executions`, body);
      location.hash = `#/executions/${enc(r.id)}`;
    } catch (err) { message.hidden = false; notice(message, `not started: ${err.message}`, 'error'); }
  } }, el('label', {}, 'Input (JSON)', input), id, el('button', { type: 'submit' }, 'Start execution'));
  root.append(el('p', {}, el('a', { href: '#/workflows' }, '← Workflows')),
    el('h1', {}, name), versions, message,
    el('div', { class: 'two' },
      el('section', { class: 'card' }, el('h2', {}, 'Graph'), graphBox),
      el('section', { class: 'card' }, el('h2', {}, 'Start'), start,
        el('p', { class: 'muted' }, 'On the embedded backend a running `baton worker` carries it out.'))),
    el('section', { class: 'card' }, el('h2', {}, 'Definition'), definition));
  const q = version ? `?version=${enc(version)}` : '';
  Promise.all([api.get(`/workflows/${enc(name)}${q}`), api.get(`/workflows/${enc(name)}`), ui.get(`/workflows/${enc(name)}/graph${q}`)])
    .then(([shown, latest, graph]) => {
      for (let v = latest.version; v >= 1; v--) {
        versions.append(el('a', { class: `version${v === shown.version ? ' active' : ''}`, href: `#/workflows/${enc(name)}?version=${v}` }, `v${v}`));
      }
      versions.append(el('span', { class: 'muted' }, ` · v${shown.version} deployed ${time(shown.created_at)}`),
        ' · ', el('a', { href: `#/executions?workflow=${enc(name)}` }, 'its executions'));
      createGraph(graphBox, graph, null).update(() => ({ status: 'idle', text: '' }));
      clear(definition).append(pretty(shown.definition));
    }).catch((e) => { message.hidden = false; notice(message, e.message, 'error'); });
  return () => {};
}
