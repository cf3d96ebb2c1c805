// Cross-origin writes and DNS rebinding against a service without a token,
// in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven
// by playwright-core.
//
//   node cross_origin.mjs BASE_URL
//
// BASE_URL is a running service with open writes (loopback, no token) whose
// counter `victim` is 0 and `sentinel/a` is 42. The script serves a hostile
// page on another loopback port (http://127.0.0.1:P and http://localhost:P)
// and, from it, tries every way a page can send a write without CORS
// permission: no-cors fetches with text/plain and no type, a JSON-typed
// fetch (preflighted), DELETE and flush, a text/plain form posted into an
// iframe, and sendBeacon. Then, with `evil.test` resolving to 127.0.0.1, it
// opens the service as http://evil.test:PORT (what a DNS-rebinding page
// gets) and writes same-origin from there. The counters must not change.
// Finally the service's own admin page must still increment a counter.
// Prints `RESULT {json}` with what it saw and exits 1 on any failure.
import http from 'node:http';
import { chromium } from 'playwright-core';

const [base] = process.argv.slice(2);
if (!base) {
  console.error('usage: node cross_origin.mjs BASE_URL');
  process.exit(2);
}
const servicePort = new URL(base).port;
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
  // DNS rebinding, simulated: evil.test resolves to the loopback address.
  '--host-resolver-rules=MAP evil.test 127.0.0.1',
];
const TIMEOUT = 15_000;

function log(...args) {
  console.log('[cross-origin e2e]', ...args);
}

function check(condition, message) {
  if (!condition) throw new Error('check failed: ' + message);
}

/** A value read through the API by this process (not a browser: no Origin). */
async function value(key) {
  const response = await fetch(base + '/v1/counters/' + encodeURIComponent(key));
  const data = await response.json();
  if (!response.ok) throw new Error(`GET ${key}: ${response.status} ${JSON.stringify(data)}`);
  return data.value;
}

/** The hostile site: one page, on a port of its own. */
function hostileSite() {
  const page = '<!doctype html><title>not the counters service</title><p>hello</p>';
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Every write a page can send to `target` without CORS permission. */
async function attack(page, target) {
  return page.evaluate(async (target) => {
    const seen = {};
    const attempt = async (name, run) => {
      try {
        const response = await run();
        seen[name] = response && response.type === 'opaque' ? 'sent (opaque answer)' : 'answered ' + response.status;
      } catch (e) {
        seen[name] = 'blocked: ' + e.message;
      }
    };
    const url = target + '/v1/counters/victim';
    const body = '{"delta": 7}';
    await attempt('no-cors text/plain', () =>
      fetch(url, { method: 'POST', mode: 'no-cors', body, headers: { 'Content-Type': 'text/plain' } }));
    await attempt('no-cors, no type', () => fetch(url, { method: 'POST', mode: 'no-cors', body }));
    await attempt('no-cors, JSON type (dropped by the browser)', () =>
      fetch(url, { method: 'POST', mode: 'no-cors', body, headers: { 'Content-Type': 'application/json' } }));
    await attempt('cors JSON (preflighted)', () =>
      fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'application/json' } }));
    await attempt('no-cors form-urlencoded', () =>
      fetch(url, { method: 'POST', mode: 'no-cors', body: new URLSearchParams({ delta: '7' }) }));
    await attempt('no-cors empty POST', () => fetch(url, { method: 'POST', mode: 'no-cors' }));
    await attempt('DELETE sentinel (preflighted)', () =>
      fetch(target + '/v1/counters/sentinel%2Fa', { method: 'DELETE' }));
    await attempt('no-cors flush', () => fetch(target + '/v1/flush', { method: 'POST', mode: 'no-cors' }));
    seen['sendBeacon'] = navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' })) ? 'queued' : 'refused';
    // A text/plain form whose field name carries the JSON, posted into an iframe.
    const frame = document.createElement('iframe');
    frame.name = 'sink';
    document.body.appendChild(frame);
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = url;
    form.enctype = 'text/plain';
    form.target = 'sink';
    const input = document.createElement('input');
    input.name = '{"delta": 7, "x": "';
    input.value = '"}';
    form.appendChild(input);
    document.body.appendChild(form);
    const loaded = new Promise((resolve) => frame.addEventListener('load', resolve, { once: true }));
    form.submit();
    await Promise.race([loaded, new Promise((resolve) => setTimeout(resolve, 3000))]);
    seen['text/plain form'] = 'submitted';
    return seen;
  }, target);
}

async function main() {
  check((await value('victim')) === 0 && (await value('sentinel/a')) === 42, 'the caller seeded victim=0, sentinel/a=42');
  const site = await hostileSite();
  const sitePort = site.address().port;
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  const result = { attacks: {}, rebinding: {} };
  try {
    const context = await browser.newContext();
    const page = await context.newPage();

    for (const origin of [`http://127.0.0.1:${sitePort}`, `http://localhost:${sitePort}`]) {
      await page.goto(origin + '/', { waitUntil: 'domcontentloaded' });
      result.attacks[origin] = await attack(page, base);
      log('from', origin, JSON.stringify(result.attacks[origin]));
    }
    await page.waitForTimeout(1000); // beacons are sent in the background
    result.victim_after_attacks = await value('victim');
    result.sentinel_after_attacks = await value('sentinel/a');

    // DNS rebinding: the page's own name now points at the service.
    const rebound = `http://evil.test:${servicePort}`;
    const first = await page.goto(rebound + '/admin', { waitUntil: 'domcontentloaded' });
    result.rebinding.admin_status = first.status();
    result.rebinding.write = await page.evaluate(async () => {
      const response = await fetch('/v1/counters/victim', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{"delta": 7}',
      });
      return { status: response.status, body: await response.json() };
    });
    result.rebinding.read = await page.evaluate(async () => (await fetch('/v1/counters/sentinel%2Fa')).status);
    log('rebinding', JSON.stringify(result.rebinding));
    result.victim_after_rebinding = await value('victim');

    // The service's own page still writes (same origin, JSON).
    await page.goto(base + '/admin', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#precision option', { state: 'attached', timeout: TIMEOUT });
    await page.fill('#key', 'own/clicks');
    await page.press('#key', 'Enter');
    await page.fill('#delta', '3');
    await page.click('#incr');
    const deadline = Date.now() + TIMEOUT;
    while (Date.now() < deadline && (await page.$eval('#value', (el) => el.dataset.value || '')) !== '3') {
      await page.waitForTimeout(100);
    }
    result.own_page_value = await value('own/clicks');
    console.log('RESULT ' + JSON.stringify(result));

    check(result.victim_after_attacks === 0, 'no cross-origin write landed: victim = ' + result.victim_after_attacks);
    check(result.sentinel_after_attacks === 42, 'no cross-origin delete landed: sentinel = ' + result.sentinel_after_attacks);
    check(result.rebinding.admin_status === 421, 'the rebound name gets 421, not the page: ' + result.rebinding.admin_status);
    check(result.rebinding.write.status === 421, 'a rebound write is 421: ' + JSON.stringify(result.rebinding.write));
    check(result.rebinding.write.body.error.kind === 'unknown_host', 'kind unknown_host');
    check(result.rebinding.read === 421, 'a rebound read is 421: ' + result.rebinding.read);
    check(result.victim_after_rebinding === 0, 'no rebound write landed: victim = ' + result.victim_after_rebinding);
    check(result.own_page_value === 3, 'the admin page itself still writes: ' + result.own_page_value);
  } finally {
    await browser.close();
    site.close();
  }
}

main().then(
  () => log('ok'),
  (error) => {
    console.error('[cross-origin e2e] FAILED:', error.stack || error.message);
    process.exit(1);
  },
);
