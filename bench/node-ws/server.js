// The Node peer of the benchmark: every text message any client sends is broadcast to
// every connected client (the `ws` README's broadcast example), nothing else.
// Usage: node server.js 127.0.0.1:9002
import { WebSocketServer, WebSocket } from "ws";

const [host, port] = (process.argv[2] || "127.0.0.1:9002").split(":");
const wss = new WebSocketServer({ host, port: Number(port), path: "/ws" });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.error(`node-ws listening on ${host}:${port}`));
