// Shared helpers of the k6 scripts: where the server is, who we are, and the calls every
// script makes. Every request is tagged with a `name` so that results group by endpoint.
import http from 'k6/http';
import { check, sleep } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
export const WS_URL = BASE_URL.replace(/^http/, 'ws');
export const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || '';

// A run id, so that repeated runs against one server use fresh SKUs.
export const RUN = `${Date.now().toString(36)}`;

export function adminHeaders() {
  if (!ADMIN_TOKEN) {
    throw new Error('set ADMIN_TOKEN to the server admin token (see data/admin_token)');
  }
  return { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' };
}

export function cartHeaders(token) {
  return { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
}

// Calls `send` again while the server answers 503 (overloaded), after its Retry-After, as a
// well-behaved client does; at most `attempts` times.
export function retrying(send, attempts = 5) {
  let response = send();
  for (let n = 1; n < attempts && response.status === 503; n += 1) {
    sleep(parseFloat(response.headers['Retry-After'] || '1'));
    response = send();
  }
  return response;
}

export function json(response) {
  try {
    return response.json();
  } catch (_) {
    return null;
  }
}

// PUT a SKU as admin; fails the check unless it was created or updated.
export function putSku(sku, onHand, priceMinor = 1299) {
  const response = http.put(
    `${BASE_URL}/v1/skus/${sku}`,
    JSON.stringify({ name: `Item ${sku}`, price_minor: priceMinor, currency: 'EUR', on_hand: onHand }),
    { headers: adminHeaders(), tags: { name: 'PUT /v1/skus/{sku}' } },
  );
  check(response, { 'sku created': (r) => r.status === 201 || r.status === 200 });
  return response;
}

// A SKU as the public sees it (catalog.public_stock: by default `available`, no on_hand).
export function getSku(sku) {
  return http.get(`${BASE_URL}/v1/skus/${sku}`, { tags: { name: 'GET /v1/skus/{sku}' } });
}

// A SKU with every counter, as staff read it.
export function getSkuAsStaff(sku) {
  return http.get(`${BASE_URL}/v1/skus/${sku}`, { headers: adminHeaders(), tags: { name: 'GET /v1/skus/{sku} (staff)' } });
}

// Creates a credential with the `payments` role (as the payment service would hold) and
// returns its token: shoppers' cart tokens may not pay. Call it from setup().
export function paymentsCredential() {
  const response = http.post(`${BASE_URL}/v1/credentials`, JSON.stringify({ name: `k6-psp-${RUN}`, roles: ['payments'] }), {
    headers: adminHeaders(),
    tags: { name: 'POST /v1/credentials' },
  });
  check(response, { 'payments credential created': (r) => r.status === 201 });
  return (json(response) || {}).token;
}

// A single-use WebSocket ticket to track one order, for a cart's token (keeps the token
// itself out of the URL).
export function wsTicket(cart, orderId) {
  const response = http.post(`${BASE_URL}/v1/ws/tickets`, JSON.stringify({ order_id: orderId }), {
    headers: cartHeaders(cart.cart_token),
    tags: { name: 'POST /v1/ws/tickets' },
  });
  check(response, { 'ticket issued': (r) => r.status === 201 });
  return (json(response) || {}).ticket;
}

// A new cart: { cart_id, cart_token } or null.
export function createCart() {
  const response = http.post(`${BASE_URL}/v1/carts`, '{}', {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'POST /v1/carts' },
  });
  const ok = check(response, { 'cart created': (r) => r.status === 201 && !!json(r) && !!json(r).cart_token });
  return ok ? json(response) : null;
}

export function setLine(cart, sku, qty, expected = [200]) {
  return http.put(`${BASE_URL}/v1/carts/${cart.cart_id}/items/${sku}`, JSON.stringify({ qty }), {
    headers: cartHeaders(cart.cart_token),
    tags: { name: 'PUT /v1/carts/{id}/items/{sku}' },
    responseCallback: http.expectedStatuses(...expected),
  });
}

export function checkout(cart, expected = [201]) {
  return http.post(`${BASE_URL}/v1/carts/${cart.cart_id}/checkout`, '{}', {
    headers: cartHeaders(cart.cart_token),
    tags: { name: 'POST /v1/carts/{id}/checkout' },
    responseCallback: http.expectedStatuses(...expected),
  });
}

// Pays an order with the payment service's credential (see paymentsCredential).
export function pay(paymentsToken, orderId) {
  return http.post(`${BASE_URL}/v1/orders/${orderId}/pay`, JSON.stringify({ payment_ref: `k6-${orderId}` }), {
    headers: cartHeaders(paymentsToken),
    tags: { name: 'POST /v1/orders/{id}/pay' },
  });
}

export function setStatus(orderId, status) {
  return http.post(`${BASE_URL}/v1/orders/${orderId}/status`, JSON.stringify({ status }), {
    headers: adminHeaders(),
    tags: { name: 'POST /v1/orders/{id}/status' },
  });
}
