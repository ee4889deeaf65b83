// The rill dashboard: plain JavaScript over the JobManager's Flink-compatible REST API.
// Routes (location hash): #/ overview and jobs, #/jobs/<id> one job, #/taskmanagers.
// Each view builds its skeleton once (so buttons and inputs survive refreshes) and then
// refills its sections every REFRESH_MS; a refresh still running when the next tick
// comes makes that tick skip, and one that outlived its view draws nothing. Every
// element a test or a user may look for has a stable id or data attribute: #job-name,
// #job-state[data-state], #job-graph[data-vertex-count], #cancel-job,
// #trigger-savepoint, #stop-job, #operation-status[data-status].
"use strict";
(() => {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = "rill.rest.token";
  const SVG = "http://www.w3.org/2000/svg";
  const NO_WATERMARK = -9.2e18; // below this: Long.MIN_VALUE, no watermark yet
  const TERMINAL = new Set(["FINISHED", "CANCELED", "FAILED"]);

  // ---- REST -----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, method = "GET", body = undefined) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let answer = null;
    try {
      answer = await r.json();
    } catch (_) {
      answer = null;
    }
    if (!r.ok) {
      const errors = answer && Array.isArray(answer.errors) ? answer.errors.join("; ") : "";
      throw new ApiError(r.status, `${r.status}: ${errors || r.statusText}`);
    }
    return answer;
  }

  /** Like api(), but null instead of an error (for the optional parts of a view). */
  const maybe = (path) => api(path).catch((e) => (e.status === 401 ? Promise.reject(e) : null));

  // ---- DOM helpers ----------------------------------------------------------------

  /** An element with attributes and children (strings become text, never markup). */
  function h(tag, attrs = {}, ...children) {
    const svg = tag.startsWith("svg:");
    const el = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "onclick") el.addEventListener("click", v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const fill = (el, ...children) => el.replaceChildren(...children.flat());
  const $ = (id) => document.getElementById(id);
  const badge = (state) => h("span", { class: "badge", "data-state": state }, state);

  function table(columns, rows, empty, id) {
    if (!rows.length) return h("div", { class: "empty", id }, empty);
    return h(
      "table",
      { id },
      h("thead", {}, h("tr", {}, columns.map(([c, num]) => h("th", { class: num ? "num" : null }, c)))),
      h("tbody", {}, rows),
    );
  }

  const td = (v, num) => h("td", { class: num ? "num" : null }, v);

  // ---- formatting -----------------------------------------------------------------

  const int = (n) => (typeof n === "number" && n >= 0 ? Math.round(n).toLocaleString("en-US") : "—");

  function bytes(n) {
    if (typeof n !== "number" || n < 0) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function duration(ms) {
    if (typeof ms !== "number" || ms < 0) return "—";
    if (ms < 1000) return ms + " ms";
    let s = Math.floor(ms / 1000);
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) {
        parts.push(Math.floor(s / size) + unit);
        s %= size;
      }
    }
    parts.push(s + "s");
    return parts.slice(0, 2).join(" ");
  }

  const time = (ms) => (typeof ms === "number" && ms > 0 ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "—");

  function watermark(w) {
    if (w === null || w === undefined || w <= NO_WATERMARK) return "—";
    return w > 1e11 ? time(w) : String(w);
  }

  const percent = (ratio) => (typeof ratio === "number" ? Math.round(ratio * 100) + "%" : "—");

  // ---- views ----------------------------------------------------------------------

  /** #/ : the cluster's figures and every job. */
  const overview = {
    mount(view) {
      fill(
        view,
        h("div", { class: "cards", id: "cluster-cards" }),
        h("h3", {}, "Jobs"),
        h("div", { class: "panel", id: "job-list" }),
      );
    },
    async update(live) {
      const [o, jobs] = await Promise.all([api("/overview"), api("/jobs/overview")]);
      if (!live()) return;
      const card = (label, value, id) =>
        h("div", { class: "card", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
      fill(
        $("cluster-cards"),
        card("TaskManagers", int(o.taskmanagers), "card-taskmanagers"),
        card("Slots available", `${int(o["slots-available"])} / ${int(o["slots-total"])}`, "card-slots"),
        card("Jobs running", int(o["jobs-running"]), "card-running"),
        card("Finished", int(o["jobs-finished"]), "card-finished"),
        card("Cancelled", int(o["jobs-cancelled"]), "card-cancelled"),
        card("Failed", int(o["jobs-failed"]), "card-failed"),
      );
      const list = [...jobs.jobs].sort((a, b) => b["start-time"] - a["start-time"]);
      const rows = list.map((j) =>
        h(
          "tr",
          { "data-job-id": j.jid },
          h("td", {}, h("a", { href: "#/jobs/" + j.jid, class: "job-link" }, j.name)),
          h("td", {}, badge(j.state)),
          td(time(j["start-time"])),
          td(duration(j.duration), true),
          td(`${int(j.tasks.running)} / ${int(j.tasks.total)}`, true),
          h("td", { class: "mono muted" }, j.jid),
        ),
      );
      fill(
        $("job-list"),
        table(
          [["Name"], ["State"], ["Started"], ["Duration", true], ["Tasks running", true], ["Job id"]],
          rows,
          "No jobs yet: submit one with `rill run` or POST /jobs.",
          "jobs-table",
        ),
      );
    },
  };

  /** #/taskmanagers */
  const taskManagers = {
    mount(view) {
      fill(view, h("h3", {}, "TaskManagers"), h("div", { class: "panel", id: "tm-list" }));
    },
    async update(live) {
      const { taskmanagers } = await api("/taskmanagers");
      if (!live()) return;
      // rill's processMemoryRss (the process's resident memory), else Flink's hardware.
      const memory = (t) => {
        if (t.processMemoryRss >= 0) return bytes(t.processMemoryRss) + " RSS";
        const m = t.hardware && t.hardware.physicalMemory;
        return m >= 0 ? bytes(m) : "—";
      };
      const rows = taskmanagers.map((t) =>
        h(
          "tr",
          { "data-tm-id": t.id },
          h("td", { class: "mono" }, t.id),
          h("td", { class: "mono" }, t.path),
          td(t.dataPort, true),
          td(int(t.slotsNumber), true),
          td(int(t.freeSlots), true),
          td(memory(t), true),
          td(duration(t.timeSinceLastHeartbeat) + " ago", true),
          h("td", {}, t.metricsUrl ? h("a", { href: t.metricsUrl, class: "mono" }, t.metricsUrl) : "—"),
        ),
      );
      fill(
        $("tm-list"),
        table(
          [["Id"], ["Address"], ["Data port", true], ["Slots", true], ["Free", true], ["Memory", true], ["Last heartbeat", true], ["Metrics"]],
          rows,
          "No TaskManager registered.",
          "tm-table",
        ),
      );
    },
  };

  /** Levels for a left-to-right layout: a source is 0, others 1 + their highest input. */
  function levels(nodes) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const level = new Map();
    const visit = (n, depth) => {
      if (level.has(n.id)) return level.get(n.id);
      if (depth > nodes.length) return 0; // a cycle: cannot happen in a job graph
      let l = 0;
      for (const i of n.inputs || []) {
        const src = byId.get(i.id);
        if (src) l = Math.max(l, visit(src, depth + 1) + 1);
      }
      level.set(n.id, l);
      return l;
    };
    nodes.forEach((n) => visit(n, 0));
    return level;
  }

  /** A vertex's fill: idle blue to busy red, dark grey when mostly backpressured. */
  function vertexColour(busy, backPressured) {
    if (typeof busy !== "number") return "#eef1f4";
    if (backPressured > 0.5) return "#4a4f57";
    const b = Math.max(0, Math.min(1, busy));
    return `hsl(${210 - 210 * b}, ${70 + 5 * b}%, ${92 - 24 * b}%)`;
  }

  const ellipsis = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

  /** The job graph as SVG: vertices by level in columns, edges with their strategies. */
  function graph(plan, stats) {
    const nodes = plan.nodes || [];
    const level = levels(nodes);
    const columns = [];
    for (const n of nodes) (columns[level.get(n.id)] ||= []).push(n);
    const W = 210, H = 74, GX = 90, GY = 26, PAD = 12;
    const pos = new Map();
    columns.forEach((col, c) =>
      col.forEach((n, r) => pos.set(n.id, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) })),
    );
    const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const width = PAD * 2 + columns.length * W + Math.max(0, columns.length - 1) * GX;
    const height = PAD * 2 + rows * H + (rows - 1) * GY;
    const svg = h("svg:svg", {
      id: "job-graph",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": "job graph",
      "data-vertex-count": nodes.length,
      "data-edge-count": nodes.reduce((k, n) => k + (n.inputs || []).length, 0),
    });
    svg.append(
      h(
        "svg:defs",
        {},
        h(
          "svg:marker",
          { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
          h("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#7d8a97" }),
        ),
      ),
    );
    for (const n of nodes) {
      for (const i of n.inputs || []) {
        const a = pos.get(i.id), b = pos.get(n.id);
        if (!a || !b) continue;
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        svg.append(
          h(
            "svg:g",
            { class: "edge", "data-from": i.id, "data-to": n.id },
            h("svg:path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }),
            h("svg:text", { x: mx, y: (y1 + y2) / 2 - 5, "text-anchor": "middle" }, i.ship_strategy || ""),
          ),
        );
      }
    }
    for (const n of nodes) {
      const p = pos.get(n.id);
      const s = stats.get(n.id) || {};
      const name = n.description || n.id;
      svg.append(
        h(
          "svg:g",
          {
            class: "node",
            transform: `translate(${p.x},${p.y})`,
            "data-vertex-id": n.id,
            "data-busy": s.busy,
            "data-backpressure": s.backPressured,
          },
          h("svg:title", {}, name),
          h("svg:rect", { width: W, height: H, rx: 7, fill: vertexColour(s.busy, s.backPressured) }),
          h("svg:text", { x: 10, y: 20, fill: s.backPressured > 0.5 ? "#fff" : null }, ellipsis(name, 30)),
          h("svg:text", { x: 10, y: 40, class: "sub", fill: s.backPressured > 0.5 ? "#eee" : null }, `Parallelism ${n.parallelism}`),
          h(
            "svg:text",
            { x: 10, y: 58, class: "sub", fill: s.backPressured > 0.5 ? "#eee" : null },
            `busy ${percent(s.busy)} · backpressured ${percent(s.backPressured)}`,
          ),
        ),
      );
    }
    return svg;
  }

  /** Per-vertex figures the graph and the table show: max busy/backpressure, min watermark. */
  async function vertexStats(job, vertices) {
    const stats = new Map();
    await Promise.all(
      vertices.map(async (v) => {
        const base = `/jobs/${job}/vertices/${v.id}`;
        const [metrics, marks] = await Promise.all([
          maybe(`${base}/subtasks/metrics?get=busyTimeMsPerSecond,backPressuredTimeMsPerSecond&agg=max`),
          maybe(`${base}/watermarks`),
        ]);
        const of = (id) => {
          const m = (metrics || []).find((x) => x.id === id);
          return m && typeof m.max === "number" ? m.max / 1000 : undefined;
        };
        const values = (marks || []).map((w) => Number(w.value)).filter((w) => w > NO_WATERMARK);
        stats.set(v.id, {
          busy: of("busyTimeMsPerSecond"),
          backPressured: of("backPressuredTimeMsPerSecond"),
          watermark: values.length === (marks || []).length && values.length ? Math.min(...values) : null,
        });
      }),
    );
    return stats;
  }

  /** #/jobs/<id> */
  function jobView(job) {
    // The savepoint trigger this page follows, until the next operation.
    let operation = null;
    // This view's route generation: once the user navigates away, nothing is drawn and
    // polling stops.
    let mine = -1;
    const shown = () => mine === generation;

    const status = (state, text) => {
      const el = $("operation-status");
      if (!el || !shown()) return;
      el.setAttribute("data-status", state);
      el.textContent = text;
    };

    async function pollSavepoint(what, trigger) {
      for (let i = 0; i < 600 && operation === trigger && shown(); i++) {
        let answer;
        try {
          answer = await api(`/jobs/${job}/savepoints/${trigger}`);
        } catch (e) {
          status("ERROR", `${what}: ${e.message}`);
          return;
        }
        if (answer.status.id === "COMPLETED") {
          const op = answer.operation || {};
          const cause = op["failure-cause"];
          if (cause) status("FAILED", `${what} failed: ${cause["stack-trace"] || cause.class}`);
          else status("COMPLETED", `${what} completed: ${op.location}`);
          return;
        }
        status("IN_PROGRESS", `${what} in progress (trigger ${trigger})…`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }

    async function act(what, run) {
      operation = null;
      status("IN_PROGRESS", `${what}: requested…`);
      try {
        await run();
      } catch (e) {
        status("ERROR", `${what}: ${e.message}`);
      }
      refreshNow();
    }

    const directory = () => {
      const d = $("savepoint-dir").value.trim();
      return d ? d : null;
    };

    const cancel = () =>
      act("Cancel", async () => {
        await api(`/jobs/${job}?mode=cancel`, "PATCH", {});
        status("ACCEPTED", "Cancel: accepted (202), the job is being cancelled");
      });

    const savepoint = () =>
      act("Savepoint", async () => {
        const body = { "cancel-job": false };
        if (directory()) body["target-directory"] = directory();
        const { "request-id": trigger } = await api(`/jobs/${job}/savepoints`, "POST", body);
        operation = trigger;
        pollSavepoint("Savepoint", trigger);
      });

    const stop = () =>
      act("Stop with savepoint", async () => {
        const body = { drain: false };
        if (directory()) body.targetDirectory = directory();
        const { "request-id": trigger } = await api(`/jobs/${job}/stop`, "POST", body);
        operation = trigger;
        pollSavepoint("Stop with savepoint", trigger);
      });

    return {
      mount(view) {
        mine = generation;
        fill(
          view,
          h(
            "div",
            { class: "jobhead" },
            h(
              "div",
              { class: "meta" },
              h("h2", { id: "job-name" }, "…"),
              h("div", {}, h("span", { id: "job-state", class: "badge" }, "…"), " ", h("span", { id: "job-times", class: "muted" })),
              h("div", { class: "mono muted" }, job),
            ),
            h(
              "div",
              {},
              h(
                "div",
                { class: "actions" },
                h("input", { id: "savepoint-dir", placeholder: "savepoint directory (optional)", "aria-label": "savepoint directory" }),
                h("button", { id: "trigger-savepoint", type: "button", onclick: savepoint }, "Trigger savepoint"),
                h("button", { id: "stop-job", type: "button", onclick: stop }, "Stop with savepoint"),
                h("button", { id: "cancel-job", type: "button", class: "danger", onclick: cancel }, "Cancel"),
              ),
              h("div", { id: "operation-status", "data-status": "" }),
            ),
          ),
          h("h3", {}, "Graph"),
          h("div", { class: "panel graph", id: "graph-panel" }),
          h("h3", {}, "Vertices"),
          h("div", { class: "panel", id: "vertices" }),
          h("h3", {}, "Checkpoints"),
          h("div", { class: "panel", id: "checkpoints" }),
          h("h3", {}, "Exceptions and restarts"),
          h("div", { class: "panel", id: "exceptions" }),
        );
      },

      async update(live) {
        const [d, checkpoints, exceptions, metrics] = await Promise.all([
          api(`/jobs/${job}`),
          maybe(`/jobs/${job}/checkpoints`),
          maybe(`/jobs/${job}/exceptions`),
          maybe(`/jobs/${job}/metrics?get=numRestarts`),
        ]);
        const stats = await vertexStats(job, d.vertices);
        if (!live()) return;
        document.title = `${d.name} · rill`;
        $("job-name").textContent = d.name;
        const state = $("job-state");
        state.textContent = d.state;
        state.setAttribute("data-state", d.state);
        $("job-times").textContent = `started ${time(d["start-time"])}, ran ${duration(d.duration)}`;
        const over = TERMINAL.has(d.state);
        for (const id of ["cancel-job", "trigger-savepoint", "stop-job"]) $(id).disabled = over;

        const panel = $("graph-panel");
        fill(
          panel,
          graph(d.plan || { nodes: [] }, stats),
          h(
            "div",
            { class: "legend" },
            h("span", {}, h("i", { class: "idle" }), "idle"),
            h("span", {}, h("i", { class: "busy" }), "busy"),
            h("span", {}, h("i", { class: "bp" }), "backpressured > 50%"),
          ),
        );

        const vrows = d.vertices.map((v) => {
          const s = stats.get(v.id) || {};
          const m = v.metrics || {};
          return h(
            "tr",
            { "data-vertex-id": v.id },
            td(v.name),
            td(int(v.parallelism), true),
            h("td", {}, badge(v.status)),
            td(int(m["read-records"]), true),
            td(int(m["write-records"]), true),
            td(bytes(m["read-bytes"]), true),
            td(bytes(m["write-bytes"]), true),
            td(percent(s.busy), true),
            td(percent(s.backPressured), true),
            td(watermark(s.watermark)),
          );
        });
        fill(
          $("vertices"),
          table(
            [["Vertex"], ["Parallelism", true], ["Status"], ["Records in", true], ["Records out", true], ["Bytes in", true], ["Bytes out", true], ["Busy (max)", true], ["Backpressured (max)", true], ["Watermark (min)"]],
            vrows,
            "No vertices.",
            "vertex-table",
          ),
        );

        if (checkpoints) {
          const c = checkpoints.counts;
          const crows = checkpoints.history.map((k) =>
            h(
              "tr",
              { "data-checkpoint-id": k.id },
              td(k.id, true),
              td(k.is_savepoint ? "savepoint" : "checkpoint"),
              h("td", {}, badge(k.status)),
              td(time(k.trigger_timestamp)),
              td(duration(k.end_to_end_duration), true),
              td(bytes(k.state_size), true),
              td(k.alignment_duration === undefined ? "—" : duration(k.alignment_duration), true),
              td(`${k.num_acknowledged_subtasks} / ${k.num_subtasks}`, true),
            ),
          );
          fill(
            $("checkpoints"),
            h("div", { class: "empty", id: "checkpoint-counts" }, `${c.completed} completed, ${c.failed} failed, ${c.in_progress} in progress, ${c.restored} restored`),
            table(
              [["Id", true], ["Type"], ["Status"], ["Triggered"], ["Duration", true], ["Size", true], ["Alignment", true], ["Acknowledged", true]],
              crows,
              "No checkpoints yet.",
              "checkpoint-table",
            ),
          );
        } else {
          fill($("checkpoints"), h("div", { class: "empty" }, "Checkpoint statistics unavailable."));
        }

        const restarts = metrics && metrics[0] ? metrics[0].value : "—";
        const entries = exceptions ? exceptions.exceptionHistory.entries : [];
        fill(
          $("exceptions"),
          h("div", { class: "empty", id: "restart-count" }, `Restarts: ${restarts}`),
          entries.map((e) =>
            h("div", { class: "exception" }, h("div", { class: "muted" }, time(e.timestamp)), h("pre", {}, e.stacktrace)),
          ),
          entries.length ? null : h("div", { class: "empty" }, "No exceptions."),
        );
      },
    };
  }

  // ---- routing and refresh ----------------------------------------------------------

  let current = null; // { view, generation }
  let generation = 0;
  let busy = false;

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const m = hash.match(/^\/jobs\/([0-9a-fA-F]{32})$/);
    const name = m ? "job" : hash === "/taskmanagers" ? "taskmanagers" : "overview";
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === name);
    const view = m ? jobView(m[1].toLowerCase()) : name === "taskmanagers" ? taskManagers : overview;
    generation++;
    current = { view, generation };
    document.title = "rill";
    view.mount($("view"));
    refreshNow();
  }

  function banner(text, error) {
    const b = $("banner");
    b.hidden = !text;
    b.className = error ? "banner error" : "banner";
    b.textContent = text || "";
  }

  async function refresh() {
    if (busy || !current) return;
    busy = true;
    const { view, generation: g } = current;
    try {
      // After a route change, the old view's late answers are dropped, not drawn.
      await view.update(() => g === generation);
      if (g === generation) {
        banner(null);
        $("refresh-status").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
      }
    } catch (e) {
      if (g !== generation) return;
      if (e.status === 401) banner("This cluster's REST API needs a token (rest.auth.token): paste it above.", true);
      else banner(e.message || String(e), true);
    } finally {
      busy = false;
    }
  }

  function refreshNow() {
    // A refresh in flight finishes first; then this one runs.
    const go = () => (busy ? setTimeout(go, 50) : refresh());
    go();
  }

  function start() {
    const input = $("token-input");
    input.value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
      refreshNow();
    });
    window.addEventListener("hashchange", route);
    setInterval(refresh, REFRESH_MS);
    route();
  }

  start();
})();
