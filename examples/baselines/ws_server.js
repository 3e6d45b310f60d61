// Node's `ws` package (the most used WebSocket server) as an echo or broadcast server: the
// baseline evloop's ws codec is measured against (examples/bench.rs) and a server no one here
// wrote for the loader's tests. scripts/test installs `ws` under target/node.
//   node examples/baselines/ws_server.js echo|broadcast 127.0.0.1:0
// prints "<mode> listening on HOST:PORT" once it listens. Broadcast lines are
// "<sender address>: <message>", as evloop's broadcast handler sends them.
const path = require("node:path");
const { WebSocketServer, WebSocket } = require(path.resolve(__dirname, "../../target/node/node_modules/ws"));

const [mode, address] = process.argv.slice(2);
const at = address.lastIndexOf(":");
const server = new WebSocketServer({
  host: address.slice(0, at),
  port: Number(address.slice(at + 1)),
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});
server.on("connection", (socket, request) => {
  const name = `${request.socket.remoteAddress}:${request.socket.remotePort}`;
  socket.on("message", (data, isBinary) => {
    if (mode === "echo") {
      socket.send(data, { binary: isBinary });
      return;
    }
    const line = `${name}: ${data}`;
    for (const other of server.clients) {
      if (other !== socket && other.readyState === WebSocket.OPEN) other.send(line);
    }
  });
});
server.on("listening", () => console.log(`${mode} listening on ${address.slice(0, at)}:${server.address().port}`));
