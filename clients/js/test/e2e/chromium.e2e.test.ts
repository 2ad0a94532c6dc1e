// Headless Chromium (Debian's `chromium`) loads a static page that imports the built client
// from another port of 127.0.0.1 (same site, another origin: listed in the example app's
// GATEHOUSE_TRUSTED_ORIGINS, which also turns on CORS with credentials), and signs up,
// reloads and signs out against the real stack. Without Chromium the suite is skipped, except
// under CI=true, where it fails.
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { extname, join, normalize } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "puppeteer-core";
import { freePort, PACKAGE_DIR, startStack, type Stack } from "./stack.js";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM && process.env.CI === "true") {
  throw new Error(`CI=true and no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
}
if (!HAVE_CHROMIUM) console.warn(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);

const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

function serveStatic(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file =
      path === "/" ? join(PACKAGE_DIR, "test/e2e/page/index.html") : join(PACKAGE_DIR, normalize(path).replace(/^(\.\.[/\\])+/, ""));
    if (!(path === "/" || path.startsWith("/dist/")) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  return new Promise((done) => server.listen(port, "127.0.0.1", () => done(server)));
}

describe.skipIf(!HAVE_CHROMIUM)("in headless Chromium", () => {
  let stack: Stack;
  let pages: Server;
  let browser: Browser;
  let pageUrl: string;

  beforeAll(async () => {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    stack = await startStack({ trustedOrigins: [origin] });
    pages = await serveStatic(port);
    pageUrl = `${origin}/?api=${encodeURIComponent(stack.appUrl)}`;
    const { launch } = await import("puppeteer-core");
    browser = await launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => (pages ? pages.close(r) : r(undefined)));
    await stack?.stop();
  });

  it("signs up, keeps the session across a reload, and signs out", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(pageUrl);
    await page.waitForFunction(() => (window as unknown as { gatehouseReady?: boolean }).gatehouseReady === true);
    const who = () => page.$eval("#who", (el) => el.textContent);
    await page.waitForFunction(() => document.querySelector("#who")?.textContent === "signed out");

    const email = `chromium-${Date.now()}@example.com`;
    await page.evaluate(async (email) => {
      const client = (window as unknown as { gatehouse: import("../../src/index.js").GatehouseClient }).gatehouse;
      await client.signUp({
        email,
        password: "correct horse battery staple",
        name: "Chromium",
        profile: { programming_level: "beginner", learning_style: "visual", consent_given: true },
      });
    }, email);
    await page.waitForFunction(
      (email) => document.querySelector("#who")?.textContent === `signed in as ${email}`,
      { timeout: 10_000 },
      email,
    );

    // The browser kept the cookie (SameSite=Lax, same site): a fresh load is signed in.
    await page.reload();
    await page.waitForFunction(
      (email) => document.querySelector("#who")?.textContent === `signed in as ${email}`,
      { timeout: 10_000 },
      email,
    );
    const level = await page.evaluate(async () => {
      const client = (window as unknown as { gatehouse: import("../../src/index.js").GatehouseClient }).gatehouse;
      return (await client.getProfile()).programming_level;
    });
    expect(level).toBe("beginner");

    await page.evaluate(async () => {
      const client = (window as unknown as { gatehouse: import("../../src/index.js").GatehouseClient }).gatehouse;
      await client.signOut();
    });
    await page.waitForFunction(() => document.querySelector("#who")?.textContent === "signed out", { timeout: 10_000 });
    expect(await who()).toBe("signed out");
    expect(errors).toEqual([]);
  });
});
