// One execution: its graph coloured by status, the order compensations ran
// in, the selected step's details, the timeline of every attempt, the raw
// history (with a JSON download) and the lifecycle events, and the actions
// (cancel, signal, redrive a failed execution, start again with the same
// input, redrive a dead letter). It polls every second until the execution
// has finished.
import { api, ui, enc } from './api.js';
import { TERMINAL, badge, clear, download, duration, el, notice, pretty, time } from './util.js';
import { createGraph } from './graph.js';
import { attempts, renderTimeline } from './timeline.js';

const POLL_MS = 1000;

export function render(root, id) {
  const header = el('div', { class: 'exec-header' });
  const message = el('p', { class: 'notice', id: 'action-message', hidden: true });
  const actions = el('div', { class: 'actions', id: 'actions' });
  const graphBox = el('div', { class: 'graph-box', id: 'graph' });
  const legend = el('div', { class: 'legend' },
    ['pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled'].map((s) => el('span', { class: `key status-${s}` }, s)),
    el('span', { class: 'key kind-compensation' }, 'compensation'));
  const compensations = el('ol', { class: 'compensations', id: 'compensations' });
  const panel = el('div', { class: 'panel', id: 'step-panel' }, el('p', { class: 'muted' }, 'Select a step in the graph.'));
  const timeline = el('div', { class: 'timeline', id: 'timeline' });
  const history = el('div', { id: 'history' });
  const events = el('div', { id: 'events' });
  const deadLetters = el('div', { id: 'execution-dead-letters' });

  root.append(
    el('p', {}, el('a', { href: '#/executions' }, '← Executions')),
    header, message, actions,
    el('div', { class: 'two' },
      el('section', { class: 'card' }, el('h2', {}, 'Graph'), legend, graphBox,
        el('h3', {}, 'Compensations, in the order they ran'), compensations),
      el('section', { class: 'card' }, el('h2', {}, 'Step'), panel)),
    el('section', { class: 'card' }, el('h2', {}, 'Timeline'), timeline),
    el('section', { class: 'card' }, el('h2', {}, 'Dead letters'), deadLetters),
    el('section', { class: 'card' }, el('h2', {}, 'History'), history),
    el('section', { class: 'card' }, el('h2', {}, 'Lifecycle events'), events),
  );

  let graph = null;
  let selected = null;
  let state = null;
  let timer = null;
  let stopped = false;

  const say = (text, kind) => { message.hidden = false; notice(message, text, kind); };

  async function load() {
    const [execution, detail, entries, letters] = await Promise.all([
      api.get(`/executions/${enc(id)}`),
      ui.get(`/executions/${enc(id)}/detail`),
      api.get(`/executions/${enc(id)}/history`),
      ui.get('/dead-letters'),
    ]);
    state = { execution, detail, entries, letters: letters.filter((d) => d.execution_id === id) };
    draw();
    return execution;
  }

  function stepOf(name) {
    return state.execution.steps.find((s) => s.name === name);
  }

  function statusOf(node) {
    const step = stepOf(node.step);
    if (!step) return { status: 'pending', text: 'pending' };
    if (node.kind === 'compensation') {
      const order = state.detail.compensation_order.indexOf(node.step) + 1;
      if (!step.compensation) return { status: 'idle', text: 'not run' };
      const s = step.compensation.status;
      const text = s === 'succeeded' ? 'compensated' : s === 'failed' ? 'compensation failed' : s.replace('_', ' ');
      return { status: s, text: `${text}${step.compensation.attempts > 1 ? ` · ${step.compensation.attempts} attempts` : ''}`, order };
    }
    let text = step.status;
    if (step.attempts > 1) text += ` · ${step.attempts} attempts`;
    if (step.elements !== undefined) text += ` · ${step.elements} elements`;
    if (step.compensation && step.compensation.status === 'succeeded') text += ' · undone';
    return { status: step.status, text };
  }

  function draw() {
    const { execution, detail, entries, letters } = state;
    clear(header).append(
      el('h1', {}, el('span', { class: 'id', id: 'execution-id' }, execution.id), ' ',
        el('span', { id: 'execution-status' }, badge(execution.status))),
      el('p', { class: 'meta' },
        'workflow ', el('a', { href: `#/workflows/${enc(execution.workflow)}?version=${execution.version}` }, `${execution.workflow} v${execution.version}`),
        ` · created ${time(execution.created_at)}`,
        execution.finished_at ? ` · finished ${time(execution.finished_at)} (${duration(execution.finished_at - execution.created_at)})` : ' · running',
        execution.cancel_requested ? ' · cancel requested' : '',
        execution.parent ? [' · child of ', el('a', { id: 'parent-link', href: `#/executions/${enc(execution.parent.execution_id)}` }, execution.parent.execution_id),
          ` (step ${execution.parent.step}${execution.parent.index !== undefined ? `[${execution.parent.index}]` : ''})`] : ''),
      execution.error ? el('p', { class: 'notice error', id: 'execution-error' }, `${execution.error.name}: ${execution.error.message}`) : '',
    );
    drawActions(execution, letters);
    if (!graph) {
      graph = createGraph(graphBox, detail.graph, (node) => { selected = node; graph.select(node.id); drawPanel(); });
    }
    graph.update(statusOf);
    clear(compensations);
    if (detail.compensation_order.length === 0) compensations.append(el('li', { class: 'muted none' }, 'none'));
    for (const name of detail.compensation_order) {
      const c = stepOf(name).compensation;
      const node = detail.graph.nodes.find((n) => n.id === `undo:${name}`);
      compensations.append(el('li', { 'data-step': name, 'data-status': c ? c.status : 'pending' },
        `undo ${name} (${node ? node.function : ''}) `, c ? badge(c.status) : ''));
    }
    drawPanel();
    const list = attempts(execution, detail, entries);
    renderTimeline(timeline, execution, list, Boolean(detail.events));
    drawDeadLetters(letters);
    clear(history).append(
      el('div', { class: 'row-actions' },
        el('button', { type: 'button', id: 'download-history', onclick: () => download(`${execution.id}-history.json`, JSON.stringify(entries, null, 2)) }, 'Download JSON'),
        el('span', { class: 'muted' }, `${entries.length} applied events`)),
      el('pre', { class: 'json history-json' }, entries.map((e) => JSON.stringify(e)).join('\n')));
    clear(events);
    if (!detail.events) {
      events.append(el('p', { class: 'muted' }, 'On AWS, lifecycle events go to EventBridge and are not read back here.'));
    } else {
      events.append(el('table', { class: 'list compact' },
        el('thead', {}, el('tr', {}, el('th', {}, 'at'), el('th', {}, 'event'), el('th', {}, 'step'), el('th', {}, 'attempt'), el('th', {}, 'error'))),
        el('tbody', {}, detail.events.map((ev) => el('tr', {},
          el('td', {}, `+${duration(ev.at - execution.created_at)}`), el('td', {}, ev.kind),
          el('td', {}, `${ev.step || ''}${ev.index !== undefined ? `[${ev.index}]` : ''}`), el('td', {}, ev.attempt || ''),
          el('td', {}, ev.error ? `${ev.error.name}: ${ev.error.message}` : ''))))));
    }
  }

  function drawPanel() {
    if (!selected || !state) return;
    const step = stepOf(selected.step);
    const input = state.detail.inputs[selected.step];
    const mine = attempts(state.execution, state.detail, state.entries)
      .filter((a) => a.step === selected.step && (selected.kind === 'compensation') === (a.kind === 'compensation'));
    const rows = mine.map((a) => el('tr', {},
      el('td', {}, `${a.index !== undefined && a.index !== null ? `[${a.index}] ` : ''}#${a.attempt}`), el('td', {}, a.outcome),
      el('td', {}, time(a.start)), el('td', {}, duration(a.end - a.start)),
      el('td', {}, a.error ? `${a.error.name}: ${a.error.message}` : '')));
    const isComp = selected.kind === 'compensation';
    const c = step && step.compensation;
    const parts = [
      el('h3', { id: 'panel-title' }, isComp ? `undo ${selected.step}` : selected.step, ' ',
        isComp ? (c ? badge(c.status) : el('span', { class: 'muted' }, 'not run')) : badge(step ? step.status : 'pending')),
      el('p', { class: 'meta' }, `${selected.kind}${selected.function ? ` · function ${selected.function}` : ''}${selected.workflow ? ` · workflow ${selected.workflow}` : ''}${selected.condition ? ` · if ${selected.condition}` : ''}`),
      !isComp && state.detail.children && state.detail.children[selected.step]
        ? [el('h4', {}, 'Child executions'), el('ul', { class: 'children' }, state.detail.children[selected.step].map((child) =>
          el('li', {}, el('a', { href: `#/executions/${enc(child)}` }, child))))]
        : '',
      !isComp && step ? el('p', {}, `${step.attempts} attempt${step.attempts === 1 ? '' : 's'}${step.elements !== undefined ? `, ${step.elements} elements` : ''}`) : '',
      isComp && c ? el('p', {}, `${c.attempts} attempt${c.attempts === 1 ? '' : 's'}`) : '',
      !isComp ? [el('h4', {}, 'Input'), input === undefined ? el('p', { class: 'muted' }, 'not started') : pretty(input)] : '',
      !isComp && step && step.output !== undefined ? [el('h4', {}, 'Output'), pretty(step.output)] : '',
      !isComp && step && step.error ? [el('h4', {}, 'Error'), el('pre', { class: 'json error-text', id: 'panel-error' }, `${step.error.name}: ${step.error.message}`)] : '',
      isComp && c && c.error ? [el('h4', {}, 'Error'), el('pre', { class: 'json error-text' }, `${c.error.name}: ${c.error.message}`)] : '',
      el('h4', {}, 'Attempts'),
      rows.length ? el('table', { class: 'list compact' }, el('thead', {}, el('tr', {}, el('th', {}, 'attempt'), el('th', {}, 'outcome'), el('th', {}, 'started'), el('th', {}, 'took'), el('th', {}, 'error'))), el('tbody', {}, rows))
        : el('p', { class: 'muted' }, 'none'),
    ];
    clear(panel).append(...parts.flat().filter((p) => p !== ''));
  }

  function drawActions(execution, letters) {
    clear(actions);
    const running = !TERMINAL.includes(execution.status);
    if (running) {
      actions.append(el('button', { type: 'button', id: 'cancel', class: 'danger', onclick: async () => {
        if (!confirm(`Cancel ${execution.id}? Finished steps are compensated.`)) return;
        try {
          const r = await api.post(`/executions/${enc(id)}/cancel`, { reason: 'cancelled from the console' });
          say(`cancel ${r.outcome}${r.reason ? `: ${r.reason}` : ''}; status ${r.status}`, 'ok');
          poll();
        } catch (e) { say(`cancel refused: ${e.message}`, 'error'); }
      } }, 'Cancel'));
      const name = el('input', { id: 'signal-name', placeholder: 'signal name', required: true });
      const data = el('input', { id: 'signal-data', placeholder: 'JSON payload (null)', class: 'wide' });
      actions.append(el('form', { class: 'inline', id: 'signal-form', onsubmit: async (e) => {
        e.preventDefault();
        try {
          const body = data.value.trim() || 'null';
          JSON.parse(body);
          const r = await api.post(`/executions/${enc(id)}/signals/${enc(name.value)}`, body);
          say(`signal ${name.value} ${r.outcome}${r.reason ? `: ${r.reason}` : ''}; status ${r.status}`, r.outcome === 'applied' ? 'ok' : 'warn');
          poll();
        } catch (err) { say(`signal not sent: ${err.message}`, 'error'); }
      } }, name, data, el('button', { type: 'submit' }, 'Send signal')));
    }
    if (execution.status === 'failed') {
      actions.append(el('button', { type: 'button', id: 'redrive', title: 'Run the steps that did not succeed again', onclick: async () => {
        const reason = prompt(`Redrive ${execution.id} from where it failed? Reason (optional):`, '');
        if (reason === null) return;
        try {
          const r = await api.post(`/executions/${enc(id)}/redrive`, reason.trim() ? { reason: reason.trim() } : undefined);
          say(`redrive ${r.outcome}; status ${r.status}`, 'ok');
        } catch (e) { say(`redrive refused: ${e.message}`, 'error'); }
        // Running again (or changed meanwhile): show it, polling while it runs.
        poll();
      } }, 'Redrive'));
    }
    actions.append(el('button', { type: 'button', id: 'start-again', onclick: async () => {
      try {
        const r = await api.post(`/workflows/${enc(execution.workflow)}/executions`, { input: execution.input, version: execution.version });
        location.hash = `#/executions/${enc(r.id)}`;
      } catch (e) { say(`not started: ${e.message}`, 'error'); }
    } }, 'Start again with the same input'));
    if (letters.length) actions.append(el('span', { class: 'muted' }, ` ${letters.length} dead letter${letters.length > 1 ? 's' : ''} below`));
  }

  function drawDeadLetters(letters) {
    clear(deadLetters);
    if (letters.length === 0) { deadLetters.append(el('p', { class: 'muted' }, 'none')); return; }
    for (const d of letters) {
      deadLetters.append(el('div', { class: 'dead-letter', 'data-id': d.id },
        el('p', {}, el('strong', {}, d.kind), ` ${d.id} · ${time(d.created_at)}`),
        el('p', {}, d.reason),
        el('button', { type: 'button', class: 'redrive', onclick: async () => {
          try {
            const r = await ui.post(`/dead-letters/${enc(d.id)}/redrive`);
            say(r.message, r.ok ? 'ok' : 'error');
            poll();
          } catch (e) { say(`redrive failed: ${e.message}`, 'error'); }
        } }, 'Redrive')));
    }
  }

  async function poll() {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const execution = await load();
      // A finished execution changes only through an action, which polls again.
      if (!TERMINAL.includes(execution.status)) timer = setTimeout(poll, POLL_MS);
    } catch (e) {
      say(e.status === 404 ? `No execution ${id}` : String(e.message || e), 'error');
      timer = setTimeout(poll, POLL_MS * 3);
    }
  }
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
