// ATLAS live dashboard: follows /v1/atlas/metrics/stream (Server-Sent Events) and draws the
// 10-second window of each snapshot with uPlot. Served by services/api/src/metrics/routes.ts.
// `window.atlasDashboard` exposes what was drawn (points, series) for the browser test.
(() => {
  const MAX_POINTS = 300;
  const COLORS = ["#2f6fdb", "#e0702f", "#2fa35a", "#b03fc0", "#c9a227", "#d23b3b", "#3fb6c0", "#7a7a7a"];

  /** Charts: a fixed list of series, or one series per worker (`perWorker`). */
  const CHARTS = [
    {
      id: "requests",
      title: "Requests / s",
      series: [
        ["requests/s", (w) => w.api.rate],
        ["errors/s", (w) => w.api.error_rate],
      ],
    },
    {
      id: "tokens",
      title: "Tokens / s",
      series: [
        ["completion", (w) => w.api.tokens.completion_per_s],
        ["prompt", (w) => w.api.tokens.prompt_per_s],
      ],
    },
    {
      id: "latency",
      title: "Request latency (ms)",
      series: [
        ["p50", (w) => w.api.latency_ms.total.p50],
        ["p95", (w) => w.api.latency_ms.total.p95],
        ["p99", (w) => w.api.latency_ms.total.p99],
        ["overhead p99", (w) => w.api.latency_ms.overhead.p99],
      ],
    },
    {
      id: "ttft",
      title: "Time to first token (ms)",
      series: [
        ["p50", (w) => w.api.latency_ms.ttft.p50],
        ["p95", (w) => w.api.latency_ms.ttft.p95],
        ["p99", (w) => w.api.latency_ms.ttft.p99],
      ],
    },
    {
      id: "cache",
      title: "Cache hit ratio by tier",
      series: [
        ["L1", (w) => w.api.cache.ratio.l1],
        ["L2", (w) => w.api.cache.ratio.l2],
        ["L3", (w) => w.api.cache.ratio.l3],
        ["miss", (w) => w.api.cache.ratio.miss],
      ],
    },
    { id: "slots", title: "Slot use per worker (busy ÷ slots)", perWorker: (ws) => ws.slot_use },
    { id: "queue", title: "Queue depth per worker (max)", perWorker: (ws) => ws.queue_depth.max },
    {
      id: "errors",
      title: "Errors in window",
      series: [
        ["errors", (w) => w.api.errors],
        ["cancelled", (w) => w.api.cancelled],
        ["over budget", (w) => w.api.over_budget],
      ],
    },
  ];

  const snapshots = [];
  const plots = new Map();
  const state = {
    points: 0,
    lastSeq: null,
    resets: 0,
    workers: [],
    /** The values drawn for one chart's series: `series("requests", 1)`. */
    series(chartId, index) {
      const p = plots.get(chartId);
      return p ? Array.from(p.uplot.data[index] ?? []) : [];
    },
  };
  window.atlasDashboard = state;

  const $ = (id) => document.getElementById(id);
  const main = $("charts");

  function workerIds() {
    const ids = new Set();
    for (const s of snapshots) for (const id of Object.keys(s.windows["10s"]?.workers ?? {})) ids.add(id);
    for (const id of Object.keys(snapshots.at(-1)?.workers ?? {})) ids.add(id);
    return [...ids].sort();
  }

  function seriesOf(chart, workers) {
    if (chart.perWorker) return workers.map((id) => [id, (w) => (w.workers[id] ? chart.perWorker(w.workers[id]) : null)]);
    return chart.series;
  }

  function ensurePlot(chart, workers) {
    const series = seriesOf(chart, workers);
    const key = series.map(([label]) => label).join("|");
    let p = plots.get(chart.id);
    if (p && p.key === key) return p;
    let box = $(`chart-${chart.id}`);
    if (!box) {
      box = document.createElement("section");
      box.className = "chart";
      box.id = `chart-${chart.id}`;
      const h = document.createElement("h2");
      h.textContent = chart.title;
      box.append(h);
      main.append(box);
    }
    if (p) p.uplot.destroy();
    const width = Math.max(300, box.clientWidth - 16);
    const opts = {
      width,
      height: 200,
      scales: { x: { time: true } },
      legend: { live: false },
      series: [{}, ...series.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
      axes: [{}, { size: 60 }],
    };
    const data = [[], ...series.map(() => [])];
    p = { key, series, uplot: new uPlot(opts, data, box) };
    plots.set(chart.id, p);
    return p;
  }

  function draw() {
    const workers = workerIds();
    state.workers = workers;
    const rows = snapshots.filter((s) => s.windows["10s"]);
    const xs = rows.map((s) => s.ts / 1000);
    for (const chart of CHARTS) {
      const p = ensurePlot(chart, workers);
      const data = [xs, ...p.series.map(([, get]) => rows.map((s) => get(s.windows["10s"])))];
      p.uplot.setData(data);
    }
    const last = snapshots.at(-1);
    if (last) {
      $("seq").textContent = String(last.seq);
      const total = Object.values(last.totals.requests).reduce((a, b) => a + b, 0);
      $("requests-total").textContent = String(total);
      $("over-budget").textContent = String(last.totals.over_budget);
      $("workers").textContent = workers.length === 0 ? "none" : workers.join(", ");
    }
    const points = $("points");
    points.textContent = String(state.points);
    points.dataset.points = String(state.points);
  }

  function status(text, cls) {
    const el = $("status");
    el.textContent = text;
    el.className = `status ${cls}`;
  }

  // With API keys the stream needs an admin key; EventSource cannot send an Authorization header,
  // so the page is opened as /dashboard?access_token=<key> and hands the key on to the stream.
  // It is then removed from the address bar (and from history), so it is not shared by copying.
  const accessToken = new URLSearchParams(window.location.search).get("access_token");
  if (accessToken !== null) window.history.replaceState(null, "", window.location.pathname);

  let source = null;
  let retry = null;
  function connect() {
    const params = new URLSearchParams({ history: String(MAX_POINTS) });
    if (accessToken !== null) params.set("access_token", accessToken);
    // A new EventSource does not send Last-Event-ID itself: pass it on after a hard failure.
    if (state.lastSeq !== null) params.set("last_event_id", String(state.lastSeq));
    source = new EventSource(`/v1/atlas/metrics/stream?${params}`);
    source.onopen = () => status("live", "live");
    source.addEventListener("snapshot", (ev) => {
      const s = JSON.parse(ev.data);
      snapshots.push(s);
      if (snapshots.length > MAX_POINTS) snapshots.splice(0, snapshots.length - MAX_POINTS);
      state.points += 1;
      state.lastSeq = s.seq;
      draw();
    });
    source.addEventListener("reset", () => {
      // The series broke (or what we missed is gone): start the charts again.
      state.resets += 1;
      snapshots.length = 0;
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (for example a 503 while the metrics service is down): retry by hand.
        status("metrics unavailable — retrying", "down");
        clearTimeout(retry);
        retry = setTimeout(connect, 3000);
      } else {
        status("reconnecting…", "down");
      }
    };
  }

  window.addEventListener("resize", () => {
    for (const p of plots.values()) {
      const box = p.uplot.root.parentElement;
      p.uplot.setSize({ width: Math.max(300, box.clientWidth - 16), height: 200 });
    }
  });

  draw();
  connect();
})();
