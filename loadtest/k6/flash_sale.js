// A flash sale: many shoppers race for a small stock of one SKU. Each one opens a cart,
// tries to hold one unit and checks out. teardown() reads the API and fails the run unless
// the orders placed equal the stock and nothing is left available or held: no oversell, no
// lost unit.
// Usage: ADMIN_TOKEN=... k6 run loadtest/k6/flash_sale.js   (STOCK, VUS, SHOPPERS to size it)
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { ADMIN_TOKEN, BASE_URL, RUN, adminHeaders, checkout, createCart, getSkuAsStaff, json, putSku, retrying,
  setLine } from './lib.js';

const STOCK = parseInt(__ENV.STOCK || '100', 10);
const VUS = parseInt(__ENV.VUS || '100', 10);
const SHOPPERS = parseInt(__ENV.SHOPPERS || String(STOCK * 4), 10);

const ordersPlaced = new Counter('flash_orders_placed');
const soldOut = new Counter('flash_sold_out_answers');

export const options = {
  scenarios: {
    rush: { executor: 'shared-iterations', vus: VUS, iterations: SHOPPERS, maxDuration: '5m' },
  },
  thresholds: {
    // Exactly the stock is sold: fewer means units were lost, more means oversold.
    flash_orders_placed: [`count==${STOCK}`],
    checks: ['rate==1.0'],
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:PUT /v1/carts/{id}/items/{sku}}': ['p(99)<1000'],
  },
};

export function setup() {
  if (!ADMIN_TOKEN) fail('set ADMIN_TOKEN');
  const sku = `flash-${RUN}`;
  putSku(sku, STOCK);
  return { sku };
}

export default function (data) {
  const cart = createCart();
  if (!cart) return;
  const held = retrying(() => setLine(cart, data.sku, 1, [200, 409]));
  check(held, {
    'hold: 200, or 409 insufficient_stock': (r) =>
      r.status === 200 || (r.status === 409 && (json(r) || { error: {} }).error.code === 'insufficient_stock'),
  });
  if (held.status !== 200) {
    soldOut.add(1);
    return;
  }
  const order = retrying(() => checkout(cart));
  const placed = check(order, { 'checkout of a held unit: 201 placed': (r) => r.status === 201 && json(r).status === 'placed' });
  if (placed) ordersPlaced.add(1);
}

export function teardown(data) {
  const sku = json(getSkuAsStaff(data.sku));
  const problems = [];
  if (!sku) problems.push('the SKU cannot be read');
  else {
    if (sku.available !== 0) problems.push(`available is ${sku.available}, not 0`);
    if (sku.reserved !== 0) problems.push(`${sku.reserved} units still held`);
    // Sold units are committed until a fulfilment ships them (off the shelf when shipped).
    const sold = (STOCK - sku.on_hand) + sku.committed;
    if (sold !== STOCK) problems.push(`on_hand ${sku.on_hand}, committed ${sku.committed}: sold ${sold} of ${STOCK}`);
  }
  const metrics = http.get(`${BASE_URL}/metrics`, { headers: adminHeaders() });
  check(metrics, { 'metrics readable': (r) => r.status === 200 });
  if (problems.length > 0) {
    exec.test.abort(`flash sale: ${problems.join('; ')}`);
  }
  console.log(`flash sale: ${STOCK} units of ${data.sku}, all sold, none held, none available`);
}
