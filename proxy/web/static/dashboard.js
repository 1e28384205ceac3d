// gitlab-dora-proxy dashboard: reads the proxy's own API with the caller's token and draws
// the four DORA metrics as SVG bar charts. No library, no other origin, no inline code
// (the page is served with a strict Content-Security-Policy). The token lives in
// sessionStorage only and travels as the PRIVATE-TOKEN header; it is never put in the URL.
"use strict";

(function () {
  const METRICS = [
    ["deployment_frequency", "Deployment frequency"],
    ["lead_time_for_changes", "Lead time for changes"],
    ["time_to_restore_service", "Time to restore service"],
    ["change_failure_rate", "Change failure rate"],
  ];
  const TOKEN_KEY = "dora-proxy-token";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  let view = null; // {kind, target, params: URLSearchParams of the API's own parameters}
  let factsCache = null; // the facts answer of the current view, fetched on the first click
  let projectRows = []; // group view: [{path, values}]
  let sortState = { key: "project", ascending: true };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  // ---- units for people ----------------------------------------------------------------
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "no data";
    const hours = seconds / 3600;
    if (hours < 48) return `${round(hours)} hours`;
    return `${round(hours / 24)} days`;
  }

  function round(value) {
    return Number(value.toFixed(value < 10 ? 2 : 1)).toString();
  }

  function human(metric, value, interval) {
    if (value === null || value === undefined) return "no data";
    if (metric === "deployment_frequency") {
      if (interval !== "daily") return `${round(value)} per day`;
      return value === 1 ? "1 deployment" : `${value} deployments`;
    }
    if (metric === "change_failure_rate") return `${round(value * 100)} %`;
    return duration(value);
  }

  // ---- the view from the URL, and the URL from the controls ------------------------------
  function readUrl() {
    const url = new URLSearchParams(location.search);
    const kind = url.has("group") ? "group" : "project";
    const target = url.get(kind) || "";
    const params = new URLSearchParams();
    for (const name of ["start_date", "end_date", "interval"]) {
      if (url.get(name)) params.set(name, url.get(name));
    }
    for (const tier of url.getAll("environment_tiers[]")) params.append("environment_tiers[]", tier);
    return { kind, target, params };
  }

  function fillControls(v) {
    $("kind").value = v.kind;
    $("target").value = v.target;
    $("start_date").value = v.params.get("start_date") || "";
    $("end_date").value = v.params.get("end_date") || "";
    $("interval").value = v.params.get("interval") || "daily";
    const tiers = v.params.getAll("environment_tiers[]");
    for (const box of document.querySelectorAll("input[name=tier]")) {
      box.checked = tiers.length ? tiers.includes(box.value) : box.value === "production";
    }
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function readControls() {
    const params = new URLSearchParams();
    if ($("start_date").value) params.set("start_date", $("start_date").value);
    if ($("end_date").value) params.set("end_date", $("end_date").value);
    if ($("interval").value !== "daily") params.set("interval", $("interval").value);
    const tiers = [...document.querySelectorAll("input[name=tier]:checked")].map((b) => b.value);
    if (!(tiers.length === 1 && tiers[0] === "production")) {
      for (const tier of tiers) params.append("environment_tiers[]", tier);
    }
    return { kind: $("kind").value, target: $("target").value.trim(), params };
  }

  function pageUrl(v) {
    const query = new URLSearchParams();
    query.set(v.kind, v.target);
    for (const [name, value] of v.params) query.append(name, value);
    return `${location.pathname}?${query}`;
  }

  // ---- the proxy's API ----------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, params) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["PRIVATE-TOKEN"] = token;
    const response = await fetch(`${path}?${params}`, { headers, credentials: "omit", cache: "no-cache" });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const message = body && (body.message || body.error);
      throw new ApiError(response.status, typeof message === "string" ? message : response.statusText);
    }
    return body;
  }

  function base(v) {
    return `${v.kind}s/${encodeURIComponent(v.target)}`;
  }

  function showError(error) {
    const alert = $("alert");
    alert.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` : `Error: ${error.message}`;
    alert.hidden = false;
  }

  // ---- drawing ----------------------------------------------------------------------------------
  function chart(metric, label, points, interval) {
    const width = 560;
    const height = 180;
    const pad = { left: 8, right: 8, top: 16, bottom: 22 };
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${label} chart` });
    const values = points.map((p) => (p.value === null ? 0 : p.value));
    const top = Math.max(...values, 0) || 1;
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    root.append(svg("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH }));
    const topLabel = svg("text", { x: pad.left, y: pad.top - 5 });
    topLabel.textContent = `max ${human(metric, top, interval)}`;
    root.append(topLabel);
    const step = points.length ? plotW / points.length : plotW;
    points.forEach((point, i) => {
      const h = point.value === null ? 0 : (point.value / top) * plotH;
      const bar = svg("rect", {
        class: "bar",
        x: (pad.left + i * step + step * 0.1).toFixed(1),
        y: (pad.top + plotH - Math.max(h, 1)).toFixed(1),
        width: Math.max(step * 0.8, 1).toFixed(1),
        height: Math.max(h, 1).toFixed(1),
        tabindex: "0",
        "data-date": point.date || "",
        "data-metric": metric,
      });
      const title = svg("title", {});
      title.textContent = `${point.date || "whole window"}: ${human(metric, point.value, interval)}`;
      bar.append(title);
      root.append(bar);
    });
    if (points.length) {
      const first = svg("text", { x: pad.left, y: height - 6 });
      first.textContent = points[0].date || "whole window";
      root.append(first);
      if (points.length > 1) {
        const last = svg("text", { x: width - pad.right, y: height - 6, "text-anchor": "end" });
        last.textContent = points[points.length - 1].date;
        root.append(last);
      }
    }
    return root;
  }

  function figure(metric, label, points, interval, stats) {
    const fig = el("figure", { id: `figure-${metric}`, "data-metric": metric });
    fig.append(el("figcaption", {}, label));
    if (stats) {
      const headline = el("p", { class: "headline" }, el("span", { class: "value" }, human(metric, stats.value, "all")), " over the window");
      if (stats.level) headline.append(el("span", { class: `level level-${stats.level}`, "data-level": stats.level }, `DORA: ${stats.level}`));
      fig.append(headline);
      if (metric !== "change_failure_rate" && stats.sample_count) {
        const show = (value) => human(metric, value, "all");
        const samples = metric === "deployment_frequency" ? `${stats.sample_count} deployments; per day:` : `${stats.sample_count} samples;`;
        fig.append(el("p", { class: "stats" }, `${samples} true median ${show(stats.median)}, p75 ${show(stats.p75)}, p90 ${show(stats.p90)}`));
      } else if (metric === "change_failure_rate") {
        fig.append(el("p", { class: "stats" }, `${stats.sample_count} incidents, ${stats.deployments} deployments`));
      }
    }
    fig.append(chart(metric, label, points, interval));
    const table = el("table", { class: "data" }, el("caption", {}, `${label}: data`));
    table.append(el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Date"), el("th", { scope: "col", class: "num" }, "Value"))));
    const body = el("tbody");
    for (const point of points) {
      const row = el(
        "tr",
        { class: "datarow", "data-date": point.date || "", "data-value": JSON.stringify(point.value) },
        el("td", {}, point.date || "whole window"),
        el("td", { class: "num" }, human(metric, point.value, interval)),
      );
      row.dataset.metric = metric;
      body.append(row);
    }
    table.append(body);
    fig.append(el("details", {}, el("summary", {}, "Data table"), table));
    return fig;
  }

  // ---- group: the projects table -------------------------------------------------------------
  function drawProjects() {
    const body = $("projects").querySelector("tbody");
    body.replaceChildren();
    const key = sortState.key;
    const sorted = [...projectRows].sort((a, b) => {
      const x = key === "project" ? a.path : a.values[key];
      const y = key === "project" ? b.path : b.values[key];
      if (x === y) return 0;
      if (x === null) return 1; // no data last, whatever the direction
      if (y === null) return -1;
      return (x < y ? -1 : 1) * (sortState.ascending ? 1 : -1);
    });
    for (const project of sorted) {
      const row = el("tr", { "data-project": project.path }, el("th", { scope: "row" }, project.path));
      for (const [metric] of METRICS) {
        const value = project.values[metric];
        row.append(el("td", { class: "num", "data-metric": metric, "data-value": JSON.stringify(value) }, human(metric, value, "all")));
      }
      row.addEventListener("click", () => {
        location.assign(pageUrl({ kind: "project", target: project.path, params: view.params }));
      });
      body.append(row);
    }
  }

  // ---- drill-down ---------------------------------------------------------------------------
  function inBucket(day, date, interval) {
    if (!day) return false;
    if (interval === "all" || !date) return true;
    if (interval === "monthly") return day.slice(0, 7) === date.slice(0, 7);
    return day === date;
  }

  function link(text, url) {
    return url ? el("a", { href: url, rel: "noreferrer" }, text) : text;
  }

  function factsTable(caption, headings, rows) {
    const table = el("table", { class: "facts" }, el("caption", {}, `${caption} (${rows.length})`));
    table.append(el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))));
    const body = el("tbody");
    for (const cells of rows) body.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
    table.append(body);
    return table;
  }

  async function drill(metric, date) {
    const interval = view.params.get("interval") || "daily";
    try {
      if (!factsCache) factsCache = await api(`/-/api/v1/${base(view)}/dora/facts`, view.params);
    } catch (error) {
      showError(error);
      return;
    }
    const deployments = factsCache.deployments.filter((d) => inBucket(d.day, date, interval));
    const mrs = factsCache.merge_requests.filter((m) => inBucket(m.day, date, interval));
    const incidents = factsCache.incidents.filter(
      (i) => inBucket(i.created_in_window ? i.created_day : null, date, interval) || (i.time_to_restore_seconds !== null && inBucket(i.closed_day, date, interval)),
    );
    const label = METRICS.find(([m]) => m === metric)[1];
    $("drill-title").textContent = `Facts behind ${label}, ${date || "whole window"}`;
    const parts = [];
    if (metric === "deployment_frequency" || metric === "change_failure_rate") {
      parts.push(factsTable("Deployments", ["Project", "Deployment", "Environment", "Tier", "Finished at"],
        deployments.map((d) => [d.project, link(`#${d.id}`, d.web_url), d.environment, d.tier, d.finished_at])));
    }
    if (metric === "lead_time_for_changes") {
      parts.push(factsTable("Merge requests", ["Project", "Merge request", "Merged at", "Deployed at", "Lead time"],
        mrs.map((m) => [m.project, link(`!${m.iid ?? m.id}`, m.web_url), m.merged_at, m.deployed_at, duration(m.lead_time_seconds)])));
    }
    if (metric === "time_to_restore_service" || metric === "change_failure_rate") {
      parts.push(factsTable("Incidents", ["Project", "Incident", "Created at", "Closed at", "Time to restore"],
        incidents.map((i) => [i.project, link(`#${i.iid ?? i.id}`, i.web_url), i.created_at, i.closed_at || "open", i.time_to_restore_seconds === null ? "not in window" : duration(i.time_to_restore_seconds)])));
    }
    $("drill-body").replaceChildren(...parts);
    $("drill").hidden = false;
  }

  // ---- loading a view ---------------------------------------------------------------------------
  async function load(v) {
    view = v;
    factsCache = null;
    $("alert").hidden = true;
    $("drill").hidden = true;
    $("metrics").replaceChildren();
    $("projects-section").hidden = true;
    document.body.removeAttribute("data-ready");
    if (!v.target) return;
    $("scope-title").textContent = `${v.kind === "group" ? "Group" : "Project"} ${v.target}`;
    const interval = v.params.get("interval") || "daily";
    try {
      const answers = await Promise.all([
        ...METRICS.map(([metric]) => {
          const params = new URLSearchParams(v.params);
          params.set("metric", metric);
          return api(`/api/v4/${base(v)}/dora/metrics`, params);
        }),
        api(`/-/api/v1/${base(v)}/dora/summary`, v.params),
      ]);
      if (view !== v) return; // a newer view started meanwhile
      const summary = answers[METRICS.length];
      $("metrics").replaceChildren(
        ...METRICS.map(([metric, label], i) => figure(metric, label, answers[i], interval, summary.metrics[metric])),
      );
      if (v.kind === "group") {
        projectRows = summary.projects.map((p) => ({ path: p.full_path, values: p.values }));
        drawProjects();
        $("projects-section").hidden = false;
      }
      document.body.setAttribute("data-ready", "true");
      performance.mark("dora-ready"); // bench/bench_dashboard.py reads it
    } catch (error) {
      if (view === v) showError(error);
      document.body.setAttribute("data-ready", "error");
    }
  }

  async function loadLevels() {
    try {
      const levels = await api("/-/api/v1/dora/levels", new URLSearchParams());
      const footer = $("levels-cite");
      footer.replaceChildren(el("p", {}, `Performance levels: ${levels.source} (${levels.year}). ${levels.note || ""}`));
      const table = el("table", {}, el("caption", {}, "DORA performance level thresholds"));
      const head = el("tr", {}, el("th", { scope: "col" }, "Metric"));
      for (const level of levels.metrics.deployment_frequency.levels) head.append(el("th", { scope: "col" }, level.level));
      table.append(el("thead", {}, head));
      const body = el("tbody");
      for (const [metric, label] of METRICS) {
        const row = el("tr", {}, el("th", { scope: "row" }, label));
        for (const level of levels.metrics[metric].levels) row.append(el("td", {}, level.text));
        body.append(row);
      }
      table.append(body);
      footer.append(table);
    } catch (error) {
      showError(error);
    }
  }

  function start() {
    const initial = readUrl();
    fillControls(initial);
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      const v = readControls();
      history.pushState(null, "", pageUrl(v));
      load(v);
    });
    for (const id of ["start_date", "end_date", "interval", "kind"]) {
      $(id).addEventListener("change", () => $("controls").requestSubmit());
    }
    for (const box of document.querySelectorAll("input[name=tier]")) {
      box.addEventListener("change", () => $("controls").requestSubmit());
    }
    window.addEventListener("popstate", () => {
      const v = readUrl();
      fillControls(v);
      load(v);
    });
    $("metrics").addEventListener("click", (event) => {
      const target = event.target.closest("[data-metric][data-date]");
      if (target && target.closest("figure")) drill(target.closest("figure").dataset.metric, target.dataset.date);
    });
    $("metrics").addEventListener("keydown", (event) => {
      const target = event.target.closest("rect.bar");
      if (target && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        drill(target.dataset.metric, target.dataset.date);
      }
    });
    for (const button of document.querySelectorAll("#projects th button")) {
      button.addEventListener("click", () => {
        const key = button.dataset.sort;
        sortState = { key, ascending: sortState.key === key ? !sortState.ascending : key === "project" };
        drawProjects();
      });
    }
    loadLevels();
    // DORA metrics always need a token (Reporter or more): without one, wait for "Show".
    if (sessionStorage.getItem(TOKEN_KEY)) load(initial);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
