// statestore console: reads the REST API of the server that serves it, with the
// bearer token the operator typed (sessionStorage). Every value from the server is
// put in the page as text (textContent, createTextNode, setAttribute), never parsed
// as HTML. No inline script, no request to another origin.
"use strict";

(() => {
  const TOKEN_KEY = "statestore.console.token";
  const POLL_MS = 1000;
  const HISTORY = 60; // samples of total lag kept per view for the chart
  const MAX_CHANGES = 200; // rows kept in the change tail
  const PAGE = 50;
  const PANELS = ["views", "progress", "quarantine", "lookup", "changes"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const views = { list: [], history: new Map() };

  // -- DOM helpers: text only -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ""))));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
    return node;
  }

  function num(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
  }

  function when(ms) {
    return ms === null || ms === undefined ? "—" : new Date(ms).toISOString();
  }

  function cell(value, kind, field) {
    const attrs = { class: kind || "" };
    if (field) attrs["data-field"] = field;
    return el("td", attrs, value);
  }

  function showError(id, error) {
    const node = $(id);
    node.textContent = error ? describe(error) : "";
    node.hidden = !error;
  }

  function describe(error) {
    if (error instanceof ApiError) {
      return error.status ? `${error.status} ${error.code}: ${error.message}` : error.message;
    }
    return String(error && error.message ? error.message : error);
  }

  function short(text, most) {
    return text.length > most ? `${text.slice(0, most)}…` : text;
  }

  function json(value) {
    return value === undefined ? "" : JSON.stringify(value);
  }

  // -- the API ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function headers(extra) {
    const h = new Headers(extra || {});
    const t = token();
    if (t) h.set("Authorization", `Bearer ${t}`);
    return h;
  }

  // message null hides the prompt; focus moves to the token field only when it appears.
  function authPrompt(message) {
    const prompt = $("auth-prompt");
    const appearing = prompt.hidden && message !== null;
    $("auth-message").textContent = message ? `The server answered 401: ${message}.` : "";
    prompt.hidden = message === null;
    if (appearing) $("token-input").focus();
  }

  async function failure(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const info = body && typeof body.error === "object" && body.error ? body.error : {};
    const error = new ApiError(
      response.status,
      String(info.code || `http_${response.status}`),
      String(info.message || response.statusText || "request failed"),
    );
    if (response.status === 401) authPrompt(error.message);
    return error;
  }

  // Paths are relative to /console, so the console works under a path prefix too.
  async function call(path, init) {
    let response;
    try {
      response = await fetch(path, {
        ...(init || {}),
        headers: headers(Object.assign({ Accept: "application/json" }, (init || {}).headers)),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (exc) {
      throw new ApiError(0, "unreachable", `the server did not answer (${exc.message})`);
    }
    if (!response.ok) throw await failure(response);
    authPrompt(null);
    return { body: await response.json(), position: response.headers.get("X-Statestore-Position") };
  }

  async function get(path) {
    return (await call(path)).body;
  }

  // A key or value in a path: every character but unreserved ones escaped, and "."
  // too, so that "." and ".." stay keys rather than path segments.
  function segment(text) {
    return encodeURIComponent(text).replace(/\./g, "%2E");
  }

  function viewPath(name, rest) {
    return `views/${segment(name)}${rest || ""}`;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) q.set(k, v);
    const text = q.toString();
    return text ? `?${text}` : "";
  }

  // -- panels -----------------------------------------------------------------------

  function showPanel() {
    const wanted = location.hash.slice(1);
    const name = PANELS.includes(wanted) ? wanted : "views";
    for (const p of PANELS) $(`panel-${p}`).hidden = p !== name;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.panel === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function fillViewSelects() {
    const names = views.list.map((v) => v.name);
    for (const select of document.querySelectorAll("select.view-select")) {
      const have = Array.from(select.options, (o) => o.value);
      if (have.length === names.length && have.every((n, i) => n === names[i])) continue;
      const chosen = select.value;
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (names.includes(chosen)) select.value = chosen;
    }
  }

  // -- views: state, lag per partition, charts --------------------------------------

  function stateBadge(state) {
    return el("span", { class: `state state-${state}`, "data-field": "state" }, state);
  }

  // Per view, the last HISTORY polls: total lag and records applied per second.
  function remember(view) {
    let h = views.history.get(view.name);
    if (!h) {
      h = { lag: [], rate: [], last: null };
      views.history.set(view.name, h);
    }
    const now = performance.now();
    if (h.last && now > h.last.at) {
      const applied = Math.max(0, view.records_applied - h.last.records);
      h.rate.push((1000 * applied) / (now - h.last.at));
    }
    h.last = { at: now, records: view.records_applied };
    h.lag.push(view.lag ?? 0);
    for (const series of [h.lag, h.rate]) if (series.length > HISTORY) series.shift();
    return h;
  }

  function partitionChart(view) {
    const parts = view.partitions || [];
    const width = Math.max(160, 34 * parts.length + 40);
    const height = 120;
    const top = Math.max(1, ...parts.map((p) => Math.max(p.end_offset ?? 0, p.position)));
    const scale = (n) => Math.round((85 * n) / top);
    const chart = svg("svg", {
      class: "chart lag-chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `applied offsets and lag per partition of view ${view.name}`,
    });
    chart.append(svg("title", {}, "applied offsets (green) and lag (amber) per partition"));
    chart.append(svg("line", { class: "axis", x1: 30, y1: 100, x2: width - 5, y2: 100 }));
    chart.append(svg("text", { x: 2, y: 12 }, num(top)));
    chart.append(svg("text", { x: 2, y: 100 }, "0"));
    parts.forEach((p, i) => {
      const lag = p.lag || 0;
      const applied = scale(p.position);
      const behind = scale(lag);
      const x = 36 + 34 * i;
      const tip = `partition ${p.partition}: position ${num(p.position)}, end offset ${num(p.end_offset)}, lag ${num(p.lag)}`;
      chart.append(
        svg("rect", { class: "bar-applied", x, y: 100 - applied, width: 24, height: applied, "data-partition": p.partition, "data-position": p.position }, svg("title", {}, tip)),
        svg("rect", { class: "bar-lag", x, y: 100 - applied - behind, width: 24, height: behind, "data-partition": p.partition, "data-lag": lag }, svg("title", {}, tip)),
        svg("text", { x: x + 4, y: 114 }, `p${p.partition}`),
      );
    });
    return el("figure", {}, chart, el("figcaption", { class: "muted" }, "applied / lag per partition"));
  }

  function historyChart(view, samples, what, kind) {
    const width = 220;
    const height = 120;
    const top = Math.max(1, ...samples);
    const step = (width - 40) / (HISTORY - 1);
    const points = samples
      .map((v, i) => {
        const x = 35 + step * (HISTORY - samples.length + i);
        const y = 100 - (85 * v) / top;
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(" ");
    const chart = svg("svg", {
      class: `chart history-chart ${kind}-chart`,
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${what} of view ${view.name} over the last minute`,
    });
    chart.append(svg("title", {}, `${what}, last ${samples.length} samples`));
    chart.append(svg("line", { class: "axis", x1: 30, y1: 100, x2: width - 5, y2: 100 }));
    chart.append(svg("text", { x: 2, y: 12 }, num(Math.round(top))));
    chart.append(svg("text", { x: 2, y: 100 }, "0"));
    chart.append(svg("text", { x: 35, y: 114 }, "−60 s"));
    chart.append(svg("text", { x: width - 30, y: 114 }, "now"));
    chart.append(svg("polyline", { class: `line line-${kind}`, points }));
    return el("figure", {}, chart, el("figcaption", { class: "muted" }, what));
  }

  function renderViews() {
    const rows = views.list.map((v) =>
      el(
        "tr",
        { "data-view": v.name },
        el("td", {}, v.name),
        el("td", {}, v.topic),
        el("td", {}, stateBadge(v.state)),
        cell(num(v.keys), "num", "keys"),
        cell(num(v.lag), "num", "lag"),
        cell(num(v.records_applied), "num", "records_applied"),
        cell(num(v.quarantined), "num", "quarantined"),
        cell(when(v.last_applied_at_ms), "", "last_applied"),
      ),
    );
    $("views-table").tBodies[0].replaceChildren(...rows);
    const cards = views.list.map((v) => {
      const history = remember(v);
      const parts = (v.partitions || []).map((p) =>
        el(
          "tr",
          { "data-partition": p.partition },
          cell(p.partition, "num"),
          cell(num(p.position), "num", "position"),
          cell(num(p.end_offset), "num", "end_offset"),
          cell(num(p.lag), "num", "lag"),
        ),
      );
      const table = el(
        "table",
        { class: "grid partitions" },
        el("thead", {}, el("tr", {}, el("th", {}, "partition"), el("th", {}, "position"), el("th", {}, "end offset"), el("th", {}, "lag"))),
        el("tbody", {}, ...parts),
      );
      return el(
        "section",
        { class: "card view-card", "data-view": v.name },
        el("h3", {}, v.name, " ", stateBadge(v.state)),
        v.reason ? el("p", { class: "muted", "data-field": "reason" }, v.reason) : "",
        el(
          "p",
          { class: "muted" },
          "last applied offset per partition (X-Statestore-Position): ",
          el("code", { "data-field": "position" }, v.position),
        ),
        el(
          "div",
          { class: "charts" },
          table,
          partitionChart(v),
          historyChart(v, history.lag, "total lag", "lag"),
          historyChart(v, history.rate, "records applied per second", "rate"),
        ),
      );
    });
    $("view-cards").replaceChildren(...cards);
  }

  // -- progress: bulk loads, rebuilds -----------------------------------------------

  function progressBar(fraction, label) {
    const width = 320;
    const done = Math.round(width * Math.min(1, Math.max(0, fraction)));
    return svg(
      "svg",
      { class: "chart progress-chart", width, height: 18, viewBox: `0 0 ${width} 18`, role: "img", "aria-label": label },
      svg("rect", { class: "bar-rest", x: 0, y: 0, width, height: 18 }),
      svg("rect", { class: "bar-applied", x: 0, y: 0, width: done, height: 18 }),
      svg("title", {}, label),
    );
  }

  function facts(pairs) {
    const list = el("dl", { class: "facts" });
    for (const [label, value, field] of pairs) {
      list.append(el("dt", {}, label), el("dd", field ? { "data-field": field } : {}, value));
    }
    return list;
  }

  function event(e) {
    return e ? `${when(e.at_ms)} (${e.cause}) ${e.reason}` : "—";
  }

  function renderProgress() {
    const cards = views.list.map((v) => {
      const parts = v.partitions || [];
      let fraction;
      let label;
      if (v.load) {
        const total = v.load.records_read + v.load.offsets_left;
        fraction = total ? v.load.records_read / total : 0;
        label = `${v.load.phase}: ${num(v.load.records_read)} records read, ${num(v.load.offsets_left)} offsets left`;
      } else if (!parts.length) {
        fraction = 0;
        label = "no partitions known yet";
      } else {
        const ends = parts.reduce((s, p) => s + (p.end_offset ?? p.position), 0);
        const at = parts.reduce((s, p) => s + p.position, 0);
        fraction = ends ? at / ends : 1;
        label = `applied ${num(at)} of ${num(ends)} offsets`;
      }
      const rebuild = el("button", { type: "button", class: "rebuild", "data-view": v.name }, "Rebuild");
      rebuild.addEventListener("click", () => startRebuild(v.name));
      const load = v.load
        ? facts([
            ["phase", v.load.phase, "load_phase"],
            ["worker processes", num(v.load.processes)],
            ["records read", num(v.load.records_read), "load_records"],
            ["offsets left", num(v.load.offsets_left), "load_left"],
            ["started", when(v.load.started_at_ms)],
          ])
        : el("p", { class: "muted", "data-field": "load_phase" }, "no bulk load under way");
      return el(
        "section",
        { class: "card progress-card", "data-view": v.name },
        el("h3", {}, v.name, " ", stateBadge(v.state)),
        el("p", {}, progressBar(fraction, label), " ", el("span", { "data-field": "progress" }, label)),
        load,
        facts([
          ["reason", v.reason || "—", "reason"],
          ["generation", num(v.generation), "generation"],
          ["rebuilds", num(v.rebuilds), "rebuilds"],
          ["last rebuild", event(v.last_rebuild), "last_rebuild"],
          ["stale events", num(v.stale_events)],
          ["last stale", event(v.last_stale)],
          ["bootstrap seconds", v.bootstrap_seconds === null ? "—" : v.bootstrap_seconds.toFixed(2)],
          ["bootstrap records", num(v.bootstrap_records), "bootstrap_records"],
          ["servable", v.servable ? "yes" : "no"],
        ]),
        el("p", {}, rebuild, " ", el("span", { class: "error rebuild-error", "data-view": v.name })),
      );
    });
    $("progress-cards").replaceChildren(...cards);
  }

  const rebuildErrors = new Map();

  async function startRebuild(name) {
    if (!window.confirm(`Rebuild view ${name} from offset 0? The current copy keeps serving until the new one has caught up.`)) return;
    rebuildErrors.delete(name);
    try {
      await call(viewPath(name, "/rebuild"), { method: "POST" });
    } catch (error) {
      rebuildErrors.set(name, describe(error));
    }
    await refresh();
  }

  function showRebuildErrors() {
    for (const node of document.querySelectorAll(".rebuild-error")) {
      node.textContent = rebuildErrors.get(node.dataset.view) || "";
    }
  }

  // -- polling ----------------------------------------------------------------------

  let timer = null;
  let latest = 0; // the newest refresh: an older one answering late is ignored

  async function refresh() {
    clearTimeout(timer);
    const mine = ++latest;
    try {
      const data = await get("views");
      if (mine !== latest) return;
      views.list = Array.isArray(data.views) ? data.views : [];
      fillViewSelects();
      renderViews();
      renderProgress();
      showRebuildErrors();
      $("status-line").textContent = `${views.list.length} view(s); updated ${new Date().toLocaleTimeString("en-GB")}`;
    } catch (error) {
      if (mine !== latest) return;
      $("status-line").textContent = describe(error);
      if (error.status === 401) {
        views.list = [];
        renderViews();
        renderProgress();
      }
    } finally {
      if (mine === latest) {
        clearTimeout(timer);
        timer = setTimeout(refresh, POLL_MS);
      }
    }
  }

  // -- quarantine -------------------------------------------------------------------

  const quarantine = { view: "", next: null };

  function rawText(b64) {
    if (b64 === null || b64 === undefined) return "null";
    try {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return `base64:${b64}`;
    }
  }

  async function loadQuarantine(after) {
    // A cursor belongs to the view it came from.
    const name = after ? quarantine.view : $("quarantine-view").value;
    showError("quarantine-error", null);
    try {
      const page = await get(viewPath(name, "/quarantine") + query({ limit: PAGE, after }));
      quarantine.view = name;
      quarantine.next = page.next;
      const rows = page.items.map((r) =>
        el(
          "tr",
          { "data-offset": `${r.partition}:${r.offset}` },
          cell(r.partition, "num"),
          cell(r.offset, "num"),
          cell(when(r.timestamp), "time"),
          cell(short(rawText(r.key), 200), "text", "key"),
          cell(short(rawText(r.value), 500), "text", "value"),
          cell(r.reason, "text", "reason"),
        ),
      );
      $("quarantine-table").tBodies[0].replaceChildren(...rows);
      $("quarantine-summary").textContent = `${rows.length} quarantined record(s) of view ${name}${page.next ? "; more on the next page" : ""}`;
      $("quarantine-next").disabled = !page.next;
    } catch (error) {
      showError("quarantine-error", error);
    }
  }

  // -- lookup: one key, a prefix, an index ------------------------------------------

  const results = { next: null, path: "", params: {} };

  function showEntity(entity, position) {
    $("entity-key").textContent = entity.key;
    $("entity-partition").textContent = String(entity.partition);
    $("entity-offset").textContent = String(entity.offset);
    $("entity-timestamp").textContent = when(entity.timestamp);
    $("entity-position").textContent = position || "—";
    $("entity-value").textContent = JSON.stringify(entity.value, null, 2);
    $("entity-detail").hidden = false;
  }

  async function getKey() {
    const name = $("lookup-view").value;
    const key = $("key-input").value;
    showError("lookup-error", null);
    $("entity-detail").hidden = true;
    $("results").hidden = true;
    try {
      const { body, position } = await call(viewPath(name, `/entities/${segment(key)}`));
      showEntity(body, position);
    } catch (error) {
      showError("lookup-error", error);
    }
  }

  async function loadResults(path, params, after) {
    showError("lookup-error", null);
    $("entity-detail").hidden = true;
    try {
      const page = await get(path + query({ ...params, limit: PAGE, after }));
      results.path = path;
      results.params = params;
      results.next = page.next;
      const rows = page.items.map((e) => {
        const row = el(
          "tr",
          { class: "clickable", "data-key": e.key },
          cell(e.key, "text", "key"),
          cell(e.partition, "num"),
          cell(e.offset, "num"),
          cell(when(e.timestamp), "time"),
          cell(short(json(e.value), 300), "text", "value"),
        );
        row.addEventListener("click", () => showEntity(e, null));
        return row;
      });
      $("results-table").tBodies[0].replaceChildren(...rows);
      $("results-summary").textContent = `${rows.length} entit${rows.length === 1 ? "y" : "ies"}${page.next ? "; more on the next page" : ""}`;
      $("results-next").disabled = !page.next;
      $("results").hidden = false;
    } catch (error) {
      $("results").hidden = true;
      showError("lookup-error", error);
    }
  }

  function scanPrefix() {
    const name = $("lookup-view").value;
    const prefix = $("prefix-input").value;
    return loadResults(viewPath(name, "/entities"), { prefix }, null);
  }

  function findByIndex() {
    const name = $("lookup-view").value;
    const path = viewPath(name, `/by/${segment($("field-input").value)}/${segment($("value-input").value)}`);
    return loadResults(path, {}, null);
  }

  // -- live change tail (server-sent events over fetch, so the token can be sent) ----

  const tail = { abort: null, count: 0, lastId: "" };

  function addChange(data) {
    tail.count += 1;
    const row = el(
      "tr",
      { "data-key": data.key, "data-op": data.op },
      cell(new Date().toLocaleTimeString("en-GB"), ""),
      cell(data.op, "", "op"),
      cell(data.key, "text", "key"),
      cell(data.partition, "num"),
      cell(data.offset, "num", "offset"),
      cell(data.error ? `(undecodable: ${data.error})` : short(json(data.value), 300), "text", "value"),
    );
    const body = $("changes-table").tBodies[0];
    body.prepend(row);
    while (body.rows.length > MAX_CHANGES) body.deleteRow(body.rows.length - 1);
  }

  function onEvent(name, data, id) {
    if (id) tail.lastId = id;
    if (name === "subscribed") {
      $("changes-summary").textContent = `Following ${tail.view} (stream ${data.id}).`;
    } else if (name === "change") {
      addChange(data);
      $("changes-summary").textContent = `Following ${tail.view}: ${tail.count} change(s) seen.`;
    } else if (name === "reset") {
      const row = el("tr", { class: "reset" }, el("td", { colspan: 6 }, `reset: ${data.reason}`));
      $("changes-table").tBodies[0].prepend(row);
    } else if (name === "dropped") {
      tail.lastId = data.last_id;
      $("changes-summary").textContent = `Fell behind (${data.message}); resuming.`;
    }
  }

  function parseEvent(block) {
    let name = "message";
    let id = "";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    onEvent(name, parsed, id);
  }

  async function follow(name, prefix, controller) {
    const params = { prefix: prefix || null, last_id: tail.lastId || null };
    const response = await fetch(viewPath(name, "/changes") + query(params), {
      headers: headers({ Accept: "text/event-stream" }),
      cache: "no-store",
      credentials: "omit",
      signal: controller.signal,
    });
    if (!response.ok) throw await failure(response);
    authPrompt(null);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        parseEvent(buffered.slice(0, end));
        buffered = buffered.slice(end + 2);
      }
    }
  }

  async function startTail() {
    stopTail();
    const name = $("changes-view").value;
    const prefix = $("changes-prefix").value;
    const controller = new AbortController();
    Object.assign(tail, { abort: controller, count: 0, lastId: "", view: name });
    $("changes-table").tBodies[0].replaceChildren();
    showError("changes-error", null);
    $("changes-stop").disabled = false;
    $("changes-summary").textContent = `Connecting to ${name}…`;
    // The stream ends when the server drops a slow reader: go on after its last event.
    while (tail.abort === controller) {
      try {
        await follow(name, prefix, controller);
      } catch (error) {
        if (controller.signal.aborted) return;
        showError("changes-error", error);
        stopTail();
        return;
      }
    }
  }

  function stopTail() {
    if (tail.abort) tail.abort.abort();
    tail.abort = null;
    $("changes-stop").disabled = true;
    if (tail.view) $("changes-summary").textContent = `Stopped; ${tail.count} change(s) seen.`;
  }

  // -- wiring -----------------------------------------------------------------------

  function submit(id, action) {
    $(id).addEventListener("submit", (e) => {
      e.preventDefault();
      action();
    });
  }

  function start() {
    window.addEventListener("hashchange", showPanel);
    showPanel();
    $("token-input").value = token();
    submit("token-form", () => {
      const value = $("token-input").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      refresh();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token-input").value = "";
      stopTail();
      refresh();
    });
    submit("quarantine-form", () => loadQuarantine(null));
    $("quarantine-next").addEventListener("click", () => loadQuarantine(quarantine.next));
    submit("key-form", getKey);
    submit("prefix-form", scanPrefix);
    submit("index-form", findByIndex);
    $("results-next").addEventListener("click", () => loadResults(results.path, results.params, results.next));
    submit("changes-form", startTail);
    $("changes-stop").addEventListener("click", stopTail);
    refresh();
  }

  start();
})();
