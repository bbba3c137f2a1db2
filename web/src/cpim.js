// message/cpim (RFC 3862) and IMDN (RFC 5438) as the browser client needs them.
// Pure functions: strings in, values out; no DOM except DOMParser for the XML.

export const IMDN_NAMESPACE = 'urn:ietf:params:imdn';
export const IMDN_XML_NAMESPACE = 'urn:ietf:params:xml:ns:imdn';
export const IMDN_MEDIA_TYPE = 'message/imdn+xml';

const encoder = new TextEncoder();

export function byteLength(text) {
  return encoder.encode(text).length;
}

export function newMessageId() {
  // RFC 5438 §6.3: unique, at least 32 bits of randomness; letters and digits only.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('');
}

// RFC 3339 as RFC 3862 §5.7 wants it; milliseconds keep messages apart.
export function nowRfc3339(date = new Date()) {
  return date.toISOString();
}

function escapeXml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
}

// RFC 3862 §3.2: a header value may not hold CR/LF; addresses are "<uri>".
function address(uri) {
  return `<${String(uri).replace(/[\r\n<>]/g, '')}>`;
}

/**
 * An instant message in CPIM asking for delivery and display notifications
 * (RFC 5438 §6.2, §7.1.1).
 */
export function buildMessage({ from, to, text, messageId, dateTime, notifications = ['positive-delivery', 'display'] }) {
  const content = text;
  const lines = [
    `From: ${address(from)}`,
    `To: ${address(to)}`,
    `DateTime: ${dateTime}`,
    `NS: imdn <${IMDN_NAMESPACE}>`, // RFC 3862 §3.4: declared before use
    `imdn.Message-ID: ${messageId}`,
  ];
  if (notifications.length) lines.push(`imdn.Disposition-Notification: ${notifications.join(', ')}`);
  lines.push('', 'Content-Type: text/plain;charset=utf-8', `Content-Length: ${byteLength(content)}`, '', content);
  return lines.join('\r\n');
}

/**
 * The CPIM body of an IMDN for a received message (RFC 5438 §7.2.1):
 * To is the IM's From, <message-id> and <datetime> echo the IM's.
 */
export function buildNotification({ from, original, status, messageId, dateTime }) {
  const kind = status === 'displayed' ? 'display' : 'delivery';
  const recipient = original.to || from;
  const xml = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<imdn xmlns="${IMDN_XML_NAMESPACE}">`,
    `  <message-id>${escapeXml(original.messageId)}</message-id>`,
    `  <datetime>${escapeXml(original.dateTime)}</datetime>`,
    `  <recipient-uri>${escapeXml(recipient)}</recipient-uri>`,
    `  <original-recipient-uri>${escapeXml(recipient)}</original-recipient-uri>`,
    `  <${kind}-notification><status><${status}/></status></${kind}-notification>`,
    '</imdn>',
    '',
  ].join('\n');
  const lines = [
    `From: ${address(from)}`,
    `To: ${original.fromHeader || address(original.from)}`,
    `NS: imdn <${IMDN_NAMESPACE}>`,
    `imdn.Message-ID: ${messageId}`,
    `DateTime: ${dateTime}`,
  ];
  for (const route of original.recordRoutes || []) lines.push(`imdn.IMDN-Route: ${route}`);
  lines.push('', `Content-Type: ${IMDN_MEDIA_TYPE}`, 'Content-Disposition: notification',
    `Content-Length: ${byteLength(xml)}`, '', xml);
  return lines.join('\r\n');
}

function uriOf(value) {
  const match = /<([^>]*)>/.exec(value || '');
  return (match ? match[1] : value || '').trim();
}

function splitHeaderBlock(block) {
  const headers = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line) continue;
    if (/^[ \t]/.test(line) && headers.length) { // folded continuation
      headers[headers.length - 1][1] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon > 0) headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

function splitBlock(text) {
  const match = /\r?\n\r?\n/.exec(text);
  if (!match) return [text, ''];
  return [text.slice(0, match.index), text.slice(match.index + match[0].length)];
}

/**
 * Parse a message/cpim body: message headers (with namespace prefixes
 * resolved, RFC 3862 §3.4), content headers and content. Returns null when
 * the text is not CPIM at all.
 */
export function parseCpim(text) {
  const [messageBlock, rest] = splitBlock(text);
  const [contentBlock, content] = splitBlock(rest);
  const headers = splitHeaderBlock(messageBlock);
  if (!headers.length) return null;
  const prefixes = {};
  for (const [name, value] of headers) {
    if (name.toLowerCase() === 'ns') {
      const m = /^\s*([^\s<]*)\s*<([^>]*)>/.exec(value);
      if (m) prefixes[m[1].toLowerCase()] = m[2];
    }
  }
  const imdnPrefix = Object.keys(prefixes).find((p) => prefixes[p] === IMDN_NAMESPACE);
  const imdn = (name) => headers
    .filter(([n]) => imdnPrefix && n.toLowerCase() === `${imdnPrefix}.${name}`.toLowerCase())
    .map(([, v]) => v);
  const plain = (name) => headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  const contentHeaders = {};
  for (const [name, value] of splitHeaderBlock(contentBlock)) contentHeaders[name.toLowerCase()] = value;
  const fromHeader = plain('From')[0] || '';
  return {
    fromHeader,
    from: uriOf(fromHeader),
    to: uriOf(plain('To')[0] || ''),
    dateTime: (plain('DateTime')[0] || '').trim(),
    messageId: (imdn('Message-ID')[0] || '').trim() || null,
    notifications: imdn('Disposition-Notification')
      .flatMap((v) => v.split(','))
      .map((v) => v.trim().toLowerCase())
      .filter(Boolean),
    recordRoutes: imdn('IMDN-Record-Route'),
    contentType: (contentHeaders['content-type'] || '').split(';')[0].trim().toLowerCase(),
    disposition: (contentHeaders['content-disposition'] || '').split(';')[0].trim().toLowerCase(),
    content,
  };
}

/** The <message-id> and status of a message/imdn+xml document (RFC 5438 §11). */
export function parseImdnXml(xml) {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  if (doc.getElementsByTagName('parsererror').length) return null;
  const root = doc.documentElement;
  if (!root || root.namespaceURI !== IMDN_XML_NAMESPACE || root.localName !== 'imdn') return null;
  const messageId = (root.getElementsByTagNameNS(IMDN_XML_NAMESPACE, 'message-id')[0]?.textContent || '').trim();
  const status = root.getElementsByTagNameNS(IMDN_XML_NAMESPACE, 'status')[0];
  const value = status?.firstElementChild?.localName;
  if (!messageId || !value) return null;
  return { messageId, status: value };
}
