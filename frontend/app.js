// The palisade web client: sign in, rooms, messages. Everything users write is put on
// the page with textContent, never as HTML, so a message can never run code.

import * as api from "./api.js";
import { Connection } from "./connection.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "palisade.session";
const TYPING_EVERY_MS = 2500;
const TYPING_SHOWN_MS = 4000;

const view = {
  session: null,
  connection: null,
  current: null,
  rooms: new Map(), // name -> { messages: Map(seq -> message), members: Map(id -> user) }
  typing: new Map(), // name -> timeout
  lastTypingSent: 0,
  loadingOlder: false,
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function roomState(name) {
  if (!view.rooms.has(name)) view.rooms.set(name, { messages: new Map(), pending: new Map(), members: new Map() });
  return view.rooms.get(name);
}

// ---- signing in and out ----

function saveSession(session) {
  view.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

async function authenticate(action) {
  const username = $("username").value.trim();
  const password = $("password").value;
  $("auth-error").textContent = "";
  try {
    saveSession(await action(username, password));
    $("password").value = "";
    startChat();
  } catch (error) {
    $("auth-error").textContent = error.message;
  }
}

function startChat() {
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = view.session.user.name;
  const connection = new Connection(view.session, saveSession);
  view.connection = connection;
  connection.addEventListener("state", ({ detail }) => showState(detail));
  connection.addEventListener("joined", ({ detail }) => onJoined(detail));
  connection.addEventListener("message", ({ detail }) => onMessage(detail));
  connection.addEventListener("ack", ({ detail }) => onAck(detail));
  connection.addEventListener("failed", ({ detail }) => onFailed(detail));
  connection.addEventListener("history", ({ detail }) => onHistory(detail));
  connection.addEventListener("presence", ({ detail }) => onPresence(detail));
  connection.addEventListener("typing", ({ detail }) => onTyping(detail));
  connection.addEventListener("notice", ({ detail }) => notice(detail));
  connection.addEventListener("welcome", () => refreshRoomList());
  connection.addEventListener("signed-out", ({ detail }) => signOut(detail));
  connection.start();
  view.roomListTimer = setInterval(refreshRoomList, 10_000);
}

function signOut(reason) {
  view.connection?.stop();
  view.connection = null;
  clearInterval(view.roomListTimer);
  sessionStorage.removeItem(SESSION_KEY);
  view.session = null;
  view.current = null;
  view.rooms.clear();
  $("messages").replaceChildren();
  $("rooms").replaceChildren();
  $("members").replaceChildren();
  $("room-title").textContent = "No room yet";
  $("chat").hidden = true;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("auth").hidden = false;
  $("auth-error").textContent = reason || "";
}

// ---- connection state and notices ----

function showState({ state, retryInMs }) {
  const badge = $("conn-state");
  badge.className = `conn-state ${state}`;
  badge.textContent =
    state === "online" ? "online"
    : state === "connecting" ? "connecting…"
    : retryInMs ? `offline, retrying in ${Math.ceil(retryInMs / 1000)} s` : "offline";
}

function notice(text) {
  $("notice").textContent = text;
  clearTimeout(view.noticeTimer);
  view.noticeTimer = setTimeout(() => ($("notice").textContent = ""), 6000);
}

// ---- rooms ----

async function refreshRoomList() {
  if (!view.session) return;
  let listed;
  try {
    listed = (await api.rooms(view.session.token)).rooms;
  } catch {
    return;
  }
  const list = $("rooms");
  const names = new Set(listed.map((r) => r.name));
  for (const name of view.rooms.keys()) if (!names.has(name)) listed.push({ name, online: 1 });
  list.replaceChildren(
    ...listed.map(({ name, online }) => {
      const button = el("button", null);
      button.type = "button";
      button.dataset.room = name;
      button.setAttribute("aria-current", String(name === view.current));
      button.append(el("span", "name", `#${name}`), el("span", "count", `${online} online`));
      button.addEventListener("click", () => openRoom(name));
      return el("li", null).appendChild(button).parentNode;
    }),
  );
}

function openRoom(name) {
  if (!view.rooms.has(name)) {
    roomState(name);
    view.connection.join(name);
  }
  view.current = name;
  $("room-title").textContent = `#${name}`;
  renderMessages();
  renderMembers();
  for (const button of $("rooms").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.room === name));
  }
  refreshRoomList();
}

function onJoined(frame) {
  const room = roomState(frame.room);
  if (!frame.resumed) room.messages.clear();
  for (const message of frame.messages) room.messages.set(message.seq, message);
  room.complete = frame.complete;
  room.members = new Map(frame.members.map((m) => [m.id, m]));
  if (frame.room === view.current) {
    renderMessages();
    renderMembers();
  }
}

function onPresence({ room, user, event }) {
  const state = roomState(room);
  if (event === "join") state.members.set(user.id, user);
  else state.members.delete(user.id);
  if (room === view.current) renderMembers();
}

function renderMembers() {
  const members = view.current ? [...roomState(view.current).members.values()] : [];
  $("members").replaceChildren(...members.map((m) => el("li", null, m.name)));
  // The room list refreshes every few seconds; the open room's count is known now.
  const count = $("rooms").querySelector(`button[data-room="${CSS.escape(view.current || "")}"] .count`);
  if (count) count.textContent = `${members.length} online`;
}

// ---- messages ----

function messageItem(message, status) {
  const item = el("li", status || "");
  item.dataset.seq = message.seq ?? "";
  if (message.nonce) item.dataset.nonce = message.nonce;
  const time = message.ts ? new Date(message.ts).toLocaleTimeString() : "";
  item.append(
    el("span", "from", message.from.name),
    el("span", "body", message.body),
    el("span", "meta", status === "pending" ? "sending…" : status === "failed" ? "not sent" : time),
  );
  return item;
}

function renderMessages() {
  const list = $("messages");
  if (!view.current) return list.replaceChildren();
  const room = roomState(view.current);
  const stored = [...room.messages.values()].sort((a, b) => a.seq - b.seq);
  const pending = [...room.pending.values()];
  list.replaceChildren(
    ...stored.map((m) => messageItem(m)),
    ...pending.map((p) => messageItem(p, p.failed ? "failed" : "pending")),
  );
  list.scrollTop = list.scrollHeight;
}

function onMessage(message) {
  const room = roomState(message.room);
  room.messages.set(message.seq, message);
  if (message.nonce) room.pending.delete(message.nonce);
  stopTyping(message.room, message.from.id);
  if (message.room !== view.current) return;
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.querySelector(`li[data-nonce="${CSS.escape(message.nonce || "")}"]`)?.remove();
  const later = [...list.children].find((li) => li.dataset.seq === "" || Number(li.dataset.seq) > message.seq);
  list.insertBefore(messageItem(message), later || null);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function onAck({ room, nonce }) {
  const state = roomState(room);
  state.pending.delete(nonce);
}

function onFailed({ nonce, message }) {
  for (const room of view.rooms.values()) {
    const pending = room.pending.get(nonce);
    if (pending) pending.failed = true;
  }
  const item = $("messages").querySelector(`li[data-nonce="${CSS.escape(nonce)}"]`);
  if (item) {
    item.className = "failed";
    item.querySelector(".meta").textContent = `not sent: ${message}`;
  }
}

function onHistory({ room, messages }) {
  view.loadingOlder = false;
  const state = roomState(room);
  for (const message of messages) state.messages.set(message.seq, message);
  if (messages.length === 0 || messages[0].seq <= 1) state.complete = true;
  if (room !== view.current) return;
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  renderMessages();
  list.scrollTop = list.scrollHeight - fromBottom;
}

function loadOlderIfAtTop() {
  const list = $("messages");
  if (!view.current || view.loadingOlder || list.scrollTop > 40) return;
  const room = roomState(view.current);
  const seqs = [...room.messages.keys()];
  if (room.complete || seqs.length === 0) return;
  const oldest = Math.min(...seqs);
  if (oldest <= 1) return;
  view.loadingOlder = true;
  view.connection.history(view.current, oldest);
}

function typingNames(room) {
  return [...view.typing.keys()].map((id) => roomState(room).members.get(id)?.name || "someone");
}

function onTyping({ room, user }) {
  if (room !== view.current) return;
  clearTimeout(view.typing.get(user.id));
  view.typing.set(user.id, setTimeout(() => stopTyping(room, user.id), TYPING_SHOWN_MS));
  showTyping(typingNames(room));
}

// Someone stopped typing: they sent their message, or went quiet.
function stopTyping(room, userId) {
  if (!view.typing.has(userId)) return;
  clearTimeout(view.typing.get(userId));
  view.typing.delete(userId);
  if (room === view.current) showTyping(typingNames(room));
}

function showTyping(names) {
  $("typing").textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function sendFromComposer() {
  const body = $("body").value;
  if (!view.current || body.trim() === "") return;
  const nonce = view.connection.send(view.current, body);
  const pending = { nonce, body, from: view.session.user, room: view.current };
  roomState(view.current).pending.set(nonce, pending);
  $("messages").append(messageItem(pending, "pending"));
  $("messages").scrollTop = $("messages").scrollHeight;
  $("body").value = "";
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    authenticate(api.login);
  });
  $("register").addEventListener("click", () => {
    if ($("auth-form").reportValidity()) authenticate(api.register);
  });
  $("logout").addEventListener("click", () => signOut());
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("room-name").value.trim();
    if (name) openRoom(name);
    $("room-name").value = "";
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendFromComposer();
  });
  $("body").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendFromComposer();
    }
  });
  $("body").addEventListener("input", () => {
    const now = Date.now();
    if (view.current && now - view.lastTypingSent > TYPING_EVERY_MS) {
      view.lastTypingSent = now;
      view.connection.typing(view.current);
    }
  });
  $("messages").addEventListener("scroll", loadOlderIfAtTop);

  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      const session = JSON.parse(saved);
      if (session.expires_at * 1000 > Date.now()) {
        view.session = session;
        startChat();
        return;
      }
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }
});
