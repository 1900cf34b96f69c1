// Job pages of the planner and simulator services, on the shared brl.js (key, login, polling): a page shows
// the server-rendered fragment named in its config; a list then polls the service's JSON list route, and an
// unfinished job's page re-fetches its fragment until the job ends.
'use strict';
(function () {
  const {el, fill, num} = window.brl;
  const ticked = [];  // ids ticked for comparison, oldest first (two at most)
  let cfg = null;

  function show(html) {
    document.getElementById('job-view').innerHTML = html;  // rendered and escaped by the server
  }

  // ---- the job list -------------------------------------------------------------------------------
  function progressText(job) {
    const p = job.progress;
    if (!p) return '';
    const extra = p.extra || {};
    if (typeof extra.fraction === 'number') {
      return Math.round(extra.fraction * 100) + '%' +
        (typeof extra.sim_time_s === 'number' ? ' · sim ' + num(extra.sim_time_s, 0) + ' s' : '') +
        (typeof extra.finished === 'number' ? ' · ' + extra.finished + ' done' : '');
    }
    const parts = [];
    if (typeof p.incumbent_tok_per_s === 'number') parts.push('best ' + num(p.incumbent_tok_per_s, 1) + ' tok/s');
    if (typeof p.bound_tok_per_s === 'number') parts.push('bound ' + num(p.bound_tok_per_s, 1));
    if (typeof p.gap === 'number') parts.push('gap ' + num(p.gap * 100, 1) + '%');
    if (typeof p.elapsed_s === 'number') parts.push(num(p.elapsed_s, 1) + ' s');
    if (extra.note) parts.push(String(extra.note));
    return parts.join(' · ');
  }

  function fraction(job) {
    const extra = (job.progress && job.progress.extra) || {};
    if (typeof extra.fraction === 'number') return extra.fraction;
    return job.status === 'succeeded' ? 1 : null;
  }

  function tick(id, on) {
    const i = ticked.indexOf(id);
    if (on && i < 0) ticked.push(id);
    if (!on && i >= 0) ticked.splice(i, 1);
    while (ticked.length > 2) ticked.shift();
    document.querySelectorAll('#job-rows input[type=checkbox]').forEach((b) => {
      b.checked = ticked.includes(b.closest('tr').dataset.id);
    });
    document.getElementById('compare-btn').disabled = ticked.length !== 2;
  }

  function row(job) {
    const box = el('input', {type: 'checkbox', 'aria-label': 'compare ' + job.id});
    box.checked = ticked.includes(job.id);
    box.addEventListener('change', () => tick(job.id, box.checked));
    const f = fraction(job);
    const meter = f === null ? null : el('progress', {max: 1, value: f});
    const end = job.finished_at || (job.started_at ? Date.now() / 1000 : null);
    return el('tr', {dataset: {id: job.id, status: job.status}},
      el('td', {}, box),
      el('td', {}, el('a', {href: cfg.base + '/' + job.id}, job.id.slice(0, 8))),
      el('td', {}, job.label || ''),
      el('td', {}, job.method || (job.kind === 'simulation' ? 'dry run' : '')),
      el('td', {}, el('span', {class: 'brl-pill', dataset: {status: job.status}}, job.status)),
      el('td', {class: 'progress'}, meter,
        ' ' + (job.error ? job.error.type + ': ' + job.error.message : progressText(job))),
      el('td', {}, new Date(job.created_at * 1000).toLocaleString()),
      el('td', {class: 'num'}, job.started_at && end ? num(end - job.started_at, 1) + ' s' : ''));
  }

  function drawList(data) {
    const items = data.items;
    fill('job-rows', ...items.map(row));
    document.getElementById('empty').hidden = items.length > 0;
    brl.setStatus(items.length + ' jobs · updated ' + new Date().toLocaleTimeString(), 'ok');
  }

  function startList(html) {
    show(html);
    document.getElementById('compare-btn').addEventListener('click', () => {
      if (ticked.length === 2) location.href = cfg.base + '/compare?a=' + ticked[0] + '&b=' + ticked[1];
    });
    brl.poll(cfg.json + '?limit=100', cfg.poll_ms, drawList);
    return false;  // the list's frame is loaded once; its rows come from the JSON route
  }

  // ---- one job, or two compared -------------------------------------------------------------------
  function drawJob(html) {
    show(html);
    const job = document.querySelector('#job-view [data-active]');
    return Boolean(job && job.dataset.active === 'true');  // keep polling while the job runs
  }

  document.addEventListener('DOMContentLoaded', () => {
    cfg = brl.config();
    brl.poll(cfg.fragment, cfg.poll_ms, cfg.view === 'list' ? startList : drawJob, {text: true});
  });
})();
