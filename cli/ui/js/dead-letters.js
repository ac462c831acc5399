// Dead letters: what failed for good (a compensation, a task or timer no retry
// can fix), with its context, and a redrive button that runs `baton dlq redrive`.
import { ui, enc } from './api.js';
import { clear, el, notice, pretty, time } from './util.js';

export function render(root) {
  const message = el('p', { class: 'notice', hidden: true });
  const list = el('div', { id: 'dead-letters' });
  root.append(el('h1', {}, 'Dead letters'), message, list);
  async function load() {
    const letters = await ui.get('/dead-letters');
    clear(list);
    if (letters.length === 0) list.append(el('p', { class: 'muted' }, 'No dead letters.'));
    for (const d of letters) {
      list.append(el('section', { class: 'card dead-letter', 'data-id': d.id },
        el('h3', {}, `${d.kind} `, el('code', {}, d.id)),
        el('p', { class: 'meta' }, time(d.created_at), d.execution_id ? [' · execution ', el('a', { href: `#/executions/${enc(d.execution_id)}` }, d.execution_id)] : ''),
        el('p', {}, d.reason),
        el('details', {}, el('summary', {}, 'Full context'), pretty(d.body)),
        el('button', { type: 'button', class: 'redrive', onclick: async () => {
          try {
            const r = await ui.post(`/dead-letters/${enc(d.id)}/redrive`);
            message.hidden = false;
            notice(message, r.message, r.ok ? 'ok' : 'error');
            await load();
          } catch (e) { message.hidden = false; notice(message, e.message, 'error'); }
        } }, 'Redrive')));
    }
  }
  load().catch((e) => { message.hidden = false; notice(message, e.message, 'error'); });
  return () => {};
}
