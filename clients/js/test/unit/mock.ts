// A fetch mock: answers queued per "METHOD /path", and the requests seen.
export interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
  credentials: RequestCredentials | undefined;
}

type Answer = { status: number; body?: unknown; headers?: Record<string, string> } | Error;

export function mockFetch() {
  const routes = new Map<string, Answer[]>();
  const seen: Seen[] = [];
  const fetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input));
    const method = init.method ?? "GET";
    const headers = Object.fromEntries(new Headers(init.headers).entries());
    seen.push({
      method,
      url: String(input),
      headers,
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      credentials: init.credentials,
    });
    const key = `${method} ${url.pathname}`;
    const queue = routes.get(key);
    const answer = queue && queue.length > 1 ? queue.shift()! : queue?.[0];
    if (!answer) throw new Error(`mock: no answer for ${key}`);
    if (answer instanceof Error) throw answer;
    const body = answer.body === undefined ? null : JSON.stringify(answer.body);
    return new Response(answer.status === 204 ? null : body, {
      status: answer.status,
      headers: { "content-type": "application/json", ...answer.headers },
    });
  };
  return {
    fetch: fetch as typeof globalThis.fetch,
    seen,
    /** Answers `key` (e.g. "POST /auth/sign-in"); several calls queue answers in order, the
     * last one repeating. */
    on(key: string, answer: Answer) {
      const queue = routes.get(key) ?? [];
      queue.push(answer);
      routes.set(key, queue);
      return this;
    },
    reset(key: string) {
      routes.delete(key);
      return this;
    },
  };
}

export const USER = {
  id: "u1",
  email: "ada@example.com",
  name: "Ada",
  image: null,
  email_verified: false,
  created_at: "2025-01-01T00:00:00Z",
  updated_at: "2025-01-01T00:00:00Z",
};
export const SESSION = {
  id: "s1",
  created_at: "2025-01-01T00:00:00Z",
  expires_at: "2025-02-01T00:00:00Z",
  last_active_at: "2025-01-01T00:00:00Z",
  ip_address: "127.0.0.1",
  user_agent: "test",
  current: true,
};
