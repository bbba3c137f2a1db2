// The sipim browser client: signs in (pairing code, one-time code, or User ID
// and password), registers over secure WebSocket with JsSIP (RFC 7118) as a
// stable device, and chats with pager-mode MESSAGE (RFC 3428) in CPIM with
// delivery and display notifications (RFC 5438).
import JsSIP from 'jssip';

import {
  IMDN_MEDIA_TYPE, buildMessage, buildNotification, newMessageId, nowRfc3339, parseCpim, parseImdnXml,
} from './cpim.js';
import {
  deviceName, forgetConfig, instanceUrn, instanceUuid, loadConfig, normaliseAor, saveConfig, targetFromInput,
} from './device.js';
import { Api, HttpError, calculateMD5, postJson } from './http.js';

const $ = (id) => document.getElementById(id);
const DOMAIN = (document.querySelector('meta[name="sipim-domain"]')?.content || location.hostname).toLowerCase();
const HISTORY_PAGE = 200;
const HISTORY_PAGES = 5;
// How far a message has got; a tick never goes back (RFC 5438 §7.1.2 states).
const RANK = { sending: 0, sent: 1, stored: 1, delivered: 2, displayed: 3 };
const TICK = {
  sending: ['…', 'sending'], sent: ['✓', 'sent'], stored: ['✓', 'sent, waiting for the recipient'],
  delivered: ['✓✓', 'delivered'], displayed: ['✓✓', 'read'], failed: ['!', 'not delivered'],
};

const state = {
  config: null,
  ua: null,
  api: null,
  me: null,
  conversations: new Map(), // peer AOR -> {peer, messages: [], unread}
  byKey: new Map(), // message key -> message
  contacts: [],
  open: null,
  verifying: false, // the credentials have not registered yet (a fresh sign-in)
  historyLoaded: false,
};

// ---------------------------------------------------------------- status & views

function setStatus(stateName, text) {
  const status = $('status');
  status.dataset.state = stateName;
  status.textContent = text;
}

function showSignIn(error = '') {
  $('chat').hidden = true;
  $('account').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = error;
  setStatus('signed-out', 'Signed out');
}

function showChat() {
  $('signin').hidden = true;
  $('chat').hidden = false;
  $('account').hidden = false;
  $('me').textContent = state.config.display_name ? `${state.config.display_name} (${state.me})` : state.me;
}

function signInError(error) {
  $('signin-error').textContent = error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------- sign-in

// A server without the provisioning endpoints answers 404/405 with no JSON error.
function provisioningMissing(error) {
  return error instanceof HttpError && !error.fromApi && (error.status === 404 || error.status === 405);
}

function deviceRequest(extra) {
  return { ...extra, device_name: deviceName(), instance_id: instanceUrn() };
}

async function signInWithPassword(user, password) {
  try {
    return await postJson('/provisioning/v1/signin', deviceRequest({ user, password }));
  } catch (error) {
    if (!provisioningMissing(error)) throw error;
  }
  // No provisioning on this server: register with the User ID and password
  // themselves (JsSIP's own digest). Only the MD5 HA1 is kept, never the password.
  const name = user.replace(/^sips?:/i, '');
  const [username, host] = name.includes('@') ? name.split('@') : [name, DOMAIN];
  const domain = host.toLowerCase();
  return {
    user_id: `sip:${username}@${domain}`, username, domain, display_name: '',
    device: {
      id: null, name: deviceName(), instance_id: instanceUrn(), auth_username: username,
      ha1: calculateMD5(`${username}:${domain}:${password}`), realm: domain,
    },
    sip: { realm: domain },
    direct_password: true,
  };
}

async function signIn(obtain) {
  $('signin-error').textContent = '';
  let config;
  try {
    config = await obtain();
  } catch (error) {
    if (error instanceof HttpError && error.status === 429 && error.retryAfter) {
      signInError(`${error.message} (try again in ${error.retryAfter} s)`);
    } else {
      signInError(provisioningMissing(error) ? 'This server does not offer this way of signing in.' : error);
    }
    return;
  }
  saveConfig(config);
  state.verifying = true;
  startSession(config);
}

function wireSignIn() {
  // Zero typing (the operator's network vouches for the number): the server decides from
  // where the request comes and the header the network adds; elsewhere it says a code is needed.
  $('network-signin').addEventListener('click', () => {
    signIn(() => postJson('/provisioning/v1/config', deviceRequest({})));
  });
  $('pair-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const code = $('pair-code').value.trim();
    signIn(() => postJson('/provisioning/v1/pair', deviceRequest({ code })));
  });
  $('otp-request-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('signin-error').textContent = '';
    try {
      await postJson('/provisioning/v1/otp', { phone: $('otp-phone').value.trim() });
      $('otp-code-form').hidden = false;
      $('otp-code').focus();
    } catch (error) {
      if (error instanceof HttpError && error.status === 429 && error.retryAfter) {
        signInError(`${error.message} (try again in ${error.retryAfter} s)`);
      } else {
        signInError(provisioningMissing(error) ? 'This server does not send sign-in codes.' : error);
      }
    }
  });
  $('otp-code-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const phone = $('otp-phone').value.trim();
    const code = $('otp-code').value.trim();
    signIn(() => postJson('/provisioning/v1/config', deviceRequest({ phone, code })));
  });
  $('password-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const user = $('signin-user').value.trim();
    const password = $('signin-password').value;
    $('signin-password').value = '';
    signIn(() => signInWithPassword(user, password));
  });
}

/** `#pair=CODE` (the link a pairing QR code carries) signs this browser in. */
function pairingCodeFromLink() {
  const match = /(?:^#|&)pair=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, '', location.pathname + location.search); // single use: do not keep it
  return decodeURIComponent(match[1]);
}

// ---------------------------------------------------------------- SIP

function wssUrl(config) {
  const configured = config.sip?.outbound_proxy?.wss;
  return configured || `wss://${location.host}/`;
}

function startSession(config) {
  state.config = config;
  state.me = normaliseAor(config.user_id);
  state.api = new Api(config);
  showChat();
  setStatus('connecting', 'Connecting…');
  const device = config.device;
  const options = {
    sockets: [new JsSIP.WebSocketInterface(wssUrl(config))],
    uri: config.user_id,
    authorization_user: device.auth_username || config.username,
    display_name: config.display_name || undefined,
    // RFC 5626 §4.1: the same instance on every visit, so a reload replaces
    // this browser's binding instead of adding a device.
    instance_id: instanceUuid(),
    register: true,
    register_expires: 600,
    session_timers: false,
    user_agent: 'sipim-web JsSIP/3.13',
    connection_recovery_min_interval: 2,
    connection_recovery_max_interval: 30,
  };
  if (device.ha1) {
    options.ha1 = device.ha1;
    options.realm = device.realm || config.sip?.realm || config.domain;
  } else {
    options.password = device.password;
  }
  const ua = new JsSIP.UA(options);
  state.ua = ua;
  ua.on('connecting', () => setStatus('connecting', 'Connecting…'));
  ua.on('disconnected', () => { if (state.ua === ua) setStatus('offline', 'Offline, reconnecting…'); });
  ua.on('registered', () => {
    state.verifying = false;
    setStatus('registered', 'Online');
    if (!state.historyLoaded) {
      state.historyLoaded = true;
      loadHistory();
    }
  });
  ua.on('unregistered', () => { if (state.ua === ua) setStatus('offline', 'Not registered'); });
  ua.on('registrationFailed', (event) => {
    const status = event.response?.status_code;
    if (status === 401 || status === 403 || event.cause === JsSIP.C.causes.AUTHENTICATION_ERROR
        || event.cause === JsSIP.C.causes.REJECTED) {
      const message = state.verifying ? 'Wrong user ID or password.'
        : 'This browser is no longer signed in (its credentials were refused or revoked).';
      signOut(message);
      return;
    }
    setStatus('failed', `Registration failed: ${event.cause}`);
  });
  ua.on('newMessage', (event) => {
    if (event.originator === 'remote') receive(event.request);
  });
  ua.start();
  loadContacts();
}

/** The user signs this browser out: its credentials are revoked, not just forgotten. */
async function signOutAndRevoke() {
  const device = state.config?.device;
  if (device?.id && device.token) {
    try {
      await state.api.request('DELETE', `/provisioning/v1/devices/${encodeURIComponent(device.id)}`);
    } catch (error) {
      console.warn('could not revoke this device', error);
    }
  }
  signOut();
}

function signOut(error = '') {
  const ua = state.ua;
  state.ua = null;
  if (ua) ua.stop(); // unregisters this device's binding
  forgetConfig();
  Object.assign(state, {
    config: null, api: null, me: null, open: null, contacts: [], historyLoaded: false, verifying: false,
  });
  state.conversations.clear();
  state.byKey.clear();
  $('messages').replaceChildren();
  $('conversations').replaceChildren();
  $('contacts').replaceChildren();
  $('compose').hidden = true;
  $('chat-peer').textContent = 'No conversation open';
  showSignIn(error);
}

// ---------------------------------------------------------------- conversations

function conversation(peer) {
  let conv = state.conversations.get(peer);
  if (!conv) {
    conv = { peer, messages: [], unread: 0 };
    state.conversations.set(peer, conv);
  }
  return conv;
}

function peerName(peer) {
  const contact = state.contacts.find((c) => normaliseAor(c.uri) === peer);
  if (contact?.display_name) return contact.display_name;
  const m = /^sip:([^@]+)@(.+)$/.exec(peer);
  if (m) return m[2] === state.config?.domain || m[2] === DOMAIN ? m[1] : `${m[1]}@${m[2]}`;
  return peer;
}

/** Add a message once (the same message can come live, by catch-up and from history). */
function addMessage(peer, message) {
  const existing = state.byKey.get(message.key);
  if (existing) {
    if (message.status) raiseStatus(existing, message.status);
    if (!existing.original && message.original) existing.original = message.original;
    return existing;
  }
  const conv = conversation(peer);
  message.peer = peer;
  state.byKey.set(message.key, message);
  let index = conv.messages.length;
  while (index > 0 && conv.messages[index - 1].time > message.time) index -= 1;
  conv.messages.splice(index, 0, message);
  if (message.direction === 'in' && !message.seen && !(state.open === peer && onScreen())) conv.unread += 1;
  return message;
}

function raiseStatus(message, status) {
  if (message.direction !== 'out') {
    if (status === 'displayed') message.seen = true;
    return;
  }
  const current = message.status || 'sending';
  if (status === 'failed') {
    if ((RANK[current] ?? 0) < RANK.delivered) message.status = 'failed';
  } else if ((RANK[status] ?? -1) > (RANK[current] ?? -1) || current === 'failed') {
    message.status = status;
  }
}

function onScreen() {
  return document.visibilityState === 'visible';
}

function openConversation(peer) {
  state.open = peer;
  conversation(peer);
  $('compose').hidden = false;
  render();
  markDisplayed();
  $('compose-input').focus();
}

// RFC 5438 §7.2.1.2: "displayed" once the user has seen the message.
function markDisplayed() {
  if (!state.open || !onScreen()) return;
  const conv = conversation(state.open);
  conv.unread = 0;
  for (const message of conv.messages) {
    if (message.direction !== 'in' || message.seen) continue;
    message.seen = true;
    if (message.original?.notifications.includes('display')) sendNotification(message, 'displayed');
  }
  renderConversations();
}

// ---------------------------------------------------------------- sending

function sendText(peer, text) {
  const messageId = newMessageId();
  const dateTime = nowRfc3339();
  const message = addMessage(peer, {
    key: messageId, id: messageId, direction: 'out', text, time: Date.now(), status: 'sending',
  });
  render();
  const body = buildMessage({ from: state.me, to: peer, text, messageId, dateTime });
  const update = (status, reason) => {
    raiseStatus(message, status);
    if (reason) message.reason = reason;
    render();
  };
  try {
    state.ua.sendMessage(peer, body, {
      contentType: 'message/cpim',
      eventHandlers: {
        // RFC 3428 §7: 200 delivered to a device now, 202 stored for later.
        succeeded: (event) => update(event.response?.status_code === 202 ? 'stored' : 'sent'),
        failed: (event) => update('failed', event.response ? `${event.response.status_code} ${event.response.reason_phrase}` : event.cause),
      },
    });
  } catch (error) {
    update('failed', error.message);
  }
}

function sendNotification(message, status) {
  const original = message.original;
  if (!state.ua || !original?.messageId || !original.dateTime) return;
  const body = buildNotification({
    from: state.me, original, status, messageId: newMessageId(), dateTime: nowRfc3339(),
  });
  // RFC 5438 §7.2.1: to the top IMDN-Record-Route, else to the IM's From.
  const route = original.recordRoutes[0]?.match(/<([^>]*)>/)?.[1];
  const destination = route || original.from;
  try {
    state.ua.sendMessage(destination, body, { contentType: 'message/cpim' });
  } catch (error) {
    console.warn('could not send the notification', error);
  }
}

// ---------------------------------------------------------------- receiving

// The server's delivery Call-ID starts with the stored message's id, which
// history entries carry as message_id: a message with no IMDN Message-ID is
// still shown once.
function serverMessageKey(callId) {
  return `srv:${String(callId).split('.')[0]}`;
}

function textOf(contentType, content) {
  if (!contentType || contentType.startsWith('text/')) return content;
  return `[${contentType}]`;
}

// RFC 5438 §11.1.7: the status a notification reports moves the message's tick.
const TICK_FOR_STATUS = {
  delivered: 'delivered', displayed: 'displayed', failed: 'failed', error: 'failed', forbidden: 'failed',
  stored: 'stored', processed: 'sent',
};

function noteDisposition(report) {
  const target = report && state.byKey.get(report.messageId);
  if (target && TICK_FOR_STATUS[report.status]) {
    raiseStatus(target, TICK_FOR_STATUS[report.status]);
    render();
  }
}

function receive(request) {
  const contentType = (request.getHeader('Content-Type') || 'text/plain').split(';')[0].trim().toLowerCase();
  const from = normaliseAor(request.from.uri.toString());
  const to = normaliseAor(request.to.uri.toString());
  const body = request.body || '';
  const dateHeader = request.getHeader('Date');
  const time = dateHeader && !Number.isNaN(Date.parse(dateHeader)) ? Date.parse(dateHeader) : Date.now();
  if (contentType === IMDN_MEDIA_TYPE) {
    // Some clients (liblinphone) send the IMDN document bare, not in CPIM.
    noteDisposition(parseImdnXml(body));
    return;
  }
  let cpim = null;
  if (contentType === 'message/cpim') {
    cpim = parseCpim(body);
    if (cpim && (cpim.contentType === IMDN_MEDIA_TYPE || cpim.disposition === 'notification')) {
      noteDisposition(parseImdnXml(cpim.content));
      return;
    }
  }
  // A copy of what this user sent from another device (From is the user).
  const outgoing = from === state.me;
  const peer = outgoing ? normaliseAor((cpim && cpim.to) || to) : from;
  const key = cpim?.messageId || serverMessageKey(request.call_id);
  const message = addMessage(peer, {
    key,
    id: cpim?.messageId || null,
    direction: outgoing ? 'out' : 'in',
    text: cpim ? textOf(cpim.contentType, cpim.content) : textOf(contentType, body),
    time,
    status: outgoing ? 'sent' : null,
    original: !outgoing ? cpim : null,
  });
  if (!outgoing && cpim?.notifications.includes('positive-delivery') && !message.deliveredSent) {
    message.deliveredSent = true;
    sendNotification(message, 'delivered');
  }
  if (!state.open) state.open = peer;
  render();
  if (state.open === peer) markDisplayed();
}

// ---------------------------------------------------------------- HTTP API

async function loadHistory() {
  let before = null;
  try {
    for (let page = 0; page < HISTORY_PAGES; page += 1) {
      const query = `limit=${HISTORY_PAGE}${before ? `&before=${before}` : ''}`;
      const doc = await state.api.get(`/api/v1/history?${query}`);
      for (const entry of doc.entries) addFromHistory(entry);
      if (!doc.next_cursor) break;
      before = doc.next_cursor;
    }
  } catch (error) {
    $('sidebar-error').textContent = `History could not be loaded: ${error.message}`;
  }
  if (!state.open) {
    const latest = [...state.conversations.values()]
      .filter((c) => c.messages.length)
      .sort((a, b) => b.messages[b.messages.length - 1].time - a.messages[a.messages.length - 1].time)[0];
    if (latest) state.open = latest.peer;
  }
  render();
  markDisplayed();
}

function addFromHistory(entry) {
  const type = (entry.content_type || '').split(';')[0].trim().toLowerCase();
  if (type === IMDN_MEDIA_TYPE) return; // a bare notification, not a message
  const cpim = type === 'message/cpim' ? parseCpim(entry.body) : null;
  if (cpim && (cpim.contentType === IMDN_MEDIA_TYPE || cpim.disposition === 'notification')) return;
  const outgoing = entry.direction === 'out';
  addMessage(normaliseAor(entry.peer), {
    key: entry.imdn_message_id || `srv:${entry.message_id}`,
    id: entry.imdn_message_id,
    direction: outgoing ? 'out' : 'in',
    text: cpim ? textOf(cpim.contentType, cpim.content) : textOf(type, entry.body),
    time: entry.time * 1000,
    status: outgoing ? (entry.status || 'sent') : (entry.status === 'displayed' ? 'displayed' : null),
    seen: !outgoing && entry.status === 'displayed',
    original: outgoing ? null : cpim,
  });
}

async function loadContacts() {
  const note = $('contacts-note');
  try {
    const doc = await state.api.get('/api/v1/contacts');
    state.contacts = Array.isArray(doc.contacts) ? doc.contacts : [];
    note.hidden = state.contacts.length > 0;
    note.textContent = 'No contacts yet.';
  } catch (error) {
    state.contacts = [];
    note.hidden = false;
    note.textContent = error instanceof HttpError && !error.fromApi && error.status === 404
      ? 'This server keeps no contact lists.' : `Contacts could not be loaded: ${error.message}`;
    state.contactsAvailable = !(error instanceof HttpError && error.status === 404);
  }
  render();
}

async function addContact(peer) {
  try {
    await state.api.post('/api/v1/contacts', { uri: peer });
    await loadContacts();
  } catch (error) {
    $('sidebar-error').textContent = `Could not add ${peer}: ${error.message}`;
  }
}

async function resolveTarget(text) {
  const target = targetFromInput(text, state.config.domain || DOMAIN);
  if (!target) throw new Error('Type a user name, user@domain or a phone number (+…)');
  if (target.uri) return target.uri;
  try {
    const found = await state.api.get(`/api/v1/lookup?number=${encodeURIComponent(target.number)}`);
    return normaliseAor(found.user_id);
  } catch (error) {
    if (error instanceof HttpError && !error.fromApi && error.status === 404) {
      // No directory API here: the server resolves the number when the message goes out.
      return `sip:${target.number}@${state.config.domain || DOMAIN};user=phone`;
    }
    throw error;
  }
}

async function showPairing() {
  const dialog = $('pairing');
  $('pairing-error').textContent = '';
  $('pairing-body').hidden = true;
  dialog.showModal();
  try {
    const pairing = await state.api.post('/provisioning/v1/pairing');
    $('pairing-code').textContent = pairing.code;
    $('pairing-link').href = pairing.url;
    $('pairing-link').textContent = pairing.url;
    // As an image: the SVG cannot run anything in this page.
    $('pairing-qr').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(pairing.qr_svg || '')}`;
    $('pairing-expiry').textContent = `The code works once, for ${pairing.expires_in} seconds.`;
    $('pairing-body').hidden = false;
  } catch (error) {
    $('pairing-error').textContent = provisioningMissing(error)
      ? 'This server does not offer device pairing.' : error.message;
  }
}

// ---------------------------------------------------------------- rendering

function render() {
  renderContacts();
  renderConversations();
  renderMessages();
}

function listButton(label, current, onClick) {
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = label;
  if (current) button.setAttribute('aria-current', 'true');
  button.addEventListener('click', onClick);
  return button;
}

function renderContacts() {
  const list = $('contacts');
  list.replaceChildren(...state.contacts.map((contact) => {
    const peer = normaliseAor(contact.uri);
    const item = document.createElement('li');
    item.dataset.testid = 'contact';
    item.dataset.uri = peer;
    item.append(listButton(contact.display_name || peerName(peer), state.open === peer, () => openConversation(peer)));
    return item;
  }));
}

function renderConversations() {
  const conversations = [...state.conversations.values()].sort((a, b) => {
    const last = (c) => (c.messages.length ? c.messages[c.messages.length - 1].time : 0);
    return last(b) - last(a);
  });
  $('conversations').replaceChildren(...conversations.map((conv) => {
    const item = document.createElement('li');
    item.dataset.testid = 'conversation';
    item.dataset.peer = conv.peer;
    const button = listButton(peerName(conv.peer), state.open === conv.peer, () => openConversation(conv.peer));
    if (conv.unread) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.dataset.testid = 'unread';
      badge.textContent = String(conv.unread);
      badge.setAttribute('aria-label', `${conv.unread} unread`);
      button.append(' ', badge);
    }
    item.append(button);
    return item;
  }));
}

function renderMessages() {
  const peer = state.open;
  $('chat-peer').textContent = peer ? peerName(peer) : 'No conversation open';
  $('chat-peer').dataset.peer = peer || '';
  $('compose').hidden = !peer;
  const canAdd = peer && state.contactsAvailable !== false && peer.startsWith('sip:')
    && !state.contacts.some((c) => normaliseAor(c.uri) === peer);
  $('add-contact').hidden = !canAdd;
  const list = $('messages');
  const messages = peer ? conversation(peer).messages : [];
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...messages.map((message) => {
    const item = document.createElement('li');
    item.className = 'message';
    item.dataset.testid = 'message';
    item.dataset.direction = message.direction;
    if (message.id) item.dataset.messageId = message.id;
    const text = document.createElement('span');
    text.className = 'text';
    text.dataset.testid = 'message-text';
    text.textContent = message.text;
    const meta = document.createElement('span');
    meta.className = 'meta';
    const time = document.createElement('time');
    time.dateTime = new Date(message.time).toISOString();
    time.textContent = new Date(message.time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.append(time);
    if (message.direction === 'out') {
      const [symbol, label] = TICK[message.status] || TICK.sent;
      const tick = document.createElement('span');
      tick.className = 'tick';
      tick.dataset.testid = 'tick';
      tick.dataset.status = message.status;
      tick.textContent = ` ${symbol}`;
      tick.title = message.reason ? `${label}: ${message.reason}` : label;
      tick.setAttribute('aria-label', tick.title);
      meta.append(tick);
    }
    item.append(text, meta);
    return item;
  }));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- start

function wireChat() {
  $('compose').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('compose-input');
    const text = input.value;
    if (!text.trim() || !state.open || !state.ua) return;
    input.value = '';
    sendText(state.open, text);
  });
  $('compose-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      $('compose').requestSubmit();
    }
  });
  $('new-chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('sidebar-error').textContent = '';
    try {
      const peer = await resolveTarget($('new-chat').value);
      $('new-chat').value = '';
      openConversation(peer);
    } catch (error) {
      $('sidebar-error').textContent = error.message;
    }
  });
  $('add-contact').addEventListener('click', () => { if (state.open) addContact(state.open); });
  $('sign-out').addEventListener('click', signOutAndRevoke);
  $('pair-device').addEventListener('click', showPairing);
  document.addEventListener('visibilitychange', markDisplayed);
}

function main() {
  wireSignIn();
  wireChat();
  const code = pairingCodeFromLink();
  const config = loadConfig();
  if (config) {
    startSession(config);
    return;
  }
  showSignIn();
  if (code) {
    $('pair-code').value = code;
    signIn(() => postJson('/provisioning/v1/pair', deviceRequest({ code })));
  }
}

main();
