// React bindings: `<GatehouseProvider>` and `useSession()`, like Better Auth's
// `better-auth/react`. React is a peer dependency; the core has none.

import { createContext, useContext, useEffect, useMemo, useSyncExternalStore, type ReactNode } from "react";
import { createGatehouseClient, type GatehouseClient, type GatehouseClientOptions, type SessionState } from "./client.js";
import type { GatehouseError } from "./errors.js";
import type { SessionInfo } from "./types.js";

export * from "./index.js";

const GatehouseContext = createContext<GatehouseClient | null>(null);

export interface GatehouseProviderProps {
  /** A client made with `createGatehouseClient`, or ... */
  client?: GatehouseClient;
  /** ... the options to make one (`{baseUrl: "https://api.example.com"}`). */
  options?: GatehouseClientOptions;
  /** Reload the session when the window regains focus or the tab becomes visible (default
   * true), so a sign-out in another tab shows here. */
  refetchOnWindowFocus?: boolean;
  children?: ReactNode;
}

/** Puts a Gatehouse client in context for `useSession` and `useGatehouse`. In Docusaurus,
 * wrap the site in it in `src/theme/Root.js`. */
export function GatehouseProvider({ client, options, refetchOnWindowFocus = true, children }: GatehouseProviderProps) {
  const baseUrl = options?.baseUrl;
  const basePath = options?.basePath;
  const value = useMemo(() => {
    if (client) return client;
    if (!options) throw new Error("GatehouseProvider needs `client` or `options`");
    return createGatehouseClient(options);
    // Options objects are usually literals: keep one client per baseUrl/basePath.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, baseUrl, basePath]);

  useEffect(() => {
    if (!refetchOnWindowFocus || typeof window === "undefined") return;
    const onFocus = () => void value.session.refetch();
    const onVisible = () => {
      if (document.visibilityState === "visible") void value.session.refetch();
    };
    window.addEventListener("focus", onFocus);
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      window.removeEventListener("focus", onFocus);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [value, refetchOnWindowFocus]);

  return <GatehouseContext.Provider value={value}>{children}</GatehouseContext.Provider>;
}

/** The client of the nearest `GatehouseProvider` (its actions: `signIn`, `signUp`,
 * `signOut`, `updateProfile`, ...). */
export function useGatehouse(): GatehouseClient {
  const client = useContext(GatehouseContext);
  if (!client) throw new Error("useGatehouse/useSession must be inside <GatehouseProvider> (or pass a client)");
  return client;
}

export interface UseSessionResult {
  /** The signed-in user and session, or null when signed out (or not loaded yet). */
  data: SessionInfo | null;
  /** True until the first load has answered. */
  isPending: boolean;
  /** True while a reload runs after the first. */
  isRefetching: boolean;
  /** The last load's error (not a 401: that is `data: null`). */
  error: GatehouseError | null;
  /** Loads the session again. */
  refetch: () => Promise<SessionInfo | null>;
}

const SERVER_SNAPSHOT: SessionState = { data: null, isPending: true, isRefetching: false, error: null };

/** The current session, reloaded after the client's signIn/signUp/signOut and on window
 * focus. During server rendering (Docusaurus's build) it is pending and makes no request. */
export function useSession(client?: GatehouseClient): UseSessionResult {
  const fromContext = useContext(GatehouseContext);
  const active = client ?? fromContext;
  if (!active) throw new Error("useSession must be inside <GatehouseProvider> (or pass a client)");
  const state = useSyncExternalStore(active.session.subscribe, active.session.getSnapshot, () => SERVER_SNAPSHOT);
  return {
    data: state.data,
    isPending: state.isPending,
    isRefetching: state.isRefetching,
    error: state.error,
    refetch: active.session.refetch,
  };
}
