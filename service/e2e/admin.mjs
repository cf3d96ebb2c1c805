// End-to-end test of the admin page in a real browser: headless Chromium
// (Debian's /usr/bin/chromium) driven by playwright-core.
//
//   node admin.mjs BASE_URL WRITE_TOKEN [SCREENSHOT.png]
//
// Seeds counters through the API, opens BASE_URL/admin, checks that a write
// without the token is refused on the page, enters the token, increments and
// decrements a counter with the page's controls and waits for the value, the
// table and the time-slice chart to change; sets another counter; takes a
// screenshot. Prints `RESULT {json}` with the final values for the caller to
// check against the store, and exits 1 on any failure (with a screenshot
// next to the requested one).
import { chromium } from 'playwright-core';

const [base, token, screenshot] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node admin.mjs BASE_URL WRITE_TOKEN [SCREENSHOT.png]');
  process.exit(2);
}
const executablePath = process.env.COUNTERS_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const KEY = 'shop/clicks:ad42';
const TIMEOUT = 15_000;

function log(...args) {
  console.log('[admin e2e]', ...args);
}

function check(condition, message) {
  if (!condition) throw new Error('check failed: ' + message);
}

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

const incr = (key, delta, extra = {}) =>
  api('POST', '/v1/counters/' + encodeURIComponent(key), { delta, ...extra });

/** Counters with history: a wave of time-sliced increments over the last 90 s. */
async function seed() {
  const now = Math.floor(Date.now() / 1000);
  const writes = [];
  for (let ago = 90; ago >= 1; ago--) {
    const delta = Math.max(1, Math.round(6 + 4 * Math.sin(ago / 8) + ((ago * 7) % 5)));
    writes.push(incr(KEY, delta, { at: now - ago }));
  }
  await Promise.all(writes);
  await incr('shop/views:home', 18_250, { sliced: true });
  await incr('shop/views:cart', 4_310, { sliced: true });
  await incr('shop/clicks:ad7', 912, { sliced: true });
  await incr('shop/signups', 57, { sliced: true });
  await incr('web/other-namespace', 1);
  await api('POST', '/v1/flush');
  // Pending deltas, for the table's "pending" column.
  await incr('shop/views:home', 42, { sliced: true });
  await incr('shop/clicks:ad7', 3, { sliced: true });
  return (await api('GET', '/v1/counters/' + encodeURIComponent(KEY))).value;
}

/** Waits until `read()` returns `expected`, or fails saying what it saw. */
async function until(what, read, expected) {
  const deadline = Date.now() + TIMEOUT;
  let seen;
  while (Date.now() < deadline) {
    seen = await read();
    if (seen === expected) return seen;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: expected ${JSON.stringify(expected)}, saw ${JSON.stringify(seen)}`);
}

async function main() {
  const seeded = await seed();
  log('seeded', KEY, '=', seeded);

  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  const problems = [];
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 780 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      // Refused writes are expected below (401); anything else is a problem.
      if (m.type() === 'error' && !m.text().includes('401')) problems.push('console: ' + m.text());
    });

    await page.goto(base + '/admin', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#precision option', { state: 'attached', timeout: TIMEOUT });
    const value = () => page.$eval('#value', (el) => el.dataset.value || '');
    const chartSum = () => page.$eval('#chart', (el) => Number(el.dataset.sum || 'NaN'));

    // Pick the counter by key; the value and the seeded history show.
    await page.fill('#key', KEY);
    await page.press('#key', 'Enter');
    await until('seeded value', value, String(seeded));
    const seededSum = await until('seeded chart', chartSum, seeded);
    log('value and chart show the seeded', seeded);

    // Without the token, a write is refused and the page says so.
    await page.fill('#delta', '5');
    await page.click('#incr');
    await page.waitForSelector('#message.error', { timeout: TIMEOUT });
    const refusal = await page.textContent('#message');
    check(/token/i.test(refusal), 'the refusal mentions the token: ' + refusal);
    check((await value()) === String(seeded), 'a refused write changes nothing');
    log('write without token refused:', refusal.trim());

    // With the token: increment, and see value, table and chart change.
    await page.fill('#token', token);
    await page.click('#token-save');
    await page.waitForSelector('#auth-state.ok', { timeout: TIMEOUT });
    await page.fill('#namespace', 'shop');
    await page.press('#namespace', 'Enter');
    await page.fill('#delta', '5');
    await page.click('#incr');
    await until('value after +5', value, String(seeded + 5));
    await until('chart after +5', chartSum, seededSum + 5);
    const rowValue = () =>
      page.$$eval('#counters tbody tr', (rows, key) => {
        const row = rows.find((r) => r.dataset.key === key);
        return row ? row.querySelector('td.value').textContent : null;
      }, KEY);
    await until('table row after +5', rowValue, (seeded + 5).toLocaleString('en-US'));
    log('incremented by 5 through the page:', seeded + 5);

    await page.fill('#delta', '2');
    await page.click('#decr');
    await until('value after -2', value, String(seeded + 3));
    await until('chart after -2', chartSum, seededSum + 3);
    log('decremented by 2 through the page:', seeded + 3);

    // The list is by namespace, sorted by value, with search.
    const keys = () => page.$$eval('#counters tbody tr', (rows) => rows.map((r) => r.dataset.key).join(','));
    await until('shop counters by value', keys, 'shop/views:home,shop/views:cart,shop/clicks:ad7,' + KEY + ',shop/signups');
    await page.fill('#search', 'VIEWS');
    await until('search', keys, 'shop/views:home,shop/views:cart');
    await page.fill('#search', '');
    await until('search cleared', keys, 'shop/views:home,shop/views:cart,shop/clicks:ad7,' + KEY + ',shop/signups');
    const pendingHome = await page.$$eval('#counters tbody tr', (rows) =>
      rows.find((r) => r.dataset.key === 'shop/views:home').children[3].textContent);
    check(pendingHome === '+42', 'views:home shows its pending delta: ' + pendingHome);

    // Set another counter's value, then come back.
    await page.fill('#key', 'shop/refunds');
    await page.press('#key', 'Enter');
    await page.fill('#put-value', '-12');
    await page.click('#put');
    await until('put value', value, '-12');
    await page.click(`#counters tbody tr[data-key="${KEY}"]`);
    await until('back to ' + KEY, value, String(seeded + 3));

    // Flush lag and failures at a glance.
    const lag = await page.textContent('#stat-lag .value');
    const failures = await page.textContent('#stat-failures .value');
    check(failures === '0', 'no store failures: ' + failures);
    log('flush lag', lag, '· failures', failures);

    check(problems.length === 0, 'no page errors: ' + problems.join('; '));
    await page.waitForTimeout(1200); // one more refresh, for a settled screenshot
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
      log('screenshot', screenshot);
    }
    console.log('RESULT ' + JSON.stringify({ [KEY]: seeded + 3, 'shop/refunds': -12 }));
  } catch (error) {
    if (page && screenshot) {
      await page.screenshot({ path: screenshot.replace(/\.png$/, '') + '.failed.png', fullPage: true }).catch(() => {});
    }
    if (problems.length) console.error('[admin e2e] page problems:', problems.join('; '));
    throw error;
  } finally {
    await browser.close();
  }
}

main().then(
  () => log('ok'),
  (error) => {
    console.error('[admin e2e] FAILED:', error.stack || error.message);
    process.exit(1);
  },
);
