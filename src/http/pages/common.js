// What the storefront, the order page and the back office share: API calls, money, the
// live stock feed. Plain JavaScript for current browsers; no build step, nothing fetched
// from elsewhere.
"use strict";

const stockroom = (() => {
  /** Calls the JSON API on this origin. Resolves to {status, body} (body: parsed JSON or
   *  text, null when empty); rejects only when the server cannot be reached. */
  async function api(method, path, { body, token, key } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    if (key) headers["Idempotency-Key"] = key;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch (_) {
        parsed = text;
      }
    }
    return { status: response.status, body: parsed };
  }

  /** The `{"error": {"code", "message"}}` of an answer, as one sentence. */
  function describeError(answer) {
    const error = answer && answer.body && answer.body.error;
    if (!error) return "The server answered " + (answer ? answer.status : "nothing") + ".";
    return error.message || error.code;
  }

  /** A random UUID (v4), also where `crypto.randomUUID` is missing (plain http off localhost). */
  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  const formats = new Map();
  /** Minor units of a currency as the browser's locale writes money: 1299 EUR is €12.99. */
  function money(minor, currency) {
    if (!currency) return String(minor);
    let format = formats.get(currency);
    if (!format) {
      try {
        format = new Intl.NumberFormat(undefined, { style: "currency", currency });
      } catch (_) {
        format = { format: (value) => value.toFixed(2) + " " + currency, resolvedOptions: () => ({ maximumFractionDigits: 2 }) };
      }
      formats.set(currency, format);
    }
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(minor / 10 ** digits);
  }

  /** `mm:ss` (or `h:mm:ss`) of a number of milliseconds, never below zero. */
  function countdown(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = String(total % 60).padStart(2, "0");
    return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
  }

  /** Builds an element: el("p", {class: "x", text: "hi"}, child, ...). */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  /** The WebSocket address of a path on this origin. */
  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  /** Live availability of up to 100 SKUs (`/v1/ws/stock`), reconnecting with backoff.
   *  `onStock(message)` gets each `{"type":"stock","sku",...}`; `onState(text, live)` each
   *  change of the connection. `close()` stops it. */
  function stockFeed(skus, onStock, onState) {
    let socket = null;
    let delay = 500;
    let stopped = false;
    let timer = null;
    function open() {
      if (stopped || skus.length === 0) return;
      socket = new WebSocket(socketUrl("/v1/ws/stock?skus=" + skus.map(encodeURIComponent).join(",")));
      socket.onopen = () => {
        delay = 500;
        onState("Live stock", true);
      };
      socket.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        if (message.type === "stock") onStock(message);
      };
      socket.onclose = () => {
        if (stopped) return;
        onState("Live stock lost: reconnecting…", false);
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
    return {
      close() {
        stopped = true;
        clearTimeout(timer);
        if (socket) socket.close();
      },
    };
  }

  /** The figure a SKU body or a feed message shows the public: units, or a level. */
  function stockText(message) {
    if (typeof message.available === "number") {
      const units = Math.max(0, message.available);
      return units === 0 ? "Sold out" : `${units} available`;
    }
    switch (message.stock_level) {
      case "in_stock":
        return "In stock";
      case "low":
        return "Only a few left";
      case "out":
        return "Sold out";
      default:
        return "";
    }
  }

  /** Whether a SKU body or a feed message says nothing can be taken. */
  function soldOut(message) {
    if (typeof message.available === "number") return message.available <= 0;
    return message.stock_level === "out";
  }

  return { api, describeError, uuid, money, countdown, el, socketUrl, stockFeed, stockText, soldOut };
})();
