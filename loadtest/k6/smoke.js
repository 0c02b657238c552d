// Every endpoint once, with checks on status and body. Fails (non-zero exit) on any failed
// check. Usage: ADMIN_TOKEN=... k6 run loadtest/k6/smoke.js
import http from 'k6/http';
import { check, fail } from 'k6';
import ws from 'k6/ws';
import { ADMIN_TOKEN, BASE_URL, RUN, WS_URL, adminHeaders, cartHeaders, checkout, createCart, getSku, getSkuAsStaff, json, pay,
  paymentsCredential, putSku, setLine, setStatus, wsTicket } from './lib.js';

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: {
    checks: ['rate==1.0'],
  },
};

export function setup() {
  if (!ADMIN_TOKEN) fail('set ADMIN_TOKEN');
  const skus = [`smoke-a-${RUN}`, `smoke-b-${RUN}`];
  for (const sku of skus) putSku(sku, 20);
  return { skus, psp: paymentsCredential() };
}

function expect(response, name, status, body = () => true) {
  return check(response, {
    [`${name}: ${status}`]: (r) => r.status === status,
    [`${name}: body`]: (r) => body(json(r) || {}),
  });
}

export default function (data) {
  const [a, b] = data.skus;
  const admin = { headers: adminHeaders() };

  expect(http.get(`${BASE_URL}/health`), 'GET /health', 200);
  expect(http.get(`${BASE_URL}/ready`), 'GET /ready', 200);
  check(http.get(`${BASE_URL}/metrics`), {
    'GET /metrics: 200 with stockroom metrics': (r) => r.status === 200 && r.body.includes('stockroom_http_requests_total'),
  });

  // Inventory (admin).
  expect(http.put(`${BASE_URL}/v1/skus/${a}`, JSON.stringify({ name: 'Renamed', price_minor: 1499, currency: 'EUR' }), admin),
    'PUT /v1/skus/{sku} update', 200, (s) => s.name === 'Renamed' && s.on_hand === 20);
  expect(getSku(a), 'GET /v1/skus/{sku}', 200, (s) => s.sku === a && s.available === 20 && !('on_hand' in s));
  expect(http.get(`${BASE_URL}/v1/skus/no-such-${RUN}`, { responseCallback: http.expectedStatuses(404) }),
    'GET /v1/skus/{sku} unknown', 404, (e) => e.error && e.error.code === 'not_found');
  expect(http.get(`${BASE_URL}/v1/skus?ids=${a},${b}`), 'GET /v1/skus?ids', 200, (l) => l.items.length === 2);
  expect(http.get(`${BASE_URL}/v1/skus?limit=1`), 'GET /v1/skus?limit', 200, (l) => l.items.length === 1 && 'next' in l);
  expect(http.post(`${BASE_URL}/v1/skus/${a}/restock`, JSON.stringify({ qty: 5 }), admin),
    'POST /v1/skus/{sku}/restock', 200, (s) => s.on_hand === 25);
  expect(http.post(`${BASE_URL}/v1/skus/${a}/adjust`, JSON.stringify({ delta: -1, reason: 'damaged' }), admin),
    'POST /v1/skus/{sku}/adjust', 200, (s) => s.on_hand === 24);

  // Reservations (admin).
  const held = http.post(`${BASE_URL}/v1/skus/${a}/reservations`, JSON.stringify({ qty: 2, ttl_seconds: 60 }), admin);
  expect(held, 'POST /v1/skus/{sku}/reservations', 201, (r) => r.qty === 2 && !!r.reservation_id && !!r.expires_at);
  const id = (json(held) || {}).reservation_id;
  expect(http.get(`${BASE_URL}/v1/reservations/${id}`, admin), 'GET /v1/reservations/{id}', 200, (r) => r.state === 'held');
  expect(http.post(`${BASE_URL}/v1/reservations/${id}/commit`, '{}', admin),
    'POST /v1/reservations/{id}/commit', 200, (r) => r.state === 'committed');
  const other = json(http.post(`${BASE_URL}/v1/skus/${a}/reservations`, JSON.stringify({ qty: 1 }), admin)) || {};
  expect(http.del(`${BASE_URL}/v1/reservations/${other.reservation_id}`, null, admin),
    'DELETE /v1/reservations/{id}', 200, (r) => r.state === 'released');
  expect(getSkuAsStaff(a), 'stock after commit and release', 200, (s) => s.on_hand === 22 && s.reserved === 0);

  // Carts, checkout, orders.
  const cart = createCart();
  if (!cart) fail('no cart');
  const asCart = { headers: cartHeaders(cart.cart_token) };
  expect(setLine(cart, a, 2), 'PUT /v1/carts/{id}/items/{sku}', 200, (c) => c.lines.length === 1);
  expect(setLine(cart, b, 1), 'PUT second line', 200, (c) => c.lines.length === 2);
  expect(http.del(`${BASE_URL}/v1/carts/${cart.cart_id}/items/${b}`, null, asCart),
    'DELETE /v1/carts/{id}/items/{sku}', 200, (c) => c.lines.length === 1);
  expect(http.get(`${BASE_URL}/v1/carts/${cart.cart_id}`, asCart), 'GET /v1/carts/{id}', 200,
    (c) => c.status === 'open' && c.total_minor === 2 * 1499);
  const placed = checkout(cart);
  expect(placed, 'POST /v1/carts/{id}/checkout', 201, (o) => o.status === 'placed' && o.total_minor === 2 * 1499);
  const orderId = (json(placed) || {}).order_id;
  expect(http.get(`${BASE_URL}/v1/orders/${orderId}`, asCart), 'GET /v1/orders/{id}', 200, (o) => o.order_id === orderId);

  // Track it over WebSocket while it is paid and packed.
  const statuses = [];
  ws.connect(`${WS_URL}/v1/ws/orders/${orderId}?ticket=${wsTicket(cart, orderId)}`, null, (socket) => {
    socket.on('message', (text) => {
      const message = JSON.parse(text);
      statuses.push(message.type === 'snapshot' ? message.order.status : message.status);
      if (message.type === 'snapshot') {
        expect(pay(data.psp, orderId), 'POST /v1/orders/{id}/pay', 200, (o) => o.status === 'paid');
        expect(setStatus(orderId, 'packed'), 'POST /v1/orders/{id}/status', 200, (o) => o.status === 'packed');
      }
      if (message.status === 'packed') socket.close();
    });
    socket.setTimeout(() => socket.close(), 5000);
  });
  check(statuses, { 'GET /v1/ws/orders/{id}: snapshot, paid, packed': (s) => s.join() === 'placed,paid,packed' });

  // Live stock.
  let stock = null;
  ws.connect(`${WS_URL}/v1/ws/stock?skus=${a}`, null, (socket) => {
    socket.on('message', (text) => {
      stock = JSON.parse(text);
      socket.close();
    });
    socket.setTimeout(() => socket.close(), 5000);
  });
  check(stock, { 'GET /v1/ws/stock: current availability': (m) => !!m && m.type === 'stock' && m.sku === a && m.available === 20 });

  // A second order, cancelled: its stock returns.
  const second = createCart();
  setLine(second, b, 3);
  const order2 = (json(checkout(second)) || {}).order_id;
  expect(http.post(`${BASE_URL}/v1/orders/${order2}/cancel`, '{}', { headers: cartHeaders(second.cart_token) }),
    'POST /v1/orders/{id}/cancel', 200, (o) => o.status === 'cancelled');
  expect(getSku(b), 'stock back after cancel', 200, (s) => s.available === 20);
}
