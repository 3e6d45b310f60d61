// A chat room (the `chat` handler) in real browsers: a line client says something first;
// then a page opens and gets it as history, above a divider, with its own name and the
// member list; it takes a name in the name box; a second page joins, and each sees the
// other's name, lines and the member list.
//
// Run by tests/browser.rs:
//   node tests/browser/names.mjs PAGE_URL LINE_HOST:PORT [SCREENSHOT.png]
// Prints one line per check that passed, and exits non-zero at the first that fails.

import { check, launch, lineClient as connectLine, timeout } from "./common.mjs";

const [pageUrl, lineTarget, screenshot] = process.argv.slice(2);
const [lineHost, linePort] = lineTarget.split(":");

const browser = await launch();

// A line client in the room.
function lineClient() {
  return connectLine(lineHost, linePort);
}

async function openPage() {
  const page = await browser.newPage({ viewport: { width: 820, height: 380 } });
  await page.goto(pageUrl);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected as"), null, { timeout });
  return page;
}

async function waitForLine(page, fragment) {
  await page.waitForFunction(
    (fragment) => [...document.querySelectorAll("#lines li")].some((item) => item.textContent.includes(fragment)),
    fragment,
    { timeout },
  );
}

async function members(page, expected) {
  await page.waitForFunction(
    (expected) => {
      const names = [...document.querySelectorAll("#member-list li")].map((item) => item.textContent);
      return expected.every((name) => names.includes(name));
    },
    expected,
    { timeout },
  );
}

try {
  const terminal = lineClient();
  await terminal.waitFor((line) => line.startsWith("* you are "), "its greeting");
  terminal.socket.write("/nick nc\nsaid before anyone else came\n");
  await terminal.waitFor((line) => line === "* you are now nc", "its new name");
  const alice = await openPage();
  await waitForLine(alice, "nc: said before anyone else came");
  const order = await alice.$$eval("#lines li", (items) => items.map((item) => item.className || "line"));
  check(order.indexOf("divider") > 0, "the history comes first, above a divider");
  await members(alice, ["nc"]);
  check(true, "the member list shows who is here");
  await alice.fill("#name", "alice");
  await alice.click("#name-form button");
  await alice.waitForFunction(() => document.getElementById("status").textContent === "connected as alice", null, { timeout });
  await terminal.waitFor((line) => / is now alice$/.test(line), "alice's rename");
  check(true, "the name box renames, and the room is told");
  const bob = await openPage();
  await bob.fill("#name", "bob");
  await bob.click("#name-form button");
  await members(alice, ["alice", "bob", "nc"]);
  await members(bob, ["alice", "bob", "nc"]);
  check(true, "both pages list every member");
  await bob.fill("#text", "hi alice");
  await bob.click("#say button");
  await waitForLine(alice, "bob: hi alice");
  await terminal.waitFor((line) => line === "bob: hi alice", "bob's line");
  check(true, "lines carry the sender's name");
  if (screenshot) {
    await alice.fill("#text", "hello bob, nc: one thread serves us all");
    await alice.click("#say button");
    await waitForLine(bob, "one thread serves us all");
    await bob.screenshot({ path: screenshot });
    console.log(`screenshot ${screenshot} ok`);
  }
  terminal.socket.destroy();
} finally {
  await browser.close();
}
