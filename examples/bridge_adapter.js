// An external adapter for the MTA's http-bridge, in Node (v18+) with no npm package: node:http only.
//
// The MTA's http-bridge adapter forwards Login/Send/Report/Destroy as MMP JSON to four POST
// endpoints of a service like this one (contract: docs/adapters/http-bridge.md). The "partner"
// behind it is made up and keeps no state: a partner message id carries its acceptance time,
// so any instance of this service, restarted or not, reports on any id it issued.
//
//   node examples/bridge_adapter.js --port 8090 --secret-key demo-secret --token tok-123456
//   node examples/bridge_adapter.js --port 0 ...      # a free port; the first stdout line says which
//
// Behaviour, to try every part of the contract:
//   * login is ok only for --secret-key; with --token, every call needs "Authorization: Bearer <token>"
//     (else 401 and an "auth" error, which the MTA reads as login NOK);
//   * /send accepts every message, except: a number starting 999 FAILs (no route), the sender
//     "REFUSED" FAILs with reason "sender" (the MTA retries with the account's fallback sender),
//     a number starting 888 FAILs with reason "retry" (never accepted: the MTA sends it again later);
//   * /report answers WAITING, then DELIVERED --delivery-delay seconds after acceptance;
//     ids it never issued are left out (they stay WAITING at the MTA);
//   * POST /_control/outage {"kind": "transient"|"throttled"|"permanent"|"auth"|null} makes every
//     endpoint fail that way until it is called with null (tests use it; never expose it).
"use strict";

const http = require("node:http");

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const HOST = option("host", process.env.BRIDGE_HOST || "127.0.0.1");
const PORT = Number(option("port", process.env.BRIDGE_PORT || "8090"));
const SECRET_KEY = option("secret-key", process.env.BRIDGE_SECRET_KEY || "demo-secret");
const TOKEN = option("token", process.env.BRIDGE_TOKEN || "");
const DELIVERY_DELAY_MS = 1000 * Number(option("delivery-delay", process.env.BRIDGE_DELIVERY_DELAY_S || "2"));

// The HTTP status for each error kind; the MTA reads the kind from the body.
const ERROR_STATUS = { transient: 503, throttled: 429, permanent: 422, auth: 401 };
let outage = null; // an error kind every endpoint answers while set

function mmpTime(ms) {
  // yyyyMMddHHmm in UTC
  return new Date(ms).toISOString().replace(/[-T:]/g, "").slice(0, 12);
}

function result(partnerMessageId, partnerStatus, apiStatus, extra = {}) {
  return {
    partnerMessageId, // "" when the partner gave none
    partnerStatus, // the partner's own status word
    partnerDetail: "", // the partner's own text, for people
    apiStatus, // OK/FAIL from /send; DELIVERED/FAIL/TIMEOUT/WAITING from /report
    sendAt: "", // yyyyMMddHHmm, "" when unknown
    smsOperator: "",
    smsMessageCount: 0, // 0 = unknown: the MTA counts the segments
    reason: "", // on a /send FAIL: "sender" or "retry" (see above)
    ...extra,
  };
}

class BadRequest extends Error {}

const endpoints = {
  login(body) {
    if (typeof body.secretKey !== "string") throw new BadRequest('expected {"secretKey": "<string>"}');
    return { ok: body.secretKey === SECRET_KEY };
  },

  send(body) {
    if (!Array.isArray(body.messages)) throw new BadRequest('expected {"messages": [...]}');
    const now = Date.now();
    // results[i] answers messages[i]: same length, same order
    const results = body.messages.map((message, i) => {
      const number = String(message.mobileNumber || "");
      if (number.startsWith("999")) {
        return result("", "REJECTED", "FAIL", { partnerDetail: `no route to ${number}` });
      }
      if (message.sender === "REFUSED") {
        return result("", "BAD_SENDER", "FAIL", { partnerDetail: "sender not registered", reason: "sender" });
      }
      if (number.startsWith("888")) {
        return result("", "BUSY", "FAIL", { partnerDetail: "queue full, not accepted", reason: "retry" });
      }
      const random = Math.random().toString(36).slice(2, 10);
      return result(`node-${now.toString(36)}-${i}-${random}`, "ACCEPTED", "OK", { sendAt: mmpTime(now) });
    });
    return { partnerPacketId: "", results };
  },

  report(body) {
    if (!Array.isArray(body.messages)) throw new BadRequest('expected {"partnerPacketId": "", "messages": [...]}');
    const now = Date.now();
    const results = [];
    for (const id of body.messages) {
      const match = /^node-([0-9a-z]+)-\d+-[0-9a-z]+$/.exec(String(id));
      if (!match) continue; // never issued here: left out, it stays WAITING
      const acceptedAt = parseInt(match[1], 36);
      if (now < acceptedAt + DELIVERY_DELAY_MS) {
        results.push(result(id, "ENROUTE", "WAITING"));
      } else {
        results.push(result(id, "DELIVRD", "DELIVERED", { sendAt: mmpTime(acceptedAt + DELIVERY_DELAY_MS) }));
      }
    }
    return { partnerPacketId: "", results };
  },

  destroy() {
    return {}; // every MTA process logs in and out on its own: nothing to tear down
  },
};

function answer(response, status, doc, headers = {}) {
  const body = JSON.stringify(doc);
  response.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), ...headers });
  response.end(body);
}

function error(response, kind, detail, retryAfter) {
  const doc = { error: { kind, detail } };
  const headers = {};
  if (retryAfter !== undefined) {
    doc.error.retryAfter = retryAfter;
    headers["Retry-After"] = String(Math.ceil(retryAfter));
  }
  answer(response, ERROR_STATUS[kind], doc, headers);
}

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const name = request.url.split("?")[0].replace(/^\//, "");
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
    } catch {
      return error(response, "permanent", `POST /${name}: the body is not JSON`);
    }
    if (request.method !== "POST") return error(response, "permanent", `${request.method} /${name}: only POST`);
    if (name === "_control/outage") {
      outage = body.kind in ERROR_STATUS ? body.kind : null;
      return answer(response, 200, { outage });
    }
    const endpoint = endpoints[name];
    if (!endpoint) return error(response, "permanent", `POST /${name}: no such endpoint`);
    if (TOKEN && request.headers.authorization !== `Bearer ${TOKEN}`) {
      return error(response, "auth", "missing or wrong 'Authorization: Bearer' token");
    }
    if (outage) return error(response, outage, `injected ${outage} error`, outage === "throttled" ? 1 : undefined);
    try {
      answer(response, 200, endpoint(body && typeof body === "object" ? body : {}));
    } catch (exc) {
      if (exc instanceof BadRequest) return error(response, "permanent", `POST /${name}: ${exc.message}`);
      error(response, "transient", `POST /${name}: ${exc.message}`);
    }
  });
});

server.listen(PORT, HOST, () => {
  const { address, port } = server.address();
  console.log(`bridge adapter listening on http://${address}:${port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref(); // a client holding a connection open
  });
}
