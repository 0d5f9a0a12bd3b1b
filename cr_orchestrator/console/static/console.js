// The console's pages: poll the JSON every second and redraw (no build step, no library).
"use strict";
const Console = (() => {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  let only = null, pending = null, lastState = null;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };
  const secs = (s) => s === null || s === undefined ? "never synced" : (s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
  const ago = (t) => { const s = Date.now() / 1000 - t; return s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`; };

  function picture(c) {
    const card = el("section", {class: "cluster" + (c.paused ? " paused" : ""), id: `cluster-${c.name}`, "data-primary": c.primary, "data-epoch": c.epoch});
    card.append(el("h2", {}, el("a", {href: `/cluster/${c.name}`}, c.name), " ",
      el("span", {class: "epoch"}, `epoch ${c.epoch}`),
      c.paused ? el("span", {class: "badge paused-badge"}, "PAUSED") : null,
      c.lock ? el("span", {class: "badge busy"}, "change running") : null));
    const sw = [];
    if (c.shared_ip) sw.push(el("span", {class: "pill"}, `shared IP ${c.shared_ip}`));
    if (c.dns) sw.push(el("span", {class: "pill"}, `DNS ${c.dns}`));
    card.append(el("p", {class: "switch"}, "Clients reach ", el("b", {class: "primary-name", id: `primary-${c.name}`}, c.primary), " through ", ...sw,
      el("span", {class: "hint"}, ` · failovers in period ${c.failovers}/${c.max_failovers}`)));
    const sites = el("div", {class: "sites"});
    for (const s of c.sites) {
      const col = el("div", {class: "site"}, el("h3", {}, `site ${s.site}`));
      for (const h of s.hosts) {
        const box = el("div", {class: `host ${h.colour}` + (h.primary ? " is-primary" : ""), "data-host": h.name},
          el("div", {class: "host-name"}, h.name, h.primary ? el("span", {class: "badge primary-badge"}, "PRIMARY") : null),
          el("div", {class: "hint"}, `${h.role === "primary" ? "configured primary" : h.role} · ${h.platform} · ${h.address}`),
          el("div", {class: "health"}, h.health));
        for (const [set, lag] of Object.entries(h.lag_s)) {
          const late = lag === null || lag > c.max_replica_lag_s;
          box.append(el("div", {class: "lag" + (late ? " late" : "")}, `${set}: ${secs(lag)} behind`));
        }
        if (h.primary && c.shared_ip) box.append(el("div", {class: "pill vip"}, c.shared_ip));
        col.append(box);
      }
      sites.append(col);
    }
    card.append(sites);
    const d = c.decision || {};
    // Rounds record no verdict while a change holds the cluster (or when they stopped):
    // say how old the colours are rather than let them pass for now.
    const age = d.at ? Date.now() / 1000 - d.at : null;
    if (age !== null && age > Math.max(5, 3 * c.probe_interval_s)) {
      card.classList.add("stale");
      sites.before(el("p", {class: "hint stale-note"}, `health as of the last recorded round, ${ago(d.at)}` +
        (c.lock ? " (a change is running: rounds observe but record no verdict until it ends)" : "")));
    }
    if (d.action) card.append(el("p", {class: "decision"}, el("b", {}, `${d.action}${d.target ? " " + d.target : ""}`), `: ${d.reason}`,
      d.at ? el("span", {class: "hint"}, ` (${ago(d.at)})`) : null));
    return card;
  }

  async function getJSON(url) {
    const r = await fetch(url, {cache: "no-store"});
    return r.json();
  }

  async function post(url, body, token) {
    const headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf};
    if (token) headers["X-CR-Token"] = token;
    const r = await fetch(url, {method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin"});
    let out; try { out = await r.json(); } catch (e) { out = {ok: false, summary: `HTTP ${r.status}`}; }
    return out;
  }

  function kinds() {
    return [...document.querySelectorAll("#kinds input:checked")].map((i) => i.value);
  }

  async function tick() {
    const live = document.getElementById("live");
    try {
      const state = await getJSON("/api/clusters");
      if (!state.ok) throw new Error(state.summary);
      lastState = state;
      const box = document.getElementById("clusters");
      box.replaceChildren(...state.clusters.filter((c) => !only || c.name === only).map(picture));
      if (only && document.getElementById("timeline")) {
        const q = kinds().map((k) => `kind=${encodeURIComponent(k)}`).join("&");
        const ev = await getJSON(`/api/cluster/${only}/events?n=100&${q}`);
        document.getElementById("timeline").replaceChildren(...ev.events.map((e) =>
          el("li", {class: `ev ev-${e.kind.replace(".", "-")}` + (e.ok === false ? " failed" : ""), "data-kind": e.kind},
            el("span", {class: "when"}, e.time), el("span", {class: "kind"}, e.kind),
            el("span", {class: "text"}, e.text),
            e.run ? el("a", {href: `/cluster/${only}/run/${e.id}`, class: "run"}, "tasks") : null)));
      }
      live.textContent = `live · ${new Date().toLocaleTimeString()}`;
      live.className = "live ok";
    } catch (e) {
      live.textContent = `not updating: ${e.message}`;
      live.className = "live down";
    }
  }

  async function openConfirm(command) {
    const result = document.getElementById("result");
    result.textContent = `asking the orchestrator what it sees now…`;
    result.className = "";
    const p = await post(`/api/cluster/${only}/preview`, {command});
    if (!p.ok) { result.textContent = p.summary; result.className = "failed"; return; }
    pending = p;
    result.textContent = "";
    document.getElementById("confirm-title").textContent = `${command} of ${only}`;
    document.getElementById("confirm-primary").textContent = p.primary;
    document.getElementById("confirm-epoch").textContent = p.epoch;
    document.getElementById("confirm-decide").textContent = p.decide;
    document.getElementById("confirm-effect").textContent = p.effect;
    const row = document.getElementById("confirm-target-row");
    row.hidden = command !== "switchover";
    if (p.target) document.getElementById("confirm-target").value = p.target;
    document.getElementById("confirm-refused").replaceChildren(...(p.refused || []).map((r) => el("li", {}, r)));
    document.getElementById("confirm").hidden = false;
  }

  async function confirm() {
    const result = document.getElementById("result");
    const body = {command: pending.command, seen_primary: pending.seen_primary, seen_epoch: pending.seen_epoch,
                  operator: document.getElementById("operator").value};
    if (pending.command === "switchover") body.to = document.getElementById("confirm-target").value;
    document.getElementById("confirm").hidden = true;
    result.textContent = `${pending.command} running…`;
    result.className = "";
    const out = await post(`/api/cluster/${only}/action`, body, document.getElementById("token").value);
    result.textContent = out.summary;
    result.className = out.ok ? "ok" : "failed";
    pending = null;
    tick();
  }

  function start(options) {
    only = options.only;
    document.querySelectorAll("button[data-command]").forEach((b) => b.addEventListener("click", () => openConfirm(b.dataset.command)));
    const go = document.getElementById("confirm-go");
    if (go) go.addEventListener("click", confirm);
    const cancel = document.getElementById("confirm-cancel");
    if (cancel) cancel.addEventListener("click", () => { document.getElementById("confirm").hidden = true; pending = null; });
    document.querySelectorAll("#kinds input").forEach((i) => i.addEventListener("change", tick));
    tick();
    setInterval(tick, 1000);
  }
  return {start, state: () => lastState};
})();
