"use strict";
// The example's front end: fetch calls to the Gatehouse router (/auth/...) and the book's API.
// The session, a pending sign-in's second-factor challenge and a passkey sign-in's ceremony
// live in HttpOnly cookies, so this script never sees a token. The page is served by the app itself, so every request is
// same-origin: the browser sends Origin/Sec-Fetch-Site and the router's CSRF check passes.

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }

  // The router's 403 for a change that needs a fresh sign-in (with the second factor):
  // {"detail": {"error": "reauthentication_required", "reason": ..., "message": ...}}.
  get reauthentication() {
    const detail = this.body && this.body.detail;
    const isObject = detail && typeof detail === "object" && !Array.isArray(detail);
    return isObject && detail.error === "reauthentication_required" ? detail : null;
  }
}

// A readable message from the router's error shapes: a string, FastAPI's 422 list, an object.
function describe(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${e.loc.slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  if (detail && detail.message) return detail.message;
  return `The request failed (HTTP ${status}).`;
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function show(view) {
  for (const id of ["signed-out", "second-factor", "signed-in"]) $(id).hidden = id !== view;
}

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

// Passkeys (WebAuthn). The router sends WebAuthn's JSON options (binary members as base64url
// strings) and takes the credential back as JSON, the shapes of credential.toJSON() and
// @simplewebauthn/browser. Browsers that have PublicKeyCredential.parse*OptionsFromJSON and
// toJSON() convert themselves; for the others the conversion is done here.

function base64urlToBuffer(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function bufferToBase64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function withCredentialIds(list) {
  return (list || []).map((descriptor) => ({ ...descriptor, id: base64urlToBuffer(descriptor.id) }));
}

function creationOptions(json) {
  if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
    return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: base64urlToBuffer(json.challenge),
    user: { ...json.user, id: base64urlToBuffer(json.user.id) },
    excludeCredentials: withCredentialIds(json.excludeCredentials),
  };
}

function requestOptions(json) {
  if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
    return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: base64urlToBuffer(json.challenge),
    allowCredentials: withCredentialIds(json.allowCredentials),
  };
}

// RegistrationResponseJSON / AuthenticationResponseJSON, as credential.toJSON() gives them.
function credentialJSON(credential) {
  if (typeof credential.toJSON === "function") return credential.toJSON();
  const r = credential.response;
  const response = { clientDataJSON: bufferToBase64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = bufferToBase64url(r.attestationObject);
    if (typeof r.getTransports === "function") response.transports = r.getTransports();
    if (typeof r.getAuthenticatorData === "function") {
      response.authenticatorData = bufferToBase64url(r.getAuthenticatorData());
    }
    if (typeof r.getPublicKeyAlgorithm === "function") {
      response.publicKeyAlgorithm = r.getPublicKeyAlgorithm();
    }
    const publicKey = typeof r.getPublicKey === "function" ? r.getPublicKey() : null;
    if (publicKey) response.publicKey = bufferToBase64url(publicKey);
  } else {
    response.authenticatorData = bufferToBase64url(r.authenticatorData);
    response.signature = bufferToBase64url(r.signature);
    response.userHandle = r.userHandle ? bufferToBase64url(r.userHandle) : null;
  }
  return {
    id: credential.id,
    rawId: bufferToBase64url(credential.rawId),
    type: credential.type,
    response,
    clientExtensionResults: credential.getClientExtensionResults(),
    authenticatorAttachment: credential.authenticatorAttachment ?? null,
  };
}

function passkeysSupported() {
  return typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
}

// The browser's own dialog; cancelling it (NotAllowedError) is no error worth a red box.
async function withPasskey(run) {
  try {
    return await run();
  } catch (error) {
    if (error instanceof ApiError) throw error;
    if (error && error.name === "NotAllowedError") {
      throw new Error("The passkey request was cancelled or timed out.");
    }
    if (error && error.name === "InvalidStateError") {
      throw new Error("This device already holds a passkey for your account.");
    }
    throw new Error(`Your browser could not use a passkey: ${error && error.message}`);
  }
}

async function createPasskey(optionsJSON) {
  return credentialJSON(await navigator.credentials.create({ publicKey: creationOptions(optionsJSON) }));
}

async function getPasskey(optionsJSON) {
  return credentialJSON(await navigator.credentials.get({ publicKey: requestOptions(optionsJSON) }));
}

// An event handler that shows what went wrong; a reauthentication_required answer asks the
// reader to sign in again.
function guarded(handler) {
  return async (event) => {
    if (event && event.type === "submit") event.preventDefault();
    say("");
    try {
      await handler(event);
    } catch (error) {
      if (error instanceof ApiError && error.reauthentication) {
        await signInAgain(error.reauthentication);
      } else {
        say(error.message);
      }
    }
  };
}

async function signInAgain(reauthentication) {
  const how =
    reauthentication.reason === "second_factor_required"
      ? "with your passkey, or with your password and second factor"
      : "again: your sign-in is too old for this change";
  await api("POST", "/auth/sign-out");
  showSignedOut();
  say(`For your security, sign in ${how}, then try again.`);
}

function showSignedOut() {
  $("status").textContent = "Signed out.";
  show("signed-out");
}

async function refresh() {
  let info;
  try {
    info = await api("GET", "/auth/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showSignedOut();
    throw error;
  }
  const { user, session } = info;
  const how = session.aal >= 2 ? "two-step sign-in" : "password only";
  $("status").textContent = `Signed in as ${user.name} <${user.email}> (${how}).`;
  show("signed-in");
  await loadFactors();
}

// Sign-up, with the learner profile. The background fields need the consent checkbox.

$("sign-up-form").consent_given.addEventListener("change", (event) => {
  $("background").disabled = !event.target.checked;
});

$("sign-up-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const form = event.target;
    const consent = form.consent_given.checked;
    const profile = { consent_given: consent };
    if (form.learning_style.value) profile.learning_style = form.learning_style.value;
    if (consent) {
      if (form.programming_level.value) profile.programming_level = form.programming_level.value;
      const languages = form.programming_languages.value.split(",").map((s) => s.trim());
      if (languages.some(Boolean)) profile.programming_languages = languages.filter(Boolean);
      const background = form.software_background.value.trim();
      if (background) profile.software_background = background;
    }
    const body = { name: form.name.value, email: form.email.value, password: form.password.value };
    const answer = await api("POST", "/auth/sign-up", { ...body, profile });
    form.reset();
    $("background").disabled = true;
    await refresh();
    if (!answer.session) say("Check your mail: confirm your address, then sign in.");
  }),
);

// Sign-in, and the second step when it answers second_factor_required.

$("sign-in-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const form = event.target;
    const answer = await api("POST", "/auth/sign-in", {
      email: form.email.value,
      password: form.password.value,
    });
    form.password.value = "";
    if (answer.second_factor_required) return askSecondFactor(answer.second_factor_required);
    await refresh();
  }),
);

// Passwordless: the ceremony's id stays in an HttpOnly cookie between the two calls.
$("passkey-sign-in").hidden = !passkeysSupported();
$("passkey-sign-in").addEventListener(
  "click",
  guarded(async () => {
    const options = await api("POST", "/auth/passkeys/sign-in/options");
    const credential = await withPasskey(() => getPasskey(options));
    await api("POST", "/auth/passkeys/sign-in", credential);
    await refresh();
  }),
);

// The passkey options of the sign-in waiting for its second factor, if it offers passkeys.
let secondFactorPasskey = null;

function askSecondFactor(challenge) {
  const form = $("second-factor-form");
  form.reset();
  const methods = challenge.methods || [];
  // A user with passkeys but no authenticator app types recovery codes only.
  const totp = methods.includes("totp");
  setRecoveryMode(!totp);
  $("use-recovery-label").hidden = !totp;
  secondFactorPasskey =
    methods.includes("passkey") && challenge.passkey_options && passkeysSupported()
      ? challenge.passkey_options
      : null;
  $("second-factor-passkey-box").hidden = secondFactorPasskey === null;
  const until = challenge.expires_at ? new Date(challenge.expires_at).toLocaleTimeString() : "";
  $("status").textContent = "Almost there: your second factor" + (until ? ` (before ${until}).` : ".");
  show("second-factor");
  form.code.focus();
}

function setRecoveryMode(recovery) {
  const form = $("second-factor-form");
  form.use_recovery.checked = recovery;
  $("totp-label").firstChild.textContent = recovery
    ? "One of your recovery codes "
    : "Code from your authenticator app ";
  form.code.inputMode = recovery ? "text" : "numeric";
}

$("second-factor-form").use_recovery.addEventListener("change", (event) =>
  setRecoveryMode(event.target.checked),
);

$("second-factor-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const form = event.target;
    const code = form.code.value.trim();
    const body = form.use_recovery.checked ? { recovery_code: code } : { totp_code: code };
    try {
      await api("POST", "/auth/second-factor", body);
    } catch (error) {
      form.code.value = "";
      if (error instanceof ApiError && error.status === 400) {
        showSignedOut(); // the challenge expired or was used: start again
      }
      throw error;
    }
    await refresh();
  }),
);

$("second-factor-passkey").addEventListener(
  "click",
  guarded(async () => {
    const credential = await withPasskey(() => getPasskey(secondFactorPasskey));
    try {
      await api("POST", "/auth/second-factor", { passkey_credential: credential });
    } catch (error) {
      if (error instanceof ApiError && error.status === 400) showSignedOut();
      throw error;
    }
    await refresh();
  }),
);

$("second-factor-cancel").addEventListener("click", () => {
  say("");
  showSignedOut();
});

$("sign-out").addEventListener(
  "click",
  guarded(async () => {
    await api("POST", "/auth/sign-out");
    showSignedOut();
  }),
);

$("query-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const answer = await api("POST", "/api/v1/query", { question: event.target.question.value });
    $("answer").textContent =
      answer.answer + (answer.personalized ? " (tailored to your profile)" : "");
  }),
);

// Second factors: list, enrol an authenticator app, add a passkey, recovery codes, remove.

function describeFactor(factor) {
  if (factor.kind === "passkey") return factor.backed_up ? "synced passkey" : "passkey";
  return "authenticator app";
}

async function loadFactors() {
  const list = $("factors");
  list.replaceChildren();
  let listed;
  try {
    listed = await api("GET", "/auth/factors");
  } catch (error) {
    if (!(error instanceof ApiError && error.reauthentication)) throw error;
    // Managing factors needs a recent sign-in that used them; offer one instead of failing.
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = "Sign in again to manage two-step sign-in";
    again.addEventListener("click", guarded(() => signInAgain(error.reauthentication)));
    list.append(again);
    $("recovery-remaining").textContent = "";
    $("enroll-start").hidden = $("regenerate").hidden = $("passkey-register").hidden = true;
    return;
  }
  for (const factor of listed.factors) {
    const item = document.createElement("li");
    const since = new Date(factor.created_at).toLocaleDateString();
    item.textContent = `${factor.name} (${describeFactor(factor)}, since ${since}) `;
    item.dataset.kind = factor.kind;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener(
      "click",
      guarded(async () => {
        if (!confirm(`Remove ${factor.name}? Sign-in then needs your password only.`)) return;
        await api("DELETE", `/auth/factors/${encodeURIComponent(factor.id)}`);
        await loadFactors();
      }),
    );
    item.append(remove);
    list.append(item);
  }
  const on = listed.factors.length > 0;
  $("recovery-remaining").textContent = on
    ? `${listed.recovery_codes_remaining} unused recovery codes.`
    : "Off: sign-in needs your password only.";
  // One authenticator app at a time; any number of passkeys.
  $("enroll-start").hidden = listed.factors.some((factor) => factor.kind === "totp");
  $("passkey-register").hidden = !passkeysSupported();
  $("regenerate").hidden = !on;
}

$("passkey-register").addEventListener(
  "click",
  guarded(async () => {
    const options = await api("POST", "/auth/passkeys/register/options", { name: "Passkey" });
    const credential = await withPasskey(() => createPasskey(options));
    const registered = await api("POST", "/auth/passkeys/register", credential);
    // The first second factor comes with the recovery codes.
    if (registered.recovery_codes.length) showCodes(registered.recovery_codes);
    await loadFactors();
  }),
);

$("enroll-start").addEventListener(
  "click",
  guarded(async () => {
    const started = await api("POST", "/auth/factors/totp", { name: "Authenticator app" });
    // As an image, the SVG can run no script, whatever it holds.
    $("qr").src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(started.qr_code_svg);
    $("secret").textContent = started.secret;
    $("enroll").hidden = false;
    $("enroll-start").hidden = true;
    $("enroll-confirm-form").code.focus();
  }),
);

$("enroll-confirm-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const form = event.target;
    const confirmed = await api("POST", "/auth/factors/totp/confirm", {
      code: form.code.value.trim(),
    });
    form.reset();
    $("enroll").hidden = true;
    $("secret").textContent = "";
    $("qr").removeAttribute("src");
    showCodes(confirmed.recovery_codes);
    await loadFactors();
  }),
);

$("regenerate").addEventListener(
  "click",
  guarded(async () => {
    if (!confirm("Make new recovery codes? The old ones stop working.")) return;
    const { recovery_codes } = await api("POST", "/auth/factors/recovery-codes");
    showCodes(recovery_codes);
    await loadFactors();
  }),
);

function showCodes(codes) {
  $("codes-list").replaceChildren(
    ...codes.map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    }),
  );
  $("codes").hidden = false;
}

$("codes-done").addEventListener("click", () => {
  $("codes-list").replaceChildren();
  $("codes").hidden = true;
});

// A provider sign-in that needs the second factor comes back with ?second_factor=required.
if (new URLSearchParams(location.search).get("second_factor") === "required") {
  history.replaceState(null, "", location.pathname);
  // The redirect cannot carry the passkey options: the code prompt only.
  askSecondFactor({ methods: ["totp", "recovery_code"], expires_at: null });
} else {
  guarded(refresh)();
}
