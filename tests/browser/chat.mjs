// Two real browser pages (Debian's Chromium, driven by Playwright) open evloop's chat page,
// type, and see each other's lines; a line client (a plain TCP socket, as `nc` would be) in
// the same room sees the browsers' lines and they see its.
//
// Run by tests/browser.rs (scripts/test installs playwright-core under target/node and
// Debian's chromium):
//   node tests/browser/chat.mjs PAGE_URL [PAGE_URL_2] LINE_HOST:PORT [SCREENSHOT.png] [--insecure]
// PAGE_URL_2 (another server or worker of the same room) defaults to PAGE_URL; --insecure
// accepts a self-signed test certificate (https:// pages, wss://). Prints one line per check
// that passed, and exits non-zero at the first that fails.

import { check, launch, lineClient as connectLine, timeout } from "./common.mjs";

const insecure = process.argv.includes("--insecure");
const args = process.argv.slice(2).filter((arg) => arg !== "--insecure");
const firstUrl = args[0];
const secondUrl = args.length >= 3 && args[1].startsWith("http") ? args[1] : firstUrl;
const lineTarget = args.find((arg, index) => index > 0 && !arg.startsWith("http") && !arg.endsWith(".png"));
const screenshot = args.find((arg) => arg.endsWith(".png"));
const [lineHost, linePort] = lineTarget.split(":");

const browser = await launch({ insecure });

// A line client in the room.
function lineClient() {
  return connectLine(lineHost, linePort);
}

async function openPage(url) {
  const page = await browser.newPage({ viewport: { width: 760, height: 340 }, ignoreHTTPSErrors: insecure });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout });
  return page;
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#say button");
}

async function waitForLine(page, fragment) {
  await page.waitForFunction(
    (fragment) => [...document.querySelectorAll("#lines li")].some((item) => item.textContent.includes(fragment)),
    fragment,
    { timeout },
  );
}

try {
  const alice = await openPage(firstUrl);
  const bob = await openPage(secondUrl);
  const terminal = lineClient();
  await terminal.connected;
  console.log("two pages and a line client connected ok");
  // Until every member has joined everywhere (over a backplane, a subscription takes a
  // moment), a line may reach no one: alice repeats until bob hears.
  for (let attempt = 0; ; attempt++) {
    await say(alice, `hello bob ${attempt}`);
    try {
      await waitForLine(bob, `: hello bob ${attempt}`);
      break;
    } catch (error) {
      if (attempt >= 20) throw error;
    }
  }
  check(true, "a page sees another page's line");
  await say(bob, "hi alice, bob here");
  await waitForLine(alice, ": hi alice, bob here");
  check(true, "and the other way");
  await terminal.waitFor((line) => line.endsWith(": hi alice, bob here"), "bob's line");
  check(true, "the line client sees a page's line");
  terminal.socket.write("hello browsers, from nc\n");
  await waitForLine(alice, ": hello browsers, from nc");
  await waitForLine(bob, ": hello browsers, from nc");
  check(true, "the pages see the line client's line");
  if (screenshot) {
    await say(alice, "evloop serves this page, and the room, from one thread");
    await waitForLine(bob, "from one thread");
    await bob.screenshot({ path: screenshot });
    console.log(`screenshot ${screenshot} ok`);
  }
  terminal.socket.destroy();
} finally {
  await browser.close();
}
