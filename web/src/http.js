// HTTPS calls to sipim: provisioning (no credentials), and the user's API
// authenticated with the device's bearer token or, for a browser signed in
// with the password alone, HTTP digest (RFC 7616) with the stored MD5 HA1.
import { calculateMD5 } from 'jssip/lib/Utils';

export class HttpError extends Error {
  constructor(status, message, { retryAfter = null, fromApi = false } = {}) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
    // The answer was one of sipim's JSON errors: the route exists.
    this.fromApi = fromApi;
  }
}

async function errorOf(response) {
  let reason = `${response.status} ${response.statusText}`.trim();
  let fromApi = false;
  try {
    const body = await response.clone().json();
    if (body && typeof body.error === 'string') {
      reason = body.error;
      fromApi = true;
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new HttpError(response.status, reason, { retryAfter: response.headers.get('Retry-After'), fromApi });
}

// credentials: 'omit' keeps the browser from prompting for a password on a
// 401: the page answers digest challenges itself.
const BASE = { credentials: 'omit', cache: 'no-store' };

/** POST a JSON body without credentials; the parsed JSON answer, or HttpError. */
export async function postJson(path, body) {
  const response = await fetch(path, {
    ...BASE, method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** RFC 7616 §3.3 challenges out of a (possibly comma-joined) WWW-Authenticate value. */
export function parseDigestChallenges(header) {
  const challenges = [];
  const re = /(\w[\w-]*)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s,]+)|(Digest)\s+/gi;
  let current = null;
  let match;
  while ((match = re.exec(header || '')) !== null) {
    if (match[4]) {
      current = {};
      challenges.push(current);
    } else if (current) {
      const value = match[3] !== undefined ? match[3].replace(/\\(.)/g, '$1') : match[2];
      current[match[1].toLowerCase()] = value;
    }
  }
  return challenges;
}

function cnonce() {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The Authorization header for an MD5 challenge (RFC 7616 §3.4.1, qop=auth). */
export function digestAuthorization(challenge, { username, ha1, method, uri }) {
  const nc = '00000001';
  const client = cnonce();
  const ha2 = calculateMD5(`${method}:${uri}`);
  const qop = (challenge.qop || '').split(',').map((q) => q.trim()).includes('auth') ? 'auth' : null;
  const response = qop
    ? calculateMD5(`${ha1}:${challenge.nonce}:${nc}:${client}:${qop}:${ha2}`)
    : calculateMD5(`${ha1}:${challenge.nonce}:${ha2}`);
  const parts = [
    `username="${username}"`, `realm="${challenge.realm}"`, `nonce="${challenge.nonce}"`, `uri="${uri}"`,
    'algorithm=MD5', `response="${response}"`,
  ];
  if (qop) parts.push(`qop=${qop}`, `nc=${nc}`, `cnonce="${client}"`);
  if (challenge.opaque !== undefined) parts.push(`opaque="${challenge.opaque}"`);
  return `Digest ${parts.join(', ')}`;
}

/** Calls to the user's own API with the device's credentials. */
export class Api {
  constructor(device) {
    this.device = device;
  }

  async request(method, path, body) {
    const init = { ...BASE, method, headers: {} };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const credentials = this.device.device || {};
    if (credentials.token) init.headers.Authorization = `Bearer ${credentials.token}`;
    let response = await fetch(path, init);
    if (response.status === 401 && !credentials.token && credentials.ha1) {
      const challenge = parseDigestChallenges(response.headers.get('WWW-Authenticate'))
        .find((c) => (c.algorithm || 'MD5').toUpperCase() === 'MD5');
      if (challenge) {
        init.headers.Authorization = digestAuthorization(challenge, {
          username: credentials.auth_username, ha1: credentials.ha1, method, uri: path,
        });
        response = await fetch(path, init);
      }
    }
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  get(path) { return this.request('GET', path); }

  post(path, body) { return this.request('POST', path, body ?? {}); }
}

export { calculateMD5 };
