// flightpipe status page: polls /status.json and draws the numbers and small SVG charts.
// Plain JS, no library and no external request (the page's Content-Security-Policy forbids them).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
  const body = document.body;
  const source = body.dataset.source;
  const refreshMs = Number(body.dataset.refreshMs) || 3000;
  const COLORS = { main: "#2563eb", dead: "#dc2626", p50: "#16a34a", p95: "#d97706", p99: "#dc2626" };

  // Deterministic formatting (no locale): 1234567 -> "1,234,567".
  function int(n) {
    if (n === null || n === undefined) return "—";
    return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function num(n) {
    if (n === null || n === undefined) return "—";
    if (n === 0) return "0";
    if (Math.abs(n) >= 100) return int(n);
    return n.toFixed(Math.abs(n) >= 10 ? 1 : 2);
  }
  // Axis labels: three significant digits, no trailing zeros.
  function axis(n) {
    return n >= 1000 ? int(n) : String(Number(n.toPrecision(3)));
  }
  function pct(r) {
    return r === null || r === undefined ? "—" : (r * 100).toFixed(r < 0.01 ? 2 : 1) + "%";
  }
  function dur(s) {
    if (s === null || s === undefined) return "—";
    if (s === 0) return "0 s";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }
  function set(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  // A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // series: [{key, color, scale}] drawn from history points {t, key: value|null}.
  function chart(id, history, series) {
    const svg = document.getElementById(id);
    if (!svg) return;
    const [, , W, H] = svg.getAttribute("viewBox").split(" ").map(Number);
    const left = 52, right = 8, top = 10, bottom = 22;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const values = [];
    for (const s of series) for (const p of history) if (p[s.key] !== null && p[s.key] !== undefined) values.push(p[s.key] * (s.scale || 1));
    if (history.length < 2 || values.length === 0) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent =
        history.length < 2 ? "collecting samples…" : "no data yet";
      return;
    }
    const t0 = history[0].t, t1 = history[history.length - 1].t;
    const ymax = niceMax(Math.max(...values));
    const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1)) * (W - left - right);
    const y = (v) => top + (1 - v / ymax) * (H - top - bottom);
    for (const f of [0, 0.5, 1]) {
      el("line", { x1: left, x2: W - right, y1: y(ymax * f), y2: y(ymax * f), class: "grid" }, svg);
      el("text", { x: left - 6, y: y(ymax * f) + 4, "text-anchor": "end", class: "axis" }, svg).textContent = axis(ymax * f);
    }
    const span = Math.round(t1 - t0);
    el("text", { x: left, y: H - 5, class: "axis" }, svg).textContent =
      span >= 120 ? "−" + Math.round(span / 60) + " min" : "−" + span + " s";
    el("text", { x: W - right, y: H - 5, "text-anchor": "end", class: "axis" }, svg).textContent = "now";
    for (const s of series) {
      // A null value (no data at that sample) breaks the line instead of drawing a false zero.
      let segment = [];
      const segments = [segment];
      for (const p of history) {
        const v = p[s.key];
        if (v === null || v === undefined) { if (segment.length) segments.push((segment = [])); continue; }
        segment.push([x(p.t), y(v * (s.scale || 1))]);
      }
      for (const seg of segments) {
        if (seg.length === 0) continue;
        const pts = seg.map(([a, b]) => a.toFixed(1) + "," + b.toFixed(1)).join(" ");
        if (series.length === 1 && seg.length > 1) {
          const base = y(0).toFixed(1);
          el("polygon", { points: seg[0][0].toFixed(1) + "," + base + " " + pts + " " + seg[seg.length - 1][0].toFixed(1) + "," + base, class: "area", fill: s.color }, svg);
        }
        if (seg.length === 1) el("circle", { cx: seg[0][0], cy: seg[0][1], r: 2.5, fill: s.color }, svg);
        else el("polyline", { points: pts, class: "line", stroke: s.color }, svg);
      }
    }
  }

  function render(d) {
    const p = d.pipeline, a = d.api, lat = a.latency_seconds;
    set("received", int(p.messages_received_total));
    set("ingest-rate", num(p.ingest_rate_per_second));
    set("written", int(p.messages_written_total));
    set("duplicates", int(p.messages_duplicate_total));
    set("backlog", int(p.backlog_messages));
    set("oldest", dur(p.oldest_unacked_age_seconds));
    set("freshness", dur(p.freshness_seconds));
    set("e2e-p95", dur(p.end_to_end_latency_p95_seconds));
    set("dead", int(p.messages_dead_lettered_total));
    set("dead-ratio", pct(p.dead_letter_ratio));
    set("write-failures", int(p.warehouse_write_failures_total));
    set("requests", int(a.requests_total));
    set("request-rate", num(a.request_rate_per_second));
    set("error-ratio", pct(a.error_5xx_ratio));
    set("p50", dur(lat.p50));
    set("p95", dur(lat.p95));
    set("p99", dur(lat.p99));
    set("latency-over", a.latency_over);
    const h = d.history;
    chart("chart-ingest", h, [{ key: "ingest_rate", color: COLORS.main }]);
    chart("chart-backlog", h, [{ key: "backlog", color: COLORS.main }]);
    chart("chart-freshness", h, [{ key: "freshness", color: COLORS.main }]);
    chart("chart-dead", h, [{ key: "dead_letter_rate", color: COLORS.dead }]);
    chart("chart-latency", h, ["p50", "p95", "p99"].map((k) => ({ key: k, color: COLORS[k], scale: 1000 })));
    set("updated", "updated " + new Date(d.generated_at * 1000).toLocaleTimeString());
    document.getElementById("state").className = "dot ok";
    body.dataset.samples = String(h.length);
  }

  async function refresh() {
    try {
      const response = await fetch(source, { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
    } catch (err) {
      document.getElementById("state").className = "dot bad";
      set("updated", "cannot reach " + source + " (" + err.message + ")");
    } finally {
      setTimeout(refresh, refreshMs);
    }
  }

  refresh();
})();
