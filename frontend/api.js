// The HTTP side of palisade: accounts, tokens, tickets, rooms.
// Every failure becomes an ApiError carrying the server's error code and message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(response.status, error.code || "unknown", error.message || response.statusText);
  }
  return data;
}

export const register = (username, password) =>
  call("POST", "/api/register", { body: { username, password } });
export const login = (username, password) =>
  call("POST", "/api/login", { body: { username, password } });
export const renew = (token) => call("POST", "/api/token", { token });
export const ticket = (token) => call("POST", "/api/tickets", { token });
export const rooms = (token) => call("GET", "/api/rooms", { token });
