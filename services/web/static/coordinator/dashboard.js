// The coordinator's dashboard page: polls /v1/dashboard/state (brl.poll) and redraws. Every drawn thing is
// tagged with data-* attributes (data-node, data-bar, data-uncovered, data-edge, data-request) that the
// browser tests read.
'use strict';
(function () {
  const {el, svg, fill, num, secs} = window.brl;
  const STATUS_COLOR = {alive: '#1f8a4c', late: '#c77700', loading: '#c77700', dead: '#c62828', missing: '#c62828'};
  let charts = null;

  function pill(status) { return el('span', {class: 'brl-pill', dataset: {status}}, status); }

  function stat(label, value, cls) {
    return el('div', {class: 'stat'}, el('b', {class: cls || ''}, value), el('span', {}, label));
  }

  function summary(s) {
    const alive = s.nodes.filter((n) => n.status !== 'dead' && n.status !== 'missing').length;
    const dead = s.nodes.length - alive;
    const tput = s.series.decode_tok_per_s.length ? s.series.decode_tok_per_s[s.series.decode_tok_per_s.length - 2] : null;
    fill('dash-summary',
      stat('route', s.routable ? 'ready' : 'no route', s.routable ? 'brl-ok' : 'brl-bad'),
      stat('workers alive', String(alive)),
      stat('dead / missing', String(dead), dead ? 'brl-bad' : ''),
      stat('running', String(s.running)),
      stat('waiting', String(s.waiting), s.waiting ? 'brl-warn' : ''),
      stat('plan', s.plan.method + (s.plan.loaded && s.plan.loaded !== s.plan.method ? ' (loaded: ' + s.plan.loaded + ')' : '')),
      stat(s.plan.flow_unit === 'tok/s' ? 'planned tok/s' : 'plan: equal weights', num(s.plan.throughput_tok_per_s)),
      stat('decode tok/s (5 s)', num(tput)),
      stat('model', s.model + ' · ' + s.num_layers + ' layers'));
    const banner = document.getElementById('dash-banner');
    const running = s.rollout && s.rollout.running;
    banner.hidden = s.routable && !running;
    banner.dataset.kind = s.routable ? 'info' : 'error';
    banner.textContent = !s.routable ? 'No route: ' + (s.reason || 'the live workers do not cover the model')
      : running ? 'A rollout is in progress (re-planning after a worker loss)' : '';
  }

  function meter(real, booked, cap) {
    const pct = (x) => Math.max(0, Math.min(100, 100 * (x || 0) / (cap || 1))) + '%';
    return el('span', {class: 'brl-meter', title: 'reported ' + real + ' · booked ' + booked + ' of ' + cap + ' tokens'},
      el('span', {class: 'real', style: 'width:' + pct(real)}),
      el('span', {class: 'booked', style: 'width:' + pct(booked)}));
  }

  function fleet(s) {
    const head = el('tr', {}, ...['', 'node', 'layers', 'KV reported / booked (tokens)', 'queue', 'step p50 / p99', 'heartbeat']
      .map((h) => el('th', {}, h)));
    const rows = [head];
    let group = null;
    for (const n of s.nodes) {
      const g = n.region + ' · ' + n.gpu_type;
      if (g !== group) { group = g; rows.push(el('tr', {class: 'dash-group'}, el('td', {colspan: 7}, 'region ' + n.region + ' · GPU ' + n.gpu_type))); }
      const live = n.status !== 'dead' && n.status !== 'missing';
      const kv = live ? [meter(n.kv_used_tokens, n.kv_booked_tokens, n.kv_capacity_tokens), ' ',
        num(n.kv_used_tokens) + ' / ' + num(n.kv_booked_tokens) + ' of ' + num(n.kv_capacity_tokens)] : ['–'];
      const beat = n.status === 'dead' ? 'lost ' + num(n.dead_for_s) + ' s ago'
        : n.status === 'missing' ? 'planned, never registered' : secs(n.heartbeat_age_s) + ' ago';
      const loading = n.loading_range ? ' → loading [' + n.loading_range[0] + ',' + n.loading_range[1] + ')' : '';
      rows.push(el('tr', {dataset: {node: n.name, status: n.status, region: n.region, gpu: n.gpu_type, start: n.layers[0], end: n.layers[1]}},
        el('td', {}, pill(n.status)),
        el('td', {title: n.address || ''}, n.name),
        el('td', {}, '[' + n.layers[0] + ', ' + n.layers[1] + ')' + loading),
        el('td', {}, ...kv),
        el('td', {class: 'num'}, live ? String(n.queue_depth) : '–'),
        el('td', {class: 'num', title: n.stats_error || ''}, live && n.step_ms_p50 !== null ? num(n.step_ms_p50) + ' / ' + num(n.step_ms_p99) + ' ms' : (n.stats_error ? 'no stats' : '–')),
        el('td', {}, beat)));
    }
    fill('dash-fleet', el('table', {class: 'brl-table'}, ...rows));
  }

  function placement(s) {
    const L = s.num_layers, W = 640, left = 90, right = 10, rowH = 16;
    const x = (layer) => left + (W - left - right) * layer / L;
    const nodes = s.nodes;
    const H = 26 + rowH * (nodes.length + 1) + 6;
    const g = [];
    for (let i = 0; i <= L; i += Math.max(1, Math.ceil(L / 10))) {
      g.push(svg('line', {x1: x(i), x2: x(i), y1: 14, y2: H - 4, stroke: '#eef0f3'}));
      g.push(svg('text', {x: x(i), y: 11, 'text-anchor': 'middle'}, String(i)));
    }
    nodes.forEach((n, i) => {
      const y = 20 + i * rowH;
      g.push(svg('text', {x: 4, y: y + 11}, n.name));
      g.push(svg('rect', {x: x(n.layers[0]), y, width: Math.max(1, x(n.layers[1]) - x(n.layers[0])), height: rowH - 4, rx: 2,
        fill: STATUS_COLOR[n.status] || '#888', 'fill-opacity': n.status === 'alive' ? 0.85 : 0.5,
        dataset: {bar: '', node: n.name, status: n.status, start: n.layers[0], end: n.layers[1]}},
        svg('title', {}, n.name + ' [' + n.layers[0] + ', ' + n.layers[1] + ') ' + n.status)));
    });
    const y = 20 + nodes.length * rowH;
    g.push(svg('text', {x: 4, y: y + 11}, 'uncovered'));
    for (const [a, b] of s.uncovered) {
      g.push(svg('rect', {x: x(a), y, width: Math.max(1, x(b) - x(a)), height: rowH - 4, fill: '#c62828', dataset: {uncovered: '', start: a, end: b}},
        svg('title', {}, 'layers [' + a + ', ' + b + ') held by no live worker')));
      g.push(svg('text', {x: (x(a) + x(b)) / 2, y: y + 11, 'text-anchor': 'middle', fill: '#fff'}, '[' + a + ', ' + b + ')'));
    }
    if (!s.uncovered.length) g.push(svg('text', {x: left, y: y + 11, class: 'brl-ok'}, 'none: every layer is held by a live worker'));
    fill('dash-placement', svg('svg', {viewBox: '0 0 ' + W + ' ' + H}, ...g));
  }

  function graph(s) {
    const W = 640, L = s.num_layers;
    const nodes = s.nodes.filter((n) => s.edges.some((e) => e.src === n.name || e.dst === n.name));
    const rows = Math.max(1, nodes.length);
    const H = Math.max(120, 40 * rows + 30);
    const pos = {source: [30, H / 2], sink: [W - 30, H / 2]};
    nodes.forEach((n, i) => { pos[n.name] = [80 + (W - 160) * ((n.layers[0] + n.layers[1]) / 2) / L, 25 + (H - 50) * (rows === 1 ? 0.5 : i / (rows - 1))]; });
    const maxPlan = Math.max(1e-9, ...s.edges.map((e) => e.planned_tok_per_s));
    const maxReal = Math.max(1e-9, ...s.edges.map((e) => e.tokens_per_s));
    const g = [svg('defs', {}, svg('marker', {id: 'arr', viewBox: '0 0 8 8', refX: 16, refY: 4, markerWidth: 8, markerHeight: 8, markerUnits: 'userSpaceOnUse', orient: 'auto'},
      svg('path', {d: 'M0,0 L8,4 L0,8 z', fill: '#66707c'})))];
    for (const e of s.edges) {
      const a = pos[e.src], b = pos[e.dst];
      if (!a || !b) continue;
      const mx = (a[0] + b[0]) / 2, my = (a[1] + b[1]) / 2 - 10;
      const d = 'M' + a[0] + ',' + a[1] + ' Q' + mx + ',' + my + ' ' + b[0] + ',' + b[1];
      g.push(svg('g', {dataset: {edge: '', src: e.src, dst: e.dst, planned: e.planned_tok_per_s, real: e.tokens_per_s}},
        svg('path', {d, fill: 'none', stroke: e.live ? '#b9c2cf' : '#c62828', 'stroke-dasharray': e.live ? '' : '4 3',
          'stroke-width': 2 + 8 * e.planned_tok_per_s / maxPlan, 'marker-end': 'url(#arr)'}),
        svg('path', {d, fill: 'none', stroke: '#2f6fd1', 'stroke-width': e.tokens_per_s > 0 ? 1 + 5 * e.tokens_per_s / maxReal : 0}),
        svg('text', {x: mx, y: my - 2, 'text-anchor': 'middle'}, num(e.planned_tok_per_s) + ' / ' + num(e.tokens_per_s)),
        svg('title', {}, e.src + ' → ' + e.dst + ': planned ' + num(e.planned_tok_per_s) + ' tok/s, real ' + num(e.tokens_per_s) + ' tok/s, ' + num(e.requests_per_s) + ' req/s')));
    }
    const dot = (name, status) => {
      const [cx, cy] = pos[name];
      return svg('g', {dataset: {graphNode: name}}, svg('circle', {cx, cy, r: 9, fill: STATUS_COLOR[status] || '#1d232b'}),
        svg('text', {x: cx, y: cy - 13, 'text-anchor': 'middle'}, name));
    };
    g.push(dot('source', null), dot('sink', null), ...nodes.map((n) => dot(n.name, n.status)));
    g.push(svg('text', {x: 4, y: H - 4, class: 'brl-muted'}, 'labels: planned / real tokens/s · grey width = plan, blue = real'));
    fill('dash-graph', svg('svg', {viewBox: '0 0 ' + W + ' ' + H}, ...g));
  }

  function edges(s) {
    const head = el('tr', {}, ...['edge', s.plan.flow_unit === 'tok/s' ? 'planned tok/s' : 'planned weight', 'real tok/s', 'real req/s', 'requests', 'tokens']
      .map((h, i) => el('th', {class: i ? 'num' : ''}, h)));
    const rows = s.edges.map((e) => el('tr', {dataset: {edgeRow: '', src: e.src, dst: e.dst, planned: e.planned_tok_per_s,
      requestsTotal: e.requests_total, tokensTotal: e.tokens_total}, class: e.live ? '' : 'brl-bad'},
      el('td', {}, e.src + ' → ' + e.dst),
      el('td', {class: 'num'}, num(e.planned_tok_per_s)),
      el('td', {class: 'num'}, num(e.tokens_per_s)),
      el('td', {class: 'num'}, num(e.requests_per_s)),
      el('td', {class: 'num', dataset: {field: 'requests_total'}}, String(e.requests_total)),
      el('td', {class: 'num', dataset: {field: 'tokens_total'}}, String(e.tokens_total))));
    fill('dash-edges', el('table', {class: 'brl-table'}, head, ...rows));
  }

  function requests(s) {
    const head = el('tr', {}, ...['time', 'chain', 'in / out', 'TTFT', 'decode/token', 'e2e', 'end']
      .map((h) => el('th', {}, h)));
    const rows = s.requests.map((r) => el('tr', {dataset: {request: r.id}},
      el('td', {}, new Date(r.wall * 1000).toLocaleTimeString()),
      el('td', {class: 'chain'}, (r.route || []).join(' → ') || '–'),
      el('td', {class: 'num'}, r.input_len + ' / ' + r.output_len),
      el('td', {class: 'num'}, secs(r.ttft_s)),
      el('td', {class: 'num'}, secs(r.decode_latency_s)),
      el('td', {class: 'num'}, secs(r.e2e_s)),
      el('td', {class: r.error ? 'brl-bad' : ''}, r.error ? 'error' : (r.finish_reason || ''))));
    fill('dash-requests', el('table', {class: 'brl-table'}, head, ...rows));
  }

  function makeCharts() {
    const width = (id) => Math.max(300, document.getElementById(id).clientWidth - 4);
    const tput = new uPlot({width: width('dash-tput'), height: 120, legend: {live: false},
      series: [{}, {label: 'prompt tok/s', stroke: '#8a5cd1'}, {label: 'decode tok/s', stroke: '#2f6fd1'},
        {label: 'req/s', stroke: '#1f8a4c', scale: 'rps'}],
      axes: [{}, {size: 44}, {scale: 'rps', side: 1, grid: {show: false}, size: 36}]}, [[], [], [], []], document.getElementById('dash-tput'));
    const lat = new uPlot({width: width('dash-lat'), height: 120, legend: {live: false},
      series: [{}, {label: 'TTFT p50', stroke: '#c77700'}, {label: 'TTFT p95', stroke: '#c77700', dash: [4, 3]},
        {label: 'decode p50', stroke: '#2f6fd1'}, {label: 'decode p95', stroke: '#2f6fd1', dash: [4, 3]}],
      axes: [{}, {size: 56}]}, [[], [], [], [], []], document.getElementById('dash-lat'));
    return {tput, lat};
  }

  function series(s) {
    if (!window.uPlot) return;
    charts = charts || makeCharts();
    const q = s.series;
    charts.tput.setData([q.t, q.prompt_tok_per_s, q.decode_tok_per_s, q.requests_per_s]);
    charts.lat.setData([q.t, q.ttft_p50_s, q.ttft_p95_s, q.decode_p50_s, q.decode_p95_s]);
    const l = s.latency;
    fill('dash-lat-summary', el('div', {class: 'dash-lat-summary'},
      'last ' + Math.round(s.history_s / 60) + ' min (' + (l.e2e_s.n || 0) + ' requests): TTFT p50 ' + secs(l.ttft_s.p50) + ', p95 ' + secs(l.ttft_s.p95) +
      ' · decode/token p50 ' + secs(l.decode_latency_s.p50) + ', p95 ' + secs(l.decode_latency_s.p95) +
      ' · e2e p50 ' + secs(l.e2e_s.p50) + ', p95 ' + secs(l.e2e_s.p95)));
  }

  function draw(s) {
    summary(s); fleet(s); placement(s); graph(s); edges(s); requests(s); series(s);
    document.body.dataset.stateWall = String(s.wall_s);
  }

  document.addEventListener('DOMContentLoaded', () => {
    const cfg = window.brl.config();
    window.brl.poll(cfg.state_url, cfg.poll_ms || 1000, draw);
  });
})();
