// The server's rules for what users type, stated once so every form says the same rule
// the server enforces (src/model.rs: usernames, passwords, room names and bodies).

export const USERNAME = {
  test: (value) => /^[A-Za-z0-9_]{3,32}$/.test(value),
  rule: "Username: 3–32 letters, digits or _.",
};

export const PASSWORD = {
  // The server counts characters (Unicode scalar values), not UTF-16 units.
  test: (value) => [...value].length >= 8 && [...value].length <= 128,
  rule: "Password: 8–128 characters.",
};

export const ROOM = {
  test: (value) => /^[a-z0-9][a-z0-9_-]{0,63}$/.test(value),
  rule: "Room names: 1–64 characters of a–z, 0–9, _ and -, starting with a letter or digit.",
};

// Control characters other than newline and tab (Unicode category Cc), and the
// bidirectional overrides and isolates the server refuses because they can disguise text.
const CONTROL = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/;
const BIDI = /[\u202A-\u202E\u2066-\u2069]/;

// Why the server would refuse this body, as a sentence; null when it would take it.
export function bodyProblem(body, maxChars) {
  const length = [...body].length;
  if (body.trim() === "") return "Write something first.";
  if (length > maxChars) return `Too long: ${length} characters, the limit is ${maxChars}.`;
  if (CONTROL.test(body)) return "It contains a control character, which the server refuses.";
  if (BIDI.test(body)) {
    return "It contains a text-direction control character, which the server refuses because it can disguise text.";
  }
  return null;
}
