import { errorFromResponse, GatehouseError, NetworkError, UnauthenticatedError } from "./errors.js";
import type {
  AccessToken,
  AuditEvents,
  AuthResult,
  ChangePasswordInput,
  ConsentInput,
  ConsentRecords,
  ConsentState,
  DataExport,
  PageInput,
  Profile,
  ProfileInput,
  Session,
  SessionInfo,
  SignInInput,
  SignUpInput,
} from "./types.js";

export interface GatehouseClientOptions {
  /** Where the FastAPI app is: `https://api.example.com`, or `""` for the page's own origin. */
  baseUrl: string;
  /** Where the router is mounted (`app.include_router(gatehouse.router(), prefix="/auth")`). */
  basePath?: string;
  /** A fetch to use instead of the global one (tests, a server-side caller with a cookie jar). */
  fetch?: typeof globalThis.fetch;
  /** Headers added to every request. Browsers send `Origin` themselves; a caller outside a
   * browser that uses the cookie must send `Origin` here (the router refuses state-changing
   * cookie requests without it), or use `Authorization: Bearer <token>` instead. */
  headers?: Record<string, string>;
  /** `"include"` (the default) so the session cookie goes along cross-origin too. */
  credentials?: RequestCredentials;
}

/** What the session store holds: the signed-in user and session (`data`, null when signed
 * out), whether the first load is still running, and the last load's error (a 503 keeps the
 * previous `data`: Gatehouse being down does not mean the reader is signed out). */
export interface SessionState {
  data: SessionInfo | null;
  isPending: boolean;
  isRefetching: boolean;
  error: GatehouseError | null;
}

/** A tiny observable store of the current session, framework-free (the React `useSession`
 * reads it through `useSyncExternalStore`). It loads on the first `subscribe`, and reloads
 * after the client's sign-in, sign-up, sign-out and the other calls that change the session. */
export interface SessionStore {
  getSnapshot(): SessionState;
  subscribe(listener: () => void): () => void;
  /** Loads `GET /auth/session` again; concurrent calls share one request. */
  refetch(): Promise<SessionInfo | null>;
}

export interface GatehouseClient {
  readonly options: Readonly<Required<Omit<GatehouseClientOptions, "fetch" | "headers">>>;
  readonly session: SessionStore;

  /** `POST /auth/sign-up` (201): creates the account, with an optional learner profile, and
   * signs in (the cookie is set) unless Gatehouse requires verification first. 409 if the
   * address is in use, 422 for bad fields. */
  signUp(input: SignUpInput): Promise<AuthResult>;
  /** `POST /auth/sign-in`; 401 for a wrong address or password. */
  signIn(input: SignInInput): Promise<AuthResult>;
  /** `POST /auth/sign-out`: always 204, clears the cookie. */
  signOut(): Promise<void>;
  /** `GET /auth/session`: the user and session, or null when signed out (401). Renews the
   * cookie's lifetime. */
  getSession(): Promise<SessionInfo | null>;
  /** `GET /auth/sessions`: the caller's active sessions, the current one marked. */
  listSessions(): Promise<Session[]>;
  /** `DELETE /auth/sessions/{id}`. */
  revokeSession(sessionId: string): Promise<void>;
  /** `POST /auth/sessions/revoke-others`: how many were revoked. */
  revokeOtherSessions(): Promise<number>;
  /** `GET /auth/profile`. */
  getProfile(): Promise<Profile>;
  /** `PATCH /auth/profile`: a merge patch (present fields change, null clears). */
  updateProfile(patch: ProfileInput): Promise<Profile>;
  /** `POST /auth/change-password`: how many other sessions were revoked. */
  changePassword(input: ChangePasswordInput): Promise<number>;
  /** `POST /auth/delete-account` with the password to confirm; clears the cookie. */
  deleteAccount(password: string): Promise<void>;
  /** `POST /auth/send-verification` (202); 400 if already verified. */
  sendVerificationEmail(): Promise<string>;
  /** `POST /auth/verify-email` with the mailed link's `?token=`. */
  verifyEmail(token: string): Promise<string>;
  /** `POST /auth/request-password-reset` (always the same answer). */
  requestPasswordReset(email: string): Promise<string>;
  /** `POST /auth/reset-password` with the mailed link's token; every session ends. */
  resetPassword(token: string, newPassword: string): Promise<string>;
  /** `POST /auth/request-email-change`. */
  requestEmailChange(newEmail: string, currentPassword: string): Promise<string>;
  /** `GET /auth/audit-events`. */
  listAuditEvents(page?: PageInput): Promise<AuditEvents>;
  /** `GET /auth/consents`: the consent history and each purpose's state. */
  listConsents(page?: PageInput): Promise<ConsentRecords>;
  /** `POST /auth/consents`: grant or withdraw one purpose. */
  updateConsent(input: ConsentInput): Promise<ConsentState>;
  /** `GET /auth/export`: everything Gatehouse holds about the caller. */
  exportData(): Promise<DataExport>;
  /** `POST /auth/access-token`: a short-lived JWT for another service. */
  issueAccessToken(audience: string): Promise<AccessToken>;
  /** The URL of `GET /auth/oauth/{provider}/start`: navigate the browser there (a link or
   * `location.assign`), not fetch. `redirectTo` is a path on the API's site (`/books`). */
  oauthSignInUrl(provider: string, redirectTo?: string): string;
  /** `location.assign(oauthSignInUrl(provider, redirectTo))`. */
  signInWithProvider(provider: string, redirectTo?: string): void;
}

interface RequestOptions {
  method?: "GET" | "POST" | "PATCH" | "DELETE";
  body?: unknown;
  query?: Record<string, string | number | undefined>;
}

function trimSlashes(value: string, end: boolean): string {
  return end ? value.replace(/\/+$/, "") : value.replace(/^\/+/, "");
}

function safePath(path: string): boolean {
  // As the router checks: a single leading slash, no backslash, no control character.
  return (
    path.length > 0 &&
    path.length <= 2048 &&
    path.startsWith("/") &&
    !path.startsWith("//") &&
    !path.startsWith("/\\") &&
    !path.includes("\\") &&
    // eslint-disable-next-line no-control-regex
    !/[\u0000-\u001f\u007f]/.test(path)
  );
}

const INITIAL: SessionState = { data: null, isPending: true, isRefetching: false, error: null };

function createSessionStore(load: () => Promise<SessionInfo | null>): SessionStore {
  let state: SessionState = INITIAL;
  const listeners = new Set<() => void>();
  let inflight: Promise<SessionInfo | null> | null = null;
  let generation = 0;
  let loaded = false;

  const set = (next: SessionState) => {
    state = next;
    for (const listener of [...listeners]) listener();
  };

  const refetch = (): Promise<SessionInfo | null> => {
    if (inflight) return inflight;
    const mine = ++generation;
    loaded = true;
    if (!state.isPending) set({ ...state, isRefetching: true });
    inflight = load().then(
      (data) => {
        if (mine === generation) set({ data, isPending: false, isRefetching: false, error: null });
        return data;
      },
      (error: unknown) => {
        const err =
          error instanceof GatehouseError ? error : new NetworkError(String(error), 0, undefined, { cause: error });
        if (mine === generation) set({ data: state.data, isPending: false, isRefetching: false, error: err });
        return state.data;
      },
    );
    const done = inflight;
    void done.finally(() => {
      if (inflight === done) inflight = null;
    });
    return done;
  };

  return {
    getSnapshot: () => state,
    subscribe(listener) {
      listeners.add(listener);
      if (!loaded) void refetch();
      return () => {
        listeners.delete(listener);
      };
    },
    refetch,
  };
}

/** A client for Gatehouse's FastAPI router, like Better Auth's `createAuthClient`. */
export function createGatehouseClient(options: GatehouseClientOptions): GatehouseClient {
  const baseUrl = trimSlashes(options.baseUrl ?? "", true);
  const basePath = "/" + trimSlashes(trimSlashes(options.basePath ?? "/auth", true), false);
  const credentials = options.credentials ?? "include";
  const extraHeaders = options.headers ?? {};
  const doFetch = (input: string, init: RequestInit) => (options.fetch ?? globalThis.fetch)(input, init);

  const url = (path: string, query?: RequestOptions["query"]): string => {
    const base = `${baseUrl}${basePath === "/" ? "" : basePath}${path}`;
    if (!query) return base;
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== "") params.set(key, String(value));
    }
    const qs = params.toString();
    return qs ? `${base}?${qs}` : base;
  };

  async function request<T>(path: string, { method = "GET", body, query }: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json", ...extraHeaders };
    const init: RequestInit = { method, headers, credentials };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response: Response;
    try {
      response = await doFetch(url(path, query), init);
    } catch (error) {
      throw new NetworkError(
        `no answer from ${baseUrl || "the API"}: ${error instanceof Error ? error.message : String(error)}`,
        0,
        undefined,
        { cause: error },
      );
    }
    const text = await response.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!response.ok) throw errorFromResponse(response.status, response.headers, parsed);
    return parsed as T;
  }

  const getSession = async (): Promise<SessionInfo | null> => {
    try {
      return await request<SessionInfo>("/session");
    } catch (error) {
      if (error instanceof UnauthenticatedError) return null;
      throw error;
    }
  };

  const session = createSessionStore(getSession);

  /** Runs a call that changes who is signed in, then reloads the session store. */
  const changing = async <T>(call: Promise<T>): Promise<T> => {
    try {
      return await call;
    } finally {
      void session.refetch();
    }
  };

  const message = (answer: { message: string }) => answer.message;

  const oauthSignInUrl = (provider: string, redirectTo?: string): string => {
    if (redirectTo !== undefined && !safePath(redirectTo)) {
      throw new TypeError(`redirectTo must be a path on the API's site starting with one "/": ${redirectTo}`);
    }
    return url(`/oauth/${encodeURIComponent(provider)}/start`, { redirect_to: redirectTo });
  };

  return {
    options: { baseUrl, basePath, credentials },
    session,
    signUp: (input) => changing(request<AuthResult>("/sign-up", { method: "POST", body: input })),
    signIn: (input) =>
      changing(request<AuthResult>("/sign-in", { method: "POST", body: { email: input.email, password: input.password } })),
    signOut: () => changing(request<void>("/sign-out", { method: "POST" })),
    getSession,
    listSessions: async () => (await request<{ sessions: Session[] }>("/sessions")).sessions,
    revokeSession: (id) => request<void>(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }),
    revokeOtherSessions: async () =>
      (await request<{ revoked_count: number }>("/sessions/revoke-others", { method: "POST" })).revoked_count,
    getProfile: () => request<Profile>("/profile"),
    updateProfile: (patch) => request<Profile>("/profile", { method: "PATCH", body: patch }),
    changePassword: async (input) =>
      (
        await changing(
          request<{ revoked_count: number }>("/change-password", { method: "POST", body: input }),
        )
      ).revoked_count,
    deleteAccount: (password) => changing(request<void>("/delete-account", { method: "POST", body: { password } })),
    sendVerificationEmail: async () =>
      message(await request<{ message: string }>("/send-verification", { method: "POST" })),
    verifyEmail: async (token) =>
      message(await changing(request<{ message: string }>("/verify-email", { method: "POST", body: { token } }))),
    requestPasswordReset: async (email) =>
      message(await request<{ message: string }>("/request-password-reset", { method: "POST", body: { email } })),
    resetPassword: async (token, newPassword) =>
      message(
        await changing(
          request<{ message: string }>("/reset-password", {
            method: "POST",
            body: { token, new_password: newPassword },
          }),
        ),
      ),
    requestEmailChange: async (newEmail, currentPassword) =>
      message(
        await request<{ message: string }>("/request-email-change", {
          method: "POST",
          body: { new_email: newEmail, current_password: currentPassword },
        }),
      ),
    listAuditEvents: (page = {}) =>
      request<AuditEvents>("/audit-events", { query: { page_size: page.pageSize, page_token: page.pageToken } }),
    listConsents: (page = {}) =>
      request<ConsentRecords>("/consents", { query: { page_size: page.pageSize, page_token: page.pageToken } }),
    updateConsent: (input) =>
      request<ConsentState>("/consents", { method: "POST", body: { purpose: input.purpose, granted: input.granted } }),
    exportData: () => request<DataExport>("/export"),
    issueAccessToken: (audience) => request<AccessToken>("/access-token", { method: "POST", body: { audience } }),
    oauthSignInUrl,
    signInWithProvider(provider, redirectTo) {
      const target = oauthSignInUrl(provider, redirectTo);
      if (typeof window === "undefined") throw new Error("signInWithProvider needs a browser; use oauthSignInUrl");
      window.location.assign(target);
    },
  };
}
