// Starts the real stack for the end-to-end tests: the gatehouse binary (SQLite in a temporary
// directory, free ports, the Python suite's test settings: rate limits out of reach, cheap
// Argon2) and the example FastAPI app (examples/fastapi_rag) under uvicorn from the Python venv.
// Gatehouse's WebAuthn relying party is `localhost` with the app's origin
// `http://localhost:<port>` (Stack.localUrl), so a page loaded from there can use passkeys.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = resolve(HERE, "../..");
export const REPO = resolve(PACKAGE_DIR, "../..");

/** As gatehouse.testing.TEST_ENV. */
const RATE_LIMITS = Object.fromEntries(
  [
    "SIGN_IN_PER_ACCOUNT",
    "SIGN_IN_PER_IP",
    "SIGN_UP_PER_IP",
    "RESET_PER_EMAIL",
    "RESET_PER_IP",
    "VERIFICATION_PER_ACCOUNT",
    "REDEEM_PER_IP",
  ].map((name) => [`GATEHOUSE_RATE_${name}`, "10000/1m"]),
);
const FAST_HASHING = {
  GATEHOUSE_ARGON2_MEMORY_KIB: "1024",
  GATEHOUSE_ARGON2_ITERATIONS: "1",
  GATEHOUSE_ARGON2_PARALLELISM: "1",
};

export function gatehouseBinary(): string {
  const path = resolve(PACKAGE_DIR, process.env.GATEHOUSE_BIN || "../../target/debug/gatehouse");
  if (!existsSync(path)) {
    throw new Error(
      `no gatehouse binary at ${path}: build it (cargo build) or set GATEHOUSE_BIN to its path`,
    );
  }
  return path;
}

export function pythonBinary(): string {
  const path = resolve(PACKAGE_DIR, process.env.GATEHOUSE_PYTHON || "../python/.venv/bin/python");
  if (!existsSync(path)) {
    throw new Error(
      `no Python at ${path}: run clients/python/ci.sh (it makes the venv) or set GATEHOUSE_PYTHON ` +
        "to a Python with the gatehouse package, fastapi and uvicorn",
    );
  }
  return path;
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** The environment without a developer's GATEHOUSE_* settings. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (key.startsWith("GATEHOUSE_") || key === "DATABASE_URL" || key === "REDIS_URL") continue;
    env[key] = value;
  }
  return env;
}

async function waitFor(url: string, process: ChildProcess, what: string, log: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (process.exitCode !== null) throw new Error(`${what} exited at start:\n${tail(log)}`);
    try {
      const answer = await fetch(url);
      if (answer.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not answer ${url} within ${timeoutMs} ms:\n${tail(log)}`);
}

function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").slice(-4000);
  } catch {
    return "(no log)";
  }
}

async function stopProcess(child: ChildProcess | undefined) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

export interface Stack {
  /** The example app: `http://127.0.0.1:<port>`. */
  appUrl: string;
  /** The same app as `http://localhost:<port>`: the origin Gatehouse accepts passkeys from
   * (GATEHOUSE_WEBAUTHN_ORIGINS; the RP id is `localhost`, which an IP address is not). */
  localUrl: string;
  /** Gatehouse's gRPC address. */
  target: string;
  stop(): Promise<void>;
  logs(): string;
}

export async function startStack(options: { trustedOrigins?: string[] } = {}): Promise<Stack> {
  const binary = gatehouseBinary();
  const python = pythonBinary();
  const tmp = mkdtempSync(join(tmpdir(), "gatehouse-js-e2e-"));
  const dataDir = join(tmp, "data");
  mkdirSync(dataDir);
  const [grpcPort, httpPort, appPort] = [await freePort(), await freePort(), await freePort()];
  const target = `127.0.0.1:${grpcPort}`;
  const gatehouseLog = join(tmp, "gatehouse.log");
  const appLog = join(tmp, "app.log");
  let gatehouse: ChildProcess | undefined;
  let app: ChildProcess | undefined;

  const stop = async () => {
    await stopProcess(app);
    await stopProcess(gatehouse);
    rmSync(tmp, { recursive: true, force: true });
  };

  try {
    const gLog = createWriteStream(gatehouseLog);
    await new Promise((r) => gLog.once("open", r));
    gatehouse = spawn(binary, [], {
      env: {
        ...cleanEnv(),
        GATEHOUSE_LISTEN: target,
        GATEHOUSE_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
        GATEHOUSE_ISSUER: `http://127.0.0.1:${httpPort}`,
        DATABASE_URL: `sqlite://${tmp}/gatehouse.db?mode=rwc`,
        GATEHOUSE_DATA_DIR: dataDir,
        GATEHOUSE_SECRET: "js-client-e2e-tests-secret-" + "x".repeat(16),
        GATEHOUSE_WEBAUTHN_RP_ID: "localhost",
        GATEHOUSE_WEBAUTHN_ORIGINS: `http://localhost:${appPort}`,
        RUST_LOG: process.env.RUST_LOG ?? "warn",
        ...RATE_LIMITS,
        ...FAST_HASHING,
      },
      stdio: ["ignore", gLog, gLog],
    });
    await waitFor(`http://127.0.0.1:${httpPort}/.well-known/jwks.json`, gatehouse, "gatehouse", gatehouseLog);

    const aLog = createWriteStream(appLog);
    await new Promise((r) => aLog.once("open", r));
    app = spawn(
      python,
      [
        "-m",
        "uvicorn",
        "main:app",
        "--app-dir",
        join(REPO, "examples/fastapi_rag"),
        "--host",
        "127.0.0.1",
        "--port",
        String(appPort),
        "--log-level",
        "warning",
      ],
      {
        env: {
          ...cleanEnv(),
          GATEHOUSE_TARGET: target,
          GATEHOUSE_COOKIE_SECURE: "false", // plain http on loopback
          GATEHOUSE_TRUSTED_ORIGINS: (options.trustedOrigins ?? []).join(","),
        },
        stdio: ["ignore", aLog, aLog],
      },
    );
    const appUrl = `http://127.0.0.1:${appPort}`;
    await waitFor(`${appUrl}/openapi.json`, app, "the example app (uvicorn)", appLog);
    const localUrl = `http://localhost:${appPort}`;
    return { appUrl, localUrl, target, stop, logs: () => `gatehouse:\n${tail(gatehouseLog)}\napp:\n${tail(appLog)}` };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A minimal cookie jar around Node's fetch, which keeps no cookies: enough for one host. */
export function cookieJarFetch(): { fetch: typeof globalThis.fetch; cookies: Map<string, string> } {
  const cookies = new Map<string, string>();
  const jarFetch: typeof globalThis.fetch = async (input, init = {}) => {
    const headers = new Headers(init.headers);
    if (cookies.size) headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(input, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair = "", ...attributes] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => {
        const [key = "", v = ""] = a.split("=").map((s) => s.trim());
        if (key.toLowerCase() === "max-age") return Number(v) <= 0;
        if (key.toLowerCase() === "expires") return Date.parse(v) <= Date.now();
        return false;
      });
      if (expired || value === "" || value === '""') cookies.delete(name);
      else cookies.set(name, value);
    }
    return response;
  };
  return { fetch: jarFetch, cookies };
}
