// The scribe console: sign-in, rooms with live state, the room view (live audio, level,
// session timeline, cues, replay and seek), and the clinic IT view for admins.
// Everything audible is decrypted here; the relay only ever hands over sealed frames.

import {
  b64decode, b64encode, concat, identityFromPrivate, loadOrCreateIdentity, openEnvelope,
  parseHeader, sha256Hex, unwrapSessionKey, fromHex,
} from "./crypto.js";
import { Receiver } from "./receiver.js";
import { Player } from "./player.js";
import { renderAdmin } from "./admin.js";

const TEST = new URLSearchParams(location.search).has("test");
const STALE_STATUS_MS = 10000;
const CHIME_REPEAT_MS = 20000;
const FRESH_CUE_US = 120e6; // an archived cue younger than this still alerts
const $ = (id) => document.getElementById(id);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function fmtDur(s) {
  s = Math.max(0, s);
  const m = Math.floor(s / 60);
  const r = Math.floor(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(r).padStart(2, "0")}`
    : `${m}:${String(r).padStart(2, "0")}`;
}

export const fmtClock = (us) => new Date(us / 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const nowMs = () => performance.timeOrigin + performance.now();

const STATE_LABEL = {
  live: "Live", paused: "Privacy pause", offline: "Offline", catching_up: "Catching up", idle: "Idle",
};

/** Mirror of cloud_relay.console_api.room_state, fed by unit_status messages. */
export function roomState(status, ageMs) {
  if (!status) return { state: "offline", buffered_s: 0 };
  const buffered = Number((status.spool || {}).seconds || 0);
  if (!status.online || status.link === "lost" || status.link === "down") return { state: "offline", buffered_s: buffered };
  if (ageMs !== null && ageMs > STALE_STATUS_MS) return { state: "offline", buffered_s: buffered };
  if (status.capture === "paused") return { state: "paused", buffered_s: buffered };
  if (buffered > 2) return { state: "catching_up", buffered_s: buffered };
  if (status.capture === "live") return { state: "live", buffered_s: buffered };
  return { state: "idle", buffered_s: buffered };
}

function stateText(r) {
  const st = r.state;
  if (st === "offline") return r.buffered_s > 0.5 ? `Offline · ${r.estimate ? "~" : ""}${r.buffered_s.toFixed(0)} s buffered on unit` : "Offline";
  if (st === "catching_up") return `Catching up · ${r.buffered_s.toFixed(0)} s to go`;
  return STATE_LABEL[st] || st;
}

// ---------------------------------------------------------------------- state

const app = {
  token: sessionStorage.getItem("scribelink.token"),
  me: null,
  identity: null,
  receiver: null,
  player: null,
  ws: null,
  wsUp: false,
  cursor: 0,
  rooms: new Map(), // unit id -> {id, room, status, statusAtMs, openSession, archive: []}
  selectedUnit: null,
  selectedSession: null,
  cues: new Map(), // "session:cue_id" -> cue
  acked: new Set(JSON.parse(localStorage.getItem("scribelink.acked") || "[]")),
  pendingAcks: [],
  errors: [],
  lastChime: 0,
  ready: false,
  dirty: true,
  loaded: new Set(),
  unreadable: new Set(), // sessions sealed for another key of this scribe
  latencyMs: [],
};

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", ...(app.token ? { Authorization: `Bearer ${app.token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && app.me) {
    signOut("Your sign-in expired. Sign in again.");
    throw new Error("signed out");
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    const err = new Error(`${method} ${path}: ${detail}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

// ---------------------------------------------------------------------- sign-in

function showSignIn(message = "") {
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("signin-user").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $("signin-error").textContent = "";
  chimeContext(); // a user gesture: the chime may sound later without one
  try {
    const r = await api("POST", "/api/login", { user: $("signin-user").value.trim(), password: $("signin-password").value });
    app.token = r.token;
    sessionStorage.setItem("scribelink.token", r.token);
    $("signin-password").value = "";
    await start();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? "Wrong user or password." : `Could not sign in: ${e.message}`;
  }
}

function signOut(message = "") {
  sessionStorage.removeItem("scribelink.token");
  app.token = null;
  app.me = null;
  app.ws?.close();
  app.player?.stop();
  location.hash = "";
  if (message) sessionStorage.setItem("scribelink.msg", message);
  location.reload();
}

async function start() {
  app.me = await api("GET", "/api/me");
  $("signin").hidden = true;
  $("console").hidden = false;
  $("who").textContent = `${app.me.name} · ${app.me.role}`;
  if (app.me.role === "admin") {
    $("key-state").hidden = true;
    $("link-state").hidden = true;
    renderAdmin($("view"), { api, h, fmtClock, fmtDur, roomState, stateText });
    app.ready = true;
    return;
  }
  if (app.me.role !== "scribe") {
    $("view").replaceChildren(h("div", { class: "empty" }, "This console is for scribes and clinic admins."));
    return;
  }
  app.identity = await loadOrCreateIdentity(app.me.user);
  const pub = b64encode(app.identity.publicRaw);
  const known = app.me.public_keys || (app.me.public_key ? [app.me.public_key] : []);
  if (!known.includes(pub)) {
    // a new device: new sessions are sealed to it too; older ones open where they were sealed
    app.keyNotice = known.length
      ? "This browser is now one of your devices. Sessions sealed before now open only on the devices you used then."
      : null;
    await api("PUT", "/api/me/key", { public_key: pub });
  }
  $("key-state").textContent = `key ${app.identity.keyId.slice(0, 8)}`;
  app.receiver = new Receiver(app.identity, {
    onOpen: onSessionOpen, onAudio, onEvent, onMeta: () => { app.dirty = true; }, onError,
  });
  app.player = new Player({ onTick: () => { app.dirty = true; }, fetchRange });
  const rooms = await api("GET", "/api/console/rooms");
  app.cursor = rooms.head;
  for (const u of rooms.units) {
    app.rooms.set(u.id, { id: u.id, room: u.room || u.id, status: u.status, statusAtMs: u.status_age_s === null ? null : nowMs() - u.status_age_s * 1000, openSession: u.open_session, archive: [] });
  }
  const want = location.hash.slice(1);
  app.selectedUnit = app.rooms.has(want) ? want : (rooms.units[0] || {}).id || null;
  renderScribe();
  connect();
  for (const r of app.rooms.values()) if (r.openSession) loadSession(r.openSession, { backfill: true }).catch(reportLoadError);
  if (app.selectedUnit) loadArchiveList(app.selectedUnit);
  app.ready = true;
  requestAnimationFrame(frame);
  setInterval(() => { app.dirty = true; maybeRechime(); }, 500);
  setInterval(() => evict(), 5000);
  setInterval(() => refreshRooms().catch(() => {}), 15000);
}

/** Pick up assignment changes (rooms given or taken away) without a reload. */
async function refreshRooms() {
  const rooms = await api("GET", "/api/console/rooms");
  const ids = new Set(rooms.units.map((u) => u.id));
  let changed = false;
  for (const u of rooms.units) {
    const r = app.rooms.get(u.id);
    if (!r) {
      app.rooms.set(u.id, { id: u.id, room: u.room || u.id, status: u.status, statusAtMs: u.status_age_s === null ? null : nowMs() - u.status_age_s * 1000, openSession: u.open_session, archive: [] });
      if (u.open_session) loadSession(u.open_session, { backfill: true }).catch(reportLoadError);
      changed = true;
    } else if (r.room !== (u.room || u.id)) {
      r.room = u.room || u.id;
      changed = true;
    }
  }
  for (const id of [...app.rooms.keys()]) {
    if (!ids.has(id)) {
      app.rooms.delete(id);
      if (app.player.session?.unit === id) app.player.stop();
      changed = true;
    }
  }
  if (changed) {
    if (!app.rooms.has(app.selectedUnit)) app.selectedUnit = app.rooms.keys().next().value || null;
    renderScribe();
  }
}

// ---------------------------------------------------------------------- live delivery

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  app.ws = ws;
  let delay = app.wsDelay || 500;
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: app.token, cursor: app.cursor }));
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") {
      const u8 = new Uint8Array(e.data);
      if (u8.length < 8) return;
      app.cursor = Math.max(app.cursor, Number(new DataView(e.data).getBigUint64(0)));
      app.receiver.envelope(u8.subarray(8), "live");
      return;
    }
    const m = JSON.parse(e.data);
    if (typeof m.cursor === "number") app.cursor = Math.max(app.cursor, m.cursor);
    if (m.type === "welcome") {
      app.wsUp = true;
      app.wsDelay = 500;
      setLink();
      for (const a of app.pendingAcks.splice(0)) ws.send(JSON.stringify(a));
    } else if (m.type === "unit_status") {
      const r = app.rooms.get(m.unit);
      if (r) {
        const st = m.status || {};
        if (st.online && st.link !== "down") {
          r.recording = st.capture === "live" || st.capture === "paused";
          r.lastSpoolS = Number((st.spool || {}).seconds || 0);
          r.offlineSinceMs = null;
        } else if (!r.offlineSinceMs) {
          r.offlineSinceMs = nowMs();
        }
        r.status = m.status;
        r.statusAtMs = nowMs();
        if (m.status && m.status.session && m.status.session !== r.openSession && m.status.capture !== "idle") r.openSession = m.status.session;
        app.dirty = true;
        renderRooms();
      }
    } else if (m.type === "session_open" || m.type === "session_close" || m.type === "gap") {
      if (m.type === "session_close") {
        const r = app.rooms.get(m.unit);
        if (r && r.openSession === m.session) r.openSession = null;
      }
      app.receiver.sessionItem(m, "live");
    } else if (m.type === "error") {
      onError({ error: `relay: ${m.error}` });
    }
  };
  ws.onclose = (e) => {
    app.wsUp = false;
    setLink();
    if (e.code === 4401) return signOut("Your sign-in expired. Sign in again.");
    if (!app.me) return;
    app.wsDelay = Math.min(delay * 2, 5000);
    setTimeout(connect, delay);
  };
}

function setLink() {
  const el = $("link-state");
  el.className = `chip ${app.wsUp ? "ok" : "bad"}`;
  el.textContent = app.wsUp ? "relay connected" : "reconnecting…";
}

async function loadSession(session, { backfill = false } = {}) {
  if (app.loaded.has(session) && !backfill) return;
  app.loaded.add(session);
  let first;
  try {
    first = await api("GET", `/api/sessions/${session}/items?from_seq=0&limit=1000`);
  } catch (e) {
    if (e.status === 403) {
      app.unreadable.add(session);
      renderEvents();
      return;
    }
    throw e;
  }
  await feedPage(first, true);
  let next = first.next_seq;
  while (backfill && next !== null && next !== undefined) {
    const s = app.receiver.sessions.get(session);
    if (s && s.chunks.size > s.maxSeq) break; // live filled everything in
    const page = await api("GET", `/api/sessions/${session}/items?from_seq=${next}&limit=1000&events=false`);
    await feedPage(page, false);
    next = page.next_seq;
  }
  app.dirty = true;
}

async function feedPage(page, withMeta) {
  const rx = app.receiver;
  if (withMeta && page.session_open) rx.sessionItem(page.session_open, "archive");
  if (withMeta) for (const m of page.meta) rx.sessionItem(m, "archive");
  for (const e of page.events || []) rx.envelope(b64decode(e.frame), "archive");
  for (const a of page.audio) rx.envelope(b64decode(a.frame), "archive");
  await rx.chain;
}

async function fetchRange(s, fromSeq) {
  const page = await api("GET", `/api/sessions/${s.session}/items?from_seq=${fromSeq}&limit=500&events=false`);
  await feedPage(page, false);
  // what the relay does not have yet (still on its way, or lost) is played over, not waited on
  const first = page.audio.length ? page.audio[0].seq : fromSeq + 1;
  for (let q = fromSeq; q < first; q++) if (!s.chunks.get(q)?.pcm) s.skipped.add(q);
}

function reportLoadError(e) {
  onError({ error: "archive", detail: e.message });
}

async function loadArchiveList(unitId) {
  try {
    const list = await api("GET", `/api/console/units/${unitId}/sessions`);
    const r = app.rooms.get(unitId);
    if (r) r.archive = list;
    renderArchive();
  } catch (e) {
    reportLoadError(e);
  }
}

// Decoded audio is kept where a scribe is likely to listen: the last minutes of each open
// session, and around the playhead of the one being played. The rest is dropped from
// memory (a clinic day would not fit) and fetched again, sealed, if they seek there.
const KEEP = { liveS: 120, behindS: 600, aheadS: 120 };

function evict(keep = KEEP) {
  let dropped = 0;
  for (const s of app.receiver.sessions.values()) {
    const per = s.chunkSamples / s.sampleRate;
    const spans = [];
    if (!s.close) spans.push([s.maxSeq - keep.liveS / per, s.maxSeq]);
    if (s.session === app.selectedSession && !s.close) spans.push([s.maxSeq - keep.behindS / per, s.maxSeq]);
    if (app.player.session === s && app.player.mode !== "stopped") {
      const q = Math.floor(app.player.playedSample / s.chunkSamples);
      spans.push([q - keep.behindS / per, q + keep.aheadS / per]);
    }
    for (const [q, c] of s.chunks) {
      if (c.pcm && !spans.some(([a, b]) => q >= a && q <= b)) {
        c.pcm = null;
        dropped += 1;
      }
    }
  }
  return dropped;
}

// ---------------------------------------------------------------------- receiver callbacks

function onSessionOpen(s, via) {
  const r = app.rooms.get(s.unit);
  if (!r) return;
  if (via === "live") {
    r.openSession = s.session;
    // follow the room into its new session if we were listening live to it
    if (app.selectedUnit === s.unit) {
      const following = app.player.mode === "live" && app.player.session && app.player.session.unit === s.unit;
      const shown = app.selectedSession ? app.receiver.sessions.get(app.selectedSession) : null;
      if (!shown || following || shown.close) app.selectedSession = s.session;
      renderEvents();
      if (following) app.player.live(s);
      loadArchiveList(s.unit);
    }
  }
  if (app.selectedUnit === s.unit && !app.selectedSession) app.selectedSession = s.session;
  app.dirty = true;
}

function onAudio(s, header, pcm, via) {
  if (via === "live") {
    app.player.pushLive(s, header.seq, pcm);
    // capture (first sample of the chunk, unit clock) to decoded here: one box in tests
    app.latencyMs.push(Date.now() - header.captureUs / 1000);
    if (app.latencyMs.length > 5000) app.latencyMs.shift();
  }
  app.dirty = true;
}

function onEvent(s, ev, via) {
  if (ev.kind === "cue") addCue(s, ev, via);
  app.dirty = true;
  if (s.unit === app.selectedUnit) renderEvents();
}

function onError(rec) {
  if (rec.error === "session_not_wrapped_for_me") {
    app.unreadable.add(rec.session);
    renderEvents();
  }
  app.errors.push({ ...rec, at: Date.now() });
  if (app.errors.length > 200) app.errors.shift();
  app.dirty = true;
}

// ---------------------------------------------------------------------- cues

function addCue(s, ev, via) {
  const key = `${s.session}:${ev.cue_id}`;
  if (app.cues.has(key)) return;
  const fresh = via === "live" || Date.now() * 1000 - ev.at_us < FRESH_CUE_US;
  const cue = { key, session: s.session, unit: s.unit, room: app.rooms.get(s.unit)?.room || s.unit, cue_id: ev.cue_id, seq: ev.seq,
    at_us: ev.at_us, t_s: ev.t_s, recv_ms: ev.recv_ms, acked: app.acked.has(key) || !fresh, shown_ms: null, paint_ms: null };
  app.cues.set(key, cue);
  if (!cue.acked) {
    renderBanner();
    renderRooms();
    cue.shown_ms = nowMs();
    requestAnimationFrame(() => { cue.paint_ms = nowMs(); });
    chime();
    document.title = `● Cue — ${cue.room} · Scribelink`;
  }
}

const openCues = () => [...app.cues.values()].filter((c) => !c.acked).sort((a, b) => a.at_us - b.at_us);

function ack(cue) {
  if (!cue || cue.acked) return;
  cue.acked = true;
  cue.acked_ms = nowMs();
  app.acked.add(cue.key);
  localStorage.setItem("scribelink.acked", JSON.stringify([...app.acked].slice(-500)));
  const msg = { type: "cue_ack", unit: cue.unit, session: cue.session, cue_id: cue.cue_id, event_seq: cue.seq };
  if (app.wsUp && app.ws.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(msg));
  else app.pendingAcks.push(msg);
  if (!openCues().length) document.title = "Scribelink console";
  renderBanner();
  renderRooms();
  renderEvents();
}

async function replayBefore(cue, seconds = 15) {
  if (!cue) return;
  selectRoom(cue.unit, cue.session);
  const s = app.receiver.sessions.get(cue.session);
  if (!s) return;
  const seq = s.seqAtTime(Math.max(0, cue.t_s - seconds));
  await app.player.replay(s, seq * s.chunkSamples);
  app.dirty = true;
}

let chimeCtx = null;
function chimeContext() {
  if (!chimeCtx) chimeCtx = new AudioContext();
  if (chimeCtx.state !== "running") chimeCtx.resume();
  return chimeCtx;
}

function chime() {
  app.lastChime = Date.now();
  const ctx = chimeContext();
  const t0 = ctx.currentTime + 0.01;
  // two soft tones, a fifth apart: noticeable over a dictation, not an alarm
  for (const [i, f] of [659.25, 987.77].entries()) {
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.type = "sine";
    o.frequency.value = f;
    g.gain.setValueAtTime(0, t0 + i * 0.16);
    g.gain.linearRampToValueAtTime(0.22, t0 + i * 0.16 + 0.02);
    g.gain.exponentialRampToValueAtTime(0.001, t0 + i * 0.16 + 0.6);
    o.connect(g).connect(ctx.destination);
    o.start(t0 + i * 0.16);
    o.stop(t0 + i * 0.16 + 0.65);
  }
}

function maybeRechime() {
  if (openCues().length && Date.now() - app.lastChime > CHIME_REPEAT_MS) chime();
}

function renderBanner() {
  const el = $("cue-banner");
  const open = openCues();
  if (!open.length) {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  const c = open[0];
  el.hidden = false;
  el.replaceChildren(
    h("div", { class: "cue-icon" }, "!"),
    h("div", {},
      h("strong", {}, `Cue from ${c.room}`),
      h("div", { class: "muted" }, `The physician asked for a clarification at ${fmtClock(c.at_us)} · ${fmtDur(c.t_s)} into the session`
        + (open.length > 1 ? ` · ${open.length - 1} more waiting` : ""))),
    h("div", { class: "spacer" }),
    h("button", { onclick: () => replayBefore(c), id: "banner-replay" }, "Replay 15 s before ", h("kbd", {}, "R")),
    h("button", { class: "cue-ack", onclick: () => ack(c), id: "banner-ack" }, "Acknowledge ", h("kbd", {}, "A")),
  );
}

// ---------------------------------------------------------------------- scribe view

function selectRoom(unitId, session) {
  if (!app.rooms.has(unitId)) return;
  const changed = app.selectedUnit !== unitId;
  app.selectedUnit = unitId;
  location.hash = unitId;
  const r = app.rooms.get(unitId);
  app.selectedSession = session || r.openSession || newestSession(unitId)?.session || null;
  if (changed) loadArchiveList(unitId);
  if (app.selectedSession && !app.receiver.sessions.has(app.selectedSession)) {
    loadSession(app.selectedSession, { backfill: true }).catch(reportLoadError);
  }
  renderScribe();
}

function newestSession(unitId) {
  let best = null;
  for (const s of app.receiver.sessions.values()) if (s.unit === unitId && (!best || s.startedUs > best.startedUs)) best = s;
  return best;
}

function currentSession() {
  return app.selectedSession ? app.receiver.sessions.get(app.selectedSession) : null;
}

function roomInfo(r) {
  const age = r.statusAtMs === null ? null : nowMs() - r.statusAtMs;
  const st = roomState(r.status, age);
  if (st.state === "offline" && r.recording && r.offlineSinceMs) {
    // the unit keeps recording into its spool while the link is down: estimate the backlog
    st.buffered_s = Math.max(st.buffered_s, (r.lastSpoolS || 0) + (nowMs() - r.offlineSinceMs) / 1000);
    st.estimate = true;
  }
  return st;
}

function renderScribe() {
  $("nav").replaceChildren();
  const view = $("view");
  view.replaceChildren(
    h("aside", { class: "rooms", "aria-label": "Your rooms" }, h("div", { class: "pane-title" }, "Your rooms"), h("div", { id: "room-list" }),
      h("div", { class: "spacer" }),
      app.keyNotice ? h("div", { class: "notice", id: "key-notice" }, app.keyNotice) : null,
      h("div", { class: "rooms-foot muted" }, "Press ", h("kbd", {}, "?"), " for shortcuts")),
    h("section", { class: "room-view", id: "room-view" }),
  );
  renderRooms();
  renderRoomView();
}

let roomsSig = "";
function renderRooms() {
  const list = $("room-list");
  if (!list) return;
  // rebuild only on change, so a click never lands on a node being replaced
  const sig = JSON.stringify([app.selectedUnit, [...app.rooms.values()].map((r) => [r.id, stateText(roomInfo(r)),
    openCues().filter((c) => c.unit === r.id).length])]);
  if (sig === roomsSig && list.childElementCount) return;
  roomsSig = sig;
  if (!app.rooms.size) {
    list.replaceChildren(h("div", { class: "empty" }, "No rooms are assigned to you yet. Ask clinic IT."));
    return;
  }
  const items = [];
  let i = 0;
  for (const r of app.rooms.values()) {
    i += 1;
    const st = roomInfo(r);
    const n = openCues().filter((c) => c.unit === r.id).length;
    items.push(h("button", { class: `room-item ${r.id === app.selectedUnit ? "selected" : ""}`, "data-unit": r.id, "data-state": st.state, onclick: () => selectRoom(r.id) },
      h("span", { class: `dot ${st.state}` }),
      h("span", { class: "name" }, r.room),
      n ? h("span", { class: "badge", title: "Open cues" }, n) : h("span", { class: "key" }, i <= 9 ? i : ""),
      h("span", { class: `sub state-${st.state}` }, stateText(st)),
    ));
  }
  list.replaceChildren(...items);
}

function renderRoomView() {
  const pane = $("room-view");
  if (!pane) return;
  const r = app.rooms.get(app.selectedUnit);
  if (!r) {
    pane.replaceChildren(h("div", { class: "empty" }, "Choose a room."));
    return;
  }
  pane.replaceChildren(
    h("div", { class: "room-head" },
      h("h1", {}, r.room),
      h("span", { class: "state-pill", id: "room-state" }),
      h("span", { class: "muted mono" }, r.id),
      h("div", { class: "spacer" }),
      h("div", { class: "facts", id: "facts" })),
    h("div", { class: "transport" },
      h("button", { class: "play", id: "play", title: "Play / pause (Space)", onclick: togglePlay }, "▶"),
      h("div", {}, h("div", { class: "clock", id: "clock" }, "0:00"), h("div", { class: "mode", id: "mode" }, "stopped")),
      h("button", { id: "golive", onclick: goLive, title: "Back to live (L)" }, "● Live ", h("kbd", {}, "L")),
      h("button", { onclick: () => seekBy(-15), title: "Back 15 s (Shift+←)" }, "−15 s"),
      h("button", { onclick: () => seekBy(15), title: "Forward 15 s (Shift+→)" }, "+15 s"),
      h("div", { class: "spacer" }),
      h("span", { class: "muted" }, "Level"),
      h("div", { class: "meter", id: "meter" }, h("div", { class: "rms" }), h("div", { class: "peak" })),
      h("span", { class: "muted mono meter-label", id: "meter-db" }, "—"),
      h("span", { class: "muted mono", id: "buffer", title: "Jitter buffer depth / target" }, "")),
    h("div", { class: "timeline-wrap" },
      h("canvas", { class: "timeline", id: "timeline", onclick: timelineClick, onmousemove: timelineHover, onmouseleave: () => { app.hoverT = null; app.dirty = true; } }),
      h("div", { class: "legend" },
        h("span", {}, h("i", { style: "background:var(--audio)" }), "received live"),
        h("span", {}, h("i", { style: "background:var(--backfill)" }), "backfilled from archive"),
        h("span", {}, h("i", { style: "background:var(--paused);opacity:.55" }), "privacy pause"),
        h("span", {}, h("i", { style: "background:var(--danger);opacity:.7" }), "gap (lost)"),
        h("span", {}, h("i", { style: "background:var(--cue)" }), "cue"),
        h("span", { class: "spacer" }),
        h("span", {}, "Click the timeline to seek · ", h("kbd", {}, "?"), " shortcuts"))),
    h("div", { class: "lower" },
      h("section", {}, h("div", { class: "pane-title" }, "Cues and events"), h("div", { id: "events" })),
      h("section", {}, h("div", { class: "pane-title" }, "Sessions in this room"), h("div", { id: "archive" }))),
  );
  renderEvents();
  renderArchive();
  app.dirty = true;
}

function renderEvents() {
  const el = $("events");
  if (!el) return;
  const s = currentSession();
  if (!s) {
    const open = app.rooms.get(app.selectedUnit)?.openSession;
    el.replaceChildren(h("div", { class: "empty" }, !open
      ? "No session yet. The room's audio appears here when the unit starts one."
      : app.unreadable.has(open) || app.unreadable.has(app.selectedSession)
        ? "This session was sealed before this browser's key was registered, so it cannot be opened here. The unit starts a new session for this key within seconds."
        : "Opening the session…"));
    return;
  }
  const rows = [];
  const items = [...s.events.map((e) => ({ t: e.t_s, e })), ...s.gaps.map((g) => ({ t: s.timeOfSeq(g.first_seq), g }))].sort((a, b) => b.t - a.t);
  for (const it of items) {
    if (it.g) {
      const g = it.g;
      rows.push(h("tr", {}, h("td", { class: "mono" }, fmtDur(it.t)), h("td", {}, h("span", { class: "tag gap" }, "gap")),
        h("td", { class: "muted detail" }, `${((g.last_seq - g.first_seq + 1) * s.chunkMs / 1000).toFixed(1)} s lost on the unit (${g.reason.replace(/_/g, " ")})`), h("td", {})));
      continue;
    }
    const e = it.e;
    if (e.kind === "cue") {
      const c = app.cues.get(`${s.session}:${e.cue_id}`);
      const open = c && !c.acked;
      rows.push(h("tr", { class: open ? "open-cue" : "", "data-cue": e.cue_id },
        h("td", { class: "mono" }, fmtDur(e.t_s)),
        h("td", {}, h("span", { class: `tag ${open ? "cue" : "seen"}` }, open ? "cue" : "seen ✓")),
        h("td", { class: "muted detail" }, open ? "Clarification requested — waiting for you" : `Clarification requested · ${fmtClock(e.at_us)}`),
        h("td", {}, h("div", { class: "actions" },
          h("button", { onclick: () => replayBefore(c), class: "replay-cue" }, "Replay 15 s"),
          open ? h("button", { class: "cue-ack", onclick: () => ack(c) }, "Acknowledge") : null))));
    } else {
      const label = { privacy_pause: "paused", privacy_resume: "resumed", session_start: "started", session_end: "ended" }[e.kind] || e.kind;
      const tag = e.kind.startsWith("privacy") ? "pause" : "";
      const detail = { privacy_pause: "Physician paused recording for privacy", privacy_resume: "Recording resumed", session_start: "Session started", session_end: `Session ended${e.reason ? ` (${e.reason})` : ""}` }[e.kind] || "";
      rows.push(h("tr", {}, h("td", { class: "mono" }, fmtDur(e.t_s)), h("td", {}, h("span", { class: `tag ${tag}` }, label)),
        h("td", { class: "muted detail" }, `${detail} · ${fmtClock(e.at_us)}`), h("td", {})));
    }
  }
  el.replaceChildren(rows.length ? h("table", { class: "list fixed" }, h("colgroup", {}, h("col", { style: "width:64px" }), h("col", { style: "width:84px" }), h("col", {}), h("col", { style: "width:210px" })),
    h("thead", {}, h("tr", {}, h("th", {}, "At"), h("th", {}, "What"), h("th", {}, ""), h("th", {}, ""))), h("tbody", {}, rows))
    : h("div", { class: "empty" }, "No events yet."));
}

let archiveSig = "";
function renderArchive() {
  const el = $("archive");
  if (!el) return;
  const r = app.rooms.get(app.selectedUnit);
  const list = r?.archive || [];
  const sig = JSON.stringify([app.selectedSession, list.map((x) => {
    const local = app.receiver.sessions.get(x.session);
    return [x.session, x.closed_us, local ? Math.floor(local.durationS) : x.audio_max_seq, local ? local.events.length : x.events];
  })]);
  if (sig === archiveSig && el.childElementCount) return;
  archiveSig = sig;
  if (!list.length) {
    el.replaceChildren(h("div", { class: "empty" }, "No archived sessions sealed for you in this room."));
    return;
  }
  el.replaceChildren(h("table", { class: "list" },
    h("thead", {}, h("tr", {}, h("th", {}, "Started"), h("th", {}, "Length"), h("th", {}, "Events"), h("th", {}, ""))),
    h("tbody", {}, list.map((x) => {
      const local = app.receiver.sessions.get(x.session);
      const len = local ? local.durationS : x.audio_max_seq === null ? 0 : ((x.audio_max_seq + 1) * (x.chunk_ms || 40)) / 1000;
      const nev = local ? local.events.length : x.events;
      const cur = x.session === app.selectedSession;
      return h("tr", { "data-session": x.session },
        h("td", {}, x.started_us ? fmtClock(x.started_us) : "—", x.closed_us ? "" : h("span", { class: "tag seen", style: "margin-left:8px" }, "open")),
        h("td", { class: "mono" }, fmtDur(len)),
        h("td", { class: "mono" }, nev),
        h("td", {}, h("div", { class: "actions" }, cur ? h("span", { class: "muted" }, "showing") : h("button", { onclick: () => selectRoom(r.id, x.session) }, "Open"))));
    }))));
}

// ---------------------------------------------------------------------- transport

async function togglePlay() {
  const p = app.player;
  const s = currentSession();
  if (!s) return;
  if (p.mode === "stopped" || p.session !== s) {
    if (!s.close && app.rooms.get(s.unit)?.openSession === s.session) await p.live(s);
    else await p.replay(s, 0);
  } else {
    p.setPaused(!p.paused);
  }
  app.dirty = true;
}

async function goLive() {
  const r = app.rooms.get(app.selectedUnit);
  if (!r || !r.openSession) return;
  app.selectedSession = r.openSession;
  const s = currentSession();
  if (s) await app.player.live(s);
  renderEvents();
  app.dirty = true;
}

async function seekTo(t) {
  const s = currentSession();
  if (!s) return;
  const dur = s.durationS;
  t = Math.max(0, Math.min(t, Math.max(0, dur - 0.05)));
  await app.player.replay(s, s.seqAtTime(t) * s.chunkSamples);
  app.dirty = true;
}

function seekBy(ds) {
  const s = currentSession();
  if (!s) return;
  const base = app.player.session === s && app.player.mode !== "stopped" ? app.player.positionS : s.durationS;
  seekTo(base + ds);
}

// ---------------------------------------------------------------------- timeline

function timelineGeom(canvas, s) {
  const w = canvas.clientWidth;
  const span = Math.max(30, s ? s.durationS * 1.03 : 30, ...(s ? s.events.map((e) => e.t_s * 1.03) : []));
  return { w, span, x: (t) => 8 + (t / span) * (w - 16), t: (x) => ((x - 8) / (w - 16)) * span };
}

function timelineClick(e) {
  const s = currentSession();
  if (!s) return;
  const g = timelineGeom(e.currentTarget, s);
  seekTo(g.t(e.offsetX));
}

function timelineHover(e) {
  const s = currentSession();
  if (!s) return;
  app.hoverT = timelineGeom(e.currentTarget, s).t(e.offsetX);
  app.dirty = true;
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawTimeline() {
  const c = $("timeline");
  if (!c) return;
  const s = currentSession();
  const dpr = window.devicePixelRatio || 1;
  const W = c.clientWidth;
  const H = c.clientHeight;
  if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
    c.width = Math.round(W * dpr);
    c.height = Math.round(H * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.fillStyle = css("--panel");
  g.fillRect(0, 0, W, H);
  const geo = timelineGeom(c, s);
  const top = 22;
  const bot = H - 14;
  g.fillStyle = css("--panel-2");
  g.fillRect(geo.x(0), top, geo.x(geo.span) - geo.x(0), bot - top);
  // ticks
  g.fillStyle = css("--muted");
  g.font = "11px ui-monospace, monospace";
  const step = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800].find((v) => geo.span / v <= 12) || 3600;
  g.strokeStyle = css("--line");
  for (let t = 0; t <= geo.span; t += step) {
    const x = Math.round(geo.x(t)) + 0.5;
    g.beginPath(); g.moveTo(x, top - 4); g.lineTo(x, bot); g.stroke();
    if (x + 34 < W) g.fillText(fmtDur(t), x + 3, 12);
  }
  if (!s) return;
  // received audio: live and backfilled runs
  const colors = { live: css("--audio"), archive: css("--backfill"), backfill: css("--backfill") };
  let run = null;
  const flush = () => {
    if (!run) return;
    g.fillStyle = colors[run.via] || colors.live;
    g.fillRect(geo.x(run.t0), top + 8, Math.max(1, geo.x(run.t1) - geo.x(run.t0)), bot - top - 16);
    run = null;
  };
  for (let q = 0; q <= s.maxSeq; q++) {
    const ch = s.chunks.get(q);
    if (!ch) { flush(); continue; }
    const t0 = (ch.captureUs - s.startedUs) / 1e6;
    const t1 = t0 + ch.n / s.sampleRate;
    if (run && run.via === ch.via && t0 - run.t1 < 0.25) run.t1 = t1;
    else { flush(); run = { via: ch.via, t0, t1 }; }
  }
  flush();
  // privacy pauses
  g.fillStyle = css("--paused");
  let pauseAt = null;
  const bands = [];
  for (const e of s.events) {
    if (e.kind === "privacy_pause") pauseAt = e.t_s;
    if (e.kind === "privacy_resume" && pauseAt !== null) { bands.push([pauseAt, e.t_s]); pauseAt = null; }
  }
  if (pauseAt !== null) bands.push([pauseAt, s.close ? s.durationS : Math.max(pauseAt, (nowUs() - s.startedUs) / 1e6)]);
  g.globalAlpha = 0.45;
  for (const [a, b] of bands) g.fillRect(geo.x(a), top, Math.max(2, geo.x(b) - geo.x(a)), bot - top);
  g.globalAlpha = 1;
  // gaps
  g.fillStyle = css("--danger");
  for (const gp of s.gaps) {
    const a = s.timeOfSeq(gp.first_seq);
    const b = s.timeOfSeq(gp.last_seq) + s.chunkMs / 1000;
    g.globalAlpha = 0.7;
    g.fillRect(geo.x(a), top + 4, Math.max(2, geo.x(b) - geo.x(a)), bot - top - 8);
  }
  g.globalAlpha = 1;
  // cues
  for (const e of s.events) {
    if (e.kind !== "cue") continue;
    const c = app.cues.get(`${s.session}:${e.cue_id}`);
    const x = Math.round(geo.x(e.t_s)) + 0.5;
    g.strokeStyle = g.fillStyle = c && !c.acked ? css("--cue") : css("--muted");
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
    g.beginPath(); g.moveTo(x, top - 2); g.lineTo(x + 9, top + 3); g.lineTo(x, top + 8); g.fill();
    g.lineWidth = 1;
  }
  // playhead
  const p = app.player;
  if (p.session === s && p.mode !== "stopped") {
    const x = Math.round(geo.x(p.positionS)) + 0.5;
    g.strokeStyle = g.fillStyle = css("--accent");
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(x, top - 6); g.lineTo(x, H - 4); g.stroke();
    g.beginPath(); g.arc(x, top - 6, 4, 0, 2 * Math.PI); g.fill();
    g.lineWidth = 1;
  }
  if (app.hoverT !== null && app.hoverT !== undefined) {
    const x = Math.round(geo.x(app.hoverT)) + 0.5;
    g.strokeStyle = css("--faint");
    g.setLineDash([3, 3]);
    g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
    g.setLineDash([]);
    g.fillStyle = css("--text");
    g.fillText(fmtDur(app.hoverT), Math.min(x + 4, W - 40), H - 2);
  }
}

function frame() {
  if (app.dirty && app.me) {
    app.dirty = false;
    updateLive();
    drawTimeline();
  }
  requestAnimationFrame(frame);
}

function updateLive() {
  const r = app.rooms.get(app.selectedUnit);
  const s = currentSession();
  const p = app.player;
  const pill = $("room-state");
  if (r && pill) {
    const st = roomInfo(r);
    pill.textContent = stateText(st);
    pill.className = `state-pill state-${st.state}`;
  }
  renderRoomsLight();
  const facts = $("facts");
  if (facts) {
    const bits = [];
    if (s) {
      bits.push(h("span", {}, "Session ", h("b", { class: "mono" }, s.session.slice(0, 8))));
      bits.push(h("span", {}, "Started ", h("b", {}, fmtClock(s.startedUs))));
      bits.push(h("span", {}, "Recorded ", h("b", {}, fmtDur(s.durationS))));
      if (s.close) bits.push(h("span", {}, h("b", {}, "Closed"), ` (${s.close.reason})`));
    }
    const rej = app.receiver.counters.tampered + app.receiver.counters.malformed;
    if (rej) bits.push(h("span", { class: "state-offline" }, `${rej} frames rejected`));
    facts.replaceChildren(...bits);
  }
  const playing = p.mode !== "stopped" && !p.paused && p.session === s;
  const btn = $("play");
  if (btn) btn.textContent = playing ? "❚❚" : "▶";
  const mode = $("mode");
  if (mode) {
    mode.textContent = p.session !== s || p.mode === "stopped" ? "stopped" : p.paused ? "paused" : p.mode === "live" ? "● live" : "replay";
    mode.className = `mode ${p.mode}`;
  }
  const clock = $("clock");
  if (clock && s) clock.textContent = p.session === s && p.mode !== "stopped" ? `${fmtDur(p.positionS)}` : fmtDur(s.durationS);
  const meter = $("meter");
  if (meter) {
    const db = (v) => (v > 0 ? 20 * Math.log10(v) : -90);
    const pct = (v) => Math.max(0, Math.min(100, ((db(v) + 60) / 60) * 100));
    const on = playing ? p.level : { rms: 0, peak: 0 };
    meter.firstChild.style.width = `${pct(on.rms * Math.SQRT2)}%`;
    meter.lastChild.style.left = `${pct(on.peak)}%`;
    $("meter-db").textContent = playing ? `${db(on.rms).toFixed(0)} dBFS` : "—";
    $("buffer").textContent = playing && p.mode === "live" ? `buffer ${Math.round((p.stats.buffered / (s?.sampleRate || 16000)) * 1000)} ms` : "";
  }
  const live = $("golive");
  if (live) live.disabled = !r || !r.openSession;
}

let lastRoomsRender = 0;
function renderRoomsLight() {
  if (Date.now() - lastRoomsRender < 1000) return;
  lastRoomsRender = Date.now();
  renderRooms();
  renderArchive();
}

// ---------------------------------------------------------------------- keyboard, theme

function onKey(e) {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  if (e.key === "?") { $("help").hidden = !$("help").hidden; return; }
  if (e.key === "Escape") { $("help").hidden = true; return; }
  if (e.key === "t" || e.key === "T") { toggleTheme(); return; }
  if (!app.receiver) return;
  if (e.key === " ") { e.preventDefault(); togglePlay(); }
  else if (e.key === "a" || e.key === "A") ack(openCues()[0]);
  else if (e.key === "r" || e.key === "R") {
    const open = openCues();
    const all = [...app.cues.values()].sort((a, b) => b.at_us - a.at_us);
    replayBefore(open.length ? open[open.length - 1] : all[0]);
  } else if (e.key === "l" || e.key === "L") goLive();
  else if (e.key === "ArrowLeft") { e.preventDefault(); seekBy(e.shiftKey ? -15 : -5); }
  else if (e.key === "ArrowRight") { e.preventDefault(); seekBy(e.shiftKey ? 15 : 5); }
  else if (/^[1-9]$/.test(e.key)) {
    const id = [...app.rooms.keys()][Number(e.key) - 1];
    if (id) selectRoom(id);
  }
}

function toggleTheme() {
  const next = document.documentElement.dataset.theme === "light" ? "dark" : "light";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("scribelink.theme", next);
  app.dirty = true;
}

// ---------------------------------------------------------------------- test hooks

function installTestHooks() {
  window.__scribelinkTest = {
    app,
    ready: () => app.ready,
    /** Open a vector set exactly like the live path would, without the relay. */
    async openVectors({ private_key, session_open, frames }) {
      const identity = await identityFromPrivate(b64decode(private_key));
      const out = { key_id: identity.keyId, session_key: null, results: [] };
      const mine = (session_open.recipients || []).find((r) => r.key_id === identity.keyId);
      let key = null;
      if (mine) {
        try {
          key = await unwrapSessionKey(identity, b64decode(mine.wrapped_key), session_open.unit, fromHex(session_open.session));
          out.session_key = "opened";
        } catch (e) {
          out.session_key = `error: ${e.message}`;
        }
      }
      for (const f of frames) {
        const frame = b64decode(f);
        try {
          const { header, body } = await openEnvelope(frame, key);
          out.results.push({ ok: true, type: header.type, seq: header.seq, plaintext: b64encode(body), sha256: await sha256Hex(body) });
        } catch (e) {
          let hdr = null;
          try { hdr = parseHeader(frame); } catch (x) { /* malformed */ }
          out.results.push({ ok: false, error: e.constructor.name, detail: e.message, seq: hdr ? hdr.seq : null });
        }
      }
      // and through the full receive path, for its counters
      const rx = new Receiver(identity, {});
      rx.sessionItem(session_open, "live");
      for (const f of frames) rx.envelope(b64decode(f), "live");
      await rx.chain;
      out.counters = rx.counters;
      return out;
    },
    sessions: () => [...app.receiver.sessions.values()].map((s) => ({
      session: s.session, unit: s.unit, maxSeq: s.maxSeq, chunks: s.chunks.size, closed: !!s.close,
      events: s.events.map((e) => ({ kind: e.kind, seq: e.seq, cue_id: e.cue_id, t_s: e.t_s })),
      chunkSamples: s.chunkSamples, sampleRate: s.sampleRate, lost: s.lostAudio.size,
      live: [...s.chunks.values()].filter((c) => c.via === "live").length,
      decoded: [...s.chunks.values()].filter((c) => c.pcm).length,
    })),
    async sessionPcm(session) {
      const s = app.receiver.sessions.get(session);
      const seqs = [...s.chunks.keys()].sort((a, b) => a - b);
      const pcm = concat(...seqs.map((q) => new Uint8Array(s.chunks.get(q).pcm.buffer)));
      return { sha256: await sha256Hex(pcm), samples: pcm.length / 2, chunks: seqs.length, first: seqs[0], last: seqs[seqs.length - 1], b64: b64encode(pcm) };
    },
    async sessionHash(session) {
      const s = app.receiver.sessions.get(session);
      const seqs = [...s.chunks.keys()].sort((a, b) => a - b);
      const pcm = concat(...seqs.map((q) => new Uint8Array(s.chunks.get(q).pcm.buffer)));
      return { sha256: await sha256Hex(pcm), samples: pcm.length / 2, chunks: seqs.length, contiguous: seqs.length === s.maxSeq + 1 };
    },
    cues: () => [...app.cues.values()],
    audioLatency() {
      const v = [...app.latencyMs].sort((a, b) => a - b);
      const q = (f) => v[Math.min(v.length - 1, Math.floor(f * (v.length - 1)))];
      return { n: v.length, p50_ms: q(0.5), p95_ms: q(0.95), max_ms: v[v.length - 1],
        buffer_target_ms: (app.player.stats.target / (app.player.ctx?.sampleRate || 16000)) * 1000,
        output_latency_ms: (app.player.ctx?.outputLatency || 0) * 1000 };
    },
    counters: () => app.receiver.counters,
    errors: () => app.errors,
    playback: () => ({ mode: app.player.mode, session: app.player.session?.session, paused: app.player.paused,
      startSample: app.player.record?.startSample, recorded: app.player.record?.samples || 0,
      positionS: app.player.positionS, playedSample: app.player.playedSample, stats: app.player.stats, level: app.player.level }),
    async playbackHash(n) {
      const pcm = app.player.recorded(n);
      if (!pcm) return null;
      return { sha256: await sha256Hex(new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength)), samples: pcm.length, startSample: app.player.record.startSample };
    },
    seekTo: (t) => seekTo(t),
    evict: (keep) => evict(keep),
    replayBefore: (key, s) => replayBefore(app.cues.get(key), s),
    selectRoom: (u, s) => selectRoom(u, s),
  };
}

// ---------------------------------------------------------------------- boot

document.documentElement.dataset.theme = localStorage.getItem("scribelink.theme") || "dark";
$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut());
$("theme-toggle").addEventListener("click", toggleTheme);
document.addEventListener("keydown", onKey);
window.addEventListener("resize", () => { app.dirty = true; });
if (TEST) installTestHooks();
const msg = sessionStorage.getItem("scribelink.msg");
sessionStorage.removeItem("scribelink.msg");
if (app.token) {
  start().catch(() => showSignIn(msg || ""));
} else {
  showSignIn(msg || "");
}
