// The back office (GET /admin): stock per location with restock and count, a SKU's
// movements, orders to ship with fulfilment and status moves, live counters from /metrics,
// and an API explorer. The credential is typed in and kept in this tab only
// (sessionStorage); every call sends it as a bearer token.
"use strict";

(() => {
  const { api, describeError, uuid, money, el, stockFeed } = stockroom;
  const KEY = "stockroom.credential";
  const FEED_MAX = 100;
  const $ = (id) => document.getElementById(id);

  let credential = sessionStorage.getItem(KEY);
  let feed = null;
  let metricsTimer = null;
  const skus = new Map(); // sku -> {body, rows: Map(location -> tr)}

  const call = (method, path, body) => api(method, path, { token: credential, body, key: method === "GET" ? undefined : uuid() });

  function say(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.className = "message" + (kind ? " " + kind : "");
  }

  // ---- signing in ----

  async function signIn(typed) {
    let answer;
    try {
      answer = await api("GET", "/v1/locations", { token: typed });
    } catch (_) {
      say("sign-in-message", "The server cannot be reached.", "bad");
      return false;
    }
    if (answer.status === 401) {
      say("sign-in-message", "That credential is not accepted.", "bad");
      return false;
    }
    credential = typed;
    sessionStorage.setItem(KEY, typed);
    $("sign-in").hidden = true;
    $("office").hidden = false;
    $("who").textContent = answer.status === 200 ? "Signed in." : "Signed in (this credential may not read locations).";
    await Promise.all([loadStock(), loadOrders()]);
    pollMetrics();
    return true;
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    credential = null;
    if (feed) feed.close();
    clearTimeout(metricsTimer);
    skus.clear();
    $("office").hidden = true;
    $("sign-in").hidden = false;
    $("credential").value = "";
    $("credential").focus();
  }

  // ---- stock ----

  async function loadStock() {
    const items = [];
    let after = null;
    do {
      const answer = await call("GET", "/v1/skus?limit=1000" + (after ? "&after=" + encodeURIComponent(after) : ""));
      if (answer.status !== 200) {
        say("stock-message", describeError(answer), "bad");
        return;
      }
      items.push(...answer.body.items);
      after = answer.body.next;
    } while (after && items.length < 5000);
    skus.clear();
    $("stock-rows").replaceChildren();
    items.forEach(showSku);
    say("stock-message", items.length ? "" : "No SKUs yet: add one below.");
    $("movements-sku").replaceChildren(...items.map((item) => el("option", { value: item.sku, text: `${item.name} (${item.sku})` })));
    if (feed) feed.close();
    // Live: the public feed says when a SKU changes; its staff counters are read again then.
    feed = stockFeed(
      items.slice(0, FEED_MAX).map((item) => item.sku),
      (message) => refreshSku(message.sku),
      (text, live) => {
        $("feed-status").textContent = text;
        $("feed-status").className = "feed " + (live ? "live" : "down");
      }
    );
  }

  const pending = new Map();
  function refreshSku(sku) {
    clearTimeout(pending.get(sku));
    pending.set(
      sku,
      setTimeout(async () => {
        const answer = await call("GET", "/v1/skus/" + encodeURIComponent(sku));
        if (answer.status === 200) showSku(answer.body);
      }, 100)
    );
  }

  const FIELDS = ["on_hand", "reserved", "committed", "available"];
  const LABELS = ["On hand", "Reserved", "Committed", "Available"];

  /** Shows a SKU's counters per location: new rows for new locations, figures updated in
   *  place (a form being typed into keeps its text and focus). */
  function showSku(body) {
    let entry = skus.get(body.sku);
    if (!entry) {
      entry = { body, rows: new Map() };
      skus.set(body.sku, entry);
    }
    entry.body = body;
    const locations = body.locations && body.locations.length ? body.locations : [{ location: "default", on_hand: 0, reserved: 0, committed: 0, available: 0 }];
    for (const at of locations) {
      let row = entry.rows.get(at.location);
      if (!row) {
        row = stockRow(body, at.location);
        entry.rows.set(at.location, row);
        const rows = [...entry.rows.values()];
        const before = rows.length > 1 ? rows[rows.length - 2].nextSibling : null;
        $("stock-rows").insertBefore(row, before);
      }
      for (const field of FIELDS) row.querySelector(`[data-field="${field}"]`).textContent = at[field] === undefined || at[field] === null ? "–" : String(at[field]);
    }
  }

  function stockRow(body, location) {
    const tag = `${body.sku}-${location}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const restockQty = el("input", { id: "restock-" + tag, type: "number", min: "1", value: "10", inputmode: "numeric" });
    const restock = el("button", { type: "submit", text: "Restock" });
    const restockForm = el("form", { class: "actions" }, el("label", { for: "restock-" + tag }, "Units", restockQty), restock);
    restockForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      await stockWrite(body.sku, location, "restock", { qty: Number(restockQty.value), reason: "back office" }, restock);
    });
    const countQty = el("input", { id: "count-" + tag, type: "number", min: "0", inputmode: "numeric" });
    const count = el("button", { type: "submit", class: "secondary", text: "Count" });
    const countForm = el("form", { class: "actions" }, el("label", { for: "count-" + tag }, "On the shelf", countQty), count);
    countForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (countQty.value === "") return;
      await stockWrite(body.sku, location, "count", { on_hand: Number(countQty.value), reason: "stocktake" }, count);
    });
    return el(
      "tr",
      { dataset: { sku: body.sku, location } },
      el("th", { scope: "row", "data-label": "SKU", text: `${body.name} (${body.sku})` }),
      el("td", { "data-label": "Location", text: location }),
      ...FIELDS.map((field, index) => el("td", { class: "num", "data-label": LABELS[index], dataset: { field } })),
      el("td", { "data-label": "Restock" }, restockForm),
      el("td", { "data-label": "Count" }, countForm)
    );
  }

  async function stockWrite(sku, location, action, body, button) {
    button.disabled = true;
    const answer = await call("POST", `/v1/skus/${encodeURIComponent(sku)}/locations/${encodeURIComponent(location)}/${action}`, body).catch(() => null);
    button.disabled = false;
    if (!answer) return say("stock-message", "The server cannot be reached.", "bad");
    if (answer.status !== 200) return say("stock-message", `${sku} at ${location}: ${describeError(answer)}`, "bad");
    showSku(answer.body);
    say("stock-message", `${sku} at ${location}: ${action === "restock" ? "restocked" : "counted"}.`, "good");
  }

  async function saveSku(event) {
    event.preventDefault();
    const sku = $("new-sku-id").value.trim();
    const body = { name: $("new-sku-name").value.trim(), price_minor: Number($("new-sku-price").value), currency: $("new-sku-currency").value.trim() };
    const answer = await call("PUT", "/v1/skus/" + encodeURIComponent(sku), body).catch(() => null);
    if (!answer) return say("stock-message", "The server cannot be reached.", "bad");
    if (answer.status !== 200 && answer.status !== 201) return say("stock-message", `${sku}: ${describeError(answer)}`, "bad");
    say("stock-message", `${sku}: saved.`, "good");
    await loadStock();
  }

  // ---- movements ----

  async function loadMovements(event) {
    event.preventDefault();
    const sku = $("movements-sku").value;
    if (!sku) return;
    const answer = await call("GET", `/v1/skus/${encodeURIComponent(sku)}/movements?order=desc&limit=50`).catch(() => null);
    if (!answer || answer.status !== 200) return say("movements-message", answer ? describeError(answer) : "The server cannot be reached.", "bad");
    say("movements-message", answer.body.items.length ? `The latest ${answer.body.items.length} of ${sku}, newest first.` : `${sku} has no movements yet.`);
    const signed = (value) => (value > 0 ? "+" + value : String(value));
    $("movement-rows").replaceChildren(
      ...answer.body.items.map((movement) =>
        el(
          "tr",
          {},
          el("td", { class: "num", "data-label": "#", text: String(movement.seq) }),
          el("td", { "data-label": "When", text: new Date(movement.at).toLocaleString() }),
          el("td", { "data-label": "Location", text: movement.location }),
          el("td", { "data-label": "Kind", dataset: { kind: movement.kind }, text: movement.kind }),
          el("td", { class: "num", "data-label": "On hand", text: signed(movement.on_hand_delta) }),
          el("td", { class: "num", "data-label": "Reserved", text: signed(movement.reserved_delta) }),
          el("td", { class: "num", "data-label": "Committed", text: signed(movement.committed_delta) }),
          el("td", { "data-label": "Reason", text: movement.reason || "" }),
          el("td", { "data-label": "By", text: movement.by })
        )
      )
    );
  }

  // ---- orders ----

  async function loadOrders(event) {
    if (event) event.preventDefault();
    const chosen = $("orders-status").value;
    const statuses = chosen === "to_ship" ? ["paid", "packed", "partially_shipped"] : [chosen];
    const orders = [];
    for (const status of statuses) {
      const answer = await call("GET", "/v1/orders?limit=100&status=" + status).catch(() => null);
      if (!answer || answer.status !== 200) {
        say("orders-message", answer ? describeError(answer) : "The server cannot be reached.", answer && answer.status === 403 ? "" : "bad");
        $("order-list").replaceChildren();
        return;
      }
      orders.push(...answer.body.items);
    }
    orders.sort((a, b) => a.created_at.localeCompare(b.created_at));
    say("orders-message", orders.length ? `${orders.length} order${orders.length === 1 ? "" : "s"}.` : "None.");
    $("order-list").replaceChildren(...orders.map(orderItem));
  }

  function orderItem(order) {
    const buttons = [];
    const move = (text, path, body, secondary) => {
      const button = el("button", { type: "button", class: secondary ? "secondary" : undefined, text });
      button.addEventListener("click", () => orderAction(order, path, body, button));
      buttons.push(button);
    };
    const id = encodeURIComponent(order.order_id);
    const shippable = ["paid", "packed", "partially_shipped"].includes(order.status);
    if (order.status === "paid") move("Mark packed", `/v1/orders/${id}/status`, { status: "packed" });
    if (shippable) {
      for (const [location, lines] of restByLocation(order)) {
        move(`Ship from ${location}`, `/v1/orders/${id}/fulfilments`, { location, lines });
      }
      move("Mark shipped (ship the rest)", `/v1/orders/${id}/status`, { status: "shipped" }, true);
    }
    if (order.status === "shipped") move("Mark delivered", `/v1/orders/${id}/status`, { status: "delivered" });
    if (["placed", "paid", "packed", "partially_shipped"].includes(order.status)) move("Cancel", `/v1/orders/${id}/cancel`, {}, true);
    const lines = order.lines.map((line) => {
      const parts = (line.parts || []).map((part) => `${part.qty} at ${part.location}`).join(", ");
      return el("li", { text: `${line.qty} × ${line.name || line.sku} (shipped ${line.shipped})${parts ? " · to ship: " + parts : ""}${line.backordered ? " · backordered" : ""}` });
    });
    return el(
      "li",
      { class: "cart-line", dataset: { order: order.order_id, status: order.status } },
      el("p", { class: "name", text: `Order ${order.order_id}` }),
      el("p", { text: `${order.status.replace("_", " ")} · ${new Date(order.created_at).toLocaleString()} · ${money(order.total_minor, order.currency)}` }),
      el("ul", {}, ...lines),
      el("div", { class: "actions" }, ...buttons)
    );
  }

  /** The units of each line still to ship, by the location they are committed at. */
  function restByLocation(order) {
    const byLocation = new Map();
    for (const line of order.lines) {
      for (const part of line.parts || []) {
        if (part.qty === 0) continue;
        if (!byLocation.has(part.location)) byLocation.set(part.location, []);
        byLocation.get(part.location).push({ sku: line.sku, qty: part.qty });
      }
    }
    return byLocation;
  }

  async function orderAction(order, path, body, button) {
    button.disabled = true;
    const answer = await call("POST", path, body).catch(() => null);
    button.disabled = false;
    if (!answer) return say("orders-message", "The server cannot be reached.", "bad");
    if (answer.status !== 200 && answer.status !== 201) return say("orders-message", `Order ${order.order_id}: ${describeError(answer)}`, "bad");
    await loadOrders();
    say("orders-message", `Order ${order.order_id}: ${answer.body.order_status || answer.body.status}.`, "good");
  }

  // ---- live counters ----

  function metricValue(text, name, labels) {
    let sum = null;
    for (const line of text.split("\n")) {
      if (!line.startsWith(name)) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!match || match[1] !== name) continue;
      if (labels && !(match[2] || "").includes(labels)) continue;
      sum = (sum || 0) + Number(match[3]);
    }
    return sum;
  }

  async function pollMetrics() {
    clearTimeout(metricsTimer);
    if (!credential) return;
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      const text = await response.text();
      // A series not recorded yet counts nothing so far.
      const show = (id, value) => ($(id).textContent = String(value === null ? 0 : value));
      show("carts-open", metricValue(text, "stockroom_carts_open"));
      show("holds", metricValue(text, "stockroom_reservations_held"));
      const paid = ["paid", "packed", "partially_shipped"].map((status) => metricValue(text, "stockroom_orders", `status="${status}"`) || 0);
      show("orders-paid", paid.reduce((a, b) => a + b, 0));
    } catch (_) {
      // Shown as it was; the next poll tries again.
    }
    metricsTimer = setTimeout(pollMetrics, 2000);
  }

  // ---- wiring ----

  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("credential").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-sku").addEventListener("submit", saveSku);
  $("movements-form").addEventListener("submit", loadMovements);
  $("orders-form").addEventListener("submit", loadOrders);
  $("orders-status").addEventListener("change", loadOrders);
  $("explorer-load").addEventListener("click", () => stockroomExplorer.open($("explorer"), () => credential));
  if (credential) {
    signIn(credential).then((ok) => {
      if (!ok) signOut();
    });
  }
})();
