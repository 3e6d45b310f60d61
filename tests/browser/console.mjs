// The console in a real browser (Debian's Chromium, driven by Playwright): it opens the
// console page, two line clients (plain TCP sockets, as `nc` would be) take turns with an
// echo listener, and the page's strip of turns shows both, each in a turn of its own.
//
// Run by tests/browser.rs (scripts/test installs playwright-core under target/node and
// Debian's chromium):
//   node tests/browser/console.mjs CONSOLE_URL ECHO_HOST:PORT [SCREENSHOT.png]
// Prints one line per check that passed, and exits non-zero at the first that fails.

import net from "node:net";

import { check, launch, timeout } from "./common.mjs";

const [consoleUrl, echoTarget, screenshot] = process.argv.slice(2);
const [echoHost, echoPort] = echoTarget.split(":");

const browser = await launch();

// A line client that sends a line and waits for its echo.
function lineClient() {
  const socket = net.connect(Number(echoPort), echoHost);
  socket.setEncoding("utf8");
  let waiting = null;
  let buffered = "";
  socket.on("data", (data) => {
    buffered += data;
    if (buffered.endsWith("\n") && waiting) {
      const done = waiting;
      waiting = null;
      buffered = "";
      done();
    }
  });
  const ready = new Promise((resolve) => socket.on("connect", resolve));
  return {
    ready,
    socket,
    roundtrip: (line) =>
      new Promise((resolve) => {
        waiting = resolve;
        socket.write(line + "\n");
      }),
  };
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await page.goto(consoleUrl);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("watching"), null, { timeout });
  check(true, "the console page opens its stream");
  const first = lineClient();
  const second = lineClient();
  await Promise.all([first.ready, second.ready]);
  for (let round = 0; round < 8; round++) {
    await first.roundtrip(`first ${round}`);
    await second.roundtrip(`second ${round}`);
  }
  await page.waitForFunction(
    () => new Set([...document.querySelectorAll("#strip .block")].map((block) => block.dataset.conn)).size >= 2,
    null,
    { timeout },
  );
  check(true, "the strip shows both clients");
  const columns = await page.$$eval("#strip .turn", (turns) =>
    turns.map((turn) => [...turn.querySelectorAll(".block")].map((block) => block.dataset.conn)),
  );
  const served = columns.filter((column) => column.length > 0).map((column) => column.join(","));
  const alternations = served.slice(1).filter((conn, index) => conn !== served[index]).length;
  check(alternations >= 8, "the clients take turns, one turn each");
  await page.waitForFunction(() => document.querySelectorAll("#connections tr").length >= 2, null, { timeout });
  check(true, "the connection table lists both");
  if (screenshot) {
    await page.screenshot({ path: screenshot });
  }
  first.socket.end();
  second.socket.end();
} finally {
  await browser.close();
}
