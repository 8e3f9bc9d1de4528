// The sagequeue console: a page per view, routed in the browser under /ui/. Every piece
// of data comes from this server's public APIs, signed here (api.js).

import {
  ApiError,
  SessionEnded,
  call,
  defaultRegion,
  endSession,
  objectUrl,
  readSession,
  runtime,
  s3,
  saveSession,
  splitS3Uri,
} from "./api.js";

const ROOT = "/ui";
const main = document.getElementById("main");
const announcer = document.getElementById("announce");

// ------------------------------------------------------------------ DOM helpers

/** An element with attributes and children (text is always text: nothing is parsed). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function link(path, ...children) {
  return h("a", { href: path, "data-nav": true }, ...children);
}

const seg = encodeURIComponent;

function endpointPath(name, ...rest) {
  return [`${ROOT}/endpoints/${seg(name)}`, ...rest].join("/");
}

function when(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "—";
  const date = new Date(epochSeconds * 1000);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function precise(epochSeconds) {
  return new Date(epochSeconds * 1000).toISOString().replace("T", " ");
}

function timeCell(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return h("td", {}, "—");
  return h("td", {}, h("time", { datetime: new Date(epochSeconds * 1000).toISOString() }, when(epochSeconds)));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${(Math.round(seconds * 10) / 10).toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function badge(status) {
  const kind = {
    InService: "ok",
    Completed: "ok",
    Failed: "bad",
    Expired: "bad",
    OutOfService: "bad",
    Creating: "busy",
    Updating: "busy",
    SystemUpdating: "busy",
    RollingBack: "busy",
    Deleting: "busy",
    InProgress: "busy",
    Queued: "wait",
  }[status] || "wait";
  return h("span", { class: `badge ${kind}` }, status || "unknown");
}

function say(text) {
  announcer.textContent = "";
  announcer.textContent = text;
}

function table(caption, headings, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headings.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows),
  );
}

function definitions(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === "" ? "—" : v)]),
  );
}

// ------------------------------------------------------------------ views and routing

/** What a view may leave running (timers, streams): stopped when the user moves on. */
class ViewContext {
  constructor() {
    this.controller = new AbortController();
    this.timers = [];
  }
  get signal() {
    return this.controller.signal;
  }
  get active() {
    return !this.controller.signal.aborted;
  }
  every(ms, fn) {
    const timer = setInterval(() => {
      if (this.active) fn();
    }, ms);
    this.timers.push(timer);
  }
  stop() {
    this.controller.abort();
    this.timers.forEach(clearInterval);
  }
}

let current = null;

const routes = [
  [/^\/ui\/?$/, () => endpointsView()],
  [/^\/ui\/signin\/?$/, () => signinView()],
  [/^\/ui\/endpoints\/?$/, () => endpointsView()],
  [/^\/ui\/endpoints\/([^/]+)\/?$/, (m) => endpointView(m[1])],
  [/^\/ui\/endpoints\/([^/]+)\/invocations\/?$/, (m) => invocationsView(m[1])],
  [/^\/ui\/endpoints\/([^/]+)\/invocations\/([^/]+)\/?$/, (m) => requestView(m[1], m[2])],
  [/^\/ui\/endpoints\/([^/]+)\/logs\/?$/, (m) => logsView(m[1])],
  [/^\/ui\/buckets\/?$/, () => bucketsView()],
  [/^\/ui\/buckets\/([^/]+)\/?$/, (m) => bucketView(m[1])],
];

function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

function params() {
  return new URLSearchParams(location.search);
}

async function render() {
  if (current) current.stop();
  const context = (current = new ViewContext());
  const path = location.pathname;
  rendered = path + location.search;
  const found = readSession();
  renderWho(found);
  if (!/^\/ui\/signin\/?$/.test(path) && found.state !== "active") {
    const next = path + location.search;
    const query = new URLSearchParams({ next });
    if (found.state === "expired") query.set("reason", "expired");
    navigate(`${ROOT}/signin?${query}`, { replace: true });
    return;
  }
  let view = null;
  for (const [pattern, make] of routes) {
    const match = pattern.exec(path);
    if (match) {
      const decoded = match.map((part, i) => (i === 0 ? part : safeDecode(part)));
      view = () => make(decoded, context);
      break;
    }
  }
  main.replaceChildren(h("p", { class: "loading", role: "status" }, "Loading…"));
  try {
    if (!view) {
      show(notFound("Page not found", `There is no console page at ${path}.`));
    } else {
      await view()(context);
    }
  } catch (error) {
    if (!context.active) return;
    handleError(error);
  }
}

function safeDecode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function handleError(error) {
  if (error instanceof SessionEnded) {
    render();
    return;
  }
  if (error instanceof ApiError && error.authFailure) {
    endSession();
    navigate(`${ROOT}/signin?${new URLSearchParams({ reason: "refused", next: location.pathname })}`, { replace: true });
    return;
  }
  console.error(error);
  show(
    h(
      "section",
      { class: "problem" },
      h("h1", {}, error instanceof ApiError && error.accessDenied ? "Not allowed" : "Something went wrong"),
      h("p", {}, error instanceof ApiError ? `${error.code}: ${error.message}` : String(error.message || error)),
      h("p", {}, link(`${ROOT}/endpoints`, "Back to the endpoints")),
    ),
  );
}

/** Put a view on the page and move keyboard focus to its heading. */
function show(...nodes) {
  main.replaceChildren(...nodes);
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
    document.title = `${heading.textContent} - sagequeue`;
  }
}

function notFound(title, text) {
  return h(
    "section",
    { class: "not-found", "data-view": "not-found" },
    h("h1", {}, title),
    h("p", {}, text),
    h("p", {}, link(`${ROOT}/endpoints`, "Back to the endpoints")),
  );
}

function renderWho(found) {
  const who = document.getElementById("who");
  if (found.state !== "active") {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(
    h("span", {}, "Signed in as ", h("code", {}, found.session.accessKeyId)),
    h(
      "button",
      {
        type: "button",
        onclick: () => {
          endSession();
          navigate(`${ROOT}/signin`);
        },
      },
      "Sign out",
    ),
  );
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[data-nav]");
  if (!anchor || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(anchor.getAttribute("href"));
});
// Back and forward re-render; a jump within the page (the skip link) does not.
let rendered = "";
window.addEventListener("popstate", () => {
  if (location.pathname + location.search !== rendered) render();
});

// ------------------------------------------------------------------ sign-in

function signinView() {
  return async () => {
    const query = params();
    const reason = {
      expired: "Your session has expired. Sign in again.",
      refused: "The server no longer accepts that key pair. Sign in again.",
    }[query.get("reason")];
    const error = h("p", { class: "error", id: "signin-error", role: "alert" });
    const form = h(
      "form",
      { class: "signin", novalidate: true },
      h("label", { for: "access-key" }, "Access key ID"),
      h("input", { id: "access-key", name: "access-key", autocomplete: "username", required: true, spellcheck: "false" }),
      h("label", { for: "secret-key" }, "Secret access key"),
      h("input", { id: "secret-key", name: "secret-key", type: "password", autocomplete: "current-password", required: true }),
      h("label", { for: "region" }, "Region"),
      h("input", { id: "region", name: "region", value: defaultRegion(), required: true }),
      h("button", { type: "submit" }, "Sign in"),
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const credentials = {
        accessKeyId: form.querySelector("#access-key").value.trim(),
        secretAccessKey: form.querySelector("#secret-key").value,
        region: form.querySelector("#region").value.trim() || defaultRegion(),
      };
      if (!credentials.accessKeyId || !credentials.secretAccessKey) {
        error.textContent = "Enter an access key ID and its secret access key.";
        return;
      }
      error.textContent = "Signing in…";
      try {
        await call("sagemaker", "ListEndpoints", { MaxResults: 1 }, { session: credentials });
      } catch (failure) {
        // A scoped key may not list endpoints: its signature was good all the same.
        if (!(failure instanceof ApiError && failure.accessDenied)) {
          error.textContent = signinFailure(failure);
          form.querySelector("#secret-key").focus();
          return;
        }
      }
      saveSession({ accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey }, credentials.region);
      const next = query.get("next");
      navigate(next && next.startsWith(`${ROOT}/`) && !next.startsWith(`${ROOT}/signin`) ? next : `${ROOT}/endpoints`, { replace: true });
    });
    show(
      h(
        "section",
        { class: "narrow", "data-view": "signin" },
        h("h1", {}, "Sign in to sagequeue"),
        reason ? h("p", { class: "notice", role: "status" }, reason) : null,
        h(
          "p",
          {},
          "Use an access key pair of this server (for the generated one: ",
          h("code", {}, "<data-dir>/credentials"),
          "). The secret stays in this browser tab: every request is signed here, and the secret is never sent.",
        ),
        form,
      ),
    );
    form.querySelector("#access-key").focus();
  };
}

function signinFailure(failure) {
  if (!(failure instanceof ApiError)) return `Sign-in failed: the server could not be reached (${failure.message}).`;
  if (failure.code === "UnrecognizedClientException" || failure.code === "InvalidAccessKeyId") {
    return "Sign-in failed: this server knows no such access key ID.";
  }
  if (failure.code === "InvalidSignatureException" || failure.code === "SignatureDoesNotMatch") {
    if (/Credential should be scoped/.test(failure.message)) return `Sign-in failed: wrong region (${failure.message}).`;
    return "Sign-in failed: the secret access key does not match the access key ID.";
  }
  return `Sign-in failed: ${failure.code}: ${failure.message}`;
}

// ------------------------------------------------------------------ endpoints

async function listAllEndpoints() {
  const found = [];
  let token;
  do {
    const page = await call("sagemaker", "ListEndpoints", { MaxResults: 100, SortBy: "Name", SortOrder: "Ascending", ...(token ? { NextToken: token } : {}) });
    found.push(...(page.Endpoints || []));
    token = page.NextToken;
  } while (token && found.length < 1000);
  return found;
}

async function describeAll(names) {
  const out = {};
  const queue = [...names];
  async function worker() {
    while (queue.length) {
      const name = queue.shift();
      try {
        out[name] = await call("sagemaker", "DescribeEndpoint", { EndpointName: name });
      } catch (error) {
        if (error instanceof ApiError && error.authFailure) throw error;
        out[name] = null;
      }
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  return out;
}

async function latestBacklogs(names) {
  if (!names.length) return {};
  const end = Math.floor(Date.now() / 60000) * 60 + 60;
  const queries = names.slice(0, 500).map((name, i) => ({
    Id: `e${i}`,
    MetricStat: {
      Metric: { Namespace: "AWS/SageMaker", MetricName: "ApproximateBacklogSize", Dimensions: [{ Name: "EndpointName", Value: name }] },
      Period: 60,
      Stat: "Maximum",
    },
  }));
  try {
    const data = await call("monitoring", "GetMetricData", { MetricDataQueries: queries, StartTime: end - 600, EndTime: end, ScanBy: "TimestampDescending" });
    const out = {};
    for (const result of data.MetricDataResults || []) {
      const index = Number(result.Id.slice(1));
      if (result.Values && result.Values.length) out[names[index]] = result.Values[0];
    }
    return out;
  } catch (error) {
    if (error instanceof ApiError && error.authFailure) throw error;
    return {};
  }
}

function instanceCounts(endpoint) {
  let current = 0;
  let desired = 0;
  for (const variant of (endpoint && endpoint.ProductionVariants) || []) {
    current += variant.CurrentInstanceCount || 0;
    desired += variant.DesiredInstanceCount || 0;
  }
  return `${current} / ${desired}`;
}

function endpointsView() {
  return async (context) => {
    const filter = h("input", { id: "endpoint-filter", type: "search", placeholder: "name contains…", "aria-controls": "endpoints" });
    const body = h("tbody");
    const count = h("p", { class: "muted", role: "status", "aria-live": "polite" });
    const endpointsTable = h(
      "table",
      { id: "endpoints" },
      h("caption", {}, "Endpoints: status, instances running / desired, requests queued or running"),
      h("thead", {}, h("tr", {}, ["Name", "Status", "Instances (running / desired)", "Backlog", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    );
    let rows = [];
    function applyFilter() {
      const needle = filter.value.trim().toLowerCase();
      let shown = 0;
      for (const [name, row] of rows) {
        const visible = !needle || name.toLowerCase().includes(needle);
        row.hidden = !visible;
        if (visible) shown++;
      }
      count.textContent = `${shown} of ${rows.length} endpoints`;
    }
    filter.addEventListener("input", applyFilter);
    async function load() {
      const endpoints = await listAllEndpoints();
      const names = endpoints.map((e) => e.EndpointName);
      const [described, backlogs] = await Promise.all([describeAll(names), latestBacklogs(names)]);
      if (!context.active) return;
      rows = endpoints.map((summary) => {
        const name = summary.EndpointName;
        const detail = described[name];
        const backlog = backlogs[name];
        return [
          name,
          h(
            "tr",
            { "data-endpoint": name },
            h("th", { scope: "row" }, link(endpointPath(name), name)),
            h("td", {}, badge(summary.EndpointStatus)),
            h("td", {}, instanceCounts(detail)),
            h("td", {}, backlog === undefined ? "—" : String(Math.round(backlog))),
            timeCell(summary.CreationTime),
          ),
        ];
      });
      body.replaceChildren(...rows.map(([, row]) => row));
      if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 5 }, "No endpoints yet: create one with the SageMaker API (CreateEndpoint).")));
      applyFilter();
    }
    await load();
    show(
      h(
        "section",
        { "data-view": "endpoints" },
        h("h1", {}, "Endpoints"),
        h("div", { class: "toolbar" }, h("label", { for: "endpoint-filter" }, "Find an endpoint"), filter, count),
        endpointsTable,
      ),
    );
    context.every(10000, () => load().catch(handleBackgroundError));
  };
}

function handleBackgroundError(error) {
  if (error instanceof SessionEnded || (error instanceof ApiError && error.authFailure)) handleError(error);
}

function endpointNav(name, here) {
  const items = [
    ["overview", "Overview", endpointPath(name)],
    ["invocations", "Invocations", endpointPath(name, "invocations")],
    ["logs", "Logs", endpointPath(name, "logs")],
  ];
  return h(
    "nav",
    { class: "tabs", "aria-label": `Endpoint ${name}` },
    h("ul", {}, items.map(([key, title, path]) => h("li", {}, h("a", { href: path, "data-nav": true, "aria-current": key === here ? "page" : null }, title)))),
  );
}

async function describeEndpoint(name) {
  try {
    return await call("sagemaker", "DescribeEndpoint", { EndpointName: name });
  } catch (error) {
    if (error instanceof ApiError && error.code === "ValidationException" && /Could not find/.test(error.message)) return null;
    throw error;
  }
}

function endpointNotFound(name) {
  return notFound("Endpoint not found", `There is no endpoint named “${name}”: it was never created, or it has been deleted.`);
}

async function scalingOf(name, variants) {
  try {
    const resourceIds = variants.map((v) => `endpoint/${name}/variant/${v}`);
    const [targets, policies] = await Promise.all([
      call("application-autoscaling", "DescribeScalableTargets", { ServiceNamespace: "sagemaker", ResourceIds: resourceIds }),
      Promise.all(resourceIds.map((id) => call("application-autoscaling", "DescribeScalingPolicies", { ServiceNamespace: "sagemaker", ResourceId: id }))),
    ]);
    return { targets: targets.ScalableTargets || [], policies: policies.flatMap((p) => p.ScalingPolicies || []) };
  } catch (error) {
    if (error instanceof ApiError && error.authFailure) throw error;
    return { error };
  }
}

function policySummary(policy) {
  const tracking = policy.TargetTrackingScalingPolicyConfiguration;
  if (tracking) {
    const metric = tracking.PredefinedMetricSpecification
      ? tracking.PredefinedMetricSpecification.PredefinedMetricType
      : (tracking.CustomizedMetricSpecification || {}).MetricName;
    return `target ${tracking.TargetValue} of ${metric}${tracking.DisableScaleIn ? ", no scale-in" : ""}`;
  }
  const step = policy.StepScalingPolicyConfiguration;
  if (step) {
    const adjustments = (step.StepAdjustments || []).map((a) => `${a.ScalingAdjustment >= 0 ? "+" : ""}${a.ScalingAdjustment}`).join(", ");
    return `${step.AdjustmentType}: ${adjustments} (cooldown ${step.Cooldown ?? 300} s)`;
  }
  return policy.PolicyType;
}

function endpointView(name) {
  return async (context) => {
    const endpoint = await describeEndpoint(name);
    if (!endpoint) return show(endpointNotFound(name));
    const variants = (endpoint.ProductionVariants || []).map((v) => v.VariantName);
    let config = null;
    try {
      config = await call("sagemaker", "DescribeEndpointConfig", { EndpointConfigName: endpoint.EndpointConfigName });
    } catch (error) {
      if (error instanceof ApiError && error.authFailure) throw error;
    }
    const scaling = await scalingOf(endpoint.EndpointName, variants);
    const configVariants = Object.fromEntries(((config && config.ProductionVariants) || []).map((v) => [v.VariantName, v]));
    const asyncConfig = endpoint.AsyncInferenceConfig || (config && config.AsyncInferenceConfig) || {};
    const output = asyncConfig.OutputConfig || {};
    const notification = output.NotificationConfig || {};
    const targetsByVariant = Object.fromEntries((scaling.targets || []).map((t) => [t.ResourceId.split("/").pop(), t]));

    const variantRows = (endpoint.ProductionVariants || []).map((v) => {
      const target = targetsByVariant[v.VariantName];
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, v.VariantName),
        h("td", {}, String(v.CurrentInstanceCount ?? "—")),
        h("td", {}, String(v.DesiredInstanceCount ?? "—")),
        h("td", {}, String(v.CurrentWeight ?? "—")),
        h("td", {}, String(v.DesiredWeight ?? "—")),
        h("td", {}, (configVariants[v.VariantName] || {}).ModelName || "—"),
        h("td", {}, target ? `${target.MinCapacity} to ${target.MaxCapacity}` : "not registered"),
      );
    });
    const policyRows = (scaling.policies || []).map((p) =>
      h("tr", {}, h("th", { scope: "row" }, p.PolicyName), h("td", {}, p.ResourceId.split("/").pop()), h("td", {}, p.PolicyType), h("td", {}, policySummary(p))),
    );
    const figures = CHARTS_PLACEHOLDER.map(([key, title]) =>
      h("figure", { class: "chart", id: `chart-${key}`, "data-chart": key }, h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "latest muted" }, "loading…")), h("div", { class: "plot", role: "img", "aria-label": `${title}, last hour` })),
    );
    show(
      h(
        "section",
        { "data-view": "endpoint" },
        h("h1", {}, endpoint.EndpointName, " ", badge(endpoint.EndpointStatus)),
        endpointNav(endpoint.EndpointName, "overview"),
        endpoint.FailureReason ? h("p", { class: "error", role: "alert" }, `Failure reason: ${endpoint.FailureReason}`) : null,
        h("h2", {}, "Last hour"),
        h("p", { class: "muted" }, "Per minute, from the CloudWatch metrics; updated every 5 seconds."),
        h("div", { class: "charts" }, figures),
        h("h2", {}, "Production variants"),
        table("Variants: instances, weights, model and scaling range", ["Variant", "Running instances", "Desired instances", "Current weight", "Desired weight", "Model", "Scaling (min to max)"], variantRows, { id: "variants" }),
        h("h2", {}, "Scaling policies"),
        scaling.error
          ? h("p", { class: "muted" }, `Not shown: ${scaling.error.code}.`)
          : policyRows.length
            ? table("Application Auto Scaling policies", ["Policy", "Variant", "Type", "What it does"], policyRows, { id: "policies" })
            : h("p", { class: "muted" }, "No scaling policy: the variants keep their desired instance counts."),
        h("h2", {}, "Asynchronous inference"),
        definitions([
          ["Output path", output.S3OutputPath],
          ["Failure path", output.S3FailurePath],
          ["Max concurrent invocations per instance", String((asyncConfig.ClientConfig || {}).MaxConcurrentInvocationsPerInstance ?? "default")],
          ["Success notifications", notification.SuccessTopic],
          ["Error notifications", notification.ErrorTopic],
        ]),
        h("h2", {}, "Details"),
        definitions([
          ["ARN", endpoint.EndpointArn],
          ["Endpoint config", endpoint.EndpointConfigName],
          ["Created", when(endpoint.CreationTime)],
          ["Last modified", when(endpoint.LastModifiedTime)],
        ]),
      ),
    );
    const { CHARTS, draw, fetchSeries } = await import("./charts.js");
    const plots = {};
    async function refresh() {
      const data = await fetchSeries(endpoint.EndpointName, variants);
      if (!context.active) return;
      for (const chart of CHARTS) {
        plots[chart[0]] = await draw(document.getElementById(`chart-${chart[0]}`), chart, data, plots[chart[0]]);
      }
      main.querySelector("[data-view=endpoint]").dataset.chartsAt = String(Date.now());
    }
    try {
      await refresh();
    } catch (error) {
      if (!(error instanceof ApiError) || error.authFailure) throw error;
      // A key without cloudwatch:GetMetricData sees the rest of the page.
      main.querySelector(".charts").replaceChildren(h("p", { class: "muted", role: "status" }, `Charts not shown: ${error.code}.`));
      return;
    }
    context.every(5000, () => refresh().catch(handleBackgroundError));
  };
}

const CHARTS_PLACEHOLDER = [
  ["backlog", "Backlog"],
  ["invocations", "Invocations per minute"],
  ["backlogtime", "Time in backlog"],
  ["latency", "Model latency"],
  ["instances", "Instances"],
];

// ------------------------------------------------------------------ invocations

const STATUSES = ["Queued", "InProgress", "Completed", "Failed", "Expired"];

function invocationsView(name) {
  return async (context) => {
    const query = params();
    const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
    const token = query.get("token") || "";
    const started = performance.now();
    let page;
    try {
      page = await runtime(["endpoints", name, "async-invocations"], [
        ...(status ? [["StatusEquals", status]] : []),
        ["MaxResults", "50"],
        ...(token ? [["NextToken", token]] : []),
      ]);
    } catch (error) {
      if (error instanceof ApiError && error.code === "ValidationError" && /not found/.test(error.message)) return show(endpointNotFound(name));
      throw error;
    }
    const listPath = (extra) => {
      const q = new URLSearchParams();
      if (status) q.set("status", status);
      for (const [k, v] of Object.entries(extra)) q.set(k, v);
      const text = q.toString();
      return endpointPath(name, "invocations") + (text ? `?${text}` : "");
    };
    const statusSelect = h(
      "select",
      { id: "status-filter", name: "status" },
      h("option", { value: "" }, "Any status"),
      STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
    );
    statusSelect.addEventListener("change", () => {
      const q = new URLSearchParams();
      if (statusSelect.value) q.set("status", statusSelect.value);
      navigate(endpointPath(name, "invocations") + (q.toString() ? `?${q}` : ""));
    });
    const search = h("input", { id: "inference-search", type: "search", name: "id", spellcheck: "false", placeholder: "InferenceId" });
    const searchForm = h("form", { role: "search", class: "inline" }, h("label", { for: "inference-search" }, "Find by InferenceId"), search, h("button", { type: "submit" }, "Find"));
    searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = search.value.trim();
      if (id) navigate(endpointPath(name, "invocations", seg(id)));
    });
    const rows = (page.Invocations || []).map((inv) =>
      h(
        "tr",
        { "data-status": inv.Status },
        h("th", { scope: "row" }, link(endpointPath(name, "invocations", seg(inv.InferenceId)), inv.InferenceId)),
        h("td", {}, badge(inv.Status)),
        h("td", {}, inv.InvokedProductionVariant || "—"),
        timeCell(inv.EnqueuedTime),
        timeCell(inv.StartTime),
        timeCell(inv.EndTime),
        h("td", { class: "number" }, String(inv.Attempts)),
        h("td", { class: "reason" }, inv.FailureReason || ""),
      ),
    );
    const pager = h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      token ? link(listPath({}), "Newest") : null,
      page.NextToken ? link(listPath({ token: page.NextToken }), "Older") : null,
    );
    show(
      h(
        "section",
        { "data-view": "invocations" },
        h("h1", {}, `Invocations of ${name}`),
        endpointNav(name, "invocations"),
        h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status"), statusSelect, searchForm),
        table(
          `${status || "All"} invocations, newest first${token ? " (older page)" : ""}`,
          ["InferenceId", "Status", "Variant", "Enqueued", "Started", "Finished", "Attempts", "Failure reason"],
          rows.length ? rows : [h("tr", {}, h("td", { colspan: 8 }, status ? `No ${status} invocations.` : "No invocations yet."))],
          { id: "invocations" },
        ),
        pager,
      ),
    );
    performance.mark("sagequeue:invocations-rendered");
    const section = main.querySelector("[data-view=invocations]");
    section.dataset.renderMs = String(Math.round(performance.now() - started));
    // The frame after the rows are in the document: when they are painted.
    requestAnimationFrame(() =>
      setTimeout(() => {
        performance.mark("sagequeue:invocations-painted");
        section.dataset.painted = "true";
      }),
    );
  };
}

// ------------------------------------------------------------------ one request

function downloadLink(label, uri, id) {
  const parts = splitS3Uri(uri);
  if (!parts) return h("span", {}, `${label}: ${uri}`);
  const filename = parts.key.split("/").pop() || "object";
  const anchor = h("a", { href: objectUrl(parts.bucket, parts.key), download: filename, id, class: "download" }, `Download ${label}`);
  // A link is signed for 5 minutes: sign it again when it is followed.
  anchor.addEventListener("click", () => {
    anchor.href = objectUrl(parts.bucket, parts.key);
  });
  return h("span", {}, anchor, " ", h("code", { class: "muted" }, uri));
}

function requestView(name, inferenceId) {
  return async (context) => {
    const path = ["endpoints", name, "async-invocations", inferenceId];
    let state;
    try {
      state = await runtime(path);
    } catch (error) {
      if (error instanceof ApiError && (error.code === "ResourceNotFound" || error.status === 404)) {
        return show(notFound("Invocation not found", `Endpoint “${name}” has no invocation with InferenceId “${inferenceId}” (unknown, or purged after the retention period).`));
      }
      throw error;
    }
    const summary = h("div", { id: "request-state" });
    const timeline = h("ol", { class: "timeline", id: "timeline", "aria-live": "polite" });
    const events = [];
    const modelLines = h("ol", { class: "loglines", id: "request-log" });
    function drawState(inv) {
      // (A worker's clock may stamp the start a hair before the API stamped the enqueue.)
      const queued = Math.max(0, (inv.StartTime ?? inv.EndTime ?? Date.now() / 1000) - inv.EnqueuedTime);
      const ran = inv.StartTime && inv.EndTime ? inv.EndTime - inv.StartTime : null;
      summary.replaceChildren(
        definitions([
          ["Status", badge(inv.Status)],
          ["Variant", inv.InvokedProductionVariant || "—"],
          ["Attempts", String(inv.Attempts)],
          ["Input", inv.InputLocation ? downloadLink("input", inv.InputLocation, "download-input") : "inline request body (not stored as an object)"],
          ["Output", inv.Status === "Completed" ? downloadLink("output", inv.OutputLocation, "download-output") : h("code", {}, inv.OutputLocation)],
          ["Failure", ["Failed", "Expired"].includes(inv.Status) ? downloadLink("failure", inv.FailureLocation, "download-failure") : h("code", {}, inv.FailureLocation)],
        ]),
        ...(inv.FailureReason ? [h("p", { class: "error", role: "alert", id: "failure-reason" }, `Failure reason: ${inv.FailureReason}`)] : []),
      );
      const steps = [[inv.EnqueuedTime, "Queued", "accepted (202) and queued"]];
      if (inv.StartTime) steps.push([inv.StartTime, "InProgress", `taken by a model instance after ${duration(queued)} in the queue (attempt ${inv.Attempts})`]);
      if (inv.EndTime) steps.push([inv.EndTime, inv.Status, ran !== null ? `after ${duration(ran)} running` : inv.Status === "Expired" ? `after ${duration(queued)} in the queue` : ""]);
      for (const [t, status, text] of events) if (!steps.some((s) => s[1] === status && Math.abs(s[0] - t) < 0.5)) steps.push([t, status, text]);
      steps.sort((a, b) => a[0] - b[0]);
      timeline.replaceChildren(...steps.map(([t, status, text]) => h("li", {}, h("time", { datetime: new Date(t * 1000).toISOString() }, precise(t)), " ", badge(status), " ", text)));
    }
    drawState(state);
    show(
      h(
        "section",
        { "data-view": "request", "data-status": state.Status },
        h("h1", {}, `Invocation ${inferenceId}`),
        h("p", {}, "Endpoint ", link(endpointPath(name), name), " · ", link(endpointPath(name, "invocations"), "all invocations")),
        summary,
        h("h2", {}, "Timeline"),
        timeline,
        h("h2", {}, "Model log lines about it"),
        modelLines,
      ),
    );
    const section = main.querySelector("[data-view=request]");
    const update = (inv) => {
      if (!context.active) return;
      const changed = inv.Status !== state.Status || inv.Attempts !== state.Attempts;
      state = inv;
      section.dataset.status = inv.Status;
      drawState(inv);
      if (changed) say(`Invocation ${inferenceId} is ${inv.Status}`);
    };
    requestLog(name, state, modelLines).catch(() => {});
    if (!["Completed", "Failed", "Expired"].includes(state.Status)) {
      await follow(path, context, update);
      requestLog(name, state, modelLines).catch(() => {});
    }
  };
}

/** Follow a request to its end: the push feed when the server has it, else polling. */
async function follow(path, context, update) {
  const final = (inv) => ["Completed", "Failed", "Expired"].includes(inv.Status);
  try {
    const response = await runtime([...path, "events"], [], { stream: true, signal: context.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    while (context.active) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = frame
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trim())
          .join("\n");
        if (data) {
          const inv = JSON.parse(data);
          update(inv);
          if (final(inv)) return;
        }
      }
    }
  } catch (error) {
    if (!context.active) return;
    if (error instanceof ApiError && error.authFailure) throw error;
    // No feed here (or it broke): poll the status call instead.
  }
  let pause = 500;
  while (context.active) {
    await new Promise((resolve) => setTimeout(resolve, pause));
    if (!context.active) return;
    const inv = await runtime(path);
    update(inv);
    if (final(inv)) return;
    pause = Math.min(pause * 1.5, 3000);
  }
}

async function requestLog(name, inv, list) {
  const data = await call("logs", "FilterLogEvents", {
    logGroupName: `/aws/sagemaker/Endpoints/${name}`,
    filterPattern: `"Inference ${inv.InferenceId}:"`,
    startTime: Math.floor((inv.EnqueuedTime - 60) * 1000),
    limit: 100,
  });
  list.replaceChildren(
    ...(data.events || []).map((e) => h("li", {}, h("time", {}, precise(e.timestamp / 1000)), " ", h("span", { class: "muted" }, e.logStreamName), " ", e.message)),
  );
  if (!list.children.length) list.replaceChildren(h("li", { class: "muted" }, "No lines yet."));
}

// ------------------------------------------------------------------ model logs

function logsView(name) {
  return async (context) => {
    const endpoint = await describeEndpoint(name);
    if (!endpoint) return show(endpointNotFound(name));
    const group = `/aws/sagemaker/Endpoints/${endpoint.EndpointName}`;
    let streams = [];
    try {
      const described = await call("logs", "DescribeLogStreams", { logGroupName: group, orderBy: "LastEventTime", descending: true, limit: 50 });
      streams = described.logStreams || [];
    } catch (error) {
      if (!(error instanceof ApiError && error.code === "ResourceNotFoundException")) throw error;
    }
    const chosen = params().get("stream") || "";
    const select = h(
      "select",
      { id: "log-stream", name: "stream" },
      h("option", { value: "" }, "Every instance"),
      streams.map((s) => h("option", { value: s.logStreamName, selected: s.logStreamName === chosen }, s.logStreamName)),
    );
    select.addEventListener("change", () => {
      const q = select.value ? `?${new URLSearchParams({ stream: select.value })}` : "";
      navigate(endpointPath(name, "logs") + q);
    });
    const followBox = h("input", { type: "checkbox", id: "log-follow", checked: true });
    const lines = h("ol", { class: "loglines", id: "log-lines", "aria-live": "off" });
    const status = h("p", { class: "muted", role: "status" });
    show(
      h(
        "section",
        { "data-view": "logs" },
        h("h1", {}, `Logs of ${endpoint.EndpointName}`),
        endpointNav(endpoint.EndpointName, "logs"),
        h(
          "div",
          { class: "toolbar" },
          h("label", { for: "log-stream" }, "Stream"),
          select,
          h("label", { for: "log-follow", class: "check" }, followBox, " Follow live"),
        ),
        status,
        lines,
      ),
    );
    const seen = new Set();
    let since = Date.now() - 3600 * 1000;
    async function poll() {
      if (!followBox.checked && seen.size) return;
      let token;
      let added = 0;
      do {
        let data;
        try {
          data = await call("logs", "FilterLogEvents", {
            logGroupName: group,
            startTime: since,
            limit: 1000,
            ...(chosen ? { logStreamNames: [chosen] } : {}),
            ...(token ? { nextToken: token } : {}),
          });
        } catch (error) {
          if (error instanceof ApiError && error.code === "ResourceNotFoundException") {
            status.textContent = "No log lines yet: they appear once an instance has started.";
            return;
          }
          throw error;
        }
        for (const e of data.events || []) {
          if (seen.has(e.eventId)) continue;
          seen.add(e.eventId);
          since = Math.max(since, e.timestamp);
          lines.append(h("li", {}, h("time", {}, when(e.timestamp / 1000)), " ", h("span", { class: "muted" }, e.logStreamName), " ", e.message));
          added++;
        }
        token = data.nextToken;
      } while (token && context.active);
      while (lines.children.length > 2000) lines.firstElementChild.remove();
      status.textContent = `${lines.children.length} lines${followBox.checked ? ", following" : ""}.`;
      if (added && followBox.checked) lines.lastElementChild?.scrollIntoView({ block: "nearest" });
    }
    await poll();
    context.every(2000, () => poll().catch(handleBackgroundError));
  };
}

// ------------------------------------------------------------------ buckets and objects

function xmlText(node, tag) {
  const found = node.getElementsByTagName(tag)[0];
  return found ? found.textContent : "";
}

function size(bytes) {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

function bucketsView() {
  return async () => {
    const doc = await s3([""]);
    const buckets = [...doc.getElementsByTagName("Bucket")].map((b) => [xmlText(b, "Name"), xmlText(b, "CreationDate")]);
    show(
      h(
        "section",
        { "data-view": "buckets" },
        h("h1", {}, "Buckets"),
        table(
          "Buckets of the object store",
          ["Name", "Created"],
          buckets.length
            ? buckets.map(([name, created]) => h("tr", {}, h("th", { scope: "row" }, link(`${ROOT}/buckets/${seg(name)}`, name)), h("td", {}, created)))
            : [h("tr", {}, h("td", { colspan: 2 }, "No buckets."))],
          { id: "buckets" },
        ),
      ),
    );
  };
}

function bucketView(bucket) {
  return async () => {
    const query = params();
    const prefix = query.get("prefix") || "";
    const token = query.get("token") || "";
    let doc;
    try {
      doc = await s3([bucket], [
        ["list-type", "2"],
        ["delimiter", "/"],
        ["max-keys", "200"],
        ["prefix", prefix],
        ...(token ? [["continuation-token", token]] : []),
      ]);
    } catch (error) {
      if (error instanceof ApiError && error.code === "NoSuchBucket") return show(notFound("Bucket not found", `There is no bucket named “${bucket}”.`));
      throw error;
    }
    const here = (extra) => `${ROOT}/buckets/${seg(bucket)}?${new URLSearchParams({ ...(prefix ? { prefix } : {}), ...extra })}`;
    const folders = [...doc.getElementsByTagName("CommonPrefixes")].map((p) => xmlText(p, "Prefix"));
    const objects = [...doc.getElementsByTagName("Contents")].map((c) => ({ key: xmlText(c, "Key"), size: xmlText(c, "Size"), modified: xmlText(c, "LastModified") }));
    const next = xmlText(doc, "NextContinuationToken");
    const crumbs = [link(`${ROOT}/buckets/${seg(bucket)}`, bucket)];
    let walked = "";
    for (const part of prefix.split("/").filter(Boolean)) {
      walked += part + "/";
      crumbs.push(" / ", link(`${ROOT}/buckets/${seg(bucket)}?${new URLSearchParams({ prefix: walked })}`, part));
    }
    const rows = [
      ...folders.map((folder) =>
        h("tr", {}, h("th", { scope: "row" }, link(`${ROOT}/buckets/${seg(bucket)}?${new URLSearchParams({ prefix: folder })}`, folder.slice(prefix.length))), h("td", {}, "folder"), h("td", {}, ""), h("td", {}, "")),
      ),
      ...objects.map((o) => {
        const anchor = h("a", { href: objectUrl(bucket, o.key), download: o.key.split("/").pop() || "object", class: "download" }, "Download");
        anchor.addEventListener("click", () => {
          anchor.href = objectUrl(bucket, o.key);
        });
        return h("tr", {}, h("th", { scope: "row" }, o.key.slice(prefix.length)), h("td", { class: "number" }, size(o.size)), h("td", {}, o.modified), h("td", {}, anchor));
      }),
    ];
    show(
      h(
        "section",
        { "data-view": "bucket" },
        h("h1", {}, `Bucket ${bucket}`),
        h("p", { class: "crumbs" }, link(`${ROOT}/buckets`, "Buckets"), " / ", crumbs),
        table(
          prefix ? `Objects under ${prefix}` : "Objects",
          ["Name", "Size", "Last modified", ""],
          rows.length ? rows : [h("tr", {}, h("td", { colspan: 4 }, "Nothing here."))],
          { id: "objects" },
        ),
        h("nav", { class: "pager", "aria-label": "Pages" }, token ? link(here({}), "First page") : null, next ? link(here({ token: next }), "Next page") : null),
      ),
    );
  };
}

render();
