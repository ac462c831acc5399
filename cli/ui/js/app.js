// The console's router: `#/executions`, `#/executions/ID`, `#/workflows[/NAME]`,
// `#/dead-letters`. Each page renders into <main> and returns a function that
// stops its polling when the page is left.
import { ui } from './api.js';
import { clear, el } from './util.js';
import * as executions from './executions.js';
import * as execution from './execution.js';
import * as workflows from './workflows.js';
import * as deadLetters from './dead-letters.js';

const root = document.getElementById('app');
let leave = null;

function route() {
  if (leave) { leave(); leave = null; }
  clear(root);
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, search] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(search || '');
  const page = parts[0] || 'executions';
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === page);
  }
  try {
    if (page === 'executions' && parts[1]) leave = execution.render(root, parts[1]);
    else if (page === 'executions') leave = executions.render(root, params);
    else if (page === 'workflows') leave = workflows.render(root, parts[1], params);
    else if (page === 'dead-letters') leave = deadLetters.render(root);
    else root.append(el('p', { class: 'notice error' }, `No page ${hash}`));
  } catch (e) {
    root.append(el('p', { class: 'notice error' }, String(e)));
  }
}

window.addEventListener('hashchange', route);
route();
ui.get('/info').then((info) => {
  document.getElementById('backend').textContent = info.backend;
}).catch(() => {});
