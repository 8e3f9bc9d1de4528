// An endpoint's charts for the last hour, from CloudWatch's GetMetricData (the same
// per-minute aggregates that CloudWatch and /metrics serve), drawn with uPlot (vendored,
// loaded only on the pages that draw charts).

import { call } from "./api.js";

let uPlotLoading = null;

function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!uPlotLoading) {
    uPlotLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/ui/static/vendor/uPlot.iife.min.js";
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => reject(new Error("the chart library did not load"));
      document.head.append(script);
    });
  }
  return uPlotLoading;
}

const MINUTE = 60;
const HOUR = 3600;

// name: [title, unit label, series [label, query key, colour]]
export const CHARTS = [
  ["backlog", "Backlog", "requests", [["queued or running (max)", "backlog", "#1f5fbf"]]],
  [
    "invocations",
    "Invocations per minute",
    "per minute",
    [
      ["processed", "processed", "#18794e"],
      ["failed", "failed", "#c0362c"],
    ],
  ],
  [
    "backlogtime",
    "Time in backlog",
    "ms",
    [
      ["p50", "backlog_p50", "#1f5fbf"],
      ["p99", "backlog_p99", "#8a3ffc"],
    ],
  ],
  [
    "latency",
    "Model latency",
    "ms",
    [
      ["p50", "latency_p50", "#1f5fbf"],
      ["p99", "latency_p99", "#8a3ffc"],
    ],
  ],
  [
    "instances",
    "Instances",
    "instances",
    [
      ["running", "current", "#18794e"],
      ["desired", "desired", "#6b6b6b"],
    ],
  ],
];

function metric(name, endpoint, variant, stat, id) {
  const dimensions = [{ Name: "EndpointName", Value: endpoint }];
  if (variant !== null) dimensions.push({ Name: "VariantName", Value: variant });
  return {
    Id: id,
    MetricStat: {
      Metric: { Namespace: "AWS/SageMaker", MetricName: name, Dimensions: dimensions },
      Period: MINUTE,
      Stat: stat,
    },
    ReturnData: true,
  };
}

/** The queries of an endpoint's charts: endpoint gauges, and per variant the rest. */
function queries(endpoint, variants) {
  const list = [
    metric("ApproximateBacklogSize", endpoint, null, "Maximum", "backlog"),
    metric("CurrentInstanceCount", endpoint, null, "Maximum", "current"),
    metric("DesiredInstanceCount", endpoint, null, "Maximum", "desired"),
  ];
  variants.forEach((variant, i) => {
    list.push(metric("InvocationsProcessed", endpoint, variant, "Sum", `processed_${i}`));
    list.push(metric("InvocationFailures", endpoint, variant, "Sum", `failed_${i}`));
    list.push(metric("TimeInBacklog", endpoint, variant, "p50", `backlogp50_${i}`));
    list.push(metric("TimeInBacklog", endpoint, variant, "p99", `backlogp99_${i}`));
    list.push(metric("ModelLatency", endpoint, variant, "p50", `latencyp50_${i}`));
    list.push(metric("ModelLatency", endpoint, variant, "p99", `latencyp99_${i}`));
  });
  return list;
}

function seconds(timestamp) {
  return typeof timestamp === "number" ? timestamp : Date.parse(timestamp) / 1000;
}

/**
 * The last hour of an endpoint's metrics, minute by minute: {x: [...], series: {key: [...]}}.
 * Counts of several variants are added; percentiles are the largest variant's value
 * (exact with one variant, which is the usual case).
 */
export async function fetchSeries(endpoint, variants, nowSeconds = Date.now() / 1000) {
  const end = Math.floor(nowSeconds / MINUTE) * MINUTE + MINUTE;
  const start = end - HOUR;
  const x = [];
  for (let t = start; t < end; t += MINUTE) x.push(t);
  const results = [];
  let token;
  do {
    const page = await call("monitoring", "GetMetricData", {
      MetricDataQueries: queries(endpoint, variants),
      StartTime: start,
      EndTime: end,
      ScanBy: "TimestampAscending",
      ...(token ? { NextToken: token } : {}),
    });
    results.push(...(page.MetricDataResults || []));
    token = page.NextToken;
  } while (token);
  const byMinute = {};
  for (const result of results) {
    const key = result.Id.replace(/_\d+$/, "").replace("backlogp", "backlog_p").replace("latencyp", "latency_p");
    const values = (byMinute[key] = byMinute[key] || {});
    (result.Timestamps || []).forEach((timestamp, i) => {
      const t = Math.round(seconds(timestamp));
      let value = result.Values[i];
      if (key.startsWith("latency_")) value = value / 1000; // microseconds -> ms
      const have = values[t];
      if (have === undefined) values[t] = value;
      else values[t] = key.endsWith("_p50") || key.endsWith("_p99") ? Math.max(have, value) : have + value;
    });
  }
  // A minute without a count is a zero on the chart; "latest" is the last minute with data.
  const counts = new Set(["processed", "failed"]);
  const series = {};
  const latest = {};
  const minutes = {}; // how many minutes have data, per line
  const totals = {};
  for (const [, , , lines] of CHARTS) {
    for (const [, key] of lines) {
      const values = byMinute[key] || {};
      series[key] = x.map((t) => (values[t] !== undefined ? values[t] : counts.has(key) ? 0 : null));
      const known = x.filter((t) => values[t] !== undefined);
      latest[key] = known.length ? values[known[known.length - 1]] : null;
      minutes[key] = known.length;
      totals[key] = known.reduce((sum, t) => sum + values[t], 0);
    }
  }
  return { x, series, latest, minutes, totals };
}

function format(value, unit) {
  if (value === null) return "no data";
  const rounded = Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${rounded} ${unit}`;
}

/** Draw (or redraw with new data) one chart into its figure; returns the uPlot object. */
export async function draw(figure, [name, title, unit, lines], data, existing) {
  const uPlot = await loadUPlot();
  const columns = [data.x, ...lines.map(([, key]) => data.series[key])];
  const summary = lines.map(([label, key]) => `${label}: ${format(data.latest[key], unit)}`).join(", ");
  const caption = figure.querySelector("figcaption .latest");
  caption.textContent = `latest ${summary}`;
  figure.querySelector(".plot").setAttribute("aria-label", `${title}, last hour: latest ${summary}`);
  // For tests and tools: minutes with data, and each line's sum over the hour.
  figure.dataset.points = String(lines.reduce((n, [, key]) => n + data.minutes[key], 0));
  figure.dataset.totals = JSON.stringify(Object.fromEntries(lines.map(([label, key]) => [label, data.totals[key]])));
  if (existing) {
    existing.setData(columns);
    return existing;
  }
  const target = figure.querySelector(".plot");
  const width = Math.max(260, target.clientWidth || 360);
  return new uPlot(
    {
      width,
      height: 180,
      legend: { show: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{ stroke: "#333" }, { stroke: "#333", label: unit, size: 56 }],
      series: [
        { label: "time" },
        ...lines.map(([label, , colour]) => ({ label, stroke: colour, width: 2, spanGaps: false, points: { show: true, size: 4 } })),
      ],
    },
    columns,
    target,
  );
}
