// Calls to the console's server: the HTTP API under /api, console-only routes under /ui.

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!response.ok) {
    const message = (data && (data.error || data.message)) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

export const api = {
  get: (path) => call('GET', `/api${path}`),
  post: (path, body) => call('POST', `/api${path}`, body),
};

export const ui = {
  get: (path) => call('GET', `/ui${path}`),
  post: (path, body) => call('POST', `/ui${path}`, body),
};

export const enc = encodeURIComponent;
