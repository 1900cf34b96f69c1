// Shared by every BRL page: the API key kept in sessionStorage and sent as an Authorization header (never in
// a URL), the login form shown on a 401, polling of a JSON route or an HTML fragment, and DOM/SVG/format helpers.
'use strict';
(function () {
  const KEY = 'brl.apiKey';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const onLogin = [];
  const brl = {};

  brl.Unauthorized = class extends Error {};

  brl.config = function () {
    const el = document.getElementById('brl-config');
    return el ? JSON.parse(el.textContent || '{}') : {};
  };

  brl.key = () => sessionStorage.getItem(KEY) || '';

  brl.setStatus = function (text, state) {
    const el = document.getElementById('brl-status');
    if (el) { el.textContent = text; el.dataset.state = state; }
  };

  brl.showLogin = function (message) {
    const form = document.getElementById('brl-login');
    const err = document.getElementById('brl-login-error');
    if (err) { err.textContent = message || ''; err.hidden = !message; }
    form.hidden = false;
    document.getElementById('brl-main').hidden = true;
    document.getElementById('brl-logout').hidden = true;
    brl.setStatus('signed out', 'auth');
    form.querySelector('input[name=key]').focus();
  };

  function hideLogin() {
    document.getElementById('brl-login').hidden = true;
    document.getElementById('brl-main').hidden = false;
    document.getElementById('brl-logout').hidden = !brl.key();
  }

  // Sends a request with the key as a Bearer header. A 401 shows the login form and throws Unauthorized;
  // another failure throws an Error with the server's message. Returns the Response.
  async function send(path, options, accept) {
    const opts = Object.assign({cache: 'no-store'}, options || {});
    const headers = Object.assign({Accept: accept}, opts.headers || {});
    const key = brl.key();
    if (key) headers.Authorization = 'Bearer ' + key;
    opts.headers = headers;
    const r = await fetch(path, opts);
    if (r.status === 401) {
      brl.showLogin(key ? 'That key was refused; enter the right one.' : '');
      throw new brl.Unauthorized('401');
    }
    if (!r.ok) {
      const body = await r.json().catch(() => null);
      const msg = body && body.error ? body.error.message : (body && body.detail) || r.statusText;
      throw new Error(r.status + ': ' + msg);
    }
    hideLogin();
    brl.setStatus('updated ' + new Date().toLocaleTimeString(), 'ok');
    return r;
  }

  // A JSON route (null for an empty body) and a server-rendered HTML fragment, both through send().
  brl.fetchJSON = async (path, options) => (await send(path, options, 'application/json')).json().catch(() => null);
  brl.fetchText = async (path, options) => (await send(path, options, 'text/html')).text();

  // Fetches path every intervalMs (JSON; the text with {text: true}) and hands it to onData until onData
  // returns false; pauses while signed out and resumes at once after a sign-in. Returns a function that stops it.
  brl.poll = function (path, intervalMs, onData, options) {
    const get = options && options.text ? brl.fetchText : brl.fetchJSON;
    let timer = null;
    let stopped = false;
    let busy = false;  // a request in flight: a sign-in then must not start a second loop
    async function tick() {
      timer = null;
      let data = null;
      busy = true;
      try {
        data = await get(path);
      } catch (e) {
        if (e instanceof brl.Unauthorized) return;  // waits for the login form
        brl.setStatus('unreachable: ' + e.message, 'error');
      } finally {
        busy = false;
      }
      if (data !== null) {
        try {
          if (onData(data) === false) stopped = true;
        } catch (e) {
          console.error('brl: drawing the page failed', e);  // a page bug: the browser tests fail on it
          brl.setStatus('page error: ' + e.message, 'error');
        }
      }
      if (!stopped) timer = setTimeout(tick, intervalMs);
    }
    onLogin.push(() => { if (!stopped && timer === null && !busy) tick(); });
    tick();
    return () => { stopped = true; if (timer) clearTimeout(timer); };
  };

  // Element builder: brl.el('td', {class: 'x', dataset: {node: 'a'}}, 'text', child...).
  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  brl.el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  brl.svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  // Replaces the children of the element with this id.
  brl.fill = function (id, ...children) {
    const el = document.getElementById(id);
    if (el) el.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
    return el;
  };

  // Numbers for people: 3 significant digits, '–' for missing values; seconds as ms below 1 s.
  brl.num = function (x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    if (digits !== undefined) return Number(x).toFixed(digits);
    const a = Math.abs(x);
    if (a >= 1000) return Math.round(x).toLocaleString('en');
    return Number(x).toPrecision(3).replace(/\.?0+$/, '');
  };
  brl.secs = function (s) {
    if (s === null || s === undefined) return '–';
    return s < 1 ? brl.num(s * 1000) + ' ms' : brl.num(s) + ' s';
  };

  document.addEventListener('DOMContentLoaded', () => {
    document.getElementById('brl-login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = ev.target.querySelector('input[name=key]');
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = '';
      hideLogin();
      brl.setStatus('signing in…', 'starting');
      onLogin.forEach((f) => f());
    });
    document.getElementById('brl-logout').addEventListener('click', () => {
      sessionStorage.removeItem(KEY);
      brl.showLogin('');
    });
  });

  window.brl = brl;
})();
