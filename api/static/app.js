// Landun dashboard: a small page over the public API (no framework, no CDN).
"use strict";

const TZ = "Asia/Shanghai";
const state = {
  token: sessionStorage.getItem("landun.token"),
  me: null,
  lang: localStorage.getItem("landun.lang") || "zh",
  stream: null,
  lastEventId: null,
  refreshTimer: null,
  feed: [], // the live feed's events, newest last, so a language switch can redraw them
};

const t = (key) => (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;
const pname = (p) => (p && I18N[state.lang].params[p]) || p;
// What an alert is about: the rule's name in the page's language (from the API), else its id.
const ruleName = (a) => (a.rule_name && a.rule_name[state.lang]) || pname(a.parameter) || a.rule_id;
// A unit as people write it (°C, not the wire code degC).
const unitOf = (limit) => (limit ? (limit.unit_label ?? limit.unit ?? "") : "");
const view = () => document.getElementById("view");

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmtTime(iso, zone = TZ) {
  if (!iso) return "—";
  const d = new Date(iso);
  return new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "en-GB", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).format(d);
}

// Chart time axes: 24-hour clock in both languages; day and month once ticks are days apart.
function fmtAxisTimes(splits, incrSeconds) {
  const daily = incrSeconds >= 86400;
  const f = new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "en-GB", daily
    ? { timeZone: TZ, month: "2-digit", day: "2-digit" }
    : { timeZone: TZ, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  return splits.map((s) => f.format(new Date(s * 1000)));
}

function fmtValue(v) {
  return v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined, { maximumFractionDigits: 3 });
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) {
    logout();
    throw new Error(t("loginFailed"));
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").textContent = state.lang === "zh" ? "English" : "中文";
  document.title = `${t("brand")} · Landun`;
  if (state.me) document.getElementById("who").textContent = `${state.me.name} (${t(state.me.role)})`;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
}

// ---- login ------------------------------------------------------------------------------------

function showLogin(message) {
  document.getElementById("feed").hidden = true;
  document.body.classList.remove("with-feed");
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  view().innerHTML = `
    <form class="card login" id="login-form">
      <h1>${esc(t("login"))}</h1>
      <label for="username">${esc(t("username"))}</label>
      <input id="username" name="username" autocomplete="username" required>
      <label for="password">${esc(t("password"))}</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required>
      <p class="error" id="login-error">${esc(message || "")}</p>
      <button class="btn" type="submit">${esc(t("login"))}</button>
    </form>`;
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = JSON.stringify({
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    });
    const r = await fetch("/api/v1/auth/login", { method: "POST", body, headers: { "Content-Type": "application/json" } });
    if (!r.ok) {
      const why = r.status === 401 ? t("wrongPassword") : (await r.json()).detail;
      document.getElementById("login-error").textContent = `${t("loginFailed")}: ${why}`;
      return;
    }
    state.token = (await r.json()).token;
    sessionStorage.setItem("landun.token", state.token);
    start();
  });
}

function logout() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("landun.token");
  if (state.stream) state.stream.abort();
  showLogin();
}

// ---- live feed (Server-Sent Events over fetch, so the token can travel in a header) ----------

async function followStream() {
  const feedState = document.getElementById("feed-state");
  while (state.token) {
    const controller = new AbortController();
    state.stream = controller;
    try {
      const headers = { Authorization: `Bearer ${state.token}` };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const r = await fetch("/api/v1/alerts/stream", { headers, signal: controller.signal });
      if (!r.ok) throw new Error(r.statusText);
      feedState.dataset.i18n = "connected"; // applyLanguage redraws [data-i18n] texts
      feedState.textContent = t("connected");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    feedState.dataset.i18n = "reconnecting";
    feedState.textContent = t("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function handleEvent(block) {
  let id = null;
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  state.lastEventId = id;
  const ev = JSON.parse(data);
  state.feed.push(ev);
  if (state.feed.length > 200) state.feed.shift();
  document.getElementById("feed-list").prepend(feedItem(ev));
  // The page behind the feed may now be out of date: refresh it, at most every 2 s.
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => route(true), 2000);
}

// The escalation stage's audit entries (levels reached, notices queued, sent or failed).
const ESCALATION = "escalation";

function auditItems(entries, zone) {
  return entries.map((e) => `<li>${fmtTime(e.at, zone)} ${esc(e.actor === "system" ? t("system") : e.actor)}: ${esc(t(e.action))} ${esc((state.lang === "zh" && e.comment_zh) || e.comment)}</li>`).join("");
}

function feedItem(ev) {
  const a = ev.alert;
  const li = document.createElement("li");
  li.innerHTML = `<span class="badge ${esc(a.severity)}">${esc(t(a.severity))}</span>
    <b>${esc(t(ev.action))}</b> ${fmtTime(ev.at)}<br>
    <a href="#/alert/${a.id}">${esc(a.site_id)} · ${esc(ruleName(a))}</a>
    ${a.worst_value !== null ? `· ${fmtValue(a.worst_value)} ${esc(unitOf(a.limit))}` : ""}`;
  li.dataset.alertId = a.id;
  return li;
}

function redrawFeed() {
  document.getElementById("feed-list").replaceChildren(...state.feed.map(feedItem).reverse());
}

// ---- overview ---------------------------------------------------------------------------------

async function overview() {
  const [sites, alerts] = await Promise.all([
    api("/api/v1/sites"),
    api("/api/v1/alerts?status=open&status=acknowledged&limit=200"),
  ]);
  const names = Object.fromEntries(sites.map((s) => [s.id, s.name]));
  view().innerHTML = `
    <h1>${esc(t("overview"))}</h1>
    <div class="filters">
      <input id="q" type="search" placeholder="${esc(t("search"))}" aria-label="${esc(t("search"))}">
      <select id="status-filter" aria-label="${esc(t("status"))}">
        <option value="">${esc(t("allStatuses"))}</option>
        <option value="normal">${esc(t("normal"))}</option>
        <option value="over_limit">${esc(t("over_limit"))}</option>
        <option value="custody_issue">${esc(t("custody_issue"))}</option>
        <option value="offline_or_fault">${esc(t("offline_or_fault"))}</option>
        <option value="no_data">${esc(t("no_data"))}</option>
      </select>
    </div>
    <table id="sites"><thead><tr>
      <th>${esc(t("site"))}</th><th>${esc(t("status"))}</th><th>${esc(t("openAlerts"))}</th>
      <th class="hide-sm">${esc(t("lastData"))}</th><th class="hide-sm">${esc(t("jurisdiction"))}</th>
    </tr></thead><tbody></tbody></table>
    <p class="muted">${esc(t("tz"))}</p>
    ${mapSvg(sites)}
    <h2>${esc(t("alerts"))}</h2>
    ${alertTable(alerts, names)}`;
  const render = () => {
    const q = document.getElementById("q").value.trim().toLowerCase();
    const st = document.getElementById("status-filter").value;
    const rows = sites.filter((s) => (!st || s.current.status === st)
      && (!q || s.name.toLowerCase().includes(q) || s.id.toLowerCase().includes(q)));
    document.querySelector("#sites tbody").innerHTML = rows.map((s) => `
      <tr data-site="${esc(s.id)}">
        <td><a href="#/site/${esc(s.id)}">${esc(s.name)}</a><br><span class="muted">${esc(s.id)} · ${esc(t(s.kind))}</span></td>
        <td><span class="badge ${esc(s.current.status)}">${esc(t(s.current.status))}</span></td>
        <td>${s.current.open_alerts}</td>
        <td class="hide-sm">${fmtTime(s.current.last_data)}</td>
        <td class="hide-sm">${esc(s.jurisdiction)}</td>
      </tr>`).join("");
  };
  document.getElementById("q").addEventListener("input", render);
  document.getElementById("status-filter").addEventListener("change", render);
  render();
  bindAlertActions();
}

function mapSvg(sites) {
  const placed = sites.filter((s) => s.latitude !== null && s.longitude !== null);
  if (!placed.length) return "";
  const lats = placed.map((s) => s.latitude);
  const lons = placed.map((s) => s.longitude);
  const pad = 0.01;
  const [x0, x1] = [Math.min(...lons) - pad, Math.max(...lons) + pad];
  const [y0, y1] = [Math.min(...lats) - pad, Math.max(...lats) + pad];
  const colour = {
    normal: "#1b7f3b", over_limit: "#c0262d", custody_issue: "#7a3e9d",
    offline_or_fault: "#b26a00", no_data: "#777777",
  };
  const dots = placed.map((s) => {
    const x = 20 + ((s.longitude - x0) / (x1 - x0)) * 560;
    const y = 240 - ((s.latitude - y0) / (y1 - y0)) * 220;
    return `<a href="#/site/${esc(s.id)}"><circle cx="${x}" cy="${y}" r="7" fill="${colour[s.current.status]}"><title>${esc(s.name)}</title></circle>
      <text x="${x + 10}" y="${y + 4}">${esc(s.name.split(" (")[0])}</text></a>`;
  }).join("");
  return `<h2>${esc(t("map"))}</h2><svg class="map" viewBox="0 0 600 260" role="img" aria-label="${esc(t("map"))}">${dots}</svg>`;
}

function alertTable(alerts, names) {
  if (!alerts.length) return `<p class="muted">${esc(t("noData"))}</p>`;
  return `<table id="alerts"><thead><tr>
      <th>${esc(t("site"))}</th><th>${esc(t("parameter"))}</th><th>${esc(t("severity"))}</th>
      <th>${esc(t("status"))}</th><th class="hide-sm">${esc(t("first"))}</th><th>${esc(t("worst"))}</th><th></th>
    </tr></thead><tbody>${alerts.map((a) => `
      <tr data-alert="${a.id}">
        <td><a href="#/alert/${a.id}">${esc(names[a.site_id] || a.site_id)}</a></td>
        <td>${esc(ruleName(a))}<br><span class="muted">${esc(t(a.family))}</span></td>
        <td><span class="badge ${esc(a.severity)}">${esc(t(a.severity))}</span></td>
        <td class="${esc(a.status)}">${esc(t(a.status))}</td>
        <td class="hide-sm">${fmtTime(a.first)}</td>
        <td>${a.worst_value === null ? esc(t("none")) : `${fmtValue(a.worst_value)} ${esc(unitOf(a.limit))}`}</td>
        <td>${a.status === "open" ? `<button class="btn ack" data-id="${a.id}">${esc(t("acknowledge"))}</button>` : ""}</td>
      </tr>`).join("")}</tbody></table>`;
}

function bindAlertActions() {
  document.querySelectorAll("button.ack").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    await api(`/api/v1/alerts/${b.dataset.id}/acknowledge`, { method: "POST", body: JSON.stringify({ comment: "" }) });
    route(true);
  }));
}

// ---- site page --------------------------------------------------------------------------------

const PERIODS = { h24: [86400e3, "5m", 300e3], d7: [7 * 86400e3, "1h", 3600e3], d30: [30 * 86400e3, "1h", 3600e3] };

async function sitePage(siteId, period) {
  const [site, devices, limits, alerts] = await Promise.all([
    api(`/api/v1/sites/${encodeURIComponent(siteId)}`),
    api(`/api/v1/devices?site=${encodeURIComponent(siteId)}`),
    api(`/api/v1/sites/${encodeURIComponent(siteId)}/limits`),
    api(`/api/v1/alerts?site=${encodeURIComponent(siteId)}&limit=500`),
  ]);
  const [span, every, step] = PERIODS[period];
  const end = Date.now();
  const start = end - span;
  const limitOf = Object.fromEntries(limits.map((l) => [l.parameter, l]));
  view().innerHTML = `
    <p><a href="#/">← ${esc(t("back"))}</a></p>
    <h1>${esc(site.name)} <span class="badge ${esc(site.current.status)}">${esc(t(site.current.status))}</span></h1>
    <p class="muted">${esc(site.id)} · ${esc(t(site.kind))}${site.subtype ? ` · ${esc(t(site.subtype))}` : ""} · ${esc(site.address)} · ${esc(t("jurisdiction"))} ${esc(site.jurisdiction)} · ${esc(site.profile)}</p>
    <div class="filters">${Object.keys(PERIODS).map((p) => `
      <a class="btn ${p === period ? "" : "secondary"}" href="#/site/${esc(siteId)}/${p}" role="button">${esc(t(p))}</a>`).join("")}
    </div>
    <p class="muted">${esc(t("limitBand"))} · ${esc(t("episodes"))} · ${esc(t("gaps"))} · ${esc(t("tz"))}</p>
    ${state.me.role === "admin" ? `<p><button id="public-qr" class="btn secondary" type="button">${esc(t("publicQr"))}</button></p><div id="public-link"></div>` : ""}
    <div class="charts" id="charts"></div>
    <div id="kind-panel"></div>
    <h2>${esc(t("alerts"))}</h2>
    ${alertTable(alerts, { [site.id]: site.name })}`;
  bindAlertActions();
  const qr = document.getElementById("public-qr");
  if (qr) qr.addEventListener("click", () => publicLink(siteId));
  const panel = KIND_PANELS[site.kind];
  if (panel) await panel(siteId, start, end);
  const charts = document.getElementById("charts");
  for (const device of devices) {
    if (!device.parameters.length) continue;
    const q = device.parameters.map((p) => `parameter=${encodeURIComponent(p)}`).join("&");
    const buckets = await api(`/api/v1/readings/downsampled?device=${encodeURIComponent(device.id)}&${q}`
      + `&every=${every}&start=${new Date(start).toISOString()}&end=${new Date(end).toISOString()}`);
    for (const p of device.parameters) {
      const box = document.createElement("div");
      box.className = "card chart";
      box.dataset.parameter = p;
      const lim = limitOf[p];
      box.innerHTML = `<h3>${esc(pname(p))} <span class="muted">${esc(device.id)}${lim ? ` · ${esc(t("limit"))} ${esc(lim.text)}` : ""}</span></h3>`;
      charts.appendChild(box);
      const episodes = alerts.filter((a) => a.device_id === device.id && a.parameter === p);
      drawChart(box, buckets.filter((b) => b.parameter === p), lim, episodes, start, end, step);
    }
  }
}

// The site's public status page (扫码知卫生): its QR code as SVG, to print at the venue.
async function publicLink(siteId) {
  const link = await api(`/api/v1/sites/${encodeURIComponent(siteId)}/public-link`);
  const svg = new DOMParser().parseFromString(await api(link.qr_svg), "image/svg+xml").documentElement;
  const box = document.getElementById("public-link");
  box.className = "card public-qr";
  box.innerHTML = `<p>${esc(t("publicLink"))}: <a href="${esc(link.url)}" target="_blank" rel="noopener">${esc(link.url)}</a></p>`;
  box.appendChild(document.importNode(svg, true));
}

async function wastePanel(siteId) {
  const [daily, bags] = await Promise.all([
    api(`/api/v1/sites/${encodeURIComponent(siteId)}/waste/daily`),
    api(`/api/v1/sites/${encodeURIComponent(siteId)}/waste/bags?limit=100`),
  ]);
  const kg = (v) => (v === null || v === undefined ? "—" : `${fmtValue(v)} kg`);
  document.getElementById("kind-panel").innerHTML = `
    <h2>${esc(t("wasteDaily"))}</h2>
    <table id="waste-daily"><thead><tr><th>${esc(t("day"))}</th><th>${esc(t("bags"))}</th>
      <th>${esc(t("weight"))}</th><th class="hide-sm">${esc(t("byCategory"))}</th></tr></thead>
    <tbody>${daily.map((d) => `<tr><td>${esc(d.day)}</td><td>${d.bags}</td><td>${kg(d.weight_kg)}</td>
      <td class="hide-sm">${Object.entries(d.by_category).map(([c, v]) => `${esc(t(c))} ${kg(v.weight_kg)}`).join("; ")}</td></tr>`).join("")}</tbody></table>
    <h2>${esc(t("wasteBags"))}</h2>
    <table id="waste-bags"><thead><tr><th>${esc(t("bag"))}</th><th>${esc(t("status"))}</th>
      <th class="hide-sm">${esc(t("department"))}</th><th>${esc(t("collected"))}</th>
      <th>${esc(t("handedOver"))}</th><th>${esc(t("weightLoss"))}</th></tr></thead>
    <tbody>${bags.map((b) => `<tr data-bag="${esc(b.bag_id)}"><td>${esc(b.bag_id)}<br><span class="muted">${esc(t(b.category))}</span></td>
      <td>${esc(t(b.status))}</td><td class="hide-sm">${esc(b.department || "—")}</td>
      <td>${fmtTime(b.collected)}<br>${kg(b.collected_kg)}</td><td>${fmtTime(b.handed_over)}<br>${kg(b.handed_kg)}</td>
      <td class="${b.weight_loss_kg > 0.2 ? "open" : ""}">${kg(b.weight_loss_kg)}</td></tr>`).join("")}</tbody></table>`;
}

// A drinking-water site's tanks: newest cleaning and disinfection, when next due, the records.
async function tankPanel(siteId) {
  const tanks = await api(`/api/v1/sites/${encodeURIComponent(siteId)}/tanks`);
  const now = Date.now();
  document.getElementById("kind-panel").innerHTML = `
    <h2>${esc(t("tanks"))}</h2>
    <table id="tanks"><thead><tr><th>${esc(t("tank"))}</th><th>${esc(t("cleaned"))}</th>
      <th>${esc(t("disinfected"))}</th><th>${esc(t("due"))}</th>
      <th class="hide-sm">${esc(t("operator"))}</th></tr></thead>
    <tbody>${tanks.map((k) => {
      const last = k.records[k.records.length - 1];
      const late = k.due === null || Date.parse(k.due) < now;
      return `<tr data-tank="${esc(k.tank_id)}"><td>${esc(k.tank_id)}</td><td>${fmtTime(k.cleaned)}</td>
        <td>${fmtTime(k.disinfected)}</td><td class="${late ? "open" : ""}">${fmtTime(k.due)}${late ? ` (${esc(t("overdue"))})` : ""}</td>
        <td class="hide-sm">${last ? `${esc(last.operator)}${last.contractor ? ` · ${esc(last.contractor)}` : ""}` : "—"}</td></tr>`;
    }).join("")}</tbody></table>`;
}

// The panel each kind of site adds under its charts (a kind without one shows charts only).
const KIND_PANELS = {
  medical_institution: wastePanel,
  drinking_water: tankPanel,
  tableware_disinfection: linesPanel,
};

// A disinfection unit's lines: per line, the cycle timeline over the page's period (at most its
// last 48 h, the API's bound): one bar per cycle (green held / red not / grey incomplete), every
// cycle's curve against the method's limit, the cycles with their verdicts and the packed batches.
const LINE_SPAN_MAX = 48 * 3600e3;
async function linesPanel(siteId, start, end) {
  // Taken before the first await: a page rendered again meanwhile has its own box.
  const box = document.getElementById("kind-panel");
  const base = `/api/v1/sites/${encodeURIComponent(siteId)}/lines`;
  const lines = await api(base);
  const span = `start=${new Date(Math.max(start, end - LINE_SPAN_MAX)).toISOString()}&end=${new Date(end).toISOString()}`;
  const all = await Promise.all(lines.map((line) => api(`${base}/${encodeURIComponent(line.line_id)}/cycles?${span}`)));
  box.innerHTML = `<h2>${esc(t("cycleTimeline"))}</h2>`;
  for (const [i, line] of lines.entries()) {
    const got = all[i];
    const card = document.createElement("div");
    card.className = "card line";
    card.dataset.line = line.line_id;
    const verdict = (c) => (c.compliant === null ? "incomplete" : c.compliant ? "held" : "failed");
    card.innerHTML = `
      <h3>${esc(t("line"))} ${esc(line.line_id)} · ${esc(t(`method_${line.method}`))}
        <span class="muted">${esc(line.device_id)} · ${esc(t("limit"))} ≥ ${fmtValue(line.limit_min)} ${esc(line.unit)}
        · ≥ ${fmtValue(line.min_dwell_s)} s · ${esc(t("capacity"))} ${line.capacity_sets}</span></h3>
      ${cycleStrip(got)}
      <div class="cycle-chart"></div>
      <table class="cycles"><thead><tr><th>${esc(t("cycle"))}</th><th>${esc(t("first"))}</th>
        <th>${esc(t("duration"))}</th><th>${esc(t("held"))}</th><th>${esc(t("worst"))}</th><th>${esc(t("status"))}</th></tr></thead>
      <tbody>${got.cycles.slice().reverse().map((c) => `<tr data-cycle="${esc(c.cycle_id)}" class="${verdict(c)}">
        <td>${esc(c.cycle_id)}</td><td>${fmtTime(c.start)}</td>
        <td>${c.duration_s === null ? "—" : `${fmtValue(c.duration_s / 60)} ${esc(t("minutes"))}`}</td>
        <td>${c.held_s === null ? "—" : `${fmtValue(c.held_s / 60)} ${esc(t("minutes"))}`}</td>
        <td>${c.lowest === null ? "—" : `${fmtValue(c.lowest)} ${esc(line.unit)}`}</td>
        <td title="${esc(c.reason)}">${esc(t(verdict(c)))}</td></tr>`).join("")}</tbody></table>
      <table class="batches"><thead><tr><th>${esc(t("batch"))}</th><th>${esc(t("packed"))}</th>
        <th>${esc(t("sets"))}</th><th>${esc(t("productionDate"))}</th></tr></thead>
      <tbody>${got.batches.slice().reverse().map((b) => `<tr data-batch="${esc(b.batch_id)}"><td>${esc(b.batch_id)}</td>
        <td>${fmtTime(b.packed)}</td><td>${b.sets}</td><td>${esc(b.production_date || "—")}</td></tr>`).join("")}</tbody></table>`;
    box.appendChild(card);
    drawCycles(card.querySelector(".cycle-chart"), got, line);
  }
}

function cycleStrip(got) {
  const t0 = Date.parse(got.start);
  const span = Date.parse(got.end) - t0;
  const fill = { held: "#1b7f3b", failed: "#c0262d", incomplete: "#9aa5b1" };
  const bars = got.cycles.filter((c) => c.start || c.end).map((c) => {
    const a = Date.parse(c.start || c.end);
    const b = Date.parse(c.end || c.start);
    const x = Math.max(0, ((a - t0) / span) * 1000);
    const w = Math.max(3, ((b - a) / span) * 1000);
    const v = c.compliant === null ? "incomplete" : c.compliant ? "held" : "failed";
    return `<rect x="${x.toFixed(1)}" y="2" width="${w.toFixed(1)}" height="16" fill="${fill[v]}"><title>${esc(c.cycle_id)}: ${esc(c.reason)}</title></rect>`;
  }).join("");
  return `<svg class="cycle-strip" viewBox="0 0 1000 20" preserveAspectRatio="none" role="img"
    aria-label="${esc(t("cycleTimeline"))}">${bars}</svg>`;
}

function drawCycles(box, got, line) {
  // One axis over the window: each cycle's curve, broken between cycles, and the limit.
  const points = [];
  for (const c of got.cycles) {
    for (const [ms, v] of c.curve) points.push([ms / 1000, v]);
    if (c.curve.length) points.push([c.curve[c.curve.length - 1][0] / 1000 + 1, null]);
  }
  points.sort((a, b) => a[0] - b[0]);
  const xs = [Date.parse(got.start) / 1000, ...points.map((p) => p[0]), Date.parse(got.end) / 1000];
  const ys = [null, ...points.map((p) => p[1]), null];
  const limit = xs.map(() => line.limit_min);
  const values = ys.filter((v) => v !== null);
  const lo = Math.min(...values, line.limit_min);
  const hi = Math.max(...values, line.limit_min);
  const margin = (hi - lo) * 0.1 || 1;
  box.plot = new uPlot({
    width: Math.max(280, box.clientWidth - 10), height: 200,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), TZ),
    scales: { y: { range: () => [lo - margin, hi + margin] } },
    axes: [{ values: (u, splits, axisIdx, space, incr) => fmtAxisTimes(splits, incr) }, {}],
    series: [{}, { label: pname(line.parameter), stroke: "#0d3b66", width: 1.5, spanGaps: false },
      { label: t("limit"), stroke: "#c0262d", width: 1, dash: [6, 4] }],
    legend: { show: false },
  }, [xs, ys, limit], box);
}

function drawChart(box, buckets, limit, episodes, start, end, step) {
  // A regular time axis with null where no data arrived, so gaps show as breaks.
  const byTime = new Map(buckets.map((b) => [Date.parse(b.start), b.mean]));
  const first = Math.floor(start / step) * step;
  const xs = [];
  const ys = [];
  for (let x = first; x < end; x += step) {
    xs.push(x / 1000);
    ys.push(byTime.has(x) ? byTime.get(x) : null);
  }
  const values = ys.filter((v) => v !== null);
  const lo = Math.min(...values, limit && limit.min !== null ? limit.min : Infinity);
  const hi = Math.max(...values, limit && limit.max !== null ? limit.max : -Infinity);
  const margin = (hi - lo) * 0.15 || 1;
  const shade = (u) => {
    const { ctx, bbox } = u;
    ctx.save();
    if (limit) {
      const top = limit.max !== null ? u.valToPos(limit.max, "y", true) : bbox.top;
      const bottom = limit.min !== null ? u.valToPos(limit.min, "y", true) : bbox.top + bbox.height;
      ctx.fillStyle = "rgba(27,127,59,0.10)";
      ctx.fillRect(bbox.left, top, bbox.width, bottom - top);
    }
    ctx.fillStyle = "rgba(192,38,45,0.15)";
    for (const a of episodes) {
      const x0 = u.valToPos(Date.parse(a.first) / 1000, "x", true);
      const x1 = u.valToPos(Date.parse(a.resolved || a.last) / 1000, "x", true);
      const left = Math.max(bbox.left, x0);
      const right = Math.min(bbox.left + bbox.width, Math.max(x1, x0 + 2));
      if (right > left) ctx.fillRect(left, bbox.top, right - left, bbox.height);
    }
    ctx.restore();
  };
  const width = Math.max(280, box.clientWidth - 30);
  const opts = {
    width, height: 200,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), TZ),
    scales: { y: { range: () => (Number.isFinite(lo) ? [lo - margin, hi + margin] : [0, 1]) } },
    axes: [{ values: (u, splits, axisIdx, space, incr) => fmtAxisTimes(splits, incr) }, {}],
    series: [{}, { label: t("mean"), stroke: "#0d3b66", width: 1.5, spanGaps: false }],
    hooks: { drawClear: [shade] },
    legend: { show: false },
  };
  box.plot = new uPlot(opts, [xs, ys], box); // kept on the box: its axes can be inspected
}

// ---- alert page -------------------------------------------------------------------------------

async function alertPage(alertId) {
  const record = await api(`/api/v1/alerts/${alertId}/evidence`);
  const a = record.alert;
  const s = record.site;
  const ep = record.episode;
  const w = record.worst;
  const zone = s.timezone || TZ;
  const when = (x) => (x ? fmtTime(x.utc, zone) : "—");
  const lim = record.limit || {};
  const act = a.status === "resolved" ? "" : `
    <button class="btn" id="do-ack" ${a.status !== "open" ? "disabled" : ""}>${esc(t("acknowledge"))}</button>
    <button class="btn" id="do-resolve">${esc(t("resolve"))}</button>`;
  const worst = w.value === null ? t("none") : `${fmtValue(w.value)} ${w.unit} (${when(w.at)})`;
  view().innerHTML = `
    <p><a href="#/site/${esc(a.site_id)}">← ${esc(s.name || a.site_id)}</a></p>
    <h1>${esc(t("evidence"))} #${a.id} <span class="badge ${esc(a.severity)}">${esc(t(a.severity))}</span>
      <span class="${esc(a.status)}">${esc(t(a.status))}</span></h1>
    <div class="card"><dl class="facts">
      <dt>${esc(t("rule"))}</dt><dd>${esc(record.rule[`name_${state.lang}`] || record.rule.id)} <code class="muted">${esc(record.rule.id)}</code></dd>
      <dt>${esc(t("summary"))}</dt><dd>${esc(record.summary[state.lang])}</dd>
      <dt>${esc(t("site"))}</dt><dd>${esc(s.name)} (${esc(s.id)}), ${esc(s.address)}</dd>
      <dt>${esc(t("jurisdiction"))}</dt><dd>${esc(s.jurisdiction)}</dd>
      <dt>${esc(t("device"))}</dt><dd>${esc(a.device_id || "—")}</dd>
      <dt>${esc(t("parameter"))}</dt><dd>${esc(a.parameter ? pname(a.parameter) : "—")}</dd>
      <dt>${esc(t("standard"))}</dt><dd>${esc(lim.standard || "—")}</dd>
      <dt>${esc(t("clause"))}</dt><dd>${esc(lim.clause || "—")}</dd>
      <dt>${esc(t("limit"))}</dt><dd>${esc(lim.text || "—")}</dd>
      <dt>${esc(t("first"))}</dt><dd>${when(ep.start)}</dd>
      <dt>${esc(t("end"))}</dt><dd>${ep.ongoing ? `${esc(t("ongoing"))} (${esc(t("last"))} ${when(ep.last_seen)})` : when(ep.end)}</dd>
      <dt>${esc(t("duration"))}</dt><dd>${Math.floor(record.duration_s / 60)} ${esc(t("minutes"))}</dd>
      <dt>${esc(t("worst"))}</dt><dd>${esc(worst)}</dd>
      <dt>SHA-256</dt><dd class="hash">${esc(record.sha256)}</dd>
    </dl><p class="muted">${esc(t("tzOf"))} ${esc(zone)}</p></div>
    <div class="actions">${act}
      <textarea id="comment" placeholder="${esc(t("commentPlaceholder"))}"></textarea>
      <button class="btn secondary" id="do-comment">${esc(t("comment"))}</button>
      <button class="btn secondary" id="do-print">${esc(t("printEvidence"))}</button>
    </div>
    <h2>${esc(t("audit"))}</h2>
    <ul>${auditItems(record.audit.filter((e) => e.actor !== ESCALATION), zone)}</ul>
    <h2>${esc(t("notifications"))}</h2>
    <ul id="notifications">${auditItems(record.audit.filter((e) => e.actor === ESCALATION), zone) || `<li class="muted">${esc(t("noNotifications"))}</li>`}</ul>
    <h2>${esc(t("readings"))} (${record.readings.length})</h2>
    <table id="readings"><thead><tr><th>${esc(t("time"))}</th><th>${esc(t("parameter"))}</th><th>${esc(t("value"))}</th><th>${esc(t("flag"))}</th></tr></thead>
    <tbody>${record.readings.map((r) => `<tr class="${r.in_episode ? "in-episode" : ""}">
      <td>${fmtTime(r.ts, zone)}</td><td>${esc(pname(r.parameter))}</td><td>${fmtValue(r.value)}</td><td>${esc(r.flag)}</td></tr>`).join("")}</tbody></table>`;
  const post = async (action) => {
    const comment = document.getElementById("comment").value;
    await api(`/api/v1/alerts/${alertId}/${action}`, { method: "POST", body: JSON.stringify({ comment }) });
    route(true);
  };
  const on = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };
  on("do-ack", () => post("acknowledge"));
  on("do-resolve", () => post("resolve"));
  on("do-comment", () => post("comments"));
  on("do-print", () => printEvidence(alertId));
}

// Print the evidence record by itself (its own bilingual A4 page), not the dashboard around it.
async function printEvidence(alertId) {
  const html = await api(`/api/v1/alerts/${alertId}/evidence?format=html`);
  const old = document.getElementById("print-frame");
  if (old) old.remove();
  const frame = document.createElement("iframe");
  frame.id = "print-frame";
  frame.className = "print-frame";
  frame.title = t("evidence");
  frame.addEventListener("load", () => frame.contentWindow.print(), { once: true });
  frame.srcdoc = html;
  document.body.appendChild(frame);
}

// ---- routing ----------------------------------------------------------------------------------

async function route(quiet) {
  if (!state.token) return showLogin();
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (parts[0] === "site" && parts[1]) await sitePage(decodeURIComponent(parts[1]), PERIODS[parts[2]] ? parts[2] : "h24");
    else if (parts[0] === "alert" && parts[1]) await alertPage(Number(parts[1]));
    else await overview();
  } catch (e) {
    if (!quiet && state.token) view().innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function start() {
  try {
    state.me = await api("/api/v1/auth/me");
  } catch (e) {
    return;
  }
  document.getElementById("logout").hidden = false;
  document.getElementById("feed").hidden = false;
  document.body.classList.add("with-feed");
  applyLanguage();
  route();
  followStream();
}

document.getElementById("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("landun.lang", state.lang);
  applyLanguage();
  redrawFeed();
  if (state.token) route(); else showLogin();
});
document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => route());
applyLanguage();
if (state.token) start(); else showLogin();
