export { createGatehouseClient } from "./client.js";
export type { GatehouseClient, GatehouseClientOptions, SessionState, SessionStore } from "./client.js";
export {
  BadRequestError,
  ConflictError,
  errorFromResponse,
  GatehouseError,
  GatewayTimeoutError,
  NetworkError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
} from "./errors.js";
export type { FieldError } from "./errors.js";
export * from "./types.js";
