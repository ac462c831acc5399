// The executions list: filters (workflow, status, time), pages, and counts by
// status; the counts and the page shown refresh every two seconds.
import { api, ui, enc } from './api.js';
import { STATUSES, badge, clear, el, time } from './util.js';

const PAGE = 25;
const REFRESH_MS = 2000;

function toMillis(value) {
  return value ? String(new Date(value).getTime()) : '';
}

export function render(root, params) {
  const filter = {
    workflow: params.get('workflow') || '',
    status: params.get('status') || '',
    since: params.get('since') || '',
    until: params.get('until') || '',
  };
  // Cursors of the pages before the one shown, to go back.
  const cursors = [];
  let after = '';

  const workflowSelect = el('select', { id: 'filter-workflow', name: 'workflow' }, el('option', { value: '' }, 'all workflows'));
  const statusSelect = el('select', { id: 'filter-status', name: 'status' }, el('option', { value: '' }, 'any status'),
    STATUSES.map((s) => el('option', { value: s }, s.replace('_', ' '))));
  statusSelect.value = filter.status;
  const since = el('input', { type: 'datetime-local', id: 'filter-since', step: '1' });
  const until = el('input', { type: 'datetime-local', id: 'filter-until', step: '1' });
  if (filter.since) since.value = filter.since;
  if (filter.until) until.value = filter.until;
  const apply = () => {
    const q = new URLSearchParams();
    if (workflowSelect.value) q.set('workflow', workflowSelect.value);
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (since.value) q.set('since', since.value);
    if (until.value) q.set('until', until.value);
    location.hash = `#/executions${q.toString() ? `?${q}` : ''}`;
  };
  for (const input of [workflowSelect, statusSelect, since, until]) input.addEventListener('change', apply);

  const counts = el('div', { class: 'counts', id: 'counts' });
  const body = el('tbody');
  const table = el('table', { class: 'list', id: 'executions' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Execution'), el('th', {}, 'Workflow'), el('th', {}, 'Status'),
      el('th', {}, 'Created'), el('th', {}, 'Updated'))), body);
  const newer = el('button', { type: 'button', id: 'page-newer' }, '← Newer');
  const older = el('button', { type: 'button', id: 'page-older' }, 'Older →');
  const message = el('p', { class: 'notice', hidden: true });

  root.append(
    el('h1', {}, 'Executions'),
    el('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
      el('label', {}, 'Workflow ', workflowSelect), el('label', {}, 'Status ', statusSelect),
      el('label', {}, 'Created from ', since), el('label', {}, 'to ', until)),
    counts, message, table, el('div', { class: 'pager' }, newer, older),
  );

  api.get('/workflows').then((list) => {
    for (const w of list) workflowSelect.append(el('option', { value: w.name }, w.name));
    workflowSelect.value = filter.workflow;
  }).catch(() => {});

  const query = () => {
    const q = new URLSearchParams();
    if (filter.workflow) q.set('workflow', filter.workflow);
    if (filter.since) q.set('since', toMillis(filter.since));
    if (filter.until) q.set('until', toMillis(filter.until));
    return q;
  };

  async function loadCounts() {
    const data = await ui.get(`/counts?${query()}`);
    clear(counts);
    for (const status of STATUSES) {
      const c = data[status];
      const link = el('a', {
        class: `count status-${status}${filter.status === status ? ' active' : ''}`,
        href: `#/executions?${new URLSearchParams({ ...Object.fromEntries(query()), status: filter.status === status ? '' : status })}`,
        'data-status': status,
      }, el('span', { class: 'n' }, `${c.count}${c.more ? '+' : ''}`), ` ${status.replace('_', ' ')}`);
      counts.append(link);
    }
  }

  async function loadPage() {
    const q = query();
    if (filter.status) q.set('status', filter.status);
    q.set('limit', String(PAGE));
    if (after) q.set('after', after);
    const page = await api.get(`/executions?${q}`);
    clear(body);
    if (page.executions.length === 0) {
      body.append(el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No executions match.')));
    }
    for (const e of page.executions) {
      body.append(el('tr', { 'data-id': e.id, 'data-status': e.status },
        el('td', {}, el('a', { href: `#/executions/${enc(e.id)}` }, e.id)),
        el('td', {}, `${e.workflow} v${e.version}`),
        el('td', {}, badge(e.status)),
        el('td', {}, time(e.created_at)), el('td', {}, time(e.updated_at))));
    }
    older.disabled = !page.next;
    older.onclick = () => { cursors.push(after); after = page.next; loadPage().catch(show); };
    newer.disabled = cursors.length === 0;
    newer.onclick = () => { after = cursors.pop() || ''; loadPage().catch(show); };
  }

  function show(e) {
    message.hidden = false;
    message.className = 'notice error';
    message.textContent = String(e.message || e);
  }

  const refresh = () => Promise.all([loadCounts(), loadPage()])
    .then(() => { message.hidden = true; }).catch(show);
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
