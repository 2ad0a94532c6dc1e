// @vitest-environment happy-dom
import { act } from "react";
import { createRoot } from "react-dom/client";
import { renderToString } from "react-dom/server";
import { afterEach, describe, expect, it } from "vitest";
import { createGatehouseClient, GatehouseProvider, useGatehouse, useSession } from "../../src/react.js";
import { mockFetch, SESSION, USER } from "./mock.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

function Status() {
  const { data, isPending, error } = useSession();
  const client = useGatehouse();
  if (isPending) return <p>loading</p>;
  if (error) return <p>error {error.status}</p>;
  return data ? (
    <button onClick={() => void client.signOut()}>signed in as {data.user.name}</button>
  ) : (
    <button onClick={() => void client.signIn({ email: "ada@example.com", password: "pw" })}>signed out</button>
  );
}

const flush = () => act(() => new Promise<void>((r) => setTimeout(r, 0)));
let cleanup: (() => void) | undefined;
afterEach(() => {
  cleanup?.();
  cleanup = undefined;
});

function mount(node: React.ReactNode) {
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  act(() => root.render(node));
  cleanup = () => {
    act(() => root.unmount());
    container.remove();
  };
  return container;
}

describe("useSession", () => {
  it("loads, then follows sign-in and sign-out", async () => {
    const mock = mockFetch();
    mock.on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    mock.on("POST /auth/sign-in", { status: 200, body: { user: USER, session: SESSION } });
    mock.on("POST /auth/sign-out", { status: 204 });
    const client = createGatehouseClient({ baseUrl: "https://api.example.com", fetch: mock.fetch });
    const page = mount(
      <GatehouseProvider client={client}>
        <Status />
      </GatehouseProvider>,
    );
    expect(page.textContent).toBe("loading");
    await flush();
    expect(page.textContent).toBe("signed out");

    mock.reset("GET /auth/session").on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    await act(async () => page.querySelector("button")!.click());
    await flush();
    expect(page.textContent).toBe("signed in as Ada");

    mock.reset("GET /auth/session").on("GET /auth/session", { status: 401, body: { detail: "not signed in" } });
    await act(async () => page.querySelector("button")!.click());
    await flush();
    expect(page.textContent).toBe("signed out");
  });

  it("refetches on window focus", async () => {
    const mock = mockFetch();
    mock.on("GET /auth/session", { status: 200, body: { user: USER, session: SESSION } });
    const page = mount(
      <GatehouseProvider options={{ baseUrl: "https://api.example.com", fetch: mock.fetch }}>
        <Status />
      </GatehouseProvider>,
    );
    await flush();
    expect(page.textContent).toBe("signed in as Ada");
    // Signed out in another tab: the next focus shows it.
    mock.reset("GET /auth/session").on("GET /auth/session", { status: 401, body: { detail: "revoked" } });
    await act(async () => window.dispatchEvent(new Event("focus")));
    await flush();
    expect(page.textContent).toBe("signed out");
    expect(mock.seen.filter((r) => r.url.endsWith("/auth/session"))).toHaveLength(2);
  });

  it("shows a 503 as an error, not as signed out", async () => {
    const mock = mockFetch();
    mock.on("GET /auth/session", { status: 503, body: { detail: "authentication service unavailable" } });
    const client = createGatehouseClient({ baseUrl: "https://api.example.com", fetch: mock.fetch });
    const page = mount(
      <GatehouseProvider client={client} refetchOnWindowFocus={false}>
        <Status />
      </GatehouseProvider>,
    );
    await flush();
    expect(page.textContent).toBe("error 503");
  });

  it("renders pending on the server without a request (Docusaurus build)", () => {
    const mock = mockFetch();
    const client = createGatehouseClient({ baseUrl: "https://api.example.com", fetch: mock.fetch });
    const html = renderToString(
      <GatehouseProvider client={client}>
        <Status />
      </GatehouseProvider>,
    );
    expect(html).toBe("<p>loading</p>");
    expect(mock.seen).toHaveLength(0);
  });

  it("throws a clear error outside a provider", () => {
    function Bare() {
      useSession();
      return null;
    }
    expect(() => renderToString(<Bare />)).toThrow(/GatehouseProvider/);
  });
});
