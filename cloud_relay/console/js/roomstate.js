// The room-state rule: what a room is doing (live, paused, catching up, offline, idle), from
// the unit's status. The relay computes the same for GET /api/console/rooms and the admin view
// (cloud_relay/console_api.py room_state); tests/vectors/room_state.json holds both to it.
// Pure: the status's age and the clock are passed in.

export const STALE_STATUS_S = 10; // units publish status every second; silence this long means offline
const CATCHING_UP_S = 2; // more than this in the unit's spool: it is draining a backlog

const STATE_LABEL = {
  live: "Live", paused: "Privacy pause", offline: "Offline", catching_up: "Catching up", idle: "Idle",
};

/** {state, buffered_s[, reason]} for a unit_status `status` last heard `ageS` seconds ago. */
export function roomState(status, ageS) {
  if (!status) return { state: "offline", buffered_s: 0, reason: "never seen" };
  const buffered = Number((status.spool || {}).seconds || 0);
  if (!status.online || status.link === "lost" || status.link === "down") {
    return { state: "offline", buffered_s: buffered, reason: status.link ?? null };
  }
  if (ageS !== null && ageS !== undefined && ageS > STALE_STATUS_S) {
    return { state: "offline", buffered_s: buffered, reason: "status stale" };
  }
  if (status.capture === "paused") return { state: "paused", buffered_s: buffered };
  if (buffered > CATCHING_UP_S) return { state: "catching_up", buffered_s: buffered };
  if (status.capture === "live") return { state: "live", buffered_s: buffered };
  return { state: "idle", buffered_s: buffered };
}

/** The words for a room state, as the room list, the room view and the admin view show it. */
export function stateText(r) {
  const st = r.state;
  if (st === "offline") {
    if (r.estimate) return `Offline · recording on the unit · ~${r.buffered_s.toFixed(0)} s buffered`;
    return r.buffered_s > 0.5 ? `Offline · ${r.buffered_s.toFixed(0)} s buffered on the unit` : "Unit offline";
  }
  if (st === "catching_up") return `Catching up · ${r.buffered_s.toFixed(0)} s to go`;
  if (st === "no_relay") return r.wasRecording ? "Relay unreachable · the unit keeps recording" : "Relay unreachable";
  if (st === "consent") return "Waiting for consent · nothing recorded yet";
  return STATE_LABEL[st] || st;
}

/** A room as the console tracks it: its unit's last status and when it came. */
export function newRoom(unit, nowMs) {
  return {
    id: unit.id,
    room: unit.room || unit.id,
    status: unit.status,
    statusAtMs: unit.status_age_s === null || unit.status_age_s === undefined ? null : nowMs - unit.status_age_s * 1000,
    openSession: unit.open_session,
    archive: [],
    recording: false, // the unit was capturing when last heard online
    lastSpoolS: 0, // its spool then (s)
    offlineSinceMs: null, // when the link was first seen down
  };
}

/** A unit_status arrived for `room` (mutates it): remember what is needed to estimate later. */
export function noteStatus(room, status, nowMs) {
  const st = status || {};
  if (st.online && st.link !== "down") {
    room.recording = st.capture === "live" || st.capture === "paused";
    room.lastSpoolS = Number((st.spool || {}).seconds || 0);
    room.offlineSinceMs = null;
  } else if (!room.offlineSinceMs) {
    room.offlineSinceMs = nowMs;
  }
  room.status = status;
  room.statusAtMs = nowMs;
  if (st.session && st.session !== room.openSession && st.capture !== "idle") room.openSession = st.session;
}

/**
 * roomState for a tracked room, as the page shows it: offline while recording, the backlog
 * is an estimate; while the relay itself is unreachable (`relayDown`), what the room was
 * doing is all the page knows; a session waiting for consent records nothing yet.
 */
export function roomInfo(room, nowMs, relayDown = null) {
  if (relayDown) {
    return { state: "no_relay", buffered_s: 0, wasRecording: !!room.recording && !!room.openSession };
  }
  const age = room.statusAtMs === null ? null : (nowMs - room.statusAtMs) / 1000;
  const st = roomState(room.status, age);
  if (st.state === "offline" && room.recording && room.offlineSinceMs) {
    // the unit keeps recording into its spool while the link is down
    st.buffered_s = Math.max(st.buffered_s, (room.lastSpoolS || 0) + (nowMs - room.offlineSinceMs) / 1000);
    st.estimate = true;
  }
  if (room.status && room.status.consent === "pending" && (st.state === "idle" || st.state === "live")) {
    return { state: "consent", buffered_s: st.buffered_s };
  }
  return st;
}
