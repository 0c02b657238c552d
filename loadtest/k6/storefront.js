// A storefront: shoppers browse, fill carts, some abandon them, some check out, pay and
// follow their order over WebSocket, with think time between steps. The mix: 60% browse,
// 20% fill a cart and leave, 20% buy. Beside them the back office (its own scenario, one
// packer by default): lists paid orders, ships each from where its units are committed,
// marks it delivered, and takes back a unit of some. Thresholds on latency, errors and
// checks fail the run.
// Usage: ADMIN_TOKEN=... k6 run loadtest/k6/storefront.js
//   (VUS, DURATION, CATALOG, PACKERS to size it)
import http from 'k6/http';
import { check, fail, group, sleep } from 'k6';
import ws from 'k6/ws';
import { ADMIN_TOKEN, BASE_URL, RUN, WS_URL, adminHeaders, cartHeaders, checkout, createCart, getSku, json, pay,
  paymentsCredential, putSku, setLine, wsTicket } from './lib.js';

const CATALOG = parseInt(__ENV.CATALOG || '200', 10);

export const options = {
  scenarios: {
    shoppers: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: '10s', target: parseInt(__ENV.VUS || '50', 10) },
        { duration: __ENV.DURATION || '60s', target: parseInt(__ENV.VUS || '50', 10) },
        { duration: '5s', target: 0 },
      ],
    },
    backoffice: {
      executor: 'constant-vus',
      exec: 'backOffice',
      vus: parseInt(__ENV.PACKERS || '1', 10),
      duration: `${10 + parseInt(__ENV.DURATION || '60', 10) + 5}s`,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{name:GET /v1/skus/{sku}}': ['p(95)<50', 'p(99)<200'],
    'http_req_duration{name:PUT /v1/carts/{id}/items/{sku}}': ['p(95)<100', 'p(99)<300'],
    'http_req_duration{name:POST /v1/carts/{id}/checkout}': ['p(95)<200', 'p(99)<500'],
    'group_duration{group:::buy}': ['p(95)<10000'],
    'http_req_duration{name:GET /v1/orders?status=paid}': ['p(95)<200'],
    'http_req_duration{name:POST /v1/orders/{id}/fulfilments}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{name:POST /v1/orders/{id}/returns}': ['p(95)<200', 'p(99)<500'],
  },
};

export function setup() {
  if (!ADMIN_TOKEN) fail('set ADMIN_TOKEN');
  const skus = [];
  for (let n = 0; n < CATALOG; n += 1) {
    const sku = `store-${RUN}-${n}`;
    putSku(sku, 1000000, 500 + (n % 50) * 100);
    skus.push(sku);
  }
  const warehouse = http.post(`${BASE_URL}/v1/credentials`,
    JSON.stringify({ name: `k6-warehouse-${RUN}`, roles: ['fulfilment'] }),
    { headers: adminHeaders(), tags: { name: 'POST /v1/credentials' } });
  check(warehouse, { 'fulfilment credential created': (r) => r.status === 201 });
  return { skus, psp: paymentsCredential(), warehouse: (json(warehouse) || {}).token };
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function think() {
  sleep(0.5 + Math.random() * 1.5);
}

function browse(skus) {
  const page = http.get(`${BASE_URL}/v1/skus?limit=20`, { tags: { name: 'GET /v1/skus?limit' } });
  check(page, { 'catalog page': (r) => r.status === 200 && json(r).items.length > 0 });
  for (let n = 0; n < 3; n += 1) {
    think();
    check(getSku(pick(skus)), { 'product page': (r) => r.status === 200 && json(r).available >= 0 });
  }
}

function fillCart(skus) {
  const cart = createCart();
  if (!cart) return null;
  const lines = 1 + Math.floor(Math.random() * 3);
  for (let n = 0; n < lines; n += 1) {
    think();
    const response = setLine(cart, pick(skus), 1 + Math.floor(Math.random() * 2));
    check(response, { 'line held': (r) => r.status === 200 });
  }
  return cart;
}

function follow(cart, orderId, psp) {
  const statuses = [];
  ws.connect(`${WS_URL}/v1/ws/orders/${orderId}?ticket=${wsTicket(cart, orderId)}`, null, (socket) => {
    socket.on('message', (text) => {
      const message = JSON.parse(text);
      statuses.push(message.type === 'snapshot' ? message.order.status : message.status);
      if (message.type === 'snapshot') {
        check(pay(psp, orderId), { paid: (r) => r.status === 200 });
      } else if (message.status === 'paid') {
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), 5000);
  });
  check(statuses, { 'tracking saw placed then paid': (s) => s.join() === 'placed,paid' });
}

export default function (data) {
  const roll = Math.random();
  group('browse', () => browse(data.skus));
  if (roll < 0.6) return;
  if (roll < 0.8) {
    group('abandon', () => {
      const cart = fillCart(data.skus);
      if (!cart) return;
      think();
      const read = http.get(`${BASE_URL}/v1/carts/${cart.cart_id}`, {
        headers: cartHeaders(cart.cart_token),
        tags: { name: 'GET /v1/carts/{id}' },
      });
      check(read, { 'cart read': (r) => r.status === 200 });
      // Leaves one line behind; the rest is removed. The cart's hold lapses on its own.
      const lines = (json(read) || { lines: [] }).lines;
      for (const line of lines.slice(1)) {
        const removed = http.del(`${BASE_URL}/v1/carts/${cart.cart_id}/items/${line.sku}`, null, {
          headers: cartHeaders(cart.cart_token),
          tags: { name: 'DELETE /v1/carts/{id}/items/{sku}' },
        });
        check(removed, { 'line removed': (r) => r.status === 200 });
      }
    });
    return;
  }
  group('buy', () => {
    const cart = fillCart(data.skus);
    if (!cart) return;
    think();
    const order = checkout(cart);
    if (!check(order, { 'order placed': (r) => r.status === 201 })) return;
    follow(cart, json(order).order_id, data.psp);
  });
}

function staff(token, name) {
  return { headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, tags: { name } };
}

// The back office: packers share the paid orders by id (one each with PACKERS > 1), ship
// every line from where its units are committed (one fulfilment per location), mark the
// order delivered, and take back one unit of every fourth order (restocked).
export function backOffice(data) {
  const list = http.get(`${BASE_URL}/v1/orders?status=paid&limit=20`, staff(data.warehouse, 'GET /v1/orders?status=paid'));
  if (!check(list, { 'paid orders listed': (r) => r.status === 200 })) return;
  const packers = parseInt(__ENV.PACKERS || '1', 10);
  const mine = json(list).items.filter((order) => parseInt(order.order_id.slice(-4), 16) % packers === __VU - 1);
  for (const order of mine) {
    const byLocation = {};
    for (const line of order.lines) {
      for (const part of line.parts || []) {
        (byLocation[part.location] = byLocation[part.location] || []).push({ sku: line.sku, qty: part.qty });
      }
    }
    let status = order.status;
    for (const [location, lines] of Object.entries(byLocation)) {
      const shipped = http.post(`${BASE_URL}/v1/orders/${order.order_id}/fulfilments`,
        JSON.stringify({ location, lines }), staff(data.warehouse, 'POST /v1/orders/{id}/fulfilments'));
      check(shipped, { 'fulfilment created': (r) => r.status === 201 });
      status = (json(shipped) || {}).order_status;
    }
    if (!check(status, { 'order shipped in full': (s) => s === 'shipped' })) continue;
    const delivered = http.post(`${BASE_URL}/v1/orders/${order.order_id}/status`, JSON.stringify({ status: 'delivered' }),
      staff(data.warehouse, 'POST /v1/orders/{id}/status'));
    check(delivered, { delivered: (r) => r.status === 200 });
    if (parseInt(order.order_id.slice(-2), 16) % 4 === 0) {
      const line = order.lines[0];
      const back = http.post(`${BASE_URL}/v1/orders/${order.order_id}/returns`,
        JSON.stringify({ location: 'default', restock: true, lines: [{ sku: line.sku, qty: 1 }] }),
        staff(data.warehouse, 'POST /v1/orders/{id}/returns'));
      check(back, {
        'return taken': (r) => r.status === 201 && json(r).refund_minor === line.price_minor,
      });
    }
  }
  sleep(1);
}
