// The counters admin page: plain JavaScript, no build step. Reads and
// writes through the /v1 API, sending the token the person entered as a
// bearer header. Everything shown is put in the page with textContent or
// SVG attributes, never as HTML.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const REFRESH_MS = 1000;
const TOKEN_KEY = 'counters.token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  status: null,
  selected: '',
  precision: 0,
  refreshing: false,
  messageTimer: 0,
};

const $ = (id) => document.getElementById(id);

/** A request to the API; throws an Error carrying status and field. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    error.field = data && data.error ? data.error.field : undefined;
    throw error;
  }
  return data;
}

const keyPath = (key) => encodeURIComponent(key);
const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : String(n));

function fmtAge(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return ms + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

function fmtPrecision(p) {
  if (p % 86400 === 0) return p / 86400 + ' d';
  if (p % 3600 === 0) return p / 3600 + ' h';
  if (p % 60 === 0) return p / 60 + ' min';
  return p + ' s';
}

function fmtClock(epochSecs) {
  const d = new Date(epochSecs * 1000);
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

function show(text, kind) {
  const el = $('message');
  el.textContent = text;
  el.className = 'banner ' + (kind || '');
  el.hidden = false;
  clearTimeout(state.messageTimer);
  state.messageTimer = setTimeout(() => { el.hidden = true; }, kind === 'error' ? 8000 : 3000);
}

function explain(error) {
  if (error.status === 401) return 'A valid token is needed: enter it at the top right. (' + error.message + ')';
  if (error.status === 403) return 'This token cannot write: use the write token. (' + error.message + ')';
  return error.message + (error.field ? ' [field: ' + error.field + ']' : '');
}

function setStat(id, value, level) {
  const card = $(id);
  card.querySelector('.value').textContent = value;
  card.classList.remove('good', 'warn', 'bad');
  if (level) card.classList.add(level);
}

function renderAuth() {
  const el = $('auth-state');
  const s = state.status;
  const parts = [];
  if (s) {
    parts.push(s.auth.reads_need_token ? 'reads need a token' : 'reads open');
    parts.push(s.auth.writes_need_token ? 'writes need a token' : 'writes open');
  }
  const needed = s && (s.auth.writes_need_token || s.auth.reads_need_token);
  el.textContent = (state.token ? 'token set · ' : '') + parts.join(' · ');
  el.className = 'auth-state ' + (state.token ? 'ok' : needed ? 'need' : '');
}

async function refreshStatus() {
  const s = await api('GET', '/v1/status');
  state.status = s;
  $('backends').textContent = s.cache + ' cache → ' + s.store + ' store · flush every ' + fmtAge(s.flush_interval_ms);
  const e = s.engine;
  const lag = e.oldest_pending_age_ms;
  const lagLevel = lag === null ? 'good' : lag <= s.flush_interval_ms * 1.5 ? 'good' : lag <= s.flush_interval_ms * 4 ? 'warn' : 'bad';
  setStat('stat-lag', lag === null ? 'none' : fmtAge(lag), lagLevel);
  setStat('stat-pending', fmt(e.pending_cells), e.pending_cells > 0 ? 'warn' : 'good');
  setStat('stat-failures', fmt(e.failures), e.failures > 0 ? 'bad' : 'good');
  $('stat-retries').textContent = 'retries ' + fmt(e.retries) + ' · backpressure ' + fmt(e.backpressure_rejections);
  setStat('stat-flushed', fmt(e.cells_flushed));
  $('stat-batches').textContent = 'batches ' + fmt(e.batches_flushed);
  setStat('stat-increments', fmt(e.increments));
  const banner = $('last-error');
  banner.hidden = !e.last_error;
  banner.textContent = e.last_error ? 'Last store error: ' + e.last_error : '';
  const select = $('precision');
  if (select.options.length === 0) {
    for (const p of s.precisions) {
      const option = document.createElement('option');
      option.value = String(p);
      option.textContent = fmtPrecision(p);
      select.appendChild(option);
    }
    state.precision = s.precisions[0];
    select.value = String(state.precision);
  }
  renderAuth();
}

async function refreshList() {
  const params = new URLSearchParams({
    namespace: $('namespace').value.trim(),
    prefix: $('prefix').value,
    search: $('search').value.trim(),
    limit: '50',
  });
  const data = await api('GET', '/v1/inspect?' + params.toString());
  const body = $('counters').querySelector('tbody');
  const rows = [];
  for (const c of data.counters) {
    const tr = document.createElement('tr');
    tr.dataset.key = c.key;
    if (c.key === state.selected) tr.classList.add('selected');
    const cells = [
      [c.key, 'key'],
      [fmt(c.total), 'num value'],
      [fmt(c.durable), 'num'],
      [(c.pending > 0 ? '+' : '') + fmt(c.pending), 'num' + (c.pending !== 0 ? ' pending-yes' : '')],
      [fmtAge(c.pending_for_ms), 'num'],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      td.className = cls;
      if (cls === 'key') td.title = c.key;
      tr.appendChild(td);
    }
    tr.addEventListener('click', () => select(c.key));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const ns = data.namespace === '' ? 'the default namespace' : 'namespace “' + data.namespace + '”';
  $('list-note').textContent = data.counters.length === 0
    ? 'No counters in ' + ns + (data.prefix ? ' with prefix “' + data.prefix + '”' : '') + (data.search ? ' matching “' + data.search + '”' : '') + '.'
    : 'Showing ' + data.counters.length + ' of ' + data.matched + ' in ' + ns + ', largest first.';
  if (!state.selected && data.counters.length > 0) select(data.counters[0].key, true);
}

async function refreshSelected() {
  const key = state.selected;
  if (!key) {
    $('value').textContent = '–';
    $('breakdown').textContent = 'Pick a counter from the list or type its key.';
    drawChart(null);
    return;
  }
  const [detail, series] = await Promise.all([
    api('GET', '/v1/inspect/' + keyPath(key)),
    api('GET', '/v1/series/' + keyPath(key) + '?precision=' + state.precision),
  ]);
  if (key !== state.selected) return;
  $('value').textContent = fmt(detail.total);
  $('value').dataset.value = String(detail.total);
  $('breakdown').textContent = 'durable ' + fmt(detail.durable)
    + (detail.in_flight === null ? ' + in flight (another process)' : detail.in_flight ? ' + in flight ' + fmt(detail.in_flight) : '')
    + ' + pending ' + fmt(detail.pending)
    + (detail.pending_for_ms !== null ? ' (waiting ' + fmtAge(detail.pending_for_ms) + ')' : '')
    + (detail.drift ? ' (converging with the store: ' + fmt(detail.drift) + ' off)' : '')
    + (detail.held ? '; held by the store: ' + fmt(detail.held) + ' (' + detail.held_error + ')' : '');
  drawChart(series);
}

/** Draws the last samples of a series as bars, empty buckets as gaps. */
function drawChart(series) {
  const svg = $('chart');
  const W = 640, H = 220, left = 48, right = 10, top = 12, bottom = 26;
  const nodes = [];
  const el = (name, attrs, text) => {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    nodes.push(node);
    return node;
  };
  if (!series) {
    svg.replaceChildren();
    svg.dataset.sum = '0';
    $('chart-summary').textContent = '';
    return;
  }
  const p = series.precision;
  const first = Math.floor(series.from / p) * p;
  const last = Math.floor(series.to / p) * p;
  const n = Math.max(1, Math.round((last - first) / p) + 1);
  const counts = new Array(n).fill(0);
  for (const point of series.points) {
    const i = Math.round((point.start - first) / p);
    if (i >= 0 && i < n) counts[i] += point.count;
  }
  const sum = counts.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...counts);
  const min = Math.min(0, ...counts);
  const plotH = H - top - bottom, plotW = W - left - right;
  const y = (v) => top + ((max - v) / (max - min)) * plotH;
  for (const frac of [0, 0.5, 1]) {
    const v = min + (max - min) * frac;
    el('line', { class: 'grid', x1: left, x2: W - right, y1: y(v), y2: y(v) });
    el('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(Math.round(v)));
  }
  el('line', { class: 'axis', x1: left, x2: W - right, y1: y(0), y2: y(0) });
  const slot = plotW / n;
  counts.forEach((c, i) => {
    if (c === 0) return;
    const y0 = y(0), y1 = y(c);
    const rect = el('rect', {
      class: 'bar' + (c < 0 ? ' neg' : '') + (i === n - 1 ? ' latest' : ''),
      x: (left + i * slot + slot * 0.12).toFixed(2),
      y: Math.min(y0, y1).toFixed(2),
      width: Math.max(1, slot * 0.76).toFixed(2),
      height: Math.max(1, Math.abs(y0 - y1)).toFixed(2),
    });
    const title = document.createElementNS(SVG, 'title');
    title.textContent = fmtClock(first + i * p) + ' · ' + fmt(c);
    rect.appendChild(title);
  });
  el('text', { x: left, y: H - 8, 'text-anchor': 'start' }, fmtClock(first));
  el('text', { x: W - right, y: H - 8, 'text-anchor': 'end' }, fmtClock(last) + ' (now)');
  svg.replaceChildren(...nodes);
  svg.dataset.sum = String(sum);
  svg.dataset.last = String(counts[n - 1]);
  $('chart-summary').textContent = fmt(sum) + ' in the last ' + n + ' × ' + fmtPrecision(p);
}

async function refresh() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    await refreshStatus();
    await Promise.all([refreshList(), refreshSelected()]);
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString('en-GB', { hour12: false });
  } catch (error) {
    $('updated').textContent = 'not updated';
    if (error.status === 401) {
      renderAuth();
      $('auth-state').textContent = 'enter the token to see counters';
      $('auth-state').className = 'auth-state need';
    } else {
      show(explain(error), 'error');
    }
  } finally {
    state.refreshing = false;
  }
}

function select(key, quiet) {
  state.selected = key;
  $('key').value = key;
  for (const tr of $('counters').querySelectorAll('tbody tr')) {
    tr.classList.toggle('selected', tr.dataset.key === key);
  }
  if (!quiet) refresh();
}

function currentKey() {
  const key = $('key').value.trim();
  if (!key) {
    show('Type a counter key first (namespace/name).', 'error');
    return null;
  }
  if (key !== state.selected) select(key, true);
  return key;
}

async function write(action) {
  const key = currentKey();
  if (!key) return;
  try {
    const result = await action(key);
    $('value').textContent = fmt(result.value);
    $('value').dataset.value = String(result.value);
    show(key + ' is now ' + fmt(result.value), 'ok');
  } catch (error) {
    show(explain(error), 'error');
  }
  await refresh();
}

function delta(sign) {
  const raw = $('delta').value.trim();
  const n = Number(raw === '' ? '1' : raw);
  if (!Number.isSafeInteger(n)) {
    show('The delta must be a whole number.', 'error');
    return null;
  }
  return sign * n;
}

function setup() {
  $('token').value = state.token;
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = $('token').value.trim();
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    show(state.token ? 'Token set for this tab.' : 'Token cleared.', 'ok');
    refresh();
  });
  $('token-forget').addEventListener('click', () => {
    state.token = '';
    $('token').value = '';
    sessionStorage.removeItem(TOKEN_KEY);
    show('Token forgotten.', 'ok');
    refresh();
  });
  $('filter').addEventListener('submit', (event) => { event.preventDefault(); refresh(); });
  let debounce = 0;
  for (const id of ['namespace', 'prefix', 'search']) {
    $(id).addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(refresh, 250);
    });
  }
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = currentKey();
    if (key) select(key);
  });
  $('incr-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const d = delta(1);
    if (d !== null) write((key) => api('POST', '/v1/counters/' + keyPath(key), { delta: d, sliced: true }));
  });
  $('decr').addEventListener('click', () => {
    const d = delta(-1);
    if (d !== null) write((key) => api('POST', '/v1/counters/' + keyPath(key), { delta: d, sliced: true }));
  });
  $('put-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const v = Number($('put-value').value.trim());
    if ($('put-value').value.trim() === '' || !Number.isSafeInteger(v)) {
      show('The value must be a whole number.', 'error');
      return;
    }
    write((key) => api('PUT', '/v1/counters/' + keyPath(key), { value: v }));
  });
  $('flush').addEventListener('click', async () => {
    try {
      const r = await api('POST', '/v1/flush');
      show('Flushed ' + fmt(r.counters) + ' counters and ' + fmt(r.slices) + ' time buckets in ' + fmt(r.batches) + ' batches.', 'ok');
    } catch (error) {
      show(explain(error), 'error');
    }
    refresh();
  });
  $('precision').addEventListener('change', () => {
    state.precision = Number($('precision').value);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener('DOMContentLoaded', setup);
