// kiln's dashboard: the live parts. One EventSource per page (/ui/stream)
// brings `stats` snapshots and the durable log's `job` events; each page
// says in <body data-live> what it follows. No inline script anywhere.
"use strict";

(function () {
  const body = document.body;
  const live = body.dataset.live;
  const badge = document.getElementById("live-state");
  if (!live || !window.EventSource) return;

  const query = new URLSearchParams();
  if (body.dataset.after) query.set("after", body.dataset.after);
  if (live === "stats") query.set("stats", "true");
  const url = "/ui/stream" + (query.toString() ? "?" + query.toString() : "");
  const source = new EventSource(url);
  source.onopen = () => { if (badge) { badge.textContent = "live"; badge.className = "live-state on"; } };
  source.onerror = () => { if (badge) { badge.textContent = "reconnecting"; badge.className = "live-state off"; } };

  // Overview: every [data-stat="a.b"] shows that field of the snapshot.
  source.addEventListener("stats", (m) => {
    const s = JSON.parse(m.data);
    document.querySelectorAll("[data-stat]").forEach((el) => {
      let v = s;
      for (const k of el.dataset.stat.split(".")) v = v == null ? v : v[k];
      if (v === undefined) return;
      el.textContent = v === null ? "–" : el.dataset.format === "rate" ? v.toFixed(1)
        : el.dataset.format === "bytes" ? bytes(v) : typeof v === "boolean" ? (v ? "paused" : "running") : String(v);
    });
    // A priority's button offers what it is not.
    for (const [p, paused] of Object.entries(s.paused || {})) {
      const input = document.querySelector(`[data-pause-input="${p}"]`);
      const button = document.querySelector(`[data-pause-button="${p}"]`);
      if (input) input.value = paused ? "false" : "true";
      if (button) button.textContent = paused ? "Resume" : "Pause";
    }
    const line = document.getElementById("throughput");
    if (line && Array.isArray(s.throughput)) line.setAttribute("points", sparkPoints(s.throughput));
    body.dataset.updated = String(Date.now());
  });

  let fresh = 0;
  source.addEventListener("job", (m) => {
    const e = JSON.parse(m.data);
    if (live === "events") return addEventRow(e);
    if (live.startsWith("symbol:")) {
      if (e.state === "succeeded" && e.symbols.includes(live.slice(7))) location.reload();
      return;
    }
    if (live === "jobs") {
      fresh += 1;
      const news = document.getElementById("news");
      if (news) {
        news.classList.add("shown");
        const count = news.querySelector("[data-count]");
        if (count) count.textContent = String(fresh);
      }
    }
  });

  function addEventRow(e) {
    const table = document.querySelector("#events tbody");
    if (!table) return;
    const only = body.dataset.state;
    if (only && e.state !== only) return;
    const tr = document.createElement("tr");
    tr.className = "new";
    const cell = (text, cls) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
      return td;
    };
    cell(String(e.seq), "num");
    const when = new Date(e.at_ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    cell(when);
    const job = cell("");
    const a = document.createElement("a");
    a.href = "/ui/jobs/" + e.job;
    a.textContent = String(e.job);
    job.appendChild(a);
    const st = cell("");
    const span = document.createElement("span");
    span.className = "state " + e.state;
    span.textContent = e.state;
    st.appendChild(span);
    cell(e.kind);
    cell(String(e.attempts), "num");
    const more = e.symbols_total > e.symbols.length ? " +" + (e.symbols_total - e.symbols.length) : "";
    cell(e.symbols.join(", ") + more);
    cell(e.error ? e.error.split("\n")[0] : "", e.error ? "error" : "");
    table.insertBefore(tr, table.firstChild);
    while (table.rows.length > 500) table.deleteRow(table.rows.length - 1);
  }

  function sparkPoints(values) {
    const w = 600, h = 60, n = values.length;
    const max = Math.max(1, ...values);
    return values.map((v, i) => {
      const x = n > 1 ? (i * w) / (n - 1) : 0;
      return x.toFixed(1) + "," + (h - (v / max) * (h - 4)).toFixed(1);
    }).join(" ");
  }

  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let v = n, u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u += 1; }
    return u === 0 ? n + " B" : v.toFixed(1) + " " + units[u];
  }
})();
