// The timeline (Gantt) of every attempt of every step and compensation.
import { clear, duration, el } from './util.js';

const END = {
  'step.succeeded': 'succeeded', 'step.failed': 'failed', 'step.retrying': 'retried',
  'compensation.succeeded': 'succeeded', 'compensation.failed': 'failed', 'compensation.retrying': 'retried',
};

/**
 * Attempts from lifecycle events (exact start and end of each), or, when the
 * backend does not keep them (AWS), from the applied history: each result
 * ends its attempt, placed from the event applied before it.
 */
export function attempts(execution, detail, history) {
  const list = [];
  if (detail.events) {
    const open = new Map();
    for (const ev of detail.events) {
      if (!ev.step) continue;
      const kind = ev.kind.startsWith('compensation.') ? 'compensation' : 'step';
      const key = `${kind}|${ev.step}|${ev.index ?? ''}|${ev.attempt ?? 0}`;
      if (ev.kind.endsWith('.started') || ev.kind === 'step.waiting') {
        const a = { kind, step: ev.step, index: ev.index, attempt: ev.attempt ?? 0, start: ev.at, end: null,
          outcome: ev.kind === 'step.waiting' ? 'waiting' : 'running', error: null };
        open.set(key, a);
        list.push(a);
      } else if (END[ev.kind] || (ev.kind === 'step.succeeded' && open.has(key))) {
        const a = open.get(key) || open.get(`${kind}|${ev.step}|${ev.index ?? ''}|0`);
        if (!a) continue;
        a.end = ev.at;
        a.outcome = END[ev.kind];
        a.error = ev.error || null;
        open.delete(key);
      }
    }
  } else {
    let previous = execution.created_at;
    for (const entry of history) {
      const e = entry.event;
      if (e.task) {
        const outcome = e.type === 'task_succeeded' ? 'succeeded' : e.type === 'task_timed_out' ? 'timed out' : 'failed';
        list.push({ kind: e.task.kind, step: e.task.step, index: e.task.index, attempt: e.task.attempt,
          start: previous, end: entry.at, outcome, error: e.error || null });
      }
      previous = entry.at;
    }
  }
  const now = Date.now();
  const last = execution.finished_at || execution.updated_at;
  for (const a of list) {
    if (a.end === null) a.end = execution.finished_at ? last : Math.max(now, a.start);
  }
  return list;
}

export function renderTimeline(container, execution, list, exact) {
  clear(container);
  if (list.length === 0) {
    container.append(el('p', { class: 'muted' }, 'No attempts yet.'));
    return;
  }
  const start = execution.created_at;
  const end = Math.max(...list.map((a) => a.end), execution.finished_at || 0, start + 1);
  const span = end - start;
  const axis = el('div', { class: 'axis' },
    el('span', {}, '0'), el('span', {}, duration(span / 2)), el('span', {}, duration(span)));
  container.append(axis);
  for (const a of list) {
    const left = ((a.start - start) / span) * 100;
    const width = Math.max(((a.end - a.start) / span) * 100, 0.4);
    const name = `${a.kind === 'compensation' ? 'undo ' : ''}${a.step}${a.index !== undefined && a.index !== null ? `[${a.index}]` : ''}`;
    const label = `${name} #${a.attempt}`;
    const title = `${label}: ${a.outcome}, ${duration(a.end - a.start)}${a.error ? ` — ${a.error.name}: ${a.error.message}` : ''}`;
    container.append(el('div', { class: `row kind-${a.kind}`, 'data-step': a.step, 'data-kind': a.kind },
      el('span', { class: 'label', title }, label),
      el('span', { class: 'track' },
        el('span', { class: `bar outcome-${a.outcome.replace(' ', '-')}`, style: `left:${left}%;width:${width}%`, title },
          el('span', { class: 'dur' }, duration(a.end - a.start))))));
  }
  if (!exact) {
    container.append(el('p', { class: 'muted' },
      'This backend keeps no lifecycle events: each attempt is drawn from the event applied before its result.'));
  }
}
