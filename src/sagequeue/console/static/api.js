// Signed calls to this server's public APIs, as any AWS client makes them. The session
// (the key pair) lives in this tab's sessionStorage only, and ends after SESSION_HOURS.

import { encodeRfc3986, presign, signRequest } from "./sigv4.js";

const SESSION_KEY = "sagequeue.console.session";
export const SESSION_HOURS = 8;

// Errors that mean the key pair itself is refused: the user must sign in again.
const AUTH_FAILURES = new Set([
  "UnrecognizedClientException",
  "InvalidClientTokenId",
  "InvalidAccessKeyId",
  "InvalidSignatureException",
  "SignatureDoesNotMatch",
  "IncompleteSignature",
  "MissingAuthenticationToken",
  "MissingAuthenticationTokenException",
]);

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.code = code;
    this.status = status;
  }
  get authFailure() {
    return AUTH_FAILURES.has(this.code);
  }
  get accessDenied() {
    return /AccessDenied/.test(this.code);
  }
}

export class SessionEnded extends Error {}

export function defaultRegion() {
  const meta = document.querySelector('meta[name="sagequeue-region"]');
  return (meta && meta.content) || "us-east-1";
}

export function readSession() {
  let stored = null;
  try {
    stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    stored = null;
  }
  if (!stored || !stored.accessKeyId || !stored.secretAccessKey) return { state: "none" };
  if (!(stored.expiresAt > Date.now())) {
    sessionStorage.removeItem(SESSION_KEY);
    return { state: "expired" };
  }
  return { state: "active", session: stored };
}

export function saveSession(credentials, region) {
  const now = Date.now();
  const session = {
    ...credentials,
    region,
    signedInAt: now,
    expiresAt: now + SESSION_HOURS * 3600 * 1000,
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

export function endSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

// Milliseconds to add to this machine's clock (learnt from the server when a signature
// is refused as too old or too new, as AWS SDKs correct clock skew).
let clockOffset = 0;

function currentSession(explicit) {
  if (explicit) return explicit;
  const found = readSession();
  if (found.state !== "active") throw new SessionEnded(found.state);
  return found.session;
}

function encodePath(segments) {
  return "/" + segments.map(encodeRfc3986).join("/");
}

async function errorOf(response) {
  const text = await response.text();
  let code = String(response.status);
  let message = text;
  try {
    const body = JSON.parse(text);
    code = String(body.__type || body.code || body.Code || code).split("#").pop();
    message = body.message || body.Message || "";
  } catch {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const found = doc.querySelector("Code");
    if (found) {
      code = found.textContent;
      const msg = doc.querySelector("Message");
      message = msg ? msg.textContent : "";
    }
  }
  return new ApiError(code, message, response.status);
}

function skewed(error) {
  return (
    error.code === "RequestTimeTooSkewed" ||
    (error.code === "InvalidSignatureException" && /Signature (expired|not yet current)/.test(error.message))
  );
}

/**
 * Send one signed request; returns the Response (status < 300) or throws ApiError.
 * `options.session` signs with a key pair that is not (yet) the session's: sign-in.
 */
export async function send(service, method, segments, { query = [], headers = {}, body = "", session, stream = false, signal } = {}) {
  const credentials = currentSession(session);
  const path = typeof segments === "string" ? segments : encodePath(segments);
  for (let attempt = 0; ; attempt++) {
    const signed = signRequest({
      method,
      host: location.host,
      path,
      query,
      headers,
      body,
      service,
      region: credentials.region,
      credentials,
      now: Date.now() + clockOffset,
    });
    const url = path + (signed.queryString ? "?" + signed.queryString : "");
    const response = await fetch(url, {
      method,
      headers: signed.headers,
      body: method === "GET" || method === "HEAD" ? undefined : body,
      credentials: "omit",
      cache: "no-store",
      signal,
    });
    if (response.ok) return response;
    const error = stream && response.status === 404 ? new ApiError("NotFound", "", 404) : await errorOf(response);
    const serverDate = Date.parse(response.headers.get("date") || "");
    if (attempt === 0 && skewed(error) && !Number.isNaN(serverDate)) {
      clockOffset = serverDate - Date.now();
      continue;
    }
    throw error;
  }
}

const JSON_TARGETS = {
  sagemaker: ["SageMaker", "1.1"],
  monitoring: ["GraniteServiceVersion20100801", "1.0"],
  logs: ["Logs_20140328", "1.1"],
  "application-autoscaling": ["AnyScaleFrontendService", "1.1"],
};

/** A call to a JSON protocol API (control plane, CloudWatch, Logs, Auto Scaling). */
export async function call(service, action, params = {}, options = {}) {
  const [prefix, version] = JSON_TARGETS[service];
  const body = JSON.stringify(params);
  const response = await send(service, "POST", "/", {
    ...options,
    headers: {
      "content-type": `application/x-amz-json-${version}`,
      "x-amz-target": `${prefix}.${action}`,
    },
    body,
  });
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

/** The runtime API's GET calls (status and listing extensions). */
export async function runtime(segments, query = [], options = {}) {
  const response = await send("sagemaker", "GET", segments, { ...options, query });
  return options.stream ? response : response.json();
}

/** An S3 GET answered in XML, parsed. */
export async function s3(segments, query = []) {
  const response = await send("s3", "GET", segments, { query });
  return new DOMParser().parseFromString(await response.text(), "application/xml");
}

export function splitS3Uri(uri) {
  const match = /^s3:\/\/([^/]+)\/(.*)$/.exec(uri || "");
  return match ? { bucket: match[1], key: match[2] } : null;
}

/** A presigned GET of an object (valid 5 minutes), signed now. */
export function objectUrl(bucket, key) {
  const credentials = currentSession();
  const path = "/" + encodeRfc3986(bucket) + "/" + key.split("/").map(encodeRfc3986).join("/");
  return presign({
    host: location.host,
    origin: location.origin,
    path,
    region: credentials.region,
    credentials,
    now: Date.now() + clockOffset,
    expires: 300,
  });
}
