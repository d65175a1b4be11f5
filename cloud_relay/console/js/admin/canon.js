// The admin's signing helpers. The canonical JSON and the bytes a statement signs are the
// console's one implementation (../trust.js, held to scribelink/trust.py by
// tests/vectors/trust.json and tests/vectors/authority_browser.json); the byte helpers
// are ../crypto.js's. Pure.

export { TrustError as CanonError, canonical, fingerprint, keyId, signedBytes } from "../trust.js";
export { b64decode, b64encode, concat, hex } from "../crypto.js";

export const utf8 = (s) => new TextEncoder().encode(s);

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
