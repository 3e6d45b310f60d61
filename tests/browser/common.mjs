// What the browser tests share: Chromium launched by Playwright (from target/node, where
// scripts/test installs playwright-core), the check that prints what passed, and a line
// client (a plain TCP socket, as `nc` would be) that collects the lines it receives.

import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";

const require = createRequire(path.resolve("target/node/package.json"));
const { chromium } = require("playwright-core");

/// How long any wait of a browser test may take, in milliseconds.
export const timeout = 15000;

// Playwright's launch gives the browser a fresh, empty profile of its own (the
// --user-data-dir the flags below would otherwise need). `insecure` accepts a self-signed
// test certificate.
export function launch({ insecure = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...(insecure ? ["--ignore-certificate-errors"] : []),
    ],
  });
}

/// Prints `WHAT ok`, or throws (the test exits non-zero at the first check that fails).
export function check(condition, what) {
  if (!condition) {
    throw new Error(`failed: ${what}`);
  }
  console.log(`${what} ok`);
}

/// A line client of HOST:PORT: the lines it receives, and a way to wait for one.
export function lineClient(host, port) {
  const socket = net.connect(Number(port), host);
  const lines = [];
  let buffered = "";
  socket.setEncoding("utf8");
  socket.on("data", (data) => {
    buffered += data;
    let at;
    while ((at = buffered.indexOf("\n")) >= 0) {
      lines.push(buffered.slice(0, at));
      buffered = buffered.slice(at + 1);
    }
  });
  const connected = new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("error", reject);
  });
  async function waitFor(predicate, what) {
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      const found = lines.find(predicate);
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`the line client never got ${what}; it got ${JSON.stringify(lines)}`);
  }
  return { socket, connected, waitFor };
}
