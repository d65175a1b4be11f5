// The scribe WebSocket protocol (docs/protocol.md, "Scribe WebSocket"), the page's one owner:
// builds what the console sends (hello, cue_ack) and checks what the relay sends (welcome,
// error, unit_status, session items and replies as text; cursor || envelope as binary). Nothing else in
// the page writes or reads a frame by hand. tests/vectors/scribe_ws.json holds the frames.
// Pure: no socket here (js/net.js has it).

export const CLOSE = Object.freeze({ BAD_HELLO: 4400, UNAUTHORIZED: 4401, FORBIDDEN: 4403 });
const CURSOR_BYTES = 8; // binary frames: cursor (u64, big-endian) || sealed envelope
// a batch (asked for with hello's batch): 0xFF || (length u32 big-endian || frame)*; a
// cursor never starts with 0xFF (stream ids are positive 63-bit integers)
const BATCH = 0xff;
// the unit's signed session items, and replies to cues kept in the room's stream
const SESSION_ITEMS = new Set(["session_open", "session_close", "gap", "recipients_added", "cue_ack"]);
const SESSION_HEX = /^[0-9a-f]{32}$/;

export class WsProtoError extends Error {}

const fail = (what) => { throw new WsProtoError(what); };
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isName = (v) => typeof v === "string" && v.length > 0;
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

function checkUnits(units, frame) {
  if (!Array.isArray(units) || !units.every(isName)) fail(`${frame}: units must be a list of unit ids`);
}

// ------------------------------------------------------------------ console -> relay

/** The first frame on a socket: who we are, and the stream position to resume after. */
export function hello({ token, cursor, units, batch }) {
  if (!isName(token)) fail("hello: token must be the bearer token from POST /api/login");
  if (!isCount(cursor)) fail(`hello: cursor must be a non-negative integer, not ${JSON.stringify(cursor)}`);
  const frame = { type: "hello", token, cursor };
  if (units !== undefined) {
    checkUnits(units, "hello");
    frame.units = [...units];
  }
  if (batch !== undefined && batch !== false) {
    if (batch !== true) fail("hello: batch must be true or false");
    frame.batch = true;
  }
  return frame;
}

/**
 * A reply to a cue in `session` of `unit`'s room: `sealed` is the reply js/trust.js sealed
 * under the session key and signed with this device's key (the relay reads none of it).
 */
export function cueAck({ unit, session, sealed }) {
  if (!isName(unit)) fail("cue_ack: unit must be a unit id");
  if (typeof session !== "string" || !SESSION_HEX.test(session)) fail("cue_ack: session must be 32 lowercase hex digits");
  if (typeof sealed !== "string" || !sealed.length || sealed.length > 4096 || !/^[A-Za-z0-9+/]+={0,2}$/.test(sealed)) {
    fail("cue_ack: sealed must be the sealed reply, base64 (at most 4096 characters)");
  }
  return { type: "cue_ack", unit, session, sealed };
}

export const encode = (frame) => JSON.stringify(frame);

// ------------------------------------------------------------------ relay -> console

/**
 * A text frame from the relay, checked. Types this page does not know are returned as they
 * are, for the caller to ignore: a newer relay may say more than this page understands.
 */
export function parseText(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    fail(`text frame is not JSON (${e.message})`);
  }
  if (!isObject(m) || typeof m.type !== "string") fail("text frame is not an object with a type");
  if (m.cursor !== undefined && !isCount(m.cursor)) fail(`${m.type}: cursor must be a non-negative integer`);
  switch (m.type) {
    case "welcome":
      if (typeof m.user !== "string") fail("welcome: user missing");
      checkUnits(m.units, "welcome");
      if (!isCount(m.cursor) || !isCount(m.head)) fail("welcome: cursor and head must be non-negative integers");
      break;
    case "error":
      if (!isName(m.error)) fail("error: error missing");
      if (m.units !== undefined) checkUnits(m.units, "error");
      break;
    case "unit_status":
      if (!isName(m.unit)) fail("unit_status: unit missing");
      if (!isObject(m.status)) fail("unit_status: status must be an object");
      break;
    default:
      if (SESSION_ITEMS.has(m.type)) {
        if (!isName(m.unit) || typeof m.session !== "string") fail(`${m.type}: unit and session required`);
        if (m.cursor === undefined) fail(`${m.type}: cursor missing`);
      }
  }
  return m;
}

/** A binary message from the relay: its frames, [{cursor, envelope}] in stream order (one
 * frame, or a batch); the envelopes are views, not copies. A message with any bad part is
 * refused whole. */
export function parseBinary(data) {
  const u8 = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (u8.length === 0 || u8[0] !== BATCH) return [oneFrame(u8)];
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.length);
  const frames = [];
  let i = 1;
  while (i < u8.length) {
    if (u8.length - i < 4) fail("batch truncated in a frame's length");
    const size = dv.getUint32(i);
    i += 4;
    if (size > u8.length - i) fail(`batch frame of ${size} bytes runs past the message`);
    frames.push(oneFrame(u8.subarray(i, i + size)));
    i += size;
  }
  if (frames.length === 0) fail("batch without frames");
  return frames;
}

function oneFrame(u8) {
  if (u8.length <= CURSOR_BYTES) fail(`binary frame too short (${u8.length} bytes)`);
  const cursor = new DataView(u8.buffer, u8.byteOffset, CURSOR_BYTES).getBigUint64(0);
  if (cursor > BigInt(Number.MAX_SAFE_INTEGER)) fail("binary frame cursor out of range");
  return { cursor: Number(cursor), envelope: u8.subarray(CURSOR_BYTES) };
}
