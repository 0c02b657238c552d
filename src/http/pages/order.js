// The order page (GET /orders/{id}): the order's snapshot, then each status as it happens,
// over /v1/ws/orders/{id}. A dropped connection is resumed with `after=` the last status
// seen, so nothing is missed and nothing shown twice. The cart token that opens the order
// stays in this browser.
"use strict";

(() => {
  const { api, describeError, uuid, money, el, socketUrl } = stockroom;
  const ORDERS_KEY = "stockroom.orders";
  const STEPS = ["placed", "paid", "packed", "shipped", "delivered"];
  const demo = document.body.dataset.demoPayments === "true";
  const orderId = decodeURIComponent(location.pathname.split("/").pop());
  const $ = (id) => document.getElementById(id);

  let order = null;
  let lastSeq = 0;
  const seen = new Set();
  let delay = 500;
  let socket = null;

  function tokens() {
    try {
      return JSON.parse(localStorage.getItem(ORDERS_KEY)) || {};
    } catch (_) {
      return {};
    }
  }

  function token() {
    return tokens()[orderId];
  }

  function connection(text, live) {
    const node = $("connection");
    node.textContent = text;
    node.className = "feed " + (live ? "live" : "down");
  }

  function message(text, kind) {
    const node = $("order-message");
    node.textContent = text || "";
    node.className = "message" + (kind ? " " + kind : "");
  }

  function render() {
    if (!order) return;
    $("status").textContent = order.status.replace("_", " ");
    document.body.dataset.status = order.status;
    const reached = STEPS.indexOf(order.status === "partially_shipped" ? "packed" : order.status);
    $("progress").replaceChildren(
      ...STEPS.map((step, index) =>
        el("li", {
          class: index < reached ? "done" : index === reached ? "current" : "",
          "aria-current": index === reached ? "step" : undefined,
          text: step,
        })
      )
    );
    $("lines").replaceChildren(
      ...order.lines.map((line) =>
        el(
          "tr",
          {},
          el("td", { text: line.name || line.sku }),
          el("td", { class: "num", text: String(line.qty) }),
          el("td", { class: "num", text: String(line.shipped) }),
          el("td", { class: "num", text: money(line.line_total_minor, order.currency) })
        )
      )
    );
    $("total").textContent = "Total " + money(order.total_minor, order.currency);
    $("history").replaceChildren(
      ...order.history.map((entry) =>
        el("li", { dataset: { seq: String(entry.seq) }, text: `${entry.status.replace("_", " ")} · ${new Date(entry.at).toLocaleString()}` })
      )
    );
    const placed = order.status === "placed";
    $("pay").hidden = !(placed && demo);
    $("cancel").hidden = !placed;
    if (placed && !demo) {
      $("payment-text").textContent =
        "Waiting for payment. In a real shop the shop's payment service confirms the order now; this shop has no demo payments switched on.";
    } else if (placed) {
      $("payment-text").textContent = "Waiting for payment. This is a demo shop: no money moves.";
    } else {
      $("payment-text").textContent = order.payment_ref ? "Paid." : "";
    }
  }

  function apply(update) {
    if (update.type === "snapshot") {
      order = update.order;
      lastSeq = update.seq;
      order.history.forEach((entry) => seen.add(entry.seq));
    } else if (update.type === "status" && order && !seen.has(update.seq)) {
      seen.add(update.seq);
      lastSeq = Math.max(lastSeq, update.seq);
      order.status = update.status;
      order.history.push({ seq: update.seq, status: update.status, at: update.at });
      // A status says what the order became; its lines (what shipped, what came back) are
      // read again.
      refreshLines();
    }
    render();
  }

  async function refreshLines() {
    const answer = await api("GET", "/v1/orders/" + encodeURIComponent(orderId), { token: token() }).catch(() => null);
    if (!answer || answer.status !== 200 || !order) return;
    order.lines = answer.body.lines;
    order.payment_ref = answer.body.payment_ref;
    render();
  }

  async function connect() {
    const credential = token();
    if (!credential) {
      connection("No access", false);
      $("token-form").hidden = false;
      return;
    }
    let ticket;
    try {
      ticket = await api("POST", "/v1/ws/tickets", { token: credential, body: { order_id: orderId } });
    } catch (_) {
      return retry();
    }
    if (ticket.status === 401 || ticket.status === 404) {
      connection("No access", false);
      message("This order cannot be opened with the token this browser holds.", "bad");
      $("token-form").hidden = false;
      return;
    }
    if (ticket.status !== 201) return retry();
    const resuming = order !== null;
    const path = `/v1/ws/orders/${encodeURIComponent(orderId)}?ticket=${encodeURIComponent(ticket.body.ticket)}` + (resuming ? `&after=${lastSeq}` : "");
    socket = new WebSocket(socketUrl(path));
    socket.onopen = () => {
      delay = 500;
      connection(resuming ? `Live (resumed after update ${lastSeq})` : "Live", true);
    };
    socket.onmessage = (event) => {
      try {
        apply(JSON.parse(event.data));
      } catch (_) {
        // Not a message of this protocol: ignore it.
      }
    };
    socket.onclose = () => retry();
  }

  function retry() {
    connection("Connection lost: reconnecting…", false);
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 8000);
  }

  async function act(path, button) {
    button.disabled = true;
    message("");
    let answer;
    try {
      answer = await api("POST", path, { token: token(), body: {}, key: uuid() });
    } catch (_) {
      answer = null;
    }
    button.disabled = false;
    if (!answer) return message("The shop cannot be reached: try again.", "bad");
    if (answer.status !== 200) return message(describeError(answer), "bad");
    // The live connection brings the new status.
  }

  $("order-id").textContent = orderId;
  $("pay").addEventListener("click", () => act(`/v1/demo/orders/${encodeURIComponent(orderId)}/pay`, $("pay")));
  $("cancel").addEventListener("click", () => act(`/v1/orders/${encodeURIComponent(orderId)}/cancel`, $("cancel")));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const all = tokens();
    all[orderId] = $("token").value.trim();
    localStorage.setItem(ORDERS_KEY, JSON.stringify(all));
    $("token-form").hidden = true;
    message("");
    connect();
  });
  window.addEventListener("beforeunload", () => {
    if (socket) socket.onclose = null;
  });
  connect();
})();
