// The poolsvc HTML report: draws the run from the JSON result inlined in the page.
// Everything comes from that one document (the same as `poolsvc run --json`), so a
// report re-rendered from a saved result is the same report. No network access.
"use strict";
(function () {
  const doc = JSON.parse(document.getElementById("result").textContent);
  const rows = doc.timeline.rows;
  const open = doc.mode === "open";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const CLASS_COLORS = { "1xx": "#7f7f7f", "2xx": "#2ca02c", "3xx": "#1f77b4",
    "4xx": "#ff7f0e", "5xx": "#d62728", "no response": "#9467bd" };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function shown(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // the summary: every figure of the JSON result's metrics, as they are -----------------
  function summary() {
    const m = doc.metrics;
    const cards = document.getElementById("cards");
    const headline = [
      ["requests", "requests.total"], ["ok", "requests.ok"], ["failed", "requests.failed"],
      ["req/s", "rps"], ["p50 ms", "latency.p50_ms"], ["p99 ms", "latency.p99_ms"],
      ["p99.9 ms", "latency.p99.9_ms"], ["max ms", "latency.max_ms"],
    ];
    for (const [title, key] of headline) {
      if (!(key in m)) continue;
      const card = el("div", { class: "card", "data-key": key });
      card.append(el("div", { class: "value" }, shown(m[key])), el("div", { class: "title" }, title));
      cards.append(card);
    }
    const body = document.querySelector("#summary tbody");
    for (const [key, value] of Object.entries(m)) {
      const tr = el("tr", { "data-key": key });
      tr.append(el("th", {}, key), el("td", {}, shown(value)));
      body.append(tr);
    }
  }

  // time series ----------------------------------------------------------------------------
  const xs = rows.map(r => r.t1);
  const spans = rows.map(r => Math.max(r.t1 - r.t0, 1e-9));
  const perSecond = key => rows.map((r, i) => (r.counts[key] || 0) / spans[i]);
  const sumPerSecond = keys => rows.map((r, i) =>
    keys.reduce((s, k) => s + (r.counts[k] || 0), 0) / spans[i]);
  const keysLike = prefix => [...new Set(rows.flatMap(r => Object.keys(r.counts)))]
    .filter(k => k.startsWith(prefix)).sort();

  // bands: breaker open or half-open (red), faults injected (orange)
  const bands = [];
  rows.forEach(r => {
    if (r.breakers.some(s => s !== "CLOSED")) bands.push([r.t0, r.t1, "rgba(214,39,40,0.13)"]);
    if (r.faults.length) bands.push([r.t0, r.t1, "rgba(255,127,14,0.16)"]);
  });
  const bandPlugin = {
    hooks: {
      drawClear: u => {
        const ctx = u.ctx;
        ctx.save();
        for (const [a, b, color] of bands) {
          const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
          ctx.fillStyle = color;
          ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
        }
        ctx.restore();
      },
    },
  };

  function width() {
    return Math.max(480, Math.min(1100, document.getElementById("charts").clientWidth - 8));
  }

  function chart(title, series, data, opts) {
    const box = el("section", { class: "chart" });
    document.getElementById("charts").append(box);
    const o = Object.assign({
      title: title, width: width(), height: 260,
      scales: { x: { time: false } },
      axes: [{ label: "seconds since start" }, { label: "", size: 60 }],
      series: [{ label: "t" }].concat(series.map((s, i) => Object.assign({
        stroke: s.color || COLORS[i % COLORS.length], width: 1.5, points: { show: rows.length < 40 },
        spanGaps: false,
      }, s))),
      plugins: [bandPlugin],
    }, opts || {});
    return new uPlot(o, data, box);
  }

  function throughput() {
    const classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    const noResponse = keysLike("errors.").filter(k => !k.startsWith("errors.status_"));
    const series = classes.map(c => ({ label: c, color: CLASS_COLORS[c] }));
    const data = [xs, ...classes.map(c => perSecond("responses." + c))];
    series.push({ label: "no response", color: CLASS_COLORS["no response"] });
    data.push(sumPerSecond(noResponse));
    chart("Throughput by status class (per second)", series, data,
      { axes: [{ label: "seconds since start" }, { label: "req/s", size: 70 }] });
  }

  function percentiles() {
    const ps = ["p50", "p90", "p99", "p99.9"];
    const pick = (h, p) => rows.map(r => (r[h] && r[h][p] > 0 ? r[h][p] : null));
    const series = ps.map(p => ({ label: p + " ms" }));
    const data = [xs, ...ps.map(p => pick("latency", p))];
    if (open) {
      ps.forEach((p, i) => {
        series.push({ label: p + " uncorrected", color: COLORS[i], dash: [4, 4] });
        data.push(pick("latency_uncorrected", p));
      });
    }
    chart(open ? "Latency percentiles (open loop: from the intended time; dashed: from the send)"
      : "Latency percentiles", series, data, {
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: "seconds since start" }, { label: "ms (log)", size: 70 }],
    });
  }

  function spectrumOf(hist) {
    const total = hist.count;
    const xs = [], ys = [];
    let seen = 0;
    for (const [, high, n] of hist.buckets) {
      seen += n;
      const p = seen / total;
      xs.push(p < 1 ? 1 / (1 - p) : 2 * total);
      ys.push(Math.max(high, 1) / 1000);
    }
    return [xs, ys];
  }

  function spectrum() {
    const h = doc.histograms.latency;
    if (!h.count) return;
    const [px, py] = spectrumOf(h);
    const data = [px, py];
    const series = [{ label: "latency ms", paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } }];
    if (open && doc.histograms.latency_uncorrected.count) {
      // one x axis for both: the uncorrected values at the corrected curve's percentiles
      const [ux, uy] = spectrumOf(doc.histograms.latency_uncorrected);
      data.push(px.map(x => { let i = ux.findIndex(v => v >= x); return uy[i < 0 ? uy.length - 1 : i]; }));
      series.push({ label: "uncorrected ms", dash: [4, 4], paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: false } });
    }
    const ticks = [1, 2, 10, 100, 1000, 1e4, 1e5, 1e6];
    const names = { 1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 1e4: "99.99%",
      1e5: "99.999%", 1e6: "99.9999%" };
    chart("Latency by percentile (HdrHistogram spectrum)", series, data, {
      scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
      axes: [
        { label: "percentile", splits: () => ticks, values: (u, splits) => splits.map(v => names[v] || "") },
        { label: "ms (log)", size: 70 },
      ],
      plugins: [],
    });
  }

  function distribution() {
    const h = doc.histograms.latency;
    if (!h.count) return;
    const x = h.buckets.map(b => Math.max(b[1], 1) / 1000);
    const y = h.buckets.map(b => b[2]);
    chart("Latency histogram (requests per bucket; a bucket is 1/64 of its value)",
      [{ label: "requests", paths: uPlot.paths.stepped({ align: 1 }), fill: "rgba(31,119,180,0.2)",
        points: { show: false } }],
      [x, y], {
        scales: { x: { time: false, distr: 3 } },
        axes: [{ label: "ms (log)" }, { label: "requests", size: 70 }],
        plugins: [],
      });
  }

  function errors() {
    const keys = keysLike("errors.").filter(k => !k.startsWith("errors.phase."));
    if (!keys.length) return;
    chart("Errors by name (per second)", keys.map(k => ({ label: k.slice(7) })),
      [xs, ...keys.map(perSecond)],
      { axes: [{ label: "seconds since start" }, { label: "per second", size: 70 }] });
  }

  function connections() {
    const evicted = keysLike("connections.evicted.");
    const series = [{ label: "created" }, { label: "reused" }, { label: "evicted" }];
    const data = [xs, perSecond("connections.created"), perSecond("connections.reused"),
      sumPerSecond(evicted)];
    if (keysLike("tls.handshakes.").length) {
      series.push({ label: "TLS full handshakes" }, { label: "TLS resumed" });
      data.push(perSecond("tls.handshakes.full"), perSecond("tls.handshakes.resumed"));
    }
    chart("Connections (per second)", series, data,
      { axes: [{ label: "seconds since start" }, { label: "per second", size: 70 }] });
  }

  function lateness() {
    if (!open) return;
    chart("Open loop: late and dropped requests (per second)",
      [{ label: "late (> 1 ms after due)" }, { label: "dropped (backlog full)" }],
      [xs, perSecond("requests.late"), perSecond("requests.dropped")],
      { axes: [{ label: "seconds since start" }, { label: "per second", size: 70 }] });
  }

  function gate() {
    const rows = doc.thresholds || [];
    if (!rows.length) return;
    document.getElementById("gate").hidden = false;
    const body = document.querySelector("#thresholds tbody");
    for (const v of rows) {
      const tr = el("tr", { class: v.ok ? "pass" : "fail" });
      tr.append(el("td", {}, v.threshold), el("td", {}, v.shown),
        el("td", {}, (v.ok ? "pass" : "FAIL") + (v.aborted_the_run ? " (stopped the run)" : "")));
      body.append(tr);
    }
  }

  function header() {
    document.getElementById("what").textContent =
      `${doc.target} · ${doc.mode} loop` + (open ? ` at ${doc.rate} req/s` : ` · concurrency ${doc.concurrency}`) +
      ` · ${doc.workers} worker(s) · pool ${doc.pool_size} · started ${doc.started_at_utc}` +
      ` · ${rows.length} rows of ${doc.timeline.period_s}s or more`;
    const ev = document.getElementById("events");
    ev.textContent = (doc.events || []).join("\n") || "(none)";
  }

  header();
  summary();
  gate();
  if (rows.length) {
    throughput();
    percentiles();
    errors();
    connections();
    lateness();
  }
  spectrum();
  distribution();
  document.body.dataset.rendered = "ok";
})();
