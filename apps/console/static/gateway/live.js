/* Live traffic: rows arrive over the websocket (/ws/admin/live/), authenticated by the admin session.
   Everything is inserted with textContent, never innerHTML: aliases and model names are user input. */
(function () {
  "use strict";
  const table = document.getElementById("gw-live-table");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.getElementById("gw-live-status");
  const maxRows = parseInt(table.dataset.maxRows || "200", 10);
  const seen = new Set(Array.from(body.rows).map((r) => r.dataset.requestId));
  let retryMs = 1000;
  let paused = false;
  const held = [];
  const pauseButton = document.getElementById("gw-live-pause");
  const errorsOnly = document.getElementById("gw-live-errors-only");
  const heldNote = document.getElementById("gw-live-held");

  function applyFilter(tr) {
    const failed = tr.classList.contains("gw-status-429") || tr.classList.contains("gw-status-error");
    tr.hidden = Boolean(errorsOnly && errorsOnly.checked) && !failed;
  }

  if (pauseButton) {
    pauseButton.addEventListener("click", function () {
      paused = !paused;
      pauseButton.textContent = paused ? "Resume" : "Pause";
      pauseButton.setAttribute("aria-pressed", String(paused));
      if (!paused) { held.splice(0).forEach(addRow); heldNote.textContent = ""; }
    });
  }
  if (errorsOnly) {
    errorsOnly.addEventListener("change", function () { Array.from(body.rows).forEach(applyFilter); });
  }

  function receive(row) {
    if (paused) {
      held.push(row);
      heldNote.textContent = held.length + " held while paused";
      return;
    }
    addRow(row);
  }

  function money(value) {
    const v = Number(value || 0);
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return "$" + v.toFixed(Math.min(10, 1 - Math.floor(Math.log10(Math.abs(v)))));
    return "$" + v.toFixed(2);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function addRow(row) {
    if (seen.has(row.request_id)) return;
    seen.add(row.request_id);
    const tr = document.createElement("tr");
    tr.dataset.requestId = row.request_id;
    tr.classList.add("gw-new");
    const limit = row.limit_type || "upstream";
    if (row.status === 429) tr.classList.add("gw-status-429", "gw-limit-" + limit);
    else if (row.status >= 400) tr.classList.add("gw-status-error");
    const when = new Date(row.time * 1000);
    cell(tr, when.toLocaleDateString([], { month: "short", day: "2-digit" }) + " " + when.toLocaleTimeString([], { hour12: false }));
    cell(tr, row.key_alias, "gw-key");
    cell(tr, row.model);
    cell(tr, String(row.status));
    cell(tr, row.status === 429 ? limit : row.error_type || "");
    cell(tr, row.latency_ms + " ms", "gw-num");
    cell(tr, String(row.tokens), "gw-num");
    cell(tr, money(row.cost), "gw-num");
    applyFilter(tr);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > maxRows) body.deleteRow(body.rows.length - 1);
    const empty = document.getElementById("gw-live-empty");
    if (empty) empty.remove();
  }

  function setStatus(text, connected) {
    status.textContent = text;
    status.className = "gw-live-status " + (connected ? "connected" : "disconnected");
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + table.dataset.wsPath);
    socket.onopen = () => { retryMs = 1000; };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "hello") setStatus("live", true);
      if (data.type === "rows") data.rows.forEach(receive);
    };
    socket.onclose = (event) => {
      if (event.code === 4403) { setStatus("not allowed: log in again", false); return; }
      setStatus("reconnecting…", false);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    };
  }
  connect();
})();
