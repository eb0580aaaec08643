/* taskqueue dashboard: vanilla JavaScript, no dependencies.
 *
 * Every request goes to the JSON API with a URL relative to this page, so the dashboard works
 * wherever the admin router is mounted. Data is rendered with DOM nodes and textContent only:
 * task names, arguments and log lines are never interpreted as HTML.
 */
(function () {
  "use strict";

  var POLL_MS = 1500;
  var PAGE_SIZE = 25;
  var STATES = ["waiting", "enqueued", "doing", "done", "failed", "cancelled", "stopped"];
  var ACTIVE = { waiting: true, enqueued: true, doing: true };
  var RETRYABLE = { failed: true, cancelled: true, stopped: true };
  var TOKEN_KEY = "taskqueue.dashboard.token";

  var BASE = new URL(".", window.location.href);
  var readOnly = document.body.getAttribute("data-read-only") === "true";

  var ui = {
    view: "tasks",
    state: null,
    name: "",
    channel: "",
    offset: 0,
    total: 0,
    selected: new Set(),
    openId: null,
    logsAfter: null,
    logsTask: null,
    paused: false,
    timer: null,
    inFlight: false,
    again: false,
    ticks: 0,
    treeFor: null,
    lastTasks: [],
  };

  // -- small helpers ----------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  /* h("div", {class: "x", onclick: f}, child, "text", ...) -> element */
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key.slice(0, 2) === "on") el.addEventListener(key.slice(2), value);
        else if (key === "class") el.className = value;
        else if (key === "text") el.textContent = value;
        else el.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  function parseDate(value) { return value ? new Date(value) : null; }

  function ago(value) {
    var date = parseDate(value);
    if (!date) return "—";
    var s = Math.round((Date.now() - date.getTime()) / 1000);
    if (s < -5) return "in " + span(-s);
    if (s < 5) return "just now";
    return span(s) + " ago";
  }

  function span(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
    return span(Math.round(seconds));
  }

  function taskDuration(task) {
    // A running task counts from its start; an ended one shows its run time. A task back
    // in the queue for a retry shows nothing: its last attempt's time would mislead.
    if (task.state === "doing" && task.date_started) {
      return duration(Math.max(0, (Date.now() - parseDate(task.date_started).getTime()) / 1000));
    }
    if (task.date_ended && task.execution_time !== null && task.execution_time !== undefined) {
      return duration(task.execution_time);
    }
    return "—";
  }

  function fullTime(value) {
    var date = parseDate(value);
    return date ? date.toLocaleString() : "—";
  }

  function clock(value) {
    var date = parseDate(value);
    return date ? date.toLocaleTimeString([], { hour12: false }) : "";
  }

  function json(value) { return JSON.stringify(value, null, 2); }

  function toast(message, isError) {
    var el = h("div", { class: "toast" + (isError ? " error" : ""), role: "status", text: message });
    $("toasts").appendChild(el);
    setTimeout(function () { el.remove(); }, isError ? 6000 : 3500);
  }

  function badge(state) { return h("span", { class: "badge " + state, text: state }); }

  function progressBar(value, large) {
    if (value === null || value === undefined) return null;
    var pct = Math.max(0, Math.min(100, value));
    var fill = h("div", { class: "progress-fill" });
    fill.style.width = pct + "%";
    return h("div", { class: "progress" + (large ? " large" : "") + (pct >= 100 ? " complete" : ""), title: pct.toFixed(1) + "%" },
      h("div", { class: "progress-track" }, fill),
      h("span", { class: "progress-label", text: Math.round(pct) + "%" }));
  }

  // -- API --------------------------------------------------------------------------------

  function ApiError(status, detail) {
    this.status = status;
    this.detail = detail;
    this.message = describe(status, detail);
  }

  function describe(status, detail) {
    if (detail && typeof detail === "object" && !Array.isArray(detail) && detail.message) return detail.message;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map(function (d) { return d.msg; }).join("; ");
    return "Request failed (HTTP " + status + ")";
  }

  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(new URL(path, BASE), {
      method: options.method || "GET",
      headers: headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) showSignIn(true);
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
        if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
        return data;
      });
    });
  }

  function query(params) {
    var search = new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      if (value !== null && value !== undefined && value !== "") search.append(key, value);
    });
    var text = search.toString();
    return text ? "?" + text : "";
  }

  // -- live status ------------------------------------------------------------------------

  function setLive(status) {
    var dot = $("live-dot");
    dot.className = "live-dot " + status;
    $("live-label").textContent = { on: "Live", off: "Offline", paused: "Paused", locked: "Signed out" }[status] || status;
  }

  function showSignIn(show) {
    $("signin").hidden = !show;
    $("signin-open").hidden = show || !sessionStorage.getItem(TOKEN_KEY);
  }

  // -- stats ------------------------------------------------------------------------------

  function renderStats(stats) {
    var root = $("stats");
    clear(root);
    var total = STATES.reduce(function (sum, s) { return sum + (stats.by_state[s] || 0); }, 0);
    root.appendChild(statCard("all", "All tasks", total));
    STATES.forEach(function (s) { root.appendChild(statCard(s, s, stats.by_state[s] || 0)); });
    root.appendChild(h("div", { class: "stat stat-info", title: "Tasks finished in the last minute" },
      h("div", { class: "stat-label", text: "Last minute" }),
      h("div", { class: "stat-value", text: stats.done_last_minute + " done" }),
      h("div", { class: "stat-sub", text: stats.failed_last_minute + " failed" })));
    root.appendChild(h("div", { class: "stat stat-info", title: "Worker slots across running servers" },
      h("div", { class: "stat-label", text: "Workers" }),
      h("div", { class: "stat-value", text: stats.workers_active + " / " + stats.workers_total + " busy" }),
      h("div", { class: "stat-sub", text: stats.servers_running + " server" + (stats.servers_running === 1 ? "" : "s") })));
  }

  function statCard(state, label, count) {
    var selected = (state === "all" && ui.state === null) || state === ui.state;
    return h("button", {
      type: "button",
      class: "stat " + (state === "all" ? "" : state) + (selected ? " selected" : ""),
      "data-state": state,
      onclick: function () { setStateFilter(state === "all" ? null : state); },
    }, h("div", { class: "stat-label", text: label }), h("div", { class: "stat-value", text: count.toLocaleString() }));
  }

  function renderStateChips() {
    var root = $("state-filter");
    clear(root);
    [null].concat(STATES).forEach(function (s) {
      root.appendChild(h("button", {
        type: "button",
        class: "chip" + (ui.state === s ? " active" : ""),
        "data-state": s || "all",
        onclick: function () { setStateFilter(s); },
        text: s || "all",
      }));
    });
  }

  function setStateFilter(state) {
    ui.state = state;
    ui.offset = 0;
    renderStateChips();
    refresh();
  }

  // -- task list --------------------------------------------------------------------------

  function renderTasks(page) {
    ui.total = page.total;
    ui.lastTasks = page.items;
    var body = $("tasks-body");
    clear(body);
    page.items.forEach(function (task) { body.appendChild(taskRow(task)); });
    $("tasks-empty").hidden = page.items.length > 0;
    var first = page.total ? page.offset + 1 : 0;
    var last = page.offset + page.items.length;
    $("page-info").textContent = first + "–" + last + " of " + page.total.toLocaleString();
    $("page-prev").disabled = page.offset === 0;
    $("page-next").disabled = last >= page.total;
    var ids = page.items.map(function (t) { return t.id; });
    $("select-all").checked = ids.length > 0 && ids.every(function (id) { return ui.selected.has(id); });
    renderBulkbar();
  }

  function taskRow(task) {
    var checkbox = h("input", {
      type: "checkbox",
      "aria-label": "Select task " + task.id,
      checked: ui.selected.has(task.id),
      onclick: function (event) { event.stopPropagation(); },
      onchange: function (event) {
        if (event.target.checked) ui.selected.add(task.id); else ui.selected.delete(task.id);
        renderBulkbar();
      },
    });
    var sub = [modulePath(task.name)];
    if (task.parent_task) sub.push("child of #" + task.parent_task);
    if (task.retry_count) sub.push("retry " + task.retry_count + "/" + task.max_retries);
    if (task.exception_name) sub.push(task.exception_name);
    return h("tr", {
      class: task.id === ui.openId ? "selected" : "",
      "data-task-id": task.id,
      onclick: function () { openTask(task.id); },
    },
      h("td", { class: "col-check mutating" }, checkbox),
      h("td", { class: "id", text: "#" + task.id }),
      h("td", { class: "col-task" }, h("div", { class: "task-name", text: shortName(task.name), title: task.name }),
        h("div", { class: "task-sub", text: sub.filter(Boolean).join(" · "), title: task.name })),
      h("td", null, badge(task.state)),
      h("td", null, progressBar(task.progress, false) || h("span", { class: "muted", text: "—" })),
      h("td", { class: "muted col-channel", text: task.channel }),
      h("td", { class: "time", title: fullTime(task.date_enqueued), text: ago(task.date_enqueued) }),
      h("td", { class: "num", text: taskDuration(task) }),
      h("td", { class: "col-actions mutating" }, rowActions(task, true)));
  }

  function shortName(name) {
    // "examples.tasks.send_email" reads best as "send_email", with the module under it.
    var cut = name.lastIndexOf(".");
    return cut > 0 && cut < name.length - 1 ? name.slice(cut + 1) : name;
  }

  function modulePath(name) {
    var cut = name.lastIndexOf(".");
    return cut > 0 && cut < name.length - 1 ? name.slice(0, cut) : "";
  }

  function rowActions(task, small) {
    var cls = "btn " + (small ? "btn-xs" : "btn-sm");
    var buttons = [];
    if (ACTIVE[task.state]) {
      buttons.push(actionButton(cls + " btn-danger", "cancel", "Cancel", task.id));
      buttons.push(actionButton(cls, "stop", "Stop", task.id));
    } else if (RETRYABLE[task.state]) {
      buttons.push(actionButton(cls, "retry", "Retry", task.id));
    }
    return h("span", { class: "row-actions" }, buttons);
  }

  function actionButton(cls, verb, label, id) {
    return h("button", {
      type: "button",
      class: cls,
      "data-action": verb,
      "data-task-id": id,
      onclick: function (event) { event.stopPropagation(); act(verb, [id]); },
      text: label,
    });
  }

  function renderBulkbar() {
    var count = ui.selected.size;
    $("bulkbar").hidden = readOnly || count === 0;
    $("bulk-count").textContent = count + " selected";
  }

  function act(verb, ids) {
    return api("api/tasks/" + verb, { method: "POST", body: { ids: ids } }).then(function (result) {
      var n = result.changed.length;
      toast(capital(verb) + (verb === "stop" ? "ped " : verb === "retry" ? "ied " : "led ") + n + " task" + (n === 1 ? "" : "s"));
      ids.forEach(function (id) { ui.selected.delete(id); });
      refresh();
    }).catch(function (error) { toast(error.message || String(error), true); });
  }

  function capital(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

  function clearPending() {
    var channel = $("filter-channel").value.trim();
    var what = channel ? "every waiting and enqueued task of channel “" + channel + "”" : "every waiting and enqueued task";
    if (!window.confirm("Delete " + what + "? This cannot be undone.")) return;
    api("api/tasks/clear", { method: "POST", body: { channel: channel || null } }).then(function (result) {
      toast("Deleted " + result.deleted + " pending task" + (result.deleted === 1 ? "" : "s"));
      refresh();
    }).catch(function (error) { toast(error.message, true); });
  }

  // -- task detail ------------------------------------------------------------------------

  function openTask(id) {
    if (ui.openId !== id) {
      ui.openId = id;
      ui.logsAfter = null;
      ui.logsTask = id;
      clear($("d-logs"));
      $("d-logs").appendChild(h("div", { class: "muted", text: "No log lines yet." }));
    }
    history.replaceState(null, "", "#task=" + id);
    $("detail").hidden = false;
    document.querySelector(".layout").classList.add("with-detail");
    Array.prototype.forEach.call(document.querySelectorAll("#tasks-body tr"), function (row) {
      row.classList.toggle("selected", Number(row.getAttribute("data-task-id")) === id);
    });
    // Through refresh(), which never overlaps itself: two log fetches with the same
    // after_id would append the same lines twice.
    return refresh();
  }

  function closeTask() {
    ui.openId = null;
    ui.treeFor = null;
    $("detail").hidden = true;
    document.querySelector(".layout").classList.remove("with-detail");
    history.replaceState(null, "", window.location.pathname + window.location.search);
    Array.prototype.forEach.call(document.querySelectorAll("#tasks-body tr.selected"), function (row) {
      row.classList.remove("selected");
    });
  }

  function loadDetail() {
    var id = ui.openId;
    if (id === null) return Promise.resolve();
    // A tree can be large: read it when the task is opened, then on every 4th poll.
    var withTree = ui.treeFor !== id || ui.ticks % 4 === 0;
    return Promise.all([
      api("api/tasks/" + id),
      withTree ? api("api/tasks/" + id + "/tree") : null,
      api("api/tasks/" + id + "/logs" + query({ after_id: ui.logsAfter, limit: 500 })),
    ]).then(function (results) {
      if (ui.openId !== id) return;
      renderDetail(results[0]);
      if (results[1]) { renderTree(results[1], id); ui.treeFor = id; }
      appendLogs(results[2], id);
    }).catch(function (error) {
      if (error instanceof ApiError && error.status === 404 && ui.openId === id) {
        toast("Task #" + id + " no longer exists", true);
        closeTask();
        return;
      }
      throw error;
    });
  }

  function renderDetail(task) {
    $("d-id").textContent = "#" + task.id;
    $("d-name").textContent = task.name;
    var state = $("d-state");
    clear(state);
    state.appendChild(badge(task.state));
    var actions = $("d-actions");
    clear(actions);
    actions.appendChild(rowActions(task, false));

    var progress = $("d-progress");
    clear(progress);
    append(progress, progressBar(task.progress, true));

    var facts = $("d-facts");
    clear(facts);
    var fn = task.function.serialized ? "local function (serialized)" : task.function.module_name + "." + task.function.function_name;
    var rows = [
      ["Function", fn],
      ["Channel", task.channel],
      ["Priority", task.priority],
      ["Retries", task.retry_count + " of " + task.max_retries],
      ["Parent", task.parent_task ? link(task.parent_task) : "—"],
      ["Children", task.children.length ? task.children.map(link) : "—"],
      ["Enqueued", fullTime(task.date_enqueued)],
    ];
    if (task.date_scheduled && task.date_scheduled !== task.date_enqueued) rows.push(["Scheduled", fullTime(task.date_scheduled)]);
    if (task.date_started) rows.push(["Started", fullTime(task.date_started)]);
    if (task.date_ended) rows.push(["Ended", fullTime(task.date_ended)]);
    rows.push(["Duration", taskDuration(task)]);
    if (task.timeout) rows.push(["Timeout", duration(task.timeout)]);
    if (task.claimed_by) rows.push(["Worker", task.claimed_by]);
    rows.forEach(function (row) {
      facts.appendChild(h("dt", { text: row[0] }));
      facts.appendChild(h("dd", null, Array.isArray(row[1]) ? joinNodes(row[1]) : row[1]));
    });

    var hasError = !!(task.exception_name || task.exception_message);
    $("d-error-section").hidden = !hasError;
    if (hasError) {
      $("d-error-title").textContent = (task.exception_name || "Error") + (task.exception_message ? ": " + task.exception_message : "");
      $("d-error-trace").textContent = task.exception_info || "";
      $("d-error-trace").hidden = !task.exception_info;
    }
    setText("d-context", json(task.context));
    setText("d-args", json({ args: task.args, kwargs: task.kwargs }));
    $("d-result-section").hidden = task.state !== "done";
    setText("d-result", json(task.result));
  }

  function setText(id, text) {
    // Keep the reader's scroll position and selection when nothing changed.
    var el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function joinNodes(nodes) {
    var out = [];
    nodes.forEach(function (node, i) { if (i) out.push(", "); out.push(node); });
    return out;
  }

  function link(id) {
    return h("a", { href: "#task=" + id, onclick: function (event) { event.preventDefault(); openTask(id); }, text: "#" + id });
  }

  function renderTree(tree, currentId) {
    var root = $("d-tree");
    clear(root);
    var byId = {};
    tree.tasks.forEach(function (t) { byId[t.id] = t; });
    var children = {};
    tree.edges.forEach(function (e) { (children[e.parent_id] = children[e.parent_id] || []).push(e.child_id); });
    var seen = new Set();
    function node(id) {
      var task = byId[id];
      if (!task) return null;
      var label = h("span", {
        class: "tree-node" + (id === currentId ? " current" : ""),
        onclick: function () { openTask(id); },
      }, h("span", { class: "id", text: "#" + id }), h("span", { text: shortName(task.name) }), badge(task.state));
      var li = h("li", null, label);
      if (seen.has(id)) return li;  // fan-in: a task with several parents is drawn once
      seen.add(id);
      var kids = (children[id] || []).slice().sort(function (a, b) { return a - b; });
      if (kids.length) li.appendChild(h("ul", null, kids.map(node)));
      return li;
    }
    append(root, node(tree.root_id));
    if (tree.tasks.length === 1) root.appendChild(h("li", { class: "muted", text: "No dependent tasks." }));
  }

  function appendLogs(page, id) {
    if (ui.logsTask !== id) return;
    var box = $("d-logs");
    if (!page.items.length) return;
    if (ui.logsAfter === null) clear(box);
    var atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    page.items.forEach(function (line) {
      var level = (line.type || "info").toLowerCase();
      var row = h("div", { class: "log-line log-" + level, title: fullTime(line.date_created) + " · " + line.name },
        h("span", { class: "log-time", text: clock(line.date_created) }),
        h("span", { class: "log-level", text: level }),
        h("span", { class: "log-msg", text: line.message }));
      var trace = line.info && (line.info.traceback || line.info.exception);
      if (trace) row.appendChild(h("span", { class: "log-trace", text: String(trace) }));
      box.appendChild(row);
    });
    ui.logsAfter = page.next_after_id;
    if ($("d-follow").checked && (atBottom || page.items.length)) box.scrollTop = box.scrollHeight;
  }

  // -- servers ----------------------------------------------------------------------------

  function renderServers(servers) {
    $("servers-count").textContent = servers.length;
    if (ui.view !== "servers") return;
    var body = $("servers-body");
    clear(body);
    servers.forEach(function (s) {
      var bar = h("span", { class: "slot-bar" });
      for (var i = 0; i < Math.min(s.max_workers, 32); i++) {
        var cls = i < s.active_workers ? "busy" : i < s.active_workers + s.idle_workers ? "idle" : "";
        bar.appendChild(h("span", { class: "slot " + cls }));
      }
      var status = !s.is_running ? ["stopped", "stopping"] : s.stale ? ["failed", "stale"] : ["done", "running"];
      body.appendChild(h("tr", null,
        h("td", { class: "task-name", text: s.server_name }),
        h("td", { text: s.hostname }),
        h("td", { class: "num", text: s.pid }),
        h("td", null, h("span", { class: "slots" }, bar, h("span", { class: "muted", text: s.active_workers + " busy · " + s.idle_workers + " idle · " + s.max_workers + " max" }))),
        h("td", { class: "time", title: fullTime(s.last_heartbeat), text: ago(s.last_heartbeat) }),
        h("td", { class: "time", title: fullTime(s.started_at), text: ago(s.started_at) }),
        h("td", { class: "muted", text: s.version || "—" }),
        h("td", null, h("span", { class: "badge " + status[0], text: status[1] }))));
    });
    $("servers-empty").hidden = servers.length > 0;
  }

  // -- polling ----------------------------------------------------------------------------

  function loadTasks() {
    return api("api/tasks" + query({
      state: ui.state,
      name: ui.name,
      channel: ui.channel,
      limit: PAGE_SIZE,
      offset: ui.offset,
    })).then(function (page) {
      if (page.offset >= page.total && page.total > 0 && ui.offset > 0) {
        // The page emptied (tasks were deleted): go back to the last non-empty page.
        ui.offset = Math.max(0, Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE);
        return loadTasks();
      }
      renderTasks(page);
    });
  }

  function refresh() {
    if (ui.inFlight) { ui.again = true; return Promise.resolve(); }
    ui.inFlight = true;
    ui.ticks += 1;
    clearTimeout(ui.timer);
    var work = [api("api/stats").then(renderStats), api("api/servers").then(renderServers)];
    if (ui.view === "tasks") work.push(loadTasks(), loadDetail());
    return Promise.all(work).then(function () {
      setLive(ui.paused ? "paused" : "on");
      if (!$("signin").hidden) showSignIn(false);
    }).catch(function (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        setLive("locked");
        return;
      }
      setLive("off");
      $("live-label").textContent = "Offline — " + (error.message || "no connection");
    }).then(function () {
      ui.inFlight = false;
      if (ui.again) { ui.again = false; return refresh(); }
      schedule();
    });
  }

  function schedule() {
    clearTimeout(ui.timer);
    if (!ui.paused && !document.hidden) ui.timer = setTimeout(refresh, POLL_MS);
  }

  // -- wiring -----------------------------------------------------------------------------

  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  function setView(view) {
    ui.view = view;
    Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (tab) {
      var active = tab.getAttribute("data-view") === view;
      tab.classList.toggle("active", active);
      tab.setAttribute("aria-selected", String(active));
    });
    $("view-tasks").hidden = view !== "tasks";
    $("view-servers").hidden = view !== "servers";
    refresh();
  }

  function init() {
    renderStateChips();
    Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (tab) {
      tab.addEventListener("click", function () { setView(tab.getAttribute("data-view")); });
    });
    $("filter-name").addEventListener("input", debounce(function () {
      ui.name = $("filter-name").value.trim(); ui.offset = 0; refresh();
    }, 300));
    $("filter-channel").addEventListener("input", debounce(function () {
      ui.channel = $("filter-channel").value.trim(); ui.offset = 0; refresh();
    }, 300));
    $("page-prev").addEventListener("click", function () { ui.offset = Math.max(0, ui.offset - PAGE_SIZE); refresh(); });
    $("page-next").addEventListener("click", function () { ui.offset += PAGE_SIZE; refresh(); });
    $("detail-close").addEventListener("click", closeTask);
    $("clear-pending").addEventListener("click", clearPending);
    $("select-all").addEventListener("change", function (event) {
      ui.lastTasks.forEach(function (t) {
        if (event.target.checked) ui.selected.add(t.id); else ui.selected.delete(t.id);
      });
      renderTasks({ items: ui.lastTasks, total: ui.total, offset: ui.offset });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-bulk]"), function (button) {
      button.addEventListener("click", function () {
        act(button.getAttribute("data-bulk"), Array.from(ui.selected));
      });
    });
    $("bulk-clear").addEventListener("click", function () {
      ui.selected.clear();
      renderTasks({ items: ui.lastTasks, total: ui.total, offset: ui.offset });
    });
    $("pause").addEventListener("click", function () {
      ui.paused = !ui.paused;
      $("pause").textContent = ui.paused ? "Resume" : "Pause";
      setLive(ui.paused ? "paused" : "on");
      if (!ui.paused) refresh(); else clearTimeout(ui.timer);
    });
    $("signin-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var token = $("signin-token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
      $("signin-token").value = "";
      showSignIn(false);
      refresh();
    });
    $("signin-open").addEventListener("click", function () { showSignIn(true); });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && ui.openId !== null) closeTask();
    });
    showSignIn(false);
    var match = /^#task=(\d+)$/.exec(window.location.hash);
    if (match) openTask(Number(match[1]));
    refresh();
  }

  init();
})();
