// The palisade web client: sign in, rooms, messages. Everything users write is put on
// the page with textContent, never as HTML, so a message can never run code.

import * as api from "./api.js";
import { Connection } from "./connection.js";
import { PASSWORD, ROOM, USERNAME, bodyProblem } from "./rules.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "palisade.session";
// The open rooms, the room in view, recent messages and unsent ones: kept per tab, so a
// reload comes back to the same place and resumes each room with `since`.
const VIEW_KEY = "palisade.view";
// Newest messages kept per room across a reload; older ones load with the button.
const KEPT_PER_ROOM = 200;
const TYPING_EVERY_MS = 2500;
const TYPING_SHOWN_MS = 4000;

const view = {
  session: null,
  connection: null,
  current: null,
  // name -> { messages: Map(seq -> message), pending: Map(nonce -> message),
  //           members: Map(id -> user), online: a big room's count (else null), typing: Map(user id -> {name, timer}) }
  rooms: new Map(),
  listed: [], // the server's room list, as last fetched: [{ name, online }]
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
  if (!view.rooms.has(name)) {
    view.rooms.set(name, { messages: new Map(), pending: new Map(), members: new Map(), typing: new Map() });
  }
  return view.rooms.get(name);
}

// ---- signing in and out ----

function saveSession(session) {
  view.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

// The first rule the form breaks, with its field; null when the server may take it.
function authProblem() {
  if (!USERNAME.test($("username").value.trim())) return { field: "username", rule: USERNAME.rule };
  if (!PASSWORD.test($("password").value)) return { field: "password", rule: PASSWORD.rule };
  return null;
}

function showAuthError(text, field) {
  $("auth-error").textContent = text;
  for (const id of ["username", "password"]) {
    if (id === field) $(id).setAttribute("aria-invalid", "true");
    else $(id).removeAttribute("aria-invalid");
  }
  if (field) $(field).focus();
}

async function authenticate(action) {
  const problem = authProblem();
  if (problem) return showAuthError(problem.rule, problem.field);
  showAuthError("");
  try {
    saveSession(await action($("username").value.trim(), $("password").value));
    $("password").value = "";
    startChat();
  } catch (error) {
    const field = { invalid_username: "username", username_taken: "username", weak_password: "password" }[error.code];
    showAuthError(error.message, field);
  }
}

function startChat() {
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = view.session.user.name;
  const connection = new Connection(view.session, saveSession);
  view.connection = connection;
  const on = (type, handler) => connection.addEventListener(type, ({ detail }) => handler(detail));
  on("state", showState);
  on("joined", onJoined);
  on("join-failed", onJoinFailed);
  on("message", onMessage);
  on("ack", onAck);
  on("failed", onFailed);
  on("history", onHistory);
  on("history-failed", () => {
    view.loadingOlder = false;
    updateLoadOlder();
  });
  on("presence", onPresence);
  on("occupancy", onOccupancy);
  on("typing", onTyping);
  on("notice", notice);
  on("origin-refused", showOriginRefused);
  on("welcome", () => refreshRoomList());
  on("signed-out", signOut);
  restoreView();
  updateComposer();
  connection.start();
  view.roomListTimer = setInterval(refreshRoomList, 10_000);
}

function signOut(reason) {
  view.connection?.stop();
  view.connection = null;
  clearInterval(view.roomListTimer);
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(VIEW_KEY);
  view.session = null;
  view.current = null;
  view.rooms.clear();
  view.listed = [];
  $("messages").replaceChildren();
  $("rooms").replaceChildren();
  $("members").replaceChildren();
  $("typing").textContent = "";
  $("room-title").textContent = "No room yet";
  $("problem").hidden = true;
  $("chat").hidden = true;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("auth").hidden = false;
  showAuthError(reason || "");
}

// ---- keeping the view across a reload ----

function saveView() {
  clearTimeout(view.saveTimer);
  if (!view.session || !view.connection) return;
  const rooms = {};
  for (const [name, room] of view.rooms) {
    const messages = [...room.messages.values()].sort((a, b) => a.seq - b.seq).slice(-KEPT_PER_ROOM);
    rooms[name] = { lastSeq: view.connection.rooms.get(name)?.lastSeq ?? null, messages };
  }
  const pending = [...view.rooms.values()].flatMap((room) => [...room.pending.values()]);
  const saved = { user: view.session.user.id, current: view.current, rooms, pending };
  try {
    sessionStorage.setItem(VIEW_KEY, JSON.stringify(saved));
  } catch {
    // Storage full or disabled: the page works, a reload just starts afresh.
  }
}

// Saving on every frame would stringify the rooms for each message; a short delay
// batches them, and `pagehide` saves what is left before a reload.
function saveViewSoon() {
  clearTimeout(view.saveTimer);
  view.saveTimer = setTimeout(saveView, 250);
}

function restoreView() {
  let saved;
  try {
    saved = JSON.parse(sessionStorage.getItem(VIEW_KEY));
  } catch {
    return;
  }
  if (!saved || saved.user !== view.session.user.id) return;
  for (const [name, { lastSeq, messages }] of Object.entries(saved.rooms)) {
    const room = roomState(name);
    for (const message of messages) room.messages.set(message.seq, message);
    view.connection.resume(name, lastSeq);
  }
  for (const message of saved.pending) {
    roomState(message.room).pending.set(message.nonce, message);
    if (!message.failed) view.connection.send(message.room, message.body, message.nonce);
  }
  if (saved.current && view.rooms.has(saved.current)) openRoom(saved.current);
  else renderRoomList();
}

// ---- connection state and notices ----

function showState({ state, retryInMs }) {
  const badge = $("conn-state");
  badge.className = `conn-state ${state}`;
  badge.textContent =
    state === "online" ? "online"
    : state === "connecting" ? "connecting…"
    : state === "refused" ? "not allowed"
    : retryInMs ? `offline, retrying in ${Math.ceil(retryInMs / 1000)} s` : "offline";
  if (state === "online") $("problem").hidden = true;
}

function notice(text) {
  $("notice").textContent = text;
  clearTimeout(view.noticeTimer);
  view.noticeTimer = setTimeout(() => ($("notice").textContent = ""), 6000);
}

// The server refuses this page's origin: only its operator can fix that, so say what
// they must set instead of retrying forever.
function showOriginRefused({ origin }) {
  $("problem-text").textContent =
    `This page's origin ${origin} is not allowed by the server, so the chat cannot connect. ` +
    `The operator must add ${origin} to --allowed-origins (or PALISADE_ALLOWED_ORIGINS) and restart palisade.`;
  $("problem").hidden = false;
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
  view.listed = listed;
  renderRoomList();
}

// The server's list and the rooms open here, updated in place, button by button, so
// the one with keyboard focus stays where it is.
function renderRoomList() {
  const online = new Map(view.listed.map(({ name, online }) => [name, online]));
  for (const name of view.rooms.keys()) if (!online.has(name)) online.set(name, 1);
  const list = $("rooms");
  const existing = new Map([...list.querySelectorAll("button")].map((b) => [b.dataset.room, b]));
  for (const [name, button] of existing) if (!online.has(name)) button.parentNode.remove();
  for (const [name, count] of online) {
    const button = existing.get(name) || list.appendChild(roomItem(name)).firstChild;
    button.querySelector(".count").textContent = `${count} online`;
    button.setAttribute("aria-current", String(name === view.current));
  }
}

function roomItem(name) {
  const button = el("button", null);
  button.type = "button";
  button.dataset.room = name;
  button.append(el("span", "name", `#${name}`), el("span", "count"));
  button.addEventListener("click", () => openRoom(name));
  const item = el("li", null);
  item.append(button);
  return item;
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
  showTyping(name);
  updateComposer();
  renderRoomList();
  refreshRoomList();
  saveViewSoon();
}

function onJoined(frame) {
  const room = roomState(frame.room);
  // A resumed join that could not replay everything left a gap: the older messages we
  // kept would sit next to it as if nothing was missing, so only the new ones stay and
  // the button loads the rest.
  if (!frame.resumed || !frame.complete) room.messages.clear();
  for (const message of frame.messages) {
    room.messages.set(message.seq, message);
    if (message.nonce) room.pending.delete(message.nonce);
  }
  room.members = new Map(frame.members.map((m) => [m.id, m]));
  // In a big room `members` is a sample and `online` the count (docs/protocol.md).
  room.online = frame.online > frame.members.length ? frame.online : null;
  if (frame.room === view.current) {
    renderMessages();
    renderMembers();
  }
  saveViewSoon();
}

function onJoinFailed({ room, message }) {
  view.rooms.delete(room);
  $("rooms").querySelector(`button[data-room="${CSS.escape(room)}"]`)?.parentNode.remove();
  if (view.current === room) {
    view.current = null;
    $("room-title").textContent = "No room yet";
    renderMessages();
    renderMembers();
    updateComposer();
  }
  $("join-error").textContent = `Could not join #${room}: ${message}`;
  saveViewSoon();
}

function onPresence({ room, user, event }) {
  const state = roomState(room);
  if (event === "join") state.members.set(user.id, user);
  else state.members.delete(user.id);
  if (room === view.current) renderMembers();
}

// A big room's count: its members are counted, not announced one by one.
function onOccupancy({ room, online }) {
  roomState(room).online = online;
  if (room === view.current) renderMembers();
}

function renderMembers() {
  const state = view.current ? roomState(view.current) : null;
  const members = state ? [...state.members.values()] : [];
  $("members").replaceChildren(...members.map((m) => el("li", null, m.name)));
  // The room list refreshes every few seconds; the open room's count is known now.
  const count = $("rooms").querySelector(`button[data-room="${CSS.escape(view.current || "")}"] .count`);
  if (count) count.textContent = `${state?.online ?? members.length} online`;
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
    el("span", "meta", status === "pending" ? "sending…" : status === "failed" ? `not sent: ${message.reason}` : time),
  );
  if (status === "failed") item.append(failedActions(message));
  return item;
}

// A message the server refused can be taken back into the composer or dropped.
function failedActions(message) {
  const actions = el("span", "actions");
  const edit = el("button", null, "Edit");
  edit.type = "button";
  edit.setAttribute("aria-label", "Edit the message that was not sent");
  edit.addEventListener("click", () => {
    dropFailed(message);
    $("body").value = message.body;
    checkComposer();
    $("body").focus();
  });
  const drop = el("button", null, "Discard");
  drop.type = "button";
  drop.setAttribute("aria-label", "Discard the message that was not sent");
  drop.addEventListener("click", () => {
    dropFailed(message);
    $("body").focus();
  });
  actions.append(edit, drop);
  return actions;
}

function dropFailed(message) {
  roomState(message.room).pending.delete(message.nonce);
  $("messages").querySelector(`li[data-nonce="${CSS.escape(message.nonce)}"]`)?.remove();
  saveViewSoon();
}

function renderMessages() {
  const list = $("messages");
  updateLoadOlder();
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
  saveViewSoon();
  if (message.room !== view.current) return;
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.querySelector(`li[data-nonce="${CSS.escape(message.nonce || "")}"]`)?.remove();
  const later = [...list.children].find((li) => li.dataset.seq === "" || Number(li.dataset.seq) > message.seq);
  list.insertBefore(messageItem(message), later || null);
  updateLoadOlder();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function onAck({ room, nonce }) {
  roomState(room).pending.delete(nonce);
  saveViewSoon();
}

function onFailed({ nonce, message: reason }) {
  for (const room of view.rooms.values()) {
    const pending = room.pending.get(nonce);
    if (!pending) continue;
    pending.failed = true;
    pending.reason = reason;
    const item = $("messages").querySelector(`li[data-nonce="${CSS.escape(nonce)}"]`);
    item?.replaceWith(messageItem(pending, "failed"));
  }
  saveViewSoon();
}

// ---- older messages ----

function oldestSeq(room) {
  const seqs = [...room.messages.keys()];
  return seqs.length === 0 ? null : Math.min(...seqs);
}

// Seqs start at 1 in every room: above the oldest one held, there is more to load.
function hasOlder(room) {
  const oldest = oldestSeq(room);
  return oldest !== null && oldest > 1 && !room.noOlder;
}

function updateLoadOlder() {
  const button = $("load-older");
  button.hidden = !view.current || !hasOlder(roomState(view.current));
  button.disabled = view.loadingOlder;
  button.textContent = view.loadingOlder ? "Loading older messages…" : "Load older messages";
}

function loadOlder() {
  if (!view.current || view.loadingOlder) return;
  const room = roomState(view.current);
  if (!hasOlder(room)) return;
  view.loadingOlder = true;
  view.connection.history(view.current, oldestSeq(room));
  updateLoadOlder();
}

function loadOlderIfAtTop() {
  if ($("messages").scrollTop <= 40) loadOlder();
}

function onHistory({ room, messages }) {
  view.loadingOlder = false;
  const state = roomState(room);
  for (const message of messages) state.messages.set(message.seq, message);
  if (messages.length === 0) state.noOlder = true;
  saveViewSoon();
  if (room !== view.current) return updateLoadOlder();
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  renderMessages();
  list.scrollTop = list.scrollHeight - fromBottom;
}

// ---- typing, per room ----

function onTyping({ room, user }) {
  const typing = roomState(room).typing;
  clearTimeout(typing.get(user.id)?.timer);
  typing.set(user.id, { name: user.name, timer: setTimeout(() => stopTyping(room, user.id), TYPING_SHOWN_MS) });
  if (room === view.current) showTyping(room);
}

// Someone stopped typing: they sent their message, or went quiet.
function stopTyping(room, userId) {
  const typing = roomState(room).typing;
  if (!typing.has(userId)) return;
  clearTimeout(typing.get(userId).timer);
  typing.delete(userId);
  if (room === view.current) showTyping(room);
}

function showTyping(room) {
  const names = [...roomState(room).typing.values()].map((t) => t.name);
  $("typing").textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

// ---- the composer ----

// Writing needs an open room; until then the composer says how to get one.
function updateComposer() {
  const open = Boolean(view.current);
  $("body").disabled = !open;
  $("send").disabled = !open;
  $("composer-hint").textContent = open ? "" : "Join or pick a room to start writing.";
  if (open) checkComposer();
}

// The server's limits, said while typing rather than after a refused send.
function checkComposer() {
  const body = $("body").value;
  const limit = view.connection?.limits.max_body_chars ?? 2000;
  const problem = body === "" ? null : bodyProblem(body, limit);
  $("composer-error").textContent = problem || "";
  if (problem) $("body").setAttribute("aria-invalid", "true");
  else $("body").removeAttribute("aria-invalid");
  return problem;
}

function sendFromComposer() {
  const body = $("body").value;
  if (!view.current || body.trim() === "" || checkComposer()) return;
  const nonce = crypto.randomUUID();
  const pending = { nonce, body, from: view.session.user, room: view.current };
  roomState(view.current).pending.set(nonce, pending);
  $("messages").append(messageItem(pending, "pending"));
  $("messages").scrollTop = $("messages").scrollHeight;
  $("body").value = "";
  view.connection.send(view.current, body, nonce);
  saveView();
}

// ---- wiring ----

function joinFromForm() {
  const name = $("room-name").value.trim();
  if (!ROOM.test(name)) {
    $("join-error").textContent = ROOM.rule;
    $("room-name").setAttribute("aria-invalid", "true");
    return $("room-name").focus();
  }
  $("join-error").textContent = "";
  $("room-name").removeAttribute("aria-invalid");
  $("room-name").value = "";
  openRoom(name);
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    authenticate(api.login);
  });
  $("register").addEventListener("click", () => authenticate(api.register));
  // An error is about what was typed: once the user changes it, it is stale.
  for (const id of ["username", "password"]) $(id).addEventListener("input", () => showAuthError(""));
  $("room-name").addEventListener("input", () => {
    $("join-error").textContent = "";
    $("room-name").removeAttribute("aria-invalid");
  });
  $("logout").addEventListener("click", () => signOut());
  $("retry").addEventListener("click", () => {
    $("problem").hidden = true;
    view.connection?.start();
  });
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    joinFromForm();
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
    checkComposer();
    const now = Date.now();
    if (view.current && now - view.lastTypingSent > TYPING_EVERY_MS) {
      view.lastTypingSent = now;
      view.connection.typing(view.current);
    }
  });
  $("messages").addEventListener("scroll", loadOlderIfAtTop);
  $("load-older").addEventListener("click", loadOlder);
  window.addEventListener("pagehide", saveView);

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
