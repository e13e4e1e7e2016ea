// The web console in a real browser (Debian's chromium, driven by playwright-core):
// nodes appear, a node's detail opens with its charts, the page fits a phone, a
// killed agent turns offline within the detection bound, and a 1,000-node update
// renders in time. Run by scripts/browser-test.sh, which starts the fleet and says
// where it is:
//   CONSOLE_URL  the console            VICTIM, VICTIM_PID  the agent to kill
//   NODES        how many are running   BOUND_MS            the detection bound
//   OUT          where screenshots go
import { chromium } from "playwright-core";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const url = env("CONSOLE_URL"), victim = env("VICTIM"), victimPid = Number(env("VICTIM_PID"));
const nodes = Number(env("NODES")), bound = Number(env("BOUND_MS")), out = env("OUT");
const results = {};
const fail = (m) => { console.error("browser test FAILED: " + m); process.exitCode = 1; };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction((n) => document.querySelectorAll(".tile.s-online").length === n, nodes, { timeout: 30000 });
  results.tiles_online = await page.locator(".tile.s-online").count();
  await page.screenshot({ path: `${out}/console.png` });

  // A node's detail, with its charts once a few readings are in.
  await page.click(`.tile[data-node="${victim}"]`);
  await page.waitForSelector("#detail.on #d-charts .chart", { timeout: 10000 });
  // A line once two samples are in (one per node every 10 s); the panel refreshes every 5 s.
  await page.waitForFunction(() => document.querySelectorAll("#d-charts svg polyline").length >= 2, null, { timeout: 30000 });
  results.detail_title = await page.textContent("#d-title");
  await page.screenshot({ path: `${out}/console-node.png` });
  await page.click("#close");

  // Tasks and alerts tabs render.
  await page.click('nav button[data-tab="tasks"]');
  await page.waitForFunction(() => document.querySelectorAll("#task-rows tr").length >= 100, null, { timeout: 10000 });
  await page.click('nav button[data-tab="profiles"]');
  // The 300 echo tasks the script ran, profiled.
  await page.waitForFunction(() => document.querySelector("#profile-rows").textContent.includes("echo"), null, { timeout: 10000 });
  await page.screenshot({ path: `${out}/console-profiles.png` });
  await page.click('nav button[data-tab="fleet"]');

  // Killed without a goodbye: offline on the page within the bound.
  const t0 = Date.now();
  process.kill(victimPid, "SIGKILL");
  await page.waitForSelector(`.tile.s-offline[data-node="${victim}"]`, { timeout: bound });
  results.offline_after_ms = Date.now() - t0;
  await page.screenshot({ path: `${out}/console-offline.png` });

  // The page at 1,000 nodes: the real render function on a synthetic update.
  results.render_1000 = await page.evaluate(() => {
    const states = ["online", "online", "online", "suspect", "offline"];
    const f = { at_ms: Date.now(), version: "0.1.0", health: { broker: true, journal: "ok", in_flight: 12 },
      counts: { online: 600, suspect: 200, offline: 200 }, scaling: null, fleet: null, warnings: [], alerts: [],
      nodes: Array.from({ length: 1000 }, (_, i) => [`pi-${String(i).padStart(4, "0")}`, states[i % 5], "healthy",
        12.5 + (i % 50), 40.2, 55.1, 48.5, i % 7 ? 0 : 1, "aarch64"]) };
    const times = [];
    for (let i = 0; i < 20; i++) { const t = performance.now(); window.fog.render(f); times.push(performance.now() - t); }
    times.sort((a, b) => a - b);
    return { median_ms: times[10], max_ms: times[19], event_bytes: JSON.stringify(f).length,
             tiles: document.querySelectorAll(".tile").length };
  });
  // Layout and paint of those tiles too, not only building them.
  results.frame_1000_ms = await page.evaluate(() => new Promise((done) => {
    const t = performance.now(); requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));
  }));
  await page.screenshot({ path: `${out}/console-1000.png` });

  // A phone.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await phone.goto(url);
  await phone.waitForSelector(".tile", { timeout: 15000 });
  results.phone_overflow_px = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await phone.screenshot({ path: `${out}/console-phone.png` });

  const foreign = requests.filter((r) => !r.startsWith(new URL(url).origin));
  results.foreign_requests = foreign.length;
  results.page_errors = errors;
  if (results.tiles_online !== nodes) fail(`${results.tiles_online} online tiles, not ${nodes}`);
  if (foreign.length) fail(`requests outside the coordinator: ${foreign.join(", ")}`);
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  if (results.render_1000.tiles !== 1000) fail(`${results.render_1000.tiles} tiles for 1,000 nodes`);
  if (results.phone_overflow_px > 0) fail(`the page is ${results.phone_overflow_px} px wider than a phone`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
