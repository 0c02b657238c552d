// The storefront page (GET /): products with live availability, a cart whose lines hold
// stock (with the hold's countdown), checkout, and on to the order's tracking page.
// The cart token stays in this browser (localStorage), never anywhere else.
"use strict";

(() => {
  const { api, describeError, uuid, money, countdown, el, stockFeed, stockText, soldOut } = stockroom;
  const CART_KEY = "stockroom.cart";
  const ORDERS_KEY = "stockroom.orders";
  const FEED_MAX = 100;
  const REASONS = {
    hold_lapsed: "its hold lapsed: set the units again to hold them",
    currency_changed: "its price is now in another currency: remove it",
    total_too_large: "the order's total would be too large",
    not_ordered: "fine, but nothing was ordered because of another line",
  };

  const products = new Map(); // sku -> {body, card}
  let cart = null; // the cart body, while this browser has an open cart
  let failures = new Map(); // sku -> reason, from the last refused checkout
  let holdTimer = null;
  let refreshing = false;

  const $ = (id) => document.getElementById(id);

  function stored(key) {
    try {
      return JSON.parse(localStorage.getItem(key));
    } catch (_) {
      return null;
    }
  }

  function cartMessage(text, kind) {
    const node = $("cart-message");
    node.textContent = text || "";
    node.className = "message" + (kind ? " " + kind : "");
  }

  function productMessage(sku, text, kind) {
    const product = products.get(sku);
    if (!product) return;
    const node = product.card.querySelector(".message");
    node.textContent = text || "";
    node.className = "message" + (kind ? " " + kind : "");
  }

  function nameOf(sku) {
    const product = products.get(sku);
    return product ? product.body.name : sku;
  }

  // ---- products and their live stock ----

  async function loadProducts() {
    const items = [];
    let after = null;
    while (items.length < FEED_MAX) {
      const query = "/v1/skus?limit=" + FEED_MAX + (after ? "&after=" + encodeURIComponent(after) : "");
      let answer;
      try {
        answer = await api("GET", query);
      } catch (_) {
        $("products-message").textContent = "The shop cannot be reached. Reload the page to try again.";
        return;
      }
      if (answer.status !== 200) {
        $("products-message").textContent = describeError(answer);
        return;
      }
      items.push(...answer.body.items);
      after = answer.body.next;
      if (!after) break;
    }
    const shown = items.slice(0, FEED_MAX);
    $("products-message").textContent = shown.length === 0 ? "No products yet: add some in the back office." : "";
    const list = $("product-list");
    list.replaceChildren(...shown.map(productCard));
    stockFeed(
      shown.map((item) => item.sku),
      (message) => showStock(message.sku, message),
      (text, live) => {
        const status = $("feed-status");
        status.textContent = text;
        status.className = "feed " + (live ? "live" : "down");
      }
    );
  }

  function productCard(body, index) {
    const id = "qty-" + index;
    const stock = el("p", { class: "stock", "aria-live": "polite", dataset: { role: "stock" } });
    const qty = el("input", { id, type: "number", min: "1", max: "1000", value: "1", inputmode: "numeric" });
    const add = el("button", { type: "button", class: "add", text: "Add to cart" });
    const buy = el("button", { type: "button", class: "buy secondary", text: "Buy now" });
    add.addEventListener("click", () => addToCart(body.sku, Number(qty.value), false));
    buy.addEventListener("click", () => addToCart(body.sku, Number(qty.value), true));
    const card = el(
      "li",
      { class: "product", dataset: { sku: body.sku } },
      el("h3", { text: body.name }),
      el("p", { class: "price", text: money(body.price_minor, body.currency) }),
      stock,
      body.available_from ? el("p", { text: "Preorder: available from " + new Date(body.available_from).toLocaleDateString() }) : null,
      el("div", { class: "actions" }, el("label", { for: id }, "Units", qty), add, buy),
      el("p", { class: "message", role: "status" })
    );
    products.set(body.sku, { body, card });
    showStock(body.sku, body);
    return card;
  }

  function showStock(sku, figures) {
    const product = products.get(sku);
    if (!product) return;
    const node = product.card.querySelector('[data-role="stock"]');
    node.textContent = stockText(figures);
    node.classList.toggle("out", soldOut(figures));
    if (typeof figures.available === "number") node.dataset.available = String(Math.max(0, figures.available));
  }

  // ---- the cart ----

  function forgetCart() {
    cart = null;
    failures = new Map();
    localStorage.removeItem(CART_KEY);
    renderCart();
  }

  let creating = null;
  function ensureCart() {
    const saved = stored(CART_KEY);
    if (cart && saved) return Promise.resolve(saved);
    if (!creating) creating = createCart().finally(() => (creating = null));
    return creating;
  }

  async function createCart() {
    // Unguessable, so a retry of this very request replays the same cart.
    const answer = await api("POST", "/v1/carts", { body: {}, key: uuid() });
    if (answer.status !== 201) throw new Error(describeError(answer));
    const created = { id: answer.body.cart_id, token: answer.body.cart_token };
    localStorage.setItem(CART_KEY, JSON.stringify(created));
    cart = { cart_id: created.id, status: "open", lines: [], total_minor: 0, currency: null, expires_at: answer.body.expires_at };
    return created;
  }

  function takeCart(body) {
    cart = body;
    failures = new Map((body.checkout_failures || []).map((line) => [line.sku, line.reason]));
    renderCart();
  }

  async function loadCart() {
    const saved = stored(CART_KEY);
    if (!saved) return renderCart();
    let answer;
    try {
      answer = await api("GET", "/v1/carts/" + saved.id, { token: saved.token });
    } catch (_) {
      return cartMessage("The shop cannot be reached.", "bad");
    }
    if (answer.status === 200 && answer.body.status === "open") return takeCart(answer.body);
    if (answer.status === 200 && answer.body.order_id) {
      // Checked out, maybe by a request whose answer was lost: go on to its order.
      rememberOrder(answer.body.order_id, saved.token);
    }
    forgetCart();
  }

  /** Sets the line for `sku` to `qty` units (0 removes it). Answers null when it held, else
   *  why not (also shown on the product). */
  async function setLine(sku, qty, retried) {
    let saved;
    try {
      saved = await ensureCart();
    } catch (error) {
      cartMessage(error.message, "bad");
      return error.message;
    }
    const path = "/v1/carts/" + saved.id + "/items/" + encodeURIComponent(sku);
    let answer;
    try {
      answer =
        qty === 0
          ? await api("DELETE", path, { token: saved.token })
          : await api("PUT", path, { token: saved.token, body: { qty } });
    } catch (_) {
      cartMessage("The shop cannot be reached.", "bad");
      return "the shop cannot be reached";
    }
    if (answer.status === 200) {
      takeCart(answer.body);
      return null;
    }
    const code = answer.body && answer.body.error && answer.body.error.code;
    const gone = answer.status === 404 || answer.status === 401 || code === "cart_closed";
    if (gone && qty > 0 && !retried) {
      // The cart expired or was checked out elsewhere: start a new one.
      forgetCart();
      return setLine(sku, qty, true);
    }
    if (gone) {
      forgetCart();
      return "the cart is closed";
    }
    let why;
    if (code === "insufficient_stock") {
      const left = answer.body.error.available;
      why = typeof left === "number" ? `only ${Math.max(0, left)} left` : "not enough left";
    } else {
      why = describeError(answer);
    }
    productMessage(sku, why.charAt(0).toUpperCase() + why.slice(1) + ".", "bad");
    return why;
  }

  async function addToCart(sku, qty, thenCheckout) {
    if (!Number.isInteger(qty) || qty < 1) {
      productMessage(sku, "Choose 1 or more units.", "bad");
      return;
    }
    productMessage(sku, "");
    const line = cart && cart.lines.find((each) => each.sku === sku);
    const refused = await setLine(sku, (line ? line.qty : 0) + qty, false);
    if (refused === null) {
      productMessage(sku, "In your cart.", "good");
      if (thenCheckout) await checkout();
    } else if (thenCheckout) {
      cartMessage(`Checkout refused: ${nameOf(sku)}: ${refused}.`, "bad");
    }
  }

  function renderCart() {
    const lines = cart ? cart.lines : [];
    $("cart-empty").hidden = lines.length > 0;
    $("checkout").hidden = lines.length === 0;
    $("cart-total").textContent = lines.length ? "Total " + money(cart.total_minor, cart.currency) : "";
    $("cart-lines").replaceChildren(...lines.map(cartLine));
    clearInterval(holdTimer);
    holdTimer = null;
    if (lines.length) {
      tickHold();
      holdTimer = setInterval(tickHold, 1000);
    } else {
      $("cart-hold").textContent = "";
    }
  }

  function cartLine(line, index) {
    const id = "line-" + index;
    const qty = el("input", { id, type: "number", min: "0", max: "1000", value: String(line.qty), inputmode: "numeric" });
    qty.addEventListener("change", () => {
      // Emptied while typing: not a wish for zero units.
      if (qty.value.trim() === "") return;
      const wanted = Number(qty.value);
      if (!Number.isInteger(wanted) || wanted < 0) {
        cartMessage("Choose 0 or more units.", "bad");
        return;
      }
      cartMessage("");
      setLine(line.sku, wanted, true).then((refused) => {
        if (refused !== null) {
          cartMessage(`${line.name || line.sku}: ${refused}.`, "bad");
          renderCart();
        }
      });
    });
    const remove = el("button", { type: "button", class: "secondary remove", "aria-label": "Remove " + (line.name || line.sku), text: "Remove" });
    remove.addEventListener("click", () => setLine(line.sku, 0, true));
    const reason = failures.get(line.sku);
    return el(
      "li",
      { class: "cart-line" + (reason ? " failed" : ""), dataset: { sku: line.sku } },
      el("p", { class: "name", text: line.name || line.sku }),
      el("p", { text: `${money(line.price_minor, cart.currency)} each · ${money(line.line_total_minor, cart.currency)}` }),
      el("div", { class: "actions" }, el("label", { for: id }, "Units", qty), remove),
      reason ? el("p", { class: "message bad reason", text: `Not ordered: ${REASONS[reason] || reason}.` }) : null
    );
  }

  function tickHold() {
    if (!cart) return;
    const left = Date.parse(cart.expires_at) - Date.now();
    const hold = $("cart-hold");
    if (left > 0) {
      hold.textContent = "Held for you for " + countdown(left);
      return;
    }
    hold.textContent = "Your hold lapsed.";
    if (!refreshing) {
      refreshing = true;
      loadCart().finally(() => {
        refreshing = false;
      });
    }
  }

  // ---- checkout ----

  function rememberOrder(orderId, token) {
    const orders = stored(ORDERS_KEY) || {};
    orders[orderId] = token;
    localStorage.setItem(ORDERS_KEY, JSON.stringify(orders));
  }

  async function checkout() {
    const saved = stored(CART_KEY);
    if (!saved || !cart) return;
    const button = $("checkout");
    button.disabled = true;
    cartMessage("Checking out…");
    // One key per attempt: a retry after a lost answer finds the same order.
    const key = saved.checkoutKey || uuid();
    localStorage.setItem(CART_KEY, JSON.stringify({ ...saved, checkoutKey: key }));
    let answer;
    try {
      answer = await api("POST", "/v1/carts/" + saved.id + "/checkout", { token: saved.token, body: {}, key });
    } catch (_) {
      button.disabled = false;
      cartMessage("The shop cannot be reached: try again.", "bad");
      return;
    }
    button.disabled = false;
    if (answer.status === 201 || answer.status === 200) {
      rememberOrder(answer.body.order_id, saved.token);
      localStorage.removeItem(CART_KEY);
      location.assign("/orders/" + answer.body.order_id);
      return;
    }
    // A new attempt gets a new key.
    localStorage.setItem(CART_KEY, JSON.stringify({ ...saved, checkoutKey: undefined }));
    const error = answer.body && answer.body.error;
    if (answer.status === 409 && error && Array.isArray(error.lines)) {
      const named = error.lines
        .filter((line) => line.reason !== "not_ordered")
        .map((line) => `${nameOf(line.sku)}: ${REASONS[line.reason] || line.reason}`);
      cartMessage("Checkout refused. " + named.join("; ") + ".", "bad");
      await loadCart();
      return;
    }
    cartMessage("Checkout refused: " + describeError(answer), "bad");
    if (error && error.code === "cart_closed") forgetCart();
  }

  $("checkout").addEventListener("click", checkout);
  loadProducts();
  loadCart();
})();
