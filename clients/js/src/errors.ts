// The router's error answers as typed errors. Every error answer is `{"detail": ...}`:
// a string, or for 422 a list of `{loc, msg, type}` (FastAPI's own shape, which Gatehouse's
// field errors take too: `loc: ["body", "email"]`, `["query", ...]`, `["path", ...]`).

/** One entry of a 422 answer's `detail`. */
export interface FieldError {
  /** Where the field is: `["body", "email"]`, `["body", "profile", "interests", 2]`. */
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Any refusal by the router, or a network failure (`status` 0). */
export class GatehouseError extends Error {
  override name = "GatehouseError";
  /** The HTTP status (0 when the request never got an answer). */
  readonly status: number;
  /** The answer's `detail` as sent (a string, a list of field errors, or undefined). */
  readonly detail: unknown;

  constructor(message: string, status: number, detail?: unknown, options?: { cause?: unknown }) {
    super(message, options);
    this.status = status;
    this.detail = detail;
  }
}

/** 400: the request cannot be applied as sent (e.g. background fields without consent, an
 * address already verified, a provider refusal in the OAuth callback). */
export class BadRequestError extends GatehouseError {
  override name = "BadRequestError";
}

/** 401: not signed in, or the session was refused (expired, revoked), or a wrong password. */
export class UnauthenticatedError extends GatehouseError {
  override name = "UnauthenticatedError";
}

/** 403: refused. `crossSite` when the router's origin check refused the request (the page's
 * origin is neither the API's nor in its trusted origins); `unverified` when the route needs
 * a verified address. */
export class PermissionDeniedError extends GatehouseError {
  override name = "PermissionDeniedError";
  get crossSite(): boolean {
    return this.message.startsWith("cross-site request refused");
  }
  get unverified(): boolean {
    return this.message.startsWith("email address not verified");
  }
}

/** 404. */
export class NotFoundError extends GatehouseError {
  override name = "NotFoundError";
}

/** 409: already exists (an account uses this address). */
export class ConflictError extends GatehouseError {
  override name = "ConflictError";
}

/** 422: invalid fields, from FastAPI's own validation or from Gatehouse. */
export class ValidationError extends GatehouseError {
  override name = "ValidationError";
  readonly fieldErrors: FieldError[];

  constructor(message: string, status: number, detail: unknown, fieldErrors: FieldError[]) {
    super(message, status, detail);
    this.fieldErrors = fieldErrors;
  }

  /** The messages for one field, by its name in the body: `field("email")`,
   * `field("profile.interests")` (any location: body, query or path). */
  field(name: string): string[] {
    return this.fieldErrors
      .filter((e) => e.loc.slice(1).join(".") === name || e.loc.slice(1).join(".").startsWith(`${name}.`))
      .map((e) => e.msg);
  }

  /** Messages by dotted field path (without the location): `{"email": ["..."]}`. */
  get byField(): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const e of this.fieldErrors) {
      const key = e.loc.slice(1).join(".") || String(e.loc[0] ?? "");
      (out[key] ??= []).push(e.msg);
    }
    return out;
  }
}

/** 429: too many attempts. `retryAfter` is the `Retry-After` header in seconds, or null when
 * the browser hides it (a cross-origin answer exposes it only if the API's CORS lists it in
 * `expose_headers`). */
export class RateLimitedError extends GatehouseError {
  override name = "RateLimitedError";
  readonly retryAfter: number | null;
  constructor(message: string, status: number, detail: unknown, retryAfter: number | null) {
    super(message, status, detail);
    this.retryAfter = retryAfter;
  }
}

/** 503: Gatehouse is unavailable (`retryAfter` as for 429). The session is not known to be
 * invalid: keep showing the reader as signed in. */
export class UnavailableError extends GatehouseError {
  override name = "UnavailableError";
  readonly retryAfter: number | null;
  constructor(message: string, status: number, detail: unknown, retryAfter: number | null) {
    super(message, status, detail);
    this.retryAfter = retryAfter;
  }
}

/** 504: Gatehouse did not answer in time. */
export class GatewayTimeoutError extends GatehouseError {
  override name = "GatewayTimeoutError";
}

/** The request got no answer: offline, DNS, or (in a browser) refused by CORS. */
export class NetworkError extends GatehouseError {
  override name = "NetworkError";
}

function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function isFieldError(value: unknown): value is FieldError {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return Array.isArray(v.loc) && typeof v.msg === "string";
}

function messageOf(detail: unknown, fallback: string): string {
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    const parts = detail.filter(isFieldError).map((e) => `${e.loc.slice(1).join(".") || e.loc[0]}: ${e.msg}`);
    if (parts.length) return parts.join("; ");
  }
  return fallback;
}

/** The typed error for an error answer, from its status, headers and parsed body. */
export function errorFromResponse(status: number, headers: Headers, body: unknown): GatehouseError {
  const detail =
    typeof body === "object" && body !== null && "detail" in body ? (body as { detail: unknown }).detail : undefined;
  const message = messageOf(detail, `HTTP ${status}`);
  const retryAfter = parseRetryAfter(headers.get("retry-after"));
  switch (status) {
    case 400:
      return new BadRequestError(message, status, detail);
    case 401:
      return new UnauthenticatedError(message, status, detail);
    case 403:
      return new PermissionDeniedError(message, status, detail);
    case 404:
      return new NotFoundError(message, status, detail);
    case 409:
      return new ConflictError(message, status, detail);
    case 422: {
      const fields = Array.isArray(detail)
        ? detail.filter(isFieldError).map((e) => ({ loc: e.loc, msg: e.msg, type: String(e.type ?? "") }))
        : [];
      return new ValidationError(message, status, detail, fields);
    }
    case 429:
      return new RateLimitedError(message, status, detail, retryAfter);
    case 503:
      return new UnavailableError(message, status, detail, retryAfter);
    case 504:
      return new GatewayTimeoutError(message, status, detail);
    default:
      return new GatehouseError(message, status, detail);
  }
}
