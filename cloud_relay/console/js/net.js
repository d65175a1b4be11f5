// The console's two ways to its relay: HTTP with the bearer token (Api), and the live
// WebSocket (Link) that says hello, follows the stream, reconnects with capped backoff and
// resumes from the last cursor it saw. Frames are built and checked by js/wsproto.js.
// Everything here runs on the page's one thread, in event callbacks.

import { CLOSE, WsProtoError, encode, hello, parseBinary, parseText } from "./wsproto.js";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export class Api {
  /** `onExpired()`: a 401 came back; return true if that signed the user out. */
  constructor({ token = null, onExpired = () => false } = {}) {
    this.token = token;
    this.onExpired = onExpired;
  }

  async call(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { "Content-Type": "application/json", ...(this.token ? { Authorization: `Bearer ${this.token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401 && this.onExpired()) throw new ApiError("signed out", 401);
    if (!r.ok) {
      let detail = r.statusText;
      try {
        const d = (await r.json()).detail || detail;
        // the relay's refusals are {error, message}; validation errors a list of problems
        detail = typeof d === "string" ? d : d.message || (Array.isArray(d) ? d.map((x) => `${(x.loc || []).slice(1).join(".")}: ${x.msg}`).join("; ") : JSON.stringify(d));
      } catch (e) { /* not JSON */ }
      throw new ApiError(`${method} ${path}: ${detail}`, r.status);
    }
    return r.json();
  }
}

/** Reconnect delays: first, doubled after each failure, capped; back to first once welcomed. */
export class Backoff {
  constructor(firstMs = 500, maxMs = 5000) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.nextMs = firstMs;
  }

  next() {
    const d = this.nextMs;
    this.nextMs = Math.min(d * 2, this.maxMs);
    return d;
  }

  reset() {
    this.nextMs = this.firstMs;
  }
}

export const LINK = Object.freeze({ CONNECTING: "connecting", HELLO_SENT: "hello_sent", UP: "up", DOWN: "down", STOPPED: "stopped" });

export const wsUrl = (loc) => `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;

/**
 * The live stream. Handlers: onEnvelope(envelope) for sealed binary frames, onFrame(frame)
 * for checked text frames other than welcome, onState(state), onRefused(code) when the relay
 * closes for a reason a retry cannot fix (sign-in gone), onBadFrame(error).
 */
export class Link {
  constructor({ url, token, cursor = 0, handlers, backoff = new Backoff() }) {
    this.url = url;
    this.token = token;
    this.cursor = cursor;
    this.h = handlers;
    this.backoff = backoff;
    this.state = LINK.DOWN;
    this.ws = null;
    this.outbox = []; // frames said while down: sent once welcomed again
    this.retry = null;
  }

  get up() {
    return this.state === LINK.UP;
  }

  start() {
    this.state = LINK.CONNECTING;
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      ws.send(encode(hello({ token: this.token, cursor: this.cursor, batch: true })));
      this.state = LINK.HELLO_SENT;
    };
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => this.closed(e.code);
  }

  stop() {
    this.state = LINK.STOPPED;
    clearTimeout(this.retry);
    this.ws?.close();
  }

  /** Send a frame now if welcomed, else when the link is next welcomed. */
  send(frame) {
    if (this.up && this.ws.readyState === WebSocket.OPEN) this.ws.send(encode(frame));
    else this.outbox.push(frame);
  }

  receive(data) {
    let frame;
    try {
      if (typeof data !== "string") {
        for (const { cursor, envelope } of parseBinary(data)) {
          this.cursor = Math.max(this.cursor, cursor);
          this.h.onEnvelope(envelope);
        }
        return;
      }
      frame = parseText(data);
    } catch (e) {
      if (e instanceof WsProtoError) return this.h.onBadFrame?.(e);
      throw e;
    }
    if (frame.cursor !== undefined) this.cursor = Math.max(this.cursor, frame.cursor);
    if (frame.type === "welcome") {
      this.state = LINK.UP;
      this.backoff.reset();
      this.h.onState?.(this.state);
      for (const f of this.outbox.splice(0)) this.ws.send(encode(f));
      return;
    }
    this.h.onFrame(frame);
  }

  closed(code) {
    if (this.state === LINK.STOPPED) return;
    this.state = LINK.DOWN;
    this.h.onState?.(this.state);
    if (code === CLOSE.UNAUTHORIZED) {
      this.state = LINK.STOPPED;
      this.h.onRefused?.(code);
      return;
    }
    this.retry = setTimeout(() => this.start(), this.backoff.next());
  }
}
