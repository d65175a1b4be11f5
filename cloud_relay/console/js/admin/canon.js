// Canonical JSON and the bytes a statement signs, exactly as scribelink/trust.py makes them
// (sorted keys, no spaces, non-ASCII as lowercase \uXXXX escapes, integers only), with the
// base64 and hex helpers the admin's signing needs. Pure. Tested against
// tests/vectors/authority_browser.json (made by scripts/make-authority-vectors).

const DOMAIN = "scribelink/v1 ";
const MAX_SAFE = 2 ** 53;

export class CanonError extends Error {}

// JSON.stringify escapes quotes, backslashes and controls as Python does; Python's
// ensure_ascii also escapes DEL and everything past it, one \uXXXX per UTF-16 unit
const esc = (s) => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

// Python sorts keys by code point; compare the same way (not by UTF-16 units)
const byCodePoint = (a, b) => {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
};

function value(v, depth) {
  if (depth > 8) throw new CanonError("statement nested too deeply");
  if (v === null) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (typeof v === "string") return esc(v);
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new CanonError("statements carry no floats (their text is not canonical)");
    if (Math.abs(v) > MAX_SAFE) throw new CanonError("integers in statements must fit 53 bits");
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map((x) => value(x, depth + 1)).join(",")}]`;
  if (typeof v === "object") {
    const keys = Object.keys(v).sort(byCodePoint);
    return `{${keys.map((k) => `${esc(k)}:${value(v[k], depth + 1)}`).join(",")}}`;
  }
  throw new CanonError(`statements carry no ${typeof v}`);
}

/** The canonical text of `body` (ASCII only, so its bytes are its characters). */
export const canonical = (body) => value(body, 0);

export const utf8 = (s) => new TextEncoder().encode(s);

/** What an Ed25519 statement signature covers: DOMAIN ‖ type ‖ 0x00 ‖ canonical(body). */
export const signedBytes = (t, body) => utf8(`${DOMAIN}${t}\u0000${canonical(body)}`);

export function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function b64decode(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

export const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
};

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** A signing key's short name: the first 16 hex digits of SHA-256 of its raw public key. */
export const keyId = async (publicRaw) => hex(await sha256(publicRaw)).slice(0, 16);

/** What a person compares: the whole SHA-256 of the key, in groups of four. */
export async function fingerprint(publicRaw) {
  const h = hex(await sha256(publicRaw));
  return h.match(/.{4}/g).join(" ");
}
