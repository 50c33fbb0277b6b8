// What Haven Player's renderer has and Node 20 lacks, as the renderer would behave:
//
// - fetch with the browser's CORS rules: a cross-origin request carries `Origin`; one that is
//   not "simple" (a JSON body, an Authorization header) is preceded by a preflight, and the
//   request fails with a TypeError ("Failed to fetch") unless the preflight allows the origin,
//   method and headers and the answer carries a matching Access-Control-Allow-Origin.
// - WebSocket (the `ws` package) with the page's Origin.
// - the client's backend address, http://localhost:8000, reaching the gateway instead.
// - with the gateway's auth on, the bearer token on every request (the way a deployment puts
//   it in: Electron's session.webRequest header injection) and `?token=` on WebSockets, whose
//   browser API takes no headers.
import { WebSocket as NodeWebSocket } from 'ws';

const BACKEND = 'http://localhost:8000';
const SIMPLE_METHODS = new Set(['GET', 'HEAD', 'POST']);
const SIMPLE_CONTENT_TYPES = new Set([
  'application/x-www-form-urlencoded',
  'multipart/form-data',
  'text/plain',
]);
const SAFELISTED = new Set(['accept', 'accept-language', 'content-language']);
// Headers a page cannot set: the browser drops them (axios sets User-Agent under Node).
const FORBIDDEN = new Set([
  'accept-charset', 'accept-encoding', 'connection', 'content-length', 'cookie', 'date', 'dnt',
  'expect', 'host', 'keep-alive', 'origin', 'referer', 'te', 'trailer', 'transfer-encoding',
  'upgrade', 'user-agent', 'via',
]);

export class CorsError extends TypeError {}

function isSimpleHeader(name, value) {
  if (SAFELISTED.has(name)) return true;
  if (name === 'content-type') return SIMPLE_CONTENT_TYPES.has(value.split(';')[0].trim().toLowerCase());
  return false;
}

function allows(list, item) {
  const items = (list || '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  return items.includes('*') || items.includes(item.toLowerCase());
}

export function makeBrowser({ gateway, token, origin, pageURL = `${BACKEND}/` }) {
  const realFetch = globalThis.fetch;
  const log = [];
  const gatewayURL = new URL(gateway);

  function toGateway(url) {
    const u = new URL(url);
    if (u.origin === BACKEND || u.origin === 'ws://localhost:8000') {
      u.protocol = u.protocol.startsWith('ws') ? gatewayURL.protocol.replace('http', 'ws') : gatewayURL.protocol;
      u.hostname = gatewayURL.hostname;
      u.port = gatewayURL.port; // '' for the scheme's default
    }
    return u;
  }

  async function browserFetch(input, init = {}) {
    let url, method, headers, body;
    if (typeof input === 'string' || input instanceof URL) {
      url = new URL(String(input), pageURL);
      method = (init.method || 'GET').toUpperCase();
      headers = new Headers(init.headers || {});
      body = init.body;
    } else {  // a Request (axios's fetch adapter passes one)
      url = new URL(input.url, pageURL);
      method = (init.method || input.method || 'GET').toUpperCase();
      headers = new Headers(init.headers || input.headers);
      body = init.body !== undefined ? init.body : (input.body ? await input.text() : undefined);
    }
    for (const name of [...headers.keys()]) {
      if (FORBIDDEN.has(name) || name.startsWith('sec-') || name.startsWith('proxy-')) headers.delete(name);
    }
    if (token) headers.set('authorization', `Bearer ${token}`);
    const crossOrigin = origin !== url.origin;  // 'null' (file://) is never the same origin
    const target = toGateway(url.href);
    const entry = { method, url: url.pathname + url.search, origin: crossOrigin ? origin : null };
    log.push(entry);
    if (crossOrigin) {
      const names = [...headers.keys()].map((h) => h.toLowerCase());
      const unsafe = names.filter((h) => !isSimpleHeader(h, headers.get(h))).sort();
      if (!SIMPLE_METHODS.has(method) || unsafe.length) {
        const pre = await realFetch(target, {
          method: 'OPTIONS',
          headers: {
            Origin: origin,
            'Access-Control-Request-Method': method,
            ...(unsafe.length ? { 'Access-Control-Request-Headers': unsafe.join(',') } : {}),
          },
        });
        entry.preflight = pre.status;
        const allowOrigin = pre.headers.get('access-control-allow-origin');
        const allowHeaders = (pre.headers.get('access-control-allow-headers') || '')
          .split(',').map((h) => h.trim().toLowerCase());
        // `*` covers every header but Authorization, which must be listed by name
        const refused = unsafe.filter((h) => !(allowHeaders.includes(h) || (allowHeaders.includes('*') && h !== 'authorization')));
        let why = null;
        if (!pre.ok) why = `preflight answered ${pre.status}`;
        else if (!(allowOrigin === '*' || allowOrigin === origin)) why = `preflight allows origin ${allowOrigin}`;
        else if (!(SIMPLE_METHODS.has(method) || allows(pre.headers.get('access-control-allow-methods'), method))) why = `method ${method} not allowed`;
        else if (refused.length) why = `headers not allowed: ${refused.join(', ')}`;
        if (why) throw new CorsError(`Failed to fetch: CORS preflight for ${method} ${url.pathname} from ${origin}: ${why}`);
      }
      headers.set('origin', origin);
    }
    const res = await realFetch(target, { method, headers, body });
    entry.status = res.status;
    if (crossOrigin) {
      const allowOrigin = res.headers.get('access-control-allow-origin');
      if (!(allowOrigin === '*' || allowOrigin === origin)) {
        throw new CorsError(`Failed to fetch: ${method} ${url.pathname} from ${origin}: Access-Control-Allow-Origin is ${allowOrigin}`);
      }
    }
    return res;
  }

  const sockets = [];
  class BrowserWebSocket extends NodeWebSocket {
    constructor(url, protocols) {
      const u = toGateway(new URL(url, pageURL.replace(/^http/, 'ws')).href);
      if (token) u.searchParams.set('token', token);
      super(u.href, protocols, { headers: { Origin: origin } });
      this.received = [];
      this.closeEvent = null;
      this.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') throw new Error('a binary WebSocket message');
        this.received.push(event.data);
      });
      this.addEventListener('close', (event) => {
        this.closeEvent = { code: event.code, reason: event.reason };
      });
      sockets.push(this);
    }
  }

  return { fetch: browserFetch, WebSocket: BrowserWebSocket, log, sockets };
}

export function install(browser) {
  globalThis.fetch = browser.fetch;
  globalThis.WebSocket = browser.WebSocket;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function waitFor(what, predicate, { timeout = 120000, every = 250 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}
