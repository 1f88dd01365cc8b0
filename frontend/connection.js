// One WebSocket to palisade that survives drops.
//
// - The JWT never goes in a URL: each (re)connect trades it for a single-use ticket.
// - The token is renewed a minute before it expires and handed to the open socket.
// - On any drop it reconnects with exponential backoff and jitter, then joins every room
//   again with `since` = the last seq it saw, so the view ends with every message once,
//   in order.
// - Each send carries a nonce and stays pending until acked; after a reconnect it is
//   sent again with the same nonce, and the server stores it once. Only `rate_limited`
//   and `unavailable` are retried: any other refusal fails the send with its reason, so
//   a message the server will never take is not resent in a loop and does not hold up
//   the ones after it.
// - A page whose origin the server does not allow learns it from the ticket request
//   (`403 origin_forbidden`) and stops: no handshake could succeed.
//
// It emits DOM events (detail = the frame or a small object): state, welcome, joined,
// join-failed, message, ack, history, history-failed, presence, typing, left, failed, notice,
// origin-refused, signed-out.

import * as api from "./api.js";
import { bodyProblem } from "./rules.js";

const RENEW_BEFORE_MS = 60_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
// The server's defaults, until its `welcome` says what it really takes.
const DEFAULT_LIMITS = { max_body_chars: 2000, max_message_bytes: 25_024 };
// A send on the wire when the connection dropped this many times is given up: the
// server is probably closing the connection because of it.
const MAX_DROPS_PER_SEND = 3;
// Close codes that mean "that frame was wrong" (1007 invalid, 1009 too big).
const REFUSED_FRAME_CLOSES = new Set([1007, 1009]);

export class Connection extends EventTarget {
  constructor(session, onSession) {
    super();
    this.session = session; // {token, expires_at, user}
    this.onSession = onSession; // called with a renewed session
    this.ws = null;
    this.state = "offline";
    this.stopped = true;
    this.attempt = 0;
    this.nextId = 1;
    this.rooms = new Map(); // room -> { lastSeq, joined }
    this.pending = new Map(); // nonce -> { room, body, onWire, drops }
    this.limits = DEFAULT_LIMITS;
    this.replies = new Map(); // id -> { kind, room, nonce }
    this.timers = {};
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, extra) {
    this.state = state;
    this.emit("state", { state, ...extra });
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.setState("offline");
  }

  async open() {
    if (this.stopped) return;
    this.setState("connecting");
    let granted;
    try {
      granted = await api.ticket(this.session.token);
    } catch (error) {
      if (error.status === 401) return this.signOut("Your session has ended. Please sign in again.");
      if (error.code === "account_disabled") return this.signOut(error.message);
      if (error.code === "origin_forbidden") return this.originRefused();
      return this.retryLater();
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws?ticket=${encodeURIComponent(granted.ticket)}`);
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const room of this.rooms.values()) room.joined = false;
      this.dropInFlight(event.code);
      this.onClose(event.code);
    });
  }

  // Retrying cannot help until the operator allows this page's origin: say so and stop.
  originRefused() {
    this.stop();
    this.setState("refused");
    this.emit("origin-refused", { origin: location.origin });
  }

  // The sends that were on the wire when the socket closed go again after the next join,
  // unless the close says a frame was refused (the server answers in order, so it was
  // the first one unanswered) or they have already gone down with a socket too often.
  dropInFlight(code) {
    let blamed = !REFUSED_FRAME_CLOSES.has(code);
    for (const [nonce, message] of this.pending) {
      if (!message.onWire) continue;
      message.onWire = false;
      message.drops += 1;
      if (!blamed) {
        blamed = true;
        this.fail(nonce, `the server closed the connection on this message (code ${code})`);
      } else if (message.drops >= MAX_DROPS_PER_SEND) {
        this.fail(nonce, "the connection dropped every time this message was sent");
      }
    }
  }

  onClose(code) {
    clearTimeout(this.timers.renew);
    if (this.stopped) return;
    if (code === 4003) return this.signOut("An administrator ended your session.");
    if (code === 4001) {
      return this.renewToken().then(() => this.retryLater());
    }
    if (code === 1008) this.emit("notice", "Too many messages too fast: reconnecting shortly.");
    this.retryLater();
  }

  retryLater() {
    if (this.stopped) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.setState("offline", { retryInMs: delay });
    this.timers.reconnect = setTimeout(() => this.open(), delay);
  }

  signOut(reason) {
    this.stop();
    this.emit("signed-out", reason);
  }

  async renewToken() {
    try {
      this.session = await api.renew(this.session.token);
      this.onSession(this.session);
      return true;
    } catch (error) {
      if (error.status === 401) this.signOut("Your session has ended. Please sign in again.");
      return false;
    }
  }

  scheduleRenewal(expiresAt) {
    clearTimeout(this.timers.renew);
    const wait = Math.max(1_000, expiresAt * 1000 - Date.now() - RENEW_BEFORE_MS);
    this.timers.renew = setTimeout(async () => {
      if (await this.renewToken()) this.frame({ type: "refresh", token: this.session.token });
    }, wait);
  }

  frame(frame, reply) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (reply) {
      frame.id = this.nextId++;
      this.replies.set(frame.id, reply);
    }
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  join(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { lastSeq: null, joined: false });
    const since = this.rooms.get(room).lastSeq;
    const frame = { type: "join", room };
    if (since !== null) frame.since = since;
    this.frame(frame, { kind: "join", room });
  }

  leave(room) {
    this.rooms.delete(room);
    this.frame({ type: "leave", room }, { kind: "leave", room });
  }

  // Queues a message under `nonce` (the caller's, so it can show the message before any
  // event about it arrives); one the server would refuse fails at once.
  send(room, body, nonce = crypto.randomUUID()) {
    this.pending.set(nonce, { room, body, onWire: false, drops: 0 });
    const problem = bodyProblem(body, this.limits.max_body_chars);
    if (problem) this.fail(nonce, problem);
    else this.transmit(nonce);
    return nonce;
  }

  // Gives a send up: it leaves the queue and the page is told why.
  fail(nonce, reason) {
    if (!this.pending.delete(nonce)) return;
    clearTimeout(this.timers[nonce]);
    delete this.timers[nonce];
    this.emit("failed", { nonce, message: reason });
  }

  transmit(nonce) {
    const message = this.pending.get(nonce);
    if (!message || message.onWire || !this.rooms.get(message.room)?.joined) return;
    const frame = { type: "send", room: message.room, body: message.body, nonce, id: this.nextId };
    // A frame over the advertised size would close the socket (1009) on every try.
    const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
    if (bytes > this.limits.max_message_bytes) {
      return this.fail(nonce, `too large for the server (${bytes} bytes, the limit is ${this.limits.max_message_bytes})`);
    }
    delete frame.id;
    if (this.frame(frame, { kind: "send", room: message.room, nonce })) message.onWire = true;
  }

  history(room, before) {
    this.frame({ type: "history", room, before, limit: 50 }, { kind: "history", room });
  }

  typing(room) {
    this.frame({ type: "typing", room });
  }

  onFrame(frame) {
    const reply = frame.id !== undefined ? this.replies.get(frame.id) : undefined;
    if (reply) this.replies.delete(frame.id);
    switch (frame.type) {
      case "welcome":
        this.attempt = 0;
        this.limits = { ...DEFAULT_LIMITS, ...frame.limits };
        this.setState("online");
        this.scheduleRenewal(frame.expires_at);
        for (const room of this.rooms.keys()) this.join(room);
        this.emit("welcome", frame);
        break;
      case "joined": {
        const room = this.rooms.get(frame.room) || { lastSeq: null };
        const resumed = room.lastSeq !== null;
        const fresh = frame.messages.filter((m) => room.lastSeq === null || m.seq > room.lastSeq);
        room.lastSeq = Math.max(room.lastSeq ?? 0, frame.last_seq);
        room.joined = true;
        this.rooms.set(frame.room, room);
        // Our own messages the server already stored (sent just before a reload or a
        // drop) are not sent again.
        for (const message of frame.messages) if (message.nonce) this.pending.delete(message.nonce);
        this.emit("joined", { ...frame, messages: fresh, resumed });
        for (const [nonce, pending] of this.pending) if (pending.room === frame.room) this.transmit(nonce);
        break;
      }
      case "message": {
        const room = this.rooms.get(frame.room);
        if (!room || (room.lastSeq !== null && frame.seq <= room.lastSeq)) break;
        room.lastSeq = frame.seq;
        if (frame.nonce && frame.from.id === this.session.user.id) this.pending.delete(frame.nonce);
        this.emit("message", frame);
        break;
      }
      case "ack":
        if (reply?.nonce) {
          if (this.pending.has(reply.nonce)) this.pending.get(reply.nonce).onWire = false;
          this.pending.delete(reply.nonce);
          this.emit("ack", { ...frame, nonce: reply.nonce });
        }
        break;
      case "refreshed":
        this.scheduleRenewal(frame.expires_at);
        break;
      case "error":
        this.onError(frame, reply);
        break;
      default:
        this.emit(frame.type, frame);
    }
  }

  onError(frame, reply) {
    // Both codes say "nothing was stored, try again later": the send is retried with its
    // nonce, so it is stored once however many tries it takes.
    const retryable = {
      rate_limited: "You are sending too fast. Your message will go out in a moment.",
      unavailable: "The server cannot save messages right now. Your message will be retried.",
    };
    if (reply?.nonce && this.pending.has(reply.nonce)) this.pending.get(reply.nonce).onWire = false;
    if (Object.hasOwn(retryable, frame.code)) {
      this.emit("notice", retryable[frame.code]);
      if (reply?.nonce) {
        clearTimeout(this.timers[reply.nonce]);
        this.timers[reply.nonce] = setTimeout(() => this.transmit(reply.nonce), frame.retry_after_ms + 50);
      }
      // A join is worth the same wait: without it the room stays silent until a reconnect.
      if (reply?.kind === "join") setTimeout(() => this.rooms.has(reply.room) && this.join(reply.room), frame.retry_after_ms + 50);
      if (reply?.kind === "history") this.emit("history-failed", { room: reply.room });
      return;
    }
    if (reply?.nonce) return this.fail(reply.nonce, frame.message);
    if (reply?.kind === "history") this.emit("history-failed", { room: reply.room });
    if (reply?.kind === "join") return this.joinFailed(reply.room, frame.message);
    this.emit("notice", frame.message);
  }

  // A room we may not join: its queued messages can never be sent either.
  joinFailed(room, reason) {
    this.rooms.delete(room);
    for (const [nonce, message] of this.pending) if (message.room === room) this.fail(nonce, reason);
    this.emit("join-failed", { room, message: reason });
  }

  // A room left from an earlier page (a reload): joined again with `since` once online.
  resume(room, lastSeq) {
    this.rooms.set(room, { lastSeq, joined: false });
  }
}
