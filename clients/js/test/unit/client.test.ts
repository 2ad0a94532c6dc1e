import { describe, expect, it } from "vitest";
import {
  BadRequestError,
  ConflictError,
  createGatehouseClient,
  GatehouseError,
  GatewayTimeoutError,
  NetworkError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
} from "../../src/index.js";
import { mockFetch, SESSION, USER } from "./mock.js";

const API = "https://api.example.com";

function setup() {
  const mock = mockFetch();
  const client = createGatehouseClient({ baseUrl: `${API}/`, fetch: mock.fetch });
  return { mock, client };
}

describe("requests", () => {
  it("signs up with the learner profile as JSON, with credentials", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-up", { status: 201, body: { user: USER, session: SESSION } });
    mock.on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    const result = await client.signUp({
      email: "ada@example.com",
      password: "correct horse battery staple",
      name: "Ada",
      profile: { programming_level: "advanced", learning_style: "code_first", consent_given: true, interests: ["ROS 2"] },
    });
    expect(result.user.email).toBe("ada@example.com");
    const req = mock.seen[0]!;
    expect(req.url).toBe(`${API}/auth/sign-up`);
    expect(req.method).toBe("POST");
    expect(req.credentials).toBe("include");
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.body).toEqual({
      email: "ada@example.com",
      password: "correct horse battery staple",
      name: "Ada",
      profile: { programming_level: "advanced", learning_style: "code_first", consent_given: true, interests: ["ROS 2"] },
    });
  });

  it("sends only email and password on sign-in", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-in", { status: 200, body: { user: USER, session: SESSION } });
    mock.on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    await client.signIn({ email: "a@b.co", password: "pw", extra: 1 } as never);
    expect(mock.seen[0]!.body).toEqual({ email: "a@b.co", password: "pw" });
  });

  it("getSession is null on 401 and the session otherwise", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    expect(await client.getSession()).toBeNull();
    mock.reset("GET /auth/session").on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    expect((await client.getSession())?.session.id).toBe("s1");
  });

  it("getSession throws other errors (a 503 is not a sign-out)", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/session", {
      status: 503,
      body: { detail: "authentication service unavailable" },
      headers: { "retry-after": "1" },
    });
    const error = await client.getSession().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).retryAfter).toBe(1);
  });

  it("signOut posts and resolves on 204", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-out", { status: 204 });
    mock.on("GET /auth/session", { status: 401, body: { detail: "x" } });
    await expect(client.signOut()).resolves.toBeUndefined();
    expect(mock.seen[0]!.method).toBe("POST");
    expect(mock.seen[0]!.body).toBeUndefined();
  });

  it("profile, sessions, consents and export use their routes", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/profile", { status: 200, body: { programming_level: "beginner" } });
    mock.on("PATCH /auth/profile", { status: 200, body: { programming_level: null } });
    mock.on("GET /auth/sessions", { status: 200, body: { sessions: [SESSION] } });
    mock.on("DELETE /auth/sessions/a%2Fb", { status: 204 });
    mock.on("POST /auth/sessions/revoke-others", { status: 200, body: { revoked_count: 2 } });
    mock.on("GET /auth/consents", { status: 200, body: { records: [], purposes: [], policy_version: "1" } });
    mock.on("POST /auth/consents", { status: 200, body: { purpose: "learner_background", granted: false } });
    mock.on("GET /auth/export", { status: 200, body: { format: "gatehouse-export/1", tables: {} } });
    expect((await client.getProfile()).programming_level).toBe("beginner");
    await client.updateProfile({ programming_level: null, role: "student" });
    expect(mock.seen[1]!.body).toEqual({ programming_level: null, role: "student" });
    expect(await client.listSessions()).toEqual([SESSION]);
    await client.revokeSession("a/b");
    expect(await client.revokeOtherSessions()).toBe(2);
    await client.listConsents({ pageSize: 10 });
    expect(mock.seen.at(-1)!.url).toBe(`${API}/auth/consents?page_size=10`);
    await client.listConsents();
    expect(mock.seen.at(-1)!.url).toBe(`${API}/auth/consents`);
    expect((await client.updateConsent({ purpose: "learner_background", granted: false })).granted).toBe(false);
    expect(mock.seen.at(-1)!.body).toEqual({ purpose: "learner_background", granted: false });
    expect((await client.exportData()).format).toBe("gatehouse-export/1");
  });

  it("adds configured headers (a server-side caller's Origin)", async () => {
    const mock = mockFetch();
    const client = createGatehouseClient({ baseUrl: API, basePath: "/api/auth/", fetch: mock.fetch, headers: { origin: API } });
    mock.on("GET /api/auth/profile", { status: 200, body: {} });
    await client.getProfile();
    expect(mock.seen[0]!.url).toBe(`${API}/api/auth/profile`);
    expect(mock.seen[0]!.headers.origin).toBe(API);
  });

  it("builds the provider start URL and refuses a redirect off the site", () => {
    const { client } = setup();
    expect(client.oauthSignInUrl("github", "/books?x=1")).toBe(
      `${API}/auth/oauth/github/start?redirect_to=%2Fbooks%3Fx%3D1`,
    );
    expect(client.oauthSignInUrl("google")).toBe(`${API}/auth/oauth/google/start`);
    for (const bad of ["https://evil.example", "//evil.example", "/\\evil", "books"]) {
      expect(() => client.oauthSignInUrl("github", bad)).toThrow(TypeError);
    }
  });

  it("uses relative URLs with an empty baseUrl", () => {
    const client = createGatehouseClient({ baseUrl: "" });
    expect(client.oauthSignInUrl("github", "/")).toBe("/auth/oauth/github/start?redirect_to=%2F");
  });
});

describe("errors", () => {
  const cases: [number, unknown, Record<string, string>, new (...a: never[]) => GatehouseError][] = [
    [400, { detail: "consent required" }, {}, BadRequestError],
    [401, { detail: "invalid email or password" }, { "www-authenticate": "Bearer" }, UnauthenticatedError],
    [403, { detail: "cross-site request refused: origin 'x'" }, {}, PermissionDeniedError],
    [404, { detail: "Not Found" }, {}, NotFoundError],
    [409, { detail: "an account already uses this address" }, {}, ConflictError],
    [429, { detail: "too many attempts" }, { "retry-after": "30" }, RateLimitedError],
    [503, { detail: "authentication service unavailable" }, { "retry-after": "1" }, UnavailableError],
    [504, { detail: "authentication service error" }, {}, GatewayTimeoutError],
    [502, { detail: "authentication service error" }, {}, GatehouseError],
  ];
  for (const [status, body, headers, cls] of cases) {
    it(`maps ${status} to ${cls.name}`, async () => {
      const { mock, client } = setup();
      mock.on("POST /auth/change-password", { status, body, headers });
      mock.on("GET /auth/session", { status: 401, body: { detail: "x" } });
      const error = (await client
        .changePassword({ current_password: "a", new_password: "b" })
        .catch((e: unknown) => e)) as GatehouseError;
      expect(error).toBeInstanceOf(cls);
      expect(error).toBeInstanceOf(GatehouseError);
      expect(error.status).toBe(status);
      expect(error.message).toBe((body as { detail: string }).detail);
    });
  }

  it("429 and 503 carry Retry-After in seconds, or null when hidden", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-in", { status: 429, body: { detail: "slow down" }, headers: { "retry-after": "30" } });
    mock.on("POST /auth/sign-in", { status: 429, body: { detail: "slow down" } });
    mock.on("GET /auth/session", { status: 401, body: { detail: "x" } });
    const first = (await client.signIn({ email: "a", password: "b" }).catch((e: unknown) => e)) as RateLimitedError;
    expect(first.retryAfter).toBe(30);
    const second = (await client.signIn({ email: "a", password: "b" }).catch((e: unknown) => e)) as RateLimitedError;
    expect(second.retryAfter).toBeNull();
  });

  it("403 tells a cross-site refusal and an unverified address apart", async () => {
    const { mock, client } = setup();
    mock.on("PATCH /auth/profile", { status: 403, body: { detail: "cross-site request refused: origin 'https://x'" } });
    mock.on("PATCH /auth/profile", { status: 403, body: { detail: "email address not verified: ada@example.com" } });
    const a = (await client.updateProfile({}).catch((e: unknown) => e)) as PermissionDeniedError;
    expect([a.crossSite, a.unverified]).toEqual([true, false]);
    const b = (await client.updateProfile({}).catch((e: unknown) => e)) as PermissionDeniedError;
    expect([b.crossSite, b.unverified]).toEqual([false, true]);
  });

  it("422 keeps the field locations, from FastAPI and from Gatehouse", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-up", {
      status: 422,
      body: {
        detail: [
          { type: "string_too_short", loc: ["body", "password"], msg: "String should have at least 8 characters", input: "x" },
          { type: "gatehouse.invalid_argument", loc: ["body", "profile", "interests", 2], msg: "too long" },
        ],
      },
    });
    mock.on("GET /auth/session", { status: 401, body: { detail: "x" } });
    const error = (await client
      .signUp({ email: "a@b.co", password: "x", name: "A" })
      .catch((e: unknown) => e)) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.fieldErrors).toEqual([
      { loc: ["body", "password"], msg: "String should have at least 8 characters", type: "string_too_short" },
      { loc: ["body", "profile", "interests", 2], msg: "too long", type: "gatehouse.invalid_argument" },
    ]);
    expect(error.field("password")).toEqual(["String should have at least 8 characters"]);
    expect(error.field("profile.interests")).toEqual(["too long"]);
    expect(error.byField).toEqual({
      password: ["String should have at least 8 characters"],
      "profile.interests.2": ["too long"],
    });
    expect(error.message).toContain("password: String should have at least 8 characters");
  });

  it("a 422 on a query parameter (the provider start's redirect_to)", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/consents", {
      status: 422,
      body: { detail: [{ loc: ["query", "page_size"], msg: "must be at most 100", type: "less_than_equal" }] },
    });
    const error = (await client.listConsents({ pageSize: 1000 }).catch((e: unknown) => e)) as ValidationError;
    expect(error.field("page_size")).toEqual(["must be at most 100"]);
  });

  it("a failed fetch is a NetworkError with status 0", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/profile", new TypeError("fetch failed"));
    const error = (await client.getProfile().catch((e: unknown) => e)) as NetworkError;
    expect(error).toBeInstanceOf(NetworkError);
    expect(error.status).toBe(0);
    expect(error.cause).toBeInstanceOf(TypeError);
  });

  it("a non-JSON error body still maps", async () => {
    const mock = mockFetch();
    const client = createGatehouseClient({
      baseUrl: API,
      fetch: async () => new Response("Bad Gateway", { status: 502, headers: { "content-type": "text/plain" } }),
    });
    void mock;
    const error = (await client.getProfile().catch((e: unknown) => e)) as GatehouseError;
    expect(error.status).toBe(502);
    expect(error.message).toBe("HTTP 502");
  });
});

describe("session store", () => {
  const tick = () => new Promise((r) => setTimeout(r, 0));

  it("loads on first subscribe and reloads after sign-in and sign-out", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    const states: unknown[] = [];
    const stop = client.session.subscribe(() => states.push(client.session.getSnapshot()));
    expect(client.session.getSnapshot().isPending).toBe(true);
    await tick();
    expect(client.session.getSnapshot()).toMatchObject({ data: null, isPending: false, error: null });

    mock.reset("GET /auth/session").on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    mock.on("POST /auth/sign-in", { status: 200, body: { user: USER, session: SESSION } });
    await client.signIn({ email: "ada@example.com", password: "pw" });
    await tick();
    expect(client.session.getSnapshot().data?.user.id).toBe("u1");

    mock.reset("GET /auth/session").on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    mock.on("POST /auth/sign-out", { status: 204 });
    await client.signOut();
    await tick();
    expect(client.session.getSnapshot().data).toBeNull();
    expect(mock.seen.filter((r) => r.url.endsWith("/auth/session"))).toHaveLength(3);
    stop();
  });

  it("shares one request between concurrent refetches", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    const [a, b] = await Promise.all([client.session.refetch(), client.session.refetch()]);
    expect(a).toBe(b);
    expect(mock.seen).toHaveLength(1);
  });

  it("keeps the session and reports the error when Gatehouse is down", async () => {
    const { mock, client } = setup();
    mock.on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    mock.on("GET /auth/session", { status: 503, body: { detail: "authentication service unavailable" } });
    await client.session.refetch();
    await client.session.refetch();
    const state = client.session.getSnapshot();
    expect(state.data?.user.id).toBe("u1");
    expect(state.error).toBeInstanceOf(UnavailableError);
  });

  it("reloads after a failed sign-in too, and propagates its error", async () => {
    const { mock, client } = setup();
    mock.on("POST /auth/sign-in", { status: 401, body: { detail: "invalid email or password" } });
    mock.on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    await expect(client.signIn({ email: "a", password: "b" })).rejects.toBeInstanceOf(UnauthenticatedError);
  });
});
