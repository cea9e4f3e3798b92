// rfstream view: the page. One WebSocket to the viewer (/ws); everything is drawn on one canvas.
// Time runs down the waterfall: the newest row is at the top. Detections are solid boxes in their
// label's colour (the same colours as `rfstream render`), labelled where a label fits without
// overlapping another. window.rfstreamViewer exposes what was drawn, for tests and for curious users.
"use strict";

const M = { left: 66, right: 92, top: 10, bottom: 44 }; // plot margins inside the canvas
const $ = (id) => document.getElementById(id);

const state = {
  hello: null,
  endpoint: Number(new URLSearchParams(location.search).get("endpoint") || 0),
  strips: [], // {t0_s, t1_s, f0_hz, f1_hz, rows, width, db_min, db_max, db_assumed, canvas}
  chunks: [], // detections messages
  tracks: { live: [], ended: [] },
  health: null,
  status: null,
  newest: null, // newest stream time seen (s)
  paused: false,
  viewEnd: null, // stream time at the top of the view when paused or scrolled
  secPerPx: 0.01,
  dirty: true,
  ws: null,
  labelsSeen: new Map(),
  drawn: [],
  connected: false,
};

// --- connection --------------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?endpoint=${state.endpoint}`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => { state.connected = true; setConn("ok", "connected"); };
  ws.onclose = () => {
    state.connected = false;
    setConn("bad", "viewer connection lost; retrying…");
    if (state.ws === ws) setTimeout(connect, 1000);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
    else onStrip(ev.data);
  };
}

function switchEndpoint(index) {
  state.endpoint = index;
  const url = new URL(location.href);
  url.searchParams.set("endpoint", String(index));
  history.replaceState(null, "", url);
  resetData();
  const old = state.ws;
  state.ws = null;
  if (old) old.close();
  connect();
}

function resetData() {
  state.strips = [];
  state.chunks = [];
  state.tracks = { live: [], ended: [] };
  state.health = null;
  state.newest = null;
  state.viewEnd = null;
  state.labelsSeen.clear();
  state.dirty = true;
}

function onJson(m) {
  switch (m.type) {
    case "hello":
      state.hello = m;
      if (!state.secPerPxSet) { state.secPerPx = m.row_s; state.secPerPxSet = true; }
      fillEndpoints(m);
      break;
    case "detections":
      state.chunks.push(m);
      for (const d of m.detections) state.labelsSeen.set(d.label, (state.labelsSeen.get(d.label) || 0) + 1);
      advance(m.t1_s);
      break;
    case "tracks":
      state.tracks = { live: m.live, ended: m.ended };
      renderTracks();
      break;
    case "health":
      state.health = m.health;
      renderHealth();
      break;
    case "status":
      state.status = m;
      renderHealth();
      renderBanner();
      break;
    case "reset":
      resetData();
      break;
  }
  state.dirty = true;
}

function onStrip(buffer) {
  const view = new DataView(buffer);
  const n = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const pixels = new Uint8Array(buffer, 4 + n);
  const { rows, width } = header;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, rows);
  const lut = state.hello.lut;
  for (let r = 0; r < rows; r++) {
    const src = (rows - 1 - r) * width; // newest row at the top
    const dst = r * width * 4;
    for (let c = 0; c < width; c++) {
      const rgb = lut[pixels[src + c]];
      const o = dst + c * 4;
      img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2]; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  header.canvas = canvas;
  state.strips.push(header);
  advance(header.t1_s);
  state.dirty = true;
}

function advance(t) {
  if (!(t >= (state.newest ?? -Infinity))) return;
  state.newest = t;
  const keep = (state.hello ? state.hello.history_s : 120);
  const oldest = t - keep;
  while (state.strips.length && state.strips[0].t1_s < oldest) state.strips.shift();
  while (state.chunks.length && state.chunks[0].t1_s < oldest) state.chunks.shift();
}

// --- geometry ----------------------------------------------------------------------------------
function band() {
  const s = state.strips[state.strips.length - 1];
  if (s) return [s.f0_hz, s.f1_hz];
  const c = state.chunks[state.chunks.length - 1];
  if (c && isFinite(c.f0_hz) && isFinite(c.f1_hz)) return [c.f0_hz, c.f1_hz];
  return null;
}

function centre() {
  const c = state.chunks[state.chunks.length - 1];
  if (c && isFinite(c.center_freq_hz)) return c.center_freq_hz;
  const b = band();
  return b ? (b[0] + b[1]) / 2 : null;
}

function viewTop() {
  if (state.paused && state.viewEnd !== null) return state.viewEnd;
  return state.newest ?? 0;
}

function oldestKept() {
  const a = state.strips.length ? state.strips[0].t0_s : Infinity;
  const b = state.chunks.length ? state.chunks[0].t0_s : Infinity;
  return Math.min(a, b);
}

// --- drawing -----------------------------------------------------------------------------------
const canvas = $("waterfall");
const ctx = canvas.getContext("2d");

function draw() {
  const W = canvas.width, H = canvas.height;
  const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
  ctx.fillStyle = "#0b0c0e";
  ctx.fillRect(0, 0, W, H);
  ctx.fillStyle = "#101216";
  ctx.fillRect(M.left, M.top, pw, ph);
  const b = band();
  const top = viewTop();
  const spp = state.secPerPx;
  const y = (t) => M.top + (top - t) / spp;
  state.drawn = [];
  if (b) {
    const [f0, f1] = b;
    const x = (f) => M.left + ((f - f0) / (f1 - f0)) * pw;
    ctx.save();
    ctx.beginPath();
    ctx.rect(M.left, M.top, pw, ph);
    ctx.clip();
    ctx.imageSmoothingEnabled = false;
    const bottomT = top - ph * spp;
    for (const s of state.strips) {
      if (s.t1_s < bottomT || s.t0_s > top) continue;
      const yTop = y(s.t1_s), yBot = y(s.t0_s);
      ctx.drawImage(s.canvas, x(s.f0_hz), yTop, x(s.f1_hz) - x(s.f0_hz), Math.max(1, yBot - yTop));
    }
    drawBoxes(x, y, bottomT, top);
    ctx.restore();
    drawFreqAxis(f0, f1, x, H);
  }
  drawTimeAxis(top, spp, ph);
  drawColourBar(W, H);
  renderLegend();
}

function colourOf(label) {
  const labels = state.hello ? state.hello.labels : {};
  if (labels[label]) return labels[label];
  const extra = ["#9b7bff", "#38d9a9", "#ffb86b", "#c0eb75", "#74c0fc", "#f783ac"];
  let sum = 0;
  for (const ch of label) sum += ch.charCodeAt(0);
  return extra[sum % extra.length];
}

function drawBoxes(x, y, bottomT, top) {
  const boxes = [];
  for (const c of state.chunks) {
    if (c.t1_s < bottomT || c.t0_s > top) continue;
    for (const d of c.detections) {
      if (d.t_stop_s < bottomT || d.t_start_s > top) continue;
      let x0 = x(d.f_low_hz), x1 = x(d.f_high_hz), y0 = y(d.t_stop_s), y1 = y(d.t_start_s);
      if (x1 - x0 < 3) { const m = (x0 + x1) / 2; x0 = m - 1.5; x1 = m + 1.5; }
      if (y1 - y0 < 3) { const m = (y0 + y1) / 2; y0 = m - 1.5; y1 = m + 1.5; }
      boxes.push({ d, seq: c.seq, x0, y0, x1, y1 });
    }
  }
  ctx.lineJoin = "miter";
  for (const bx of boxes) {
    const w = bx.x1 - bx.x0, h = bx.y1 - bx.y0;
    ctx.setLineDash(bx.d.low_confidence ? [4, 3] : []);
    ctx.strokeStyle = "rgba(0,0,0,0.85)";
    ctx.lineWidth = 3.2;
    ctx.strokeRect(bx.x0, bx.y0, w, h);
    ctx.strokeStyle = colourOf(bx.d.label);
    ctx.lineWidth = 1.6;
    ctx.strokeRect(bx.x0, bx.y0, w, h);
  }
  ctx.setLineDash([]);
  // labels: best scores first, each at the first spot free of the labels already placed
  ctx.font = "bold 11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  const placed = [];
  const order = boxes.slice().sort((a, b) => b.d.score - a.d.score);
  const pw = canvas.width - M.right;
  const named = []; // boxes that got a label: a signal seen chunk after chunk is named once nearby
  for (const bx of order) {
    const text = `${bx.d.label} ${bx.d.score.toFixed(2)}`;
    const repeat = named.some((o) => o.d.label === bx.d.label && Math.abs(o.x0 - bx.x0) < 4 &&
      Math.abs(o.x1 - bx.x1) < 4 && Math.abs(o.y0 - bx.y0) < 90);
    const w = ctx.measureText(text).width + 4, h = 13;
    const spots = [
      [bx.x0, bx.y0 - h - 1], [bx.x0, bx.y1 + 1], [bx.x1 + 2, bx.y0], [bx.x0 - w - 2, bx.y0], [bx.x0 + 1, bx.y0 + 1],
    ];
    let at = null;
    for (const [sx, sy] of repeat ? [] : spots) {
      const r = [sx, sy, sx + w, sy + h];
      if (r[0] < M.left || r[2] > pw || r[1] < M.top || r[3] > canvas.height - M.bottom) continue;
      if (placed.some((p) => r[0] < p[2] && p[0] < r[2] && r[1] < p[3] && p[1] < r[3])) continue;
      at = r;
      break;
    }
    const entry = {
      label: bx.d.label, score: bx.d.score, seq: bx.seq,
      t_start_s: bx.d.t_start_s, t_stop_s: bx.d.t_stop_s, f_low_hz: bx.d.f_low_hz, f_high_hz: bx.d.f_high_hz,
      box: [bx.x0, bx.y0, bx.x1, bx.y1], text: at ? text : null, text_at: at, colour: colourOf(bx.d.label),
      repeat, detail: bx.d,
    };
    state.drawn.push(entry);
    if (!at) continue;
    placed.push(at);
    named.push(bx);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0,0,0,0.9)";
    ctx.strokeText(text, at[0] + 2, at[1] + 1);
    ctx.fillStyle = colourOf(bx.d.label);
    ctx.fillText(text, at[0] + 2, at[1] + 1);
  }
}

function niceStep(span, target) {
  const raw = span / target;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function drawFreqAxis(f0, f1, x, H) {
  const pw = canvas.width - M.left - M.right;
  const spanMHz = (f1 - f0) / 1e6;
  const step = niceStep(spanMHz, Math.max(3, Math.floor(pw / 110)));
  let decimals = 0;
  while (decimals < 6 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) decimals++;
  ctx.fillStyle = "#cfd3d8";
  ctx.strokeStyle = "#6b717a";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  const yAxis = H - M.bottom;
  for (let v = Math.ceil(f0 / 1e6 / step) * step; v <= f1 / 1e6 + 1e-9; v += step) {
    const px = x(v * 1e6);
    ctx.beginPath(); ctx.moveTo(px, yAxis); ctx.lineTo(px, yAxis + 5); ctx.stroke();
    ctx.fillText(v.toFixed(decimals), px, yAxis + 7);
  }
  const fc = centre();
  if (fc !== null) {
    const px = x(fc);
    ctx.fillStyle = "#ffffff";
    ctx.beginPath(); ctx.moveTo(px - 5, yAxis); ctx.lineTo(px + 5, yAxis); ctx.lineTo(px, yAxis - 7); ctx.fill();
  }
  ctx.textAlign = "left";
  ctx.fillStyle = "#9aa0a6";
  const title = fc !== null ? `frequency (MHz)   centre ${(fc / 1e6).toFixed(4)} MHz ▲` : "frequency (MHz)";
  ctx.fillText(title, M.left, yAxis + 24);
  ctx.textAlign = "start";
}

function drawTimeAxis(top, spp, ph) {
  const span = ph * spp;
  const step = niceStep(span, 8);
  const decimals = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.strokeStyle = "#6b717a";
  ctx.fillStyle = "#cfd3d8";
  for (let t = Math.floor(top / step) * step; t >= top - span - 1e-9; t -= step) {
    const py = M.top + (top - t) / spp;
    if (py < M.top - 0.5 || t < -1e-9) continue; // nothing before the stream began
    ctx.beginPath(); ctx.moveTo(M.left - 5, py); ctx.lineTo(M.left, py); ctx.stroke();
    ctx.fillText(`${t.toFixed(decimals)}`, M.left - 7, py);
  }
  ctx.save();
  ctx.translate(14, M.top + ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillStyle = "#9aa0a6";
  ctx.fillText("time since the stream began (s), newest at the top", 0, 0);
  ctx.restore();
  ctx.textAlign = "start";
}

function drawColourBar(W, H) {
  if (!state.hello) return;
  const s = state.strips[state.strips.length - 1];
  const lo = s ? s.db_min : -6, hi = s ? s.db_max : 44;
  const x0 = W - M.right + 14, bw = 14, y0 = M.top, bh = H - M.top - M.bottom;
  const lut = state.hello.lut;
  for (let i = 0; i < bh; i++) {
    const v = lut[Math.round(255 * (1 - i / (bh - 1)))];
    ctx.fillStyle = `rgb(${v[0]},${v[1]},${v[2]})`;
    ctx.fillRect(x0, y0 + i, bw, 1);
  }
  ctx.strokeStyle = "#6b717a";
  ctx.strokeRect(x0 - 0.5, y0 - 0.5, bw + 1, bh + 1);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#cfd3d8";
  ctx.textBaseline = "middle";
  const step = niceStep(hi - lo, 6);
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) {
    const py = y0 + (1 - (v - lo) / (hi - lo)) * bh;
    ctx.fillText(`${Math.round(v)}`, x0 + bw + 4, py);
  }
  ctx.save();
  ctx.translate(W - 10, y0 + bh / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillStyle = "#9aa0a6";
  ctx.fillText(`dB above the noise floor${s && s.db_assumed ? " (assumed scale)" : ""}`, 0, 0);
  ctx.restore();
}

function renderLegend() {
  const el = $("legend");
  const inView = new Map();
  for (const e of state.drawn) inView.set(e.label, (inView.get(e.label) || 0) + 1);
  const labels = [...state.labelsSeen.keys()].sort();
  const key = labels.map((l) => `${l}:${inView.get(l) || 0}`).join(",");
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...labels.map((l) => {
    const item = document.createElement("span");
    item.className = "item";
    item.dataset.label = l;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.borderColor = colourOf(l);
    item.append(sw, `${l} (${inView.get(l) || 0} in view)`);
    return item;
  }));
  if (!labels.length) el.textContent = "no detections yet";
}

// --- panels ------------------------------------------------------------------------------------
function fmt(v, d = 1) { return typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–"; }

function renderHealth() {
  const h = state.health || {};
  const st = state.status || {};
  const lat = (h.latency_ms || {}).end_to_end || (h.latency_ms || {}).total || {};
  const chunks = h.chunks || {};
  const shed = chunks.shed_by_reason || {};
  const samples = h.samples || {};
  const pub = h.publish || {};
  const me = st.this_client || {};
  const rtf = h.realtime_factor;
  const rows = [
    ["real-time factor", fmt(rtf, 2), rtf !== undefined && rtf < 1 ? "bad" : ""],
    ["latency p50 / p99", `${fmt(lat.p50, 0)} / ${fmt(lat.p99, 0)} ms`, ""],
    ["chunks", `${chunks.processed ?? "–"} processed, ${chunks.on_time ?? "–"} on time`, ""],
    ["deadline", `${chunks.late ?? "–"} late, ${shed.deadline ?? "–"} shed`, (chunks.late || shed.deadline) ? "warn" : ""],
    ["degrade level", `${h.degrade_level ?? "–"}`, h.degrade_level ? "warn" : ""],
    ["drops", `${chunks.shed ?? "–"} chunks shed, ${samples.lost_overflow ?? "–"} samples lost, ${pub.dropped ?? "–"} msgs refused`,
      (chunks.shed || samples.lost_overflow || pub.dropped) ? "warn" : ""],
    ["seen by this viewer", `${(st.counters || {}).seq_gaps ?? 0} chunks missed, ${me.dropped ?? 0} dropped for this browser`,
      ((st.counters || {}).seq_gaps || me.dropped) ? "warn" : ""],
    ["source", `${h.device_state ?? "–"}`, h.device_state && h.device_state !== "streaming" ? "warn" : ""],
    ["uptime", h.uptime_s !== undefined ? `${fmt(h.uptime_s, 0)} s` : "–", ""],
    ["detections", `${h.detections ?? "–"}`, ""],
    ["schema", (st.schema_versions || []).map((v) => `v${v}`).join(", ") || "–", (st.counters || {}).newer_schema ? "warn" : ""],
    ["last message", st.last_message_age_s === null || st.last_message_age_s === undefined ? "none yet" : `${fmt(st.last_message_age_s, 1)} s ago`,
      st.last_message_age_s > 3 ? "bad" : ""],
  ];
  const tbody = $("health").tBodies[0];
  tbody.replaceChildren(...rows.map(([k, v, cls]) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = k;
    const b = document.createElement("td"); b.textContent = v; if (cls) b.className = cls;
    tr.append(a, b);
    return tr;
  }));
  $("health-raw").textContent = JSON.stringify(state.health, null, 1);
  const age = st.last_message_age_s;
  if (!state.connected) return;
  if (age === null || age === undefined) setConn("warn", `waiting for ${st.address || "the publisher"}`);
  else if (age > 3) setConn("bad", `no messages from ${st.address} for ${fmt(age, 0)} s`);
  else setConn("ok", `live from ${st.address}`);
}

function renderBanner() {
  const st = state.status || {};
  const el = $("banner");
  if (st.spectrogram === "absent") {
    el.innerHTML = "This publisher does not send the <b>spectrogram</b> topic, so there is no waterfall " +
      "(detections are still drawn). Turn it on: <code>rfstream replay FILE --realtime --spectrogram</code>, " +
      "or set <code>publish.spectrogram = true</code> in the config (or <code>--set publish.spectrogram=true</code>) " +
      "and restart the publisher.";
    el.hidden = false;
  } else if (st.spectrogram === "paused") {
    el.innerHTML = "The publisher stopped sending the spectrogram to keep up (degrade level 2); " +
      "it resumes when the load falls. Detections are still drawn.";
    el.hidden = false;
  } else if (st.last_message_age_s === null && st.address) {
    el.innerHTML = `Waiting for messages from <code>${st.address}</code>: is <code>rfstream run</code> or ` +
      "<code>rfstream replay --realtime</code> publishing there?";
    el.hidden = false;
  } else {
    el.hidden = true;
  }
}

function renderTracks() {
  const tbody = $("tracks").tBodies[0];
  const row = (t, ended) => {
    const tr = document.createElement("tr");
    if (ended) tr.className = "ended";
    tr.dataset.trackId = t.track_id;
    tr.dataset.label = t.label;
    const sw = `<span class="swatch" style="border-color:${colourOf(t.label)}"></span> `;
    const cells = [
      t.track_id, sw + t.label,
      `${fmt(t.f_low_hz / 1e6, 4)} – ${fmt(t.f_high_hz / 1e6, 4)}`,
      fmt((t.f_high_hz - t.f_low_hz) / 1e3, 1), fmt(t.first_seen_s, 2), fmt(t.last_seen_s, 2),
      t.hits, fmt(t.score, 2), t.state,
    ];
    tr.innerHTML = cells.map((c) => `<td>${c}</td>`).join("");
    return tr;
  };
  const live = state.tracks.live.slice().sort((a, b) => b.last_seen_s - a.last_seen_s).slice(0, 300);
  const ended = state.tracks.ended.slice(0, 20);
  tbody.replaceChildren(...live.map((t) => row(t, false)), ...ended.map((t) => row(t, true)));
  $("tracks-count").textContent = `(${state.tracks.live.length} live, ${state.tracks.ended.length} ended lately)`;
}

function fillEndpoints(m) {
  const sel = $("endpoint");
  sel.replaceChildren(...m.endpoints.map((e) => {
    const o = document.createElement("option");
    o.value = e.index; o.textContent = e.address;
    return o;
  }));
  sel.value = String(m.endpoint);
}

function setConn(cls, text) {
  $("conn").className = `dot ${cls}`;
  $("conn-text").textContent = text;
}

// --- controls ------------------------------------------------------------------------------------
function setPaused(paused, end) {
  state.paused = paused;
  state.viewEnd = paused ? (end ?? state.newest) : null;
  $("pause").classList.toggle("active", paused);
  $("pause").textContent = paused ? "Paused" : "Pause";
  state.dirty = true;
}

function scrollBack(seconds) {
  if (state.newest === null) return;
  const span = Math.max(0, state.newest - oldestKept());
  const back = Math.max(0, Math.min(span, seconds));
  setPaused(back > 0 || state.paused, state.newest - back);
}

$("pause").onclick = () => setPaused(!state.paused);
$("live").onclick = () => { setPaused(false); $("scroll").value = 0; };
$("scroll").oninput = (e) => scrollBack(Number(e.target.value));
$("zoom-in").onclick = () => { state.secPerPx = Math.max(0.001, state.secPerPx / 2); state.dirty = true; };
$("zoom-out").onclick = () => { state.secPerPx = Math.min(0.2, state.secPerPx * 2); state.dirty = true; };
$("endpoint").onchange = (e) => switchEndpoint(Number(e.target.value));
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const back = (state.newest ?? 0) - viewTop() + (e.deltaY > 0 ? 1 : -1) * 40 * state.secPerPx;
  scrollBack(back);
}, { passive: false });
canvas.addEventListener("mousemove", (e) => {
  const r = canvas.getBoundingClientRect();
  const px = e.clientX - r.left, py = e.clientY - r.top;
  const hit = state.drawn.find((d) => px >= d.box[0] - 2 && px <= d.box[2] + 2 && py >= d.box[1] - 2 && py <= d.box[3] + 2);
  const tip = $("tooltip");
  if (!hit) { tip.hidden = true; return; }
  const d = hit.detail;
  const alts = (d.alternatives || []).map((a) => `${a.label} ${a.score.toFixed(2)}`).join(", ");
  tip.textContent = [
    `${d.label}  score ${d.score.toFixed(2)}${d.low_confidence ? "  (low confidence)" : ""}`,
    alts ? `runner-up: ${alts}` : null,
    `${(d.f_low_hz / 1e6).toFixed(4)} – ${(d.f_high_hz / 1e6).toFixed(4)} MHz  (${((d.f_high_hz - d.f_low_hz) / 1e3).toFixed(1)} kHz)`,
    `${d.t_start_s.toFixed(3)} – ${d.t_stop_s.toFixed(3)} s`,
    `found by ${(d.found_by.length ? d.found_by : [d.detector]).join(", ")}`,
    d.presence !== undefined ? `a signal is there: ${d.presence.toFixed(2)}` : null,
    d.track_id !== undefined && d.track_id !== null ? `track ${d.track_id}` : null,
  ].filter(Boolean).join("\n");
  tip.style.left = `${px + 14}px`;
  tip.style.top = `${py + 10}px`;
  tip.hidden = false;
});
canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });

function frame() {
  const span = state.newest === null ? 0 : Math.max(0, state.newest - oldestKept());
  $("scroll").max = String(Math.max(60, Math.ceil(span)));
  if (!state.paused) $("scroll").value = 0;
  $("scroll-text").textContent = `${fmt((state.newest ?? 0) - viewTop(), 1)} s`;
  $("zoom-text").textContent = `${fmt(((canvas.height - M.top - M.bottom) * state.secPerPx), 1)} s on screen`;
  if (state.dirty && state.hello) {
    state.dirty = false;
    draw();
    state.frames = (state.frames || 0) + 1;
  }
  requestAnimationFrame(frame);
}

window.rfstreamViewer = {
  state,
  drawn: () => state.drawn.map(({ detail, ...rest }) => rest),
  frames: () => state.frames || 0,
  pause: () => setPaused(true),
  live: () => setPaused(false),
  scrollBack,
};

connect();
requestAnimationFrame(frame);
