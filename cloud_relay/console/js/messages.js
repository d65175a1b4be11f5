// The clear session messages and sealed event bodies a unit sends, checked as
// scribelink/messages.py checks them (its from_dict): every number and length bounded before
// anything is allocated. Checking shape is not trusting: js/receiver.js verifies who signed.
// Pure.

export const MAX_SEQ = 2 ** 40; // 1.4 years of 40 ms chunks in one session
const MAX_RECIPIENTS = 64;
const MAX_UNIT_ID_LEN = 64;
export const EVENT_KINDS = Object.freeze(["cue", "privacy_pause", "privacy_resume", "session_start", "session_end", "consent"]);
const GAP_REASONS = ["spool_full", "spool_age", "capture_lost"];
export const CLOSE_REASONS = Object.freeze(["ended", "input_complete", "reassigned", "closed_by_relay", "agent_stopped",
  "unit_restart", "update", "reconfigured", "consent_declined"]);
const SESSION_HEX = /^[0-9a-f]{32}$/;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class MessageError extends Error {}

const fail = (why) => { throw new MessageError(why); };

function int(d, k, lo = 0, hi = 2 ** 53, dflt = undefined) {
  const v = d[k] === undefined ? dflt : d[k];
  if (!Number.isSafeInteger(v) || v < lo || v > hi) fail(`${k} must be an integer in ${lo}..${hi}`);
  return v;
}

function str(d, k, maxLen = 256, dflt = undefined, choices = null) {
  const v = d[k] === undefined ? dflt : d[k];
  if (typeof v !== "string" || v.length > maxLen) fail(`${k} must be text (at most ${maxLen} characters)`);
  if (choices && !choices.includes(v)) fail(`${k} must be one of ${choices.join(", ")}, got ${JSON.stringify(v)}`);
  return v;
}

function base(d, type) {
  if (!d || typeof d !== "object" || Array.isArray(d)) fail("a message must be a JSON object");
  if (type && d.type !== type) fail(`expected a ${type} message, got ${JSON.stringify(d.type)}`);
  str(d, "unit", MAX_UNIT_ID_LEN);
  if (typeof d.session !== "string" || !SESSION_HEX.test(d.session)) fail("session must be 32 hex digits");
  str(d, "sig", 256, "");
}

function recipients(d) {
  const rec = d.recipients;
  if (!Array.isArray(rec) || !rec.length || rec.length > MAX_RECIPIENTS) fail(`recipients must be a list of 1..${MAX_RECIPIENTS}`);
  for (const r of rec) {
    if (!r || typeof r !== "object") fail("malformed recipient");
    str(r, "kind", 16, undefined, ["scribe", "recovery"]);
    str(r, "id", 64);
    str(r, "key_id", 16);
    str(r, "device", 16, "");
    const w = str(r, "wrapped_key", 200);
    if (!B64.test(w) || w.length !== 108) fail("recipient: wrapped_key must be 80 bytes of base64");
  }
  return rec;
}

const CHECKS = {
  session_open(d) {
    base(d, "session_open");
    int(d, "started_us");
    int(d, "sample_rate", 8000, 48000);
    int(d, "chunk_ms", 20, 200);
    recipients(d);
    str(d, "room", 128, "");
    str(d, "codec", 32, "pcm_s16le");
    int(d, "channels", 1, 1, 1);
    str(d, "consent", 32, "not_required", ["not_required", "pending"]);
    if (d.binding !== undefined && d.binding !== null && (typeof d.binding !== "object" || Array.isArray(d.binding))) fail("binding must be an object");
  },
  recipients_added(d) {
    base(d, "recipients_added");
    int(d, "at_us");
    recipients(d);
  },
  session_close(d) {
    base(d, "session_close");
    int(d, "ended_us");
    int(d, "last_audio_seq", -1, MAX_SEQ);
    int(d, "last_event_seq", -1, MAX_SEQ);
    str(d, "reason", 32, undefined, CLOSE_REASONS);
  },
  gap(d) {
    base(d, "gap");
    str(d, "stream", 16, undefined, ["audio", "event"]);
    const first = int(d, "first_seq", 0, MAX_SEQ);
    const last = int(d, "last_seq", 0, MAX_SEQ);
    str(d, "reason", 32, undefined, GAP_REASONS);
    int(d, "at_us");
    if (last < first) fail("gap: last_seq < first_seq");
  },
  cue_ack(d) {
    base(d, "cue_ack");
    str(d, "sealed", 4096);
  },
};

export const SESSION_TYPES = Object.freeze(["session_open", "session_close", "gap", "recipients_added"]);

/** Check a session-topic message (or a cue_ack) of any type; MessageError if it is not one. */
export function checkItem(d) {
  const check = CHECKS[d && d.type];
  if (!check) fail(`unknown session message type ${JSON.stringify(d && d.type)}`);
  check(d);
  return d;
}

/** A sealed event's body (scribelink.messages.Event.from_dict). */
export function checkEvent(d) {
  if (!d || typeof d !== "object" || Array.isArray(d)) fail("event must be a JSON object");
  const kind = str(d, "kind", 32, undefined, EVENT_KINDS);
  int(d, "at_us");
  if (d.cue_id !== undefined) int(d, "cue_id", 0, 2 ** 48);
  if (d.audio_seq !== undefined) int(d, "audio_seq", 0, MAX_SEQ);
  for (const [k, n] of [["reason", 32], ["state", 16], ["by", 16]]) if (d[k] !== undefined && d[k] !== null) str(d, k, n);
  str(d, "sig", 256, "");
  const need = { cue: d.cue_id, privacy_pause: d.audio_seq, privacy_resume: d.audio_seq, session_end: d.reason, consent: d.state };
  if (kind in need && (need[kind] === undefined || need[kind] === null)) fail(`${kind} event is missing its field`);
  return d;
}
