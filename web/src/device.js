// What this browser keeps between visits (localStorage): its instance id,
// made once and kept even across sign-out so the same browser is always the
// same device (RFC 5626 §4.1 +sip.instance), and the device configuration
// the server gave it (with its own credentials or token).
const INSTANCE_KEY = 'sipim.instance';
const CONFIG_KEY = 'sipim.device';

export function instanceUuid() {
  let uuid = localStorage.getItem(INSTANCE_KEY);
  if (!uuid || !/^[0-9a-f-]{36}$/i.test(uuid)) {
    uuid = crypto.randomUUID();
    localStorage.setItem(INSTANCE_KEY, uuid);
  }
  return uuid;
}

export function instanceUrn() {
  return `urn:uuid:${instanceUuid()}`;
}

export function loadConfig() {
  try {
    const config = JSON.parse(localStorage.getItem(CONFIG_KEY) || 'null');
    return config && config.user_id && config.device ? config : null;
  } catch (_) {
    return null;
  }
}

export function saveConfig(config) {
  // The instance the server issued credentials for is the one to register with.
  const issued = config.device && config.device.instance_id;
  if (issued) {
    const uuid = issued.replace(/^urn:uuid:/i, '');
    if (/^[0-9a-f-]{36}$/i.test(uuid)) localStorage.setItem(INSTANCE_KEY, uuid);
  }
  localStorage.setItem(CONFIG_KEY, JSON.stringify(config));
}

export function forgetConfig() {
  localStorage.removeItem(CONFIG_KEY);
}

export function deviceName() {
  const agent = navigator.userAgent;
  const browser = /Edg\//.test(agent) ? 'Edge' : /Firefox\//.test(agent) ? 'Firefox'
    : /Chrom(e|ium)\//.test(agent) ? 'Chromium' : /Safari\//.test(agent) ? 'Safari' : 'Browser';
  const platform = /Android/.test(agent) ? 'Android' : /iPhone|iPad/.test(agent) ? 'iOS'
    : /Mac OS X/.test(agent) ? 'macOS' : /Windows/.test(agent) ? 'Windows' : /Linux/.test(agent) ? 'Linux' : '';
  return `${browser} web${platform ? ` on ${platform}` : ''}`;
}

/** AORs compare by user and host (RFC 3261 §19.1.4 in spirit): lower-case host, no params. */
export function normaliseAor(uri) {
  const text = String(uri || '').trim().replace(/^<|>$/g, '');
  const m = /^(sips?):([^@;>]+)@([^;>?]+)/i.exec(text);
  if (m) return `sip:${m[2]}@${m[3].toLowerCase()}`;
  const tel = /^tel:([^;>]+)/i.exec(text);
  if (tel) return `tel:${tel[1]}`;
  return text;
}

/** What the user typed as a peer: "bob", "bob@dom", "sip:bob@dom" or "+E164". */
export function targetFromInput(text, domain) {
  const value = text.trim();
  if (!value) return null;
  if (/^\+[0-9 ()-]{4,}$/.test(value)) return { number: value.replace(/[ ()-]/g, '') };
  if (/^sips?:/i.test(value)) return { uri: normaliseAor(value) };
  if (/^tel:/i.test(value)) return { number: value.slice(4) };
  if (value.includes('@')) return { uri: normaliseAor(`sip:${value}`) };
  if (/^[A-Za-z0-9._~!$&'*+=-]+$/.test(value)) return { uri: `sip:${value}@${domain}` };
  return null;
}
