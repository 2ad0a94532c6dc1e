// The example app's own account page (examples/fastapi_rag/static) in headless Chromium with a
// Chrome DevTools virtual authenticator (a platform authenticator with user verification, as
// Touch ID or Windows Hello would be): sign up with the learner profile, add a passkey, sign
// out, sign in with the passkey alone; turn on an authenticator app (its code computed here
// from the key the page shows, RFC 6238) and answer the second-factor prompt of a password
// sign-in with a code, then with the passkey. The page is loaded from http://localhost:<port>,
// the origin the stack gives Gatehouse (GATEHOUSE_WEBAUTHN_ORIGINS, RP id `localhost`).
// Without Chromium the suite is skipped, except under CI=true, where it fails.
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, CDPSession, Page } from "puppeteer-core";
import { startStack, type Stack } from "./stack.js";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM && process.env.CI === "true") {
  throw new Error(`CI=true and no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
}
if (!HAVE_CHROMIUM) console.warn(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);

const PASSWORD = "correct horse battery staple";
const WAIT = { timeout: 15_000 };

/** RFC 4648 base32 (no padding) to bytes. */
function base32Decode(text: string): Buffer {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const char of text.replace(/=+$/, "").toUpperCase()) {
    const index = alphabet.indexOf(char);
    if (index < 0) throw new Error(`not base32: ${char}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (SHA-1, 6 digits, 30-second steps) at `seconds`, as authenticator apps do. */
function totp(secret: string, seconds = Date.now() / 1000): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(seconds / 30)));
  const mac = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(code).padStart(6, "0");
}

interface SessionInfo {
  user: { email: string };
  session: { aal: number; amr: string[] };
}

describe.skipIf(!HAVE_CHROMIUM)("the example's account page with passkeys, in headless Chromium", () => {
  let stack: Stack;
  let browser: Browser;

  beforeAll(async () => {
    stack = await startStack();
    const { launch } = await import("puppeteer-core");
    browser = await launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  const status = (page: Page) => page.$eval("#status", (el) => el.textContent ?? "");
  const waitForStatus = (page: Page, start: string) =>
    page
      .waitForFunction((start) => document.querySelector("#status")?.textContent?.startsWith(start), WAIT, start)
      .catch(async (error) => {
        const message = await page.$eval("#message", (el) => el.textContent).catch(() => "");
        throw new Error(`${error}: #status is ${JSON.stringify(await status(page))}, #message ${JSON.stringify(message)}\n${stack.logs()}`);
      });
  const visible = (page: Page, id: string) =>
    page.waitForFunction((id) => document.getElementById(id)?.hidden === false, WAIT, id);
  const session = (page: Page) =>
    page.evaluate(async () => (await fetch("/auth/session", { credentials: "same-origin" })).json()) as Promise<SessionInfo>;
  async function signOut(page: Page) {
    await page.click("#sign-out");
    await waitForStatus(page, "Signed out.");
  }
  async function passwordSignIn(page: Page, email: string) {
    await page.$eval("#sign-in-form", (form) => (form as HTMLFormElement).reset());
    await page.type("#sign-in-form input[name=email]", email);
    await page.type("#sign-in-form input[name=password]", PASSWORD);
    await page.click("#sign-in-form button");
    await visible(page, "second-factor");
  }

  /** A page of the example app with a virtual platform authenticator that holds
   * discoverable credentials and verifies its user (as a fingerprint would), answering at
   * once. `manual` removes the browser's WebAuthn JSON helpers first, so the page converts
   * base64url itself. Each page has a browser context of its own (no shared cookies). */
  async function openPage(manual = false) {
    // A context of its own: no cookies of another test.
    const page = await (await browser.createBrowserContext()).newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    if (manual) {
      await page.evaluateOnNewDocument(() => {
        const pkc = PublicKeyCredential as unknown as Record<string, unknown>;
        delete pkc.parseCreationOptionsFromJSON;
        delete pkc.parseRequestOptionsFromJSON;
        delete (PublicKeyCredential.prototype as unknown as Record<string, unknown>).toJSON;
      });
    }
    const cdp: CDPSession = await page.createCDPSession();
    await cdp.send("WebAuthn.enable");
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    await page.goto(`${stack.localUrl}/`);
    await waitForStatus(page, "Signed out.");
    expect(await page.$eval("#passkey-sign-in", (el) => (el as HTMLElement).hidden)).toBe(false);
    if (manual) {
      const helpers = await page.evaluate(() => [
        typeof (PublicKeyCredential as unknown as Record<string, unknown>).parseCreationOptionsFromJSON,
        typeof (PublicKeyCredential.prototype as unknown as Record<string, unknown>).toJSON,
      ]);
      expect(helpers).toEqual(["undefined", "undefined"]);
    }
    return { page, errors, cdp, authenticatorId };
  }

  async function signUp(page: Page, email: string) {
    await page.type("#sign-up-form input[name=name]", "Passkey Reader");
    await page.type("#sign-up-form input[name=email]", email);
    await page.type("#sign-up-form input[name=password]", PASSWORD);
    await page.click("#sign-up-form > button");
    await waitForStatus(page, "Signed in as Passkey Reader");
  }

  async function addPasskey(page: Page, firstFactor: boolean) {
    await visible(page, "passkey-register");
    const before = await page.$$eval('#factors li[data-kind="passkey"]', (items) => items.length);
    await page.click("#passkey-register");
    if (firstFactor) {
      await visible(page, "codes");
      expect(await page.$$eval("#codes-list li", (items) => items.length)).toBe(10);
      await page.click("#codes-done");
    }
    await page.waitForFunction(
      (before) => document.querySelectorAll('#factors li[data-kind="passkey"]').length === before + 1,
      WAIT,
      before,
    );
  }

  it("adds a passkey, signs in with it alone, and answers the second-factor prompt", async () => {
    const { page, errors, cdp, authenticatorId } = await openPage();

    // Sign up with the learner profile and the consent the background fields need.
    const email = `passkey-${Date.now()}@example.com`;
    await page.type("#sign-up-form input[name=name]", "Passkey Reader");
    await page.type("#sign-up-form input[name=email]", email);
    await page.type("#sign-up-form input[name=password]", PASSWORD);
    await page.select("#sign-up-form select[name=learning_style]", "code_first");
    await page.click("#sign-up-form input[name=consent_given]");
    await page.select("#sign-up-form select[name=programming_level]", "advanced");
    await page.type("#sign-up-form input[name=programming_languages]", "python, rust");
    await page.click("#sign-up-form > button");
    await waitForStatus(page, "Signed in as Passkey Reader");
    expect(await status(page)).toContain("password only");
    const profile = await page.evaluate(async () => (await fetch("/api/v1/profile")).json());
    expect(profile).toMatchObject({
      consent_given: true,
      programming_level: "advanced",
      learning_style: "code_first",
      programming_languages: ["python", "rust"],
    });

    // Add a passkey: the first second factor, so the recovery codes come with it.
    await addPasskey(page, true);
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    expect(credentials).toHaveLength(1);
    expect(credentials[0]!.isResidentCredential).toBe(true);
    expect(credentials[0]!.rpId).toBe("localhost");

    // Sign out, then in with the passkey alone: a two-factor session (the passkey verified
    // its user).
    await signOut(page);
    await page.click("#passkey-sign-in");
    await waitForStatus(page, "Signed in as Passkey Reader");
    expect(await status(page)).toContain("two-step sign-in");
    const passwordless = await session(page);
    expect(passwordless.user.email).toBe(email);
    expect(passwordless.session.aal).toBe(2);
    expect(passwordless.session.amr).toContain("mfa");
    expect(passwordless.session.amr.some((m) => m === "hwk" || m === "swk")).toBe(true);
    expect(passwordless.session.amr).not.toContain("pwd");

    // That session may add an authenticator app: its code is computed from the shown key.
    await visible(page, "enroll-start");
    await page.click("#enroll-start");
    await visible(page, "enroll");
    const secret = await page.$eval("#secret", (el) => el.textContent ?? "");
    expect(secret).toMatch(/^[A-Z2-7]{16,}$/);
    const enrolCode = totp(secret);
    await page.type("#enroll-confirm-form input[name=code]", enrolCode);
    await page.click("#enroll-confirm-form button");
    await visible(page, "codes");
    await page.click("#codes-done");
    await page.waitForFunction(() => document.querySelectorAll("#factors li").length === 2, WAIT);
    expect(await page.$$eval("#factors li", (items) => items.map((li) => li.dataset.kind))).toEqual([
      "passkey",
      "totp",
    ]);

    // The password now asks for the second factor, offering the passkey too. The code that
    // turned the app on is spent: the next step's code (within Gatehouse's tolerance) answers.
    await signOut(page);
    await passwordSignIn(page, email);
    await visible(page, "second-factor-passkey-box");
    let code = totp(secret, Date.now() / 1000 + 30);
    if (code === enrolCode) code = totp(secret, Date.now() / 1000 + 60);
    await page.type("#second-factor-form input[name=code]", code);
    await page.click("#second-factor-form > button");
    await waitForStatus(page, "Signed in as Passkey Reader");
    const withCode = await session(page);
    expect(withCode.session.aal).toBe(2);
    expect(withCode.session.amr).toEqual(expect.arrayContaining(["pwd", "otp", "mfa"]));

    // And the same prompt answered with the passkey.
    await signOut(page);
    await passwordSignIn(page, email);
    await visible(page, "second-factor-passkey-box");
    await page.click("#second-factor-passkey");
    await waitForStatus(page, "Signed in as Passkey Reader");
    const withPasskey = await session(page);
    expect(withPasskey.session.aal).toBe(2);
    expect(withPasskey.session.amr).toContain("pwd");
    expect(withPasskey.session.amr.some((m) => m === "hwk" || m === "swk")).toBe(true);

    expect(errors).toEqual([]);
  });

  it("does the same where the browser has no WebAuthn JSON helpers (base64url by hand)", async () => {
    const { page, errors } = await openPage(true);
    const email = `manual-${Date.now()}@example.com`;
    await signUp(page, email);
    await addPasskey(page, true);

    await signOut(page);
    await page.click("#passkey-sign-in");
    await waitForStatus(page, "Signed in as Passkey Reader");
    const passwordless = await session(page);
    expect(passwordless.user.email).toBe(email);
    expect(passwordless.session.aal).toBe(2);

    await signOut(page);
    await passwordSignIn(page, email);
    await visible(page, "second-factor-passkey-box");
    // No authenticator app: the prompt asks for a recovery code, not an app code.
    expect(await page.$eval("#use-recovery-label", (el) => (el as HTMLElement).hidden)).toBe(true);
    await page.click("#second-factor-passkey");
    await waitForStatus(page, "Signed in as Passkey Reader");
    const withPasskey = await session(page);
    expect(withPasskey.session.aal).toBe(2);
    expect(withPasskey.session.amr).toContain("pwd");
    expect(errors).toEqual([]);
  });
});
