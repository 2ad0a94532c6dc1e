// The built client (the package's own `gatehouse-client` export, i.e. dist/) from Node against
// the real gatehouse binary and the example FastAPI app.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConflictError,
  createGatehouseClient,
  PermissionDeniedError,
  UnauthenticatedError,
  ValidationError,
  type GatehouseClient,
} from "gatehouse-client";
import { cookieJarFetch, startStack, type Stack } from "./stack.js";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

function browserLike(): { client: GatehouseClient; cookies: Map<string, string> } {
  const jar = cookieJarFetch();
  // Outside a browser nothing sends Origin: send the app's own, as a page on it would.
  const client = createGatehouseClient({ baseUrl: stack.appUrl, fetch: jar.fetch, headers: { origin: stack.appUrl } });
  return { client, cookies: jar.cookies };
}

describe("against the example app", () => {
  it("sign-up with a learner profile -> getSession -> signOut -> getSession null", async () => {
    const { client, cookies } = browserLike();
    const email = `ada-${Date.now()}@example.com`;
    const result = await client.signUp({
      email,
      password: "correct horse battery staple",
      name: "Ada",
      profile: {
        programming_level: "advanced",
        programming_languages: ["Python", "C++"],
        learning_style: "code_first",
        hardware_experience: "robotics",
        ai_knowledge_level: "basic",
        consent_given: true,
        software_background: "ten years of backend work",
      },
    });
    expect(result.user.email).toBe(email);
    expect(result.session).not.toBeNull();
    expect(result.session_token ?? null).toBeNull(); // the token stays in the cookie
    expect(cookies.has("gatehouse_session")).toBe(true);

    const session = await client.getSession();
    expect(session?.user.email).toBe(email);
    expect(session?.session.id).toBe(result.session?.id);

    const profile = await client.getProfile();
    expect(profile).toMatchObject({
      programming_level: "advanced",
      programming_languages: ["Python", "C++"],
      learning_style: "code_first",
      hardware_experience: "robotics",
      ai_knowledge_level: "basic",
      consent_given: true,
    });
    const updated = await client.updateProfile({ role: "student", learning_style: null });
    expect(updated.role).toBe("student");
    expect(updated.learning_style).toBeNull();

    const consents = await client.listConsents();
    expect(consents.purposes.some((p) => p.purpose === "learner_background" && p.granted)).toBe(true);
    const withdrawn = await client.updateConsent({ purpose: "learner_background", granted: false });
    expect(withdrawn.granted).toBe(false);
    expect((await client.getProfile()).software_background).toBe("");

    expect((await client.listSessions()).some((s) => s.current)).toBe(true);

    await client.signOut();
    expect(cookies.has("gatehouse_session")).toBe(false);
    expect(await client.getSession()).toBeNull();
  });

  it("the session store follows sign-in and sign-out", async () => {
    const { client } = browserLike();
    const email = `grace-${Date.now()}@example.com`;
    await client.signUp({ email, password: "correct horse battery staple", name: "Grace" });
    await client.signOut();
    await client.session.refetch();
    expect(client.session.getSnapshot().data).toBeNull();
    const changes: (string | null)[] = [];
    client.session.subscribe(() => changes.push(client.session.getSnapshot().data?.user.email ?? null));
    await client.signIn({ email, password: "correct horse battery staple" });
    await client.session.refetch();
    expect(client.session.getSnapshot().data?.user.email).toBe(email);
    await client.signOut();
    await client.session.refetch();
    expect(client.session.getSnapshot().data).toBeNull();
    expect(changes).toContain(email);
  });

  it("maps the router's refusals", async () => {
    const { client } = browserLike();
    const email = `linus-${Date.now()}@example.com`;
    await client.signUp({ email, password: "correct horse battery staple", name: "Linus" });

    const conflict = await client
      .signUp({ email, password: "correct horse battery staple", name: "Linus" })
      .catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(ConflictError);

    const invalid = (await client
      .signUp({ email: "not-an-address", password: "short", name: "" })
      .catch((e: unknown) => e)) as ValidationError;
    expect(invalid).toBeInstanceOf(ValidationError);
    expect(Object.keys(invalid.byField).sort()).toEqual(["email", "name", "password"]);

    const badEnum = (await client
      .updateProfile({ programming_level: "wizard" as never })
      .catch((e: unknown) => e)) as ValidationError;
    expect(badEnum.field("programming_level").length).toBeGreaterThan(0);

    const wrong = await client.signIn({ email, password: "not the password" }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(UnauthenticatedError);

    // A page on another origin (not trusted) is refused by the origin check.
    const jar = cookieJarFetch();
    const foreign = createGatehouseClient({
      baseUrl: stack.appUrl,
      fetch: jar.fetch,
      headers: { origin: "https://evil.example" },
    });
    const refused = (await foreign
      .signIn({ email, password: "correct horse battery staple" })
      .catch((e: unknown) => e)) as PermissionDeniedError;
    expect(refused).toBeInstanceOf(PermissionDeniedError);
    expect(refused.crossSite).toBe(true);

    await client.signOut();
    const anonymous = await client.getProfile().catch((e: unknown) => e);
    expect(anonymous).toBeInstanceOf(UnauthenticatedError);
  });

  it("the provider start URL reaches the router (no provider configured here: 404)", async () => {
    const { client } = browserLike();
    const answer = await fetch(client.oauthSignInUrl("github", "/books"), { redirect: "manual" });
    expect(answer.status).toBe(404);
    expect(((await answer.json()) as { detail: string }).detail).toContain("github");
  });
});
