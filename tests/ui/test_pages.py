"""The storefront, order tracking and back-office pages, driven in a real headless Chromium.

Run by scripts/ui-check (which starts the server and installs what this needs); the server's
address comes in STOCKROOM_UI_BASE and its admin token in STOCKROOM_UI_TOKEN. Every step
leaves a screenshot in STOCKROOM_UI_SCREENSHOTS (target/ui-screenshots by default).
"""
import json
import os
import threading
import time
import unittest
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

# The demo store: demo payments and the order simulator on.
BASE = os.environ.get("STOCKROOM_UI_BASE", "http://127.0.0.1:8080")
# A second server with neither, where orders move only when a page moves them.
QUIET = os.environ.get("STOCKROOM_UI_QUIET_BASE", "")
TOKEN = os.environ.get("STOCKROOM_UI_TOKEN", "")
SHOTS = os.environ.get("STOCKROOM_UI_SCREENSHOTS", os.path.join("target", "ui-screenshots"))
CHROMIUM = os.environ.get("STOCKROOM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STOCKROOM_CHROMEDRIVER", "/usr/bin/chromedriver")
# Set by scripts/ui-check: stops and starts the server on the same address and data.
RESTART = None
WAIT = 20


ADMIN = object()


def call(method, path, body=None, token=ADMIN, base=None):
    """The API, as a script outside the browser calls it: (status, parsed body). The admin's
    unless given another token (None: no credential)."""
    token = TOKEN if token is ADMIN else token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request((base or BASE) + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text else None


def server_metric(name, base=None):
    """A metric without labels from the server's /metrics, as an integer."""
    with urllib.request.urlopen((base or BASE) + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
    return 0  # not recorded yet


def put_sku(sku, name, price_minor, on_hand, currency="EUR", base=None):
    status, _ = call("PUT", "/v1/skus/" + sku,
                     {"name": name, "price_minor": price_minor, "currency": currency, "on_hand": on_hand}, base=base)
    assert status in (200, 201), status


PHONE = (390, 844)


def browser(width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", "--window-size=%d,%d" % (width, height)]:
        options.add_argument(argument)
    if (width, height) == PHONE:
        # A phone's screen, touch and pixel ratio (a desktop window cannot be this narrow).
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": True}})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    return driver


def shot(driver, name, section=None):
    """Saves what the browser shows, scrolled to `section` (an element id) when given."""
    if section:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", section)
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def wait(driver, condition, message, timeout=WAIT):
    try:
        # The pages draw parts anew as the server answers: an element found a moment ago may
        # be gone, and is looked for again on the next poll.
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException, NoSuchElementException]
                             ).until(lambda _: condition())
    except TimeoutException:
        shot(driver, "failed-" + message.replace(" ", "-")[:60])
        raise AssertionError("timed out waiting until " + message)


def product(driver, sku):
    return driver.find_element(By.CSS_SELECTOR, '.product[data-sku="%s"]' % sku)


def stock_of(driver, sku):
    """The figure the product card shows, or None before it has one."""
    node = product(driver, sku).find_element(By.CSS_SELECTOR, '[data-role="stock"]')
    value = node.get_attribute("data-available")
    return None if value is None else int(value)


def text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def set_number(driver, selector, value):
    """Types a number into an input and lets the page see the change (the page may draw the
    input anew meanwhile: then it is found again)."""
    for _ in range(20):
        try:
            element = driver.find_element(By.CSS_SELECTOR, selector)
            element.clear()
            element.send_keys(str(value))
            driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", element)
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError("the input %s kept being replaced" % selector)


ACCESSIBILITY_CHECK = """
function luminance(color) {
  const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(node) {
  for (; node; node = node.parentElement) {
    const color = getComputedStyle(node).backgroundColor;
    if (color && !color.startsWith('rgba(0, 0, 0, 0)') && color !== 'transparent') return color;
  }
  return 'rgb(255, 255, 255)';
}
const problems = [];
for (const field of document.querySelectorAll('input, select, textarea')) {
  if (field.type === 'hidden' || field.closest('[hidden]')) continue;
  if (!(field.labels && field.labels.length) && !field.getAttribute('aria-label')) problems.push('unlabelled ' + (field.id || field.outerHTML.slice(0, 60)));
}
for (const button of document.querySelectorAll('button')) {
  if (button.closest('[hidden]')) continue;
  if (!(button.textContent.trim() || button.getAttribute('aria-label'))) problems.push('a button without a name');
}
for (const node of document.querySelectorAll('button, p, li, td, th, label, h1, h2, h3, a, span, strong, code')) {
  if (node.closest('[hidden]') || !node.textContent.trim() || node.getClientRects().length === 0) continue;
  const style = getComputedStyle(node);
  const fg = luminance(style.color), bg = luminance(background(node));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' of "' + node.textContent.trim().slice(0, 30) + '"');
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push('wider than the screen: ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
return [...new Set(problems)];
"""


class Pages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        put_sku("mug", "Mug", 1299, 20)
        put_sku("tee", "T-shirt", 2500, 10)
        put_sku("gift", "Gift card", 5000, 5)
        put_sku("last", "Last unit", 9900, 1)
        if QUIET:
            put_sku("tee", "T-shirt", 2500, 10, base=QUIET)
            put_sku("mug", "Mug", 1299, 20, base=QUIET)

    def setUp(self):
        self.drivers = []

    def tearDown(self):
        for driver in self.drivers:
            driver.quit()

    def open(self, path, width=1280, height=900, base=None):
        driver = browser(width, height)
        self.drivers.append(driver)
        driver.get((base or BASE) + path)
        return driver

    def back_office(self, width=1280, height=900, base=None):
        office = self.open("/admin", width, height, base)
        office.find_element(By.ID, "credential").send_keys(TOKEN)
        office.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait(office, lambda: office.find_element(By.ID, "office").is_displayed(), "the back office opens")
        return office

    def storefront(self, width=1280, height=900):
        driver = self.open("/", width, height)
        wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, '.product[data-sku="mug"]'), "the products show")
        wait(driver, lambda: "Live" in text(driver, "feed-status"), "the stock feed is live")
        return driver

    def assert_accessible(self, driver):
        problems = driver.execute_script(ACCESSIBILITY_CHECK)
        self.assertEqual(problems, [], driver.current_url)

    def test_1_browse_and_buy_then_follow_the_order_to_delivered(self):
        shop = self.storefront()
        start = stock_of(shop, "mug")
        self.assert_accessible(shop)
        shot(shop, "1-storefront")
        set_number(shop, '.product[data-sku="mug"] input', 2)
        product(shop, "mug").find_element(By.CSS_SELECTOR, "button.add").click()
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="mug"]'), "the mug is in the cart")
        self.assertRegex(text(shop, "cart-hold"), r"Held for you for \d+:\d\d")
        # The stock feed brings the held units to the product card, without a reload.
        wait(shop, lambda: stock_of(shop, "mug") == start - 2, "the mug's figure drops by the two held")
        product(shop, "tee").find_element(By.CSS_SELECTOR, "button.add").click()
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="tee"]'), "the tee is in the cart")
        set_number(shop, '.cart-line[data-sku="tee"] input', 3)
        wait(shop, lambda: "75.00" in shop.find_element(By.CSS_SELECTOR, '.cart-line[data-sku="tee"]').text,
             "the tee line has three units")
        shot(shop, "2-cart")
        shop.find_element(By.CSS_SELECTOR, '.cart-line[data-sku="tee"] button.remove').click()
        wait(shop, lambda: not shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="tee"]'), "the tee is removed")
        self.assertIn("25.98", text(shop, "cart-total"))
        shop.find_element(By.ID, "checkout").click()
        wait(shop, lambda: "/orders/" in shop.current_url, "checkout leads to the order page")
        wait(shop, lambda: text(shop, "status") == "placed", "the order is placed")
        wait(shop, lambda: shop.find_element(By.ID, "pay").is_displayed(), "the demo payment is offered")
        self.assert_accessible(shop)
        shot(shop, "3-order-placed")
        shop.find_element(By.ID, "pay").click()
        # The simulator moves a paid order on; the page follows each step live.
        wait(shop, lambda: text(shop, "status") != "placed", "the order is paid")
        wait(shop, lambda: text(shop, "status") == "delivered", "the order is delivered", timeout=60)
        wait(shop, lambda: shop.find_element(By.CSS_SELECTOR, "#lines td:nth-child(3)").text == "2", "the page shows both units shipped")
        history = [item.text.split(" ·")[0] for item in shop.find_elements(By.CSS_SELECTOR, "#history li")]
        self.assertEqual(history, ["placed", "paid", "packed", "shipped", "delivered"])
        shot(shop, "4-order-delivered")
        order_id = shop.current_url.rsplit("/", 1)[1]
        status, order = call("GET", "/v1/orders/" + order_id)
        self.assertEqual((status, order["status"], order["payment_ref"]), (200, "delivered", "demo"))
        self.assertEqual([(line["sku"], line["qty"]) for line in order["lines"]], [("mug", 2)])

    def test_2_a_refused_checkout_names_the_line_and_the_cart_keeps_it(self):
        shop = self.storefront()
        product(shop, "gift").find_element(By.CSS_SELECTOR, "button.add").click()
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="gift"]'), "the gift card is in the cart")
        # Repriced into another currency after it was added: checkout cannot take it.
        self.assertEqual(call("PUT", "/v1/skus/gift", {"name": "Gift card", "price_minor": 5500, "currency": "USD"})[0], 200)
        shop.find_element(By.ID, "checkout").click()
        wait(shop, lambda: "Checkout refused" in text(shop, "cart-message"), "the checkout is refused")
        self.assertIn("Gift card", text(shop, "cart-message"))
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line.failed[data-sku="gift"] .reason'),
             "the line says why")
        self.assertIn("another currency", shop.find_element(By.CSS_SELECTOR, '.cart-line[data-sku="gift"] .reason').text)
        self.assertIn("/", shop.current_url)
        self.assertNotIn("/orders/", shop.current_url)
        shot(shop, "5-checkout-refused")
        shop.find_element(By.CSS_SELECTOR, '.cart-line[data-sku="gift"] button.remove').click()
        wait(shop, lambda: not shop.find_elements(By.CSS_SELECTOR, ".cart-line"), "the cart is empty again")
        call("PUT", "/v1/skus/gift", {"name": "Gift card", "price_minor": 5000, "currency": "EUR"})

    def test_3_two_browsers_race_for_the_last_unit(self):
        first, second = self.storefront(), self.storefront()
        for shop in (first, second):
            wait(shop, lambda: stock_of(shop, "last") == 1, "the last unit shows")
        buttons = [shop.find_element(By.CSS_SELECTOR, '.product[data-sku="last"] button.buy') for shop in (first, second)]
        clicks = [threading.Thread(target=button.click) for button in buttons]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join()

        def outcome(shop):
            if "/orders/" in shop.current_url:
                return "won"
            if "Checkout refused" in text(shop, "cart-message"):
                return "lost"
            return None
        for shop in (first, second):
            wait(shop, lambda: outcome(shop) is not None, "each browser learns how its checkout went")
        outcomes = sorted(outcome(shop) for shop in (first, second))
        self.assertEqual(outcomes, ["lost", "won"])
        loser = first if outcome(first) == "lost" else second
        self.assertIn("Last unit", text(loser, "cart-message"))
        wait(loser, lambda: stock_of(loser, "last") == 0, "the loser's figure drops to 0 without a reload")
        self.assertEqual(product(loser, "last").find_element(By.CSS_SELECTOR, '[data-role="stock"]').text, "Sold out")
        shot(loser, "6-last-unit-lost")
        status, sku = call("GET", "/v1/skus/last")
        self.assertEqual((sku["on_hand"], sku["reserved"], sku["committed"]), (1, 0, 1), "sold exactly once")

    def test_4_the_back_office_restocks_and_the_storefront_sees_it_live(self):
        shop = self.storefront()
        # A cart with a hold, so that the back office has carts and holds to count.
        product(shop, "tee").find_element(By.CSS_SELECTOR, "button.add").click()
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="tee"]'), "the tee is in the cart")
        before = stock_of(shop, "mug")
        office = self.open("/admin")
        self.assertNotIn(TOKEN, office.page_source)
        office.find_element(By.ID, "credential").send_keys("not-a-token")
        office.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait(office, lambda: "not accepted" in text(office, "sign-in-message"), "a wrong credential is refused")
        office.find_element(By.ID, "credential").clear()
        office.find_element(By.ID, "credential").send_keys(TOKEN)
        office.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        row = '#stock-rows tr[data-sku="mug"][data-location="default"]'
        wait(office, lambda: office.find_elements(By.CSS_SELECTOR, row), "the stock table shows the mug")
        wait(office, lambda: office.find_element(By.ID, "carts-open").text == str(server_metric("stockroom_carts_open"))
             and office.find_element(By.ID, "holds").text == str(server_metric("stockroom_reservations_held")),
             "the live counters show this server's open carts and holds")
        self.assert_accessible(office)
        self.assertNotIn(TOKEN, office.page_source, "the credential is not written into the page")
        self.assertEqual(office.execute_script("return localStorage.length"), 0, "nothing kept beyond the tab")
        shot(office, "7-back-office")
        restock = office.find_element(By.CSS_SELECTOR, row + " form input")
        restock.clear()
        restock.send_keys("5")
        office.find_element(By.CSS_SELECTOR, row + " form button").click()
        wait(office, lambda: "restocked" in text(office, "stock-message"), "the restock is confirmed")
        on_hand = lambda: int(office.find_element(By.CSS_SELECTOR, row + ' [data-field="on_hand"]').text)
        self.assertEqual(on_hand(), call("GET", "/v1/skus/mug")[1]["locations"][0]["on_hand"])
        wait(shop, lambda: stock_of(shop, "mug") == before + 5, "the storefront's count rises by five, live")
        shot(shop, "8-storefront-after-restock")
        # A count from the page, then the movements it left.
        count_form = office.find_elements(By.CSS_SELECTOR, row + " form")[1]
        count_form.find_element(By.CSS_SELECTOR, "input").send_keys(str(on_hand() + 1))
        count_form.find_element(By.CSS_SELECTOR, "button").click()
        wait(office, lambda: "counted" in text(office, "stock-message"), "the count is confirmed")
        office.find_element(By.CSS_SELECTOR, '#movements-sku option[value="mug"]').click()
        office.find_element(By.CSS_SELECTOR, "#movements-form button").click()
        wait(office, lambda: office.find_elements(By.CSS_SELECTOR, "#movement-rows tr"), "the movements show")
        kinds = [cell.get_attribute("data-kind") for cell in office.find_elements(By.CSS_SELECTOR, "#movement-rows [data-kind]")]
        self.assertEqual(kinds[:2], ["count", "receipt"], "newest first")
        shot(office, "9-movements", "movements")

    def test_5_orders_to_ship_are_packed_shipped_and_delivered_from_the_back_office(self):
        if not QUIET:
            self.skipTest("needs scripts/ui-check's second server, without the simulator")
        status, cart = call("POST", "/v1/carts", {}, token=None, base=QUIET)
        call("PUT", "/v1/carts/%s/items/tee" % cart["cart_id"], {"qty": 2}, token=cart["cart_token"], base=QUIET)
        status, order = call("POST", "/v1/carts/%s/checkout" % cart["cart_id"], {}, token=cart["cart_token"], base=QUIET)
        self.assertEqual(status, 201)
        order_id = order["order_id"]
        self.assertEqual(call("POST", "/v1/orders/%s/pay" % order_id, {"payment_ref": "psp-1"}, base=QUIET)[0], 200)
        office = self.back_office(base=QUIET)
        item = '//li[@data-order="%s"]' % order_id

        def press(label, then):
            wait(office, lambda: office.find_elements(By.XPATH, item + '//button[text()="%s"]' % label), "%s is offered" % label)
            office.find_element(By.XPATH, item + '//button[text()="%s"]' % label).click()
            wait(office, lambda: then in text(office, "orders-message"), "the order is %s" % then)
        shot(office, "10-orders-to-ship", "orders")
        press("Mark packed", "packed")
        press("Ship from default", "shipped")
        status, shipped = call("GET", "/v1/orders/" + order_id, base=QUIET)
        self.assertEqual((shipped["status"], shipped["lines"][0]["shipped"]), ("shipped", 2))
        status, sku = call("GET", "/v1/skus/tee", base=QUIET)
        self.assertEqual((sku["on_hand"], sku["committed"]), (8, 0), "the two units left the shelf")
        office.find_element(By.CSS_SELECTOR, '#orders-status option[value="shipped"]').click()
        press("Mark delivered", "delivered")
        self.assertEqual(call("GET", "/v1/orders/" + order_id, base=QUIET)[1]["status"], "delivered")

    def test_6_the_explorer_sends_requests_offline(self):
        office = self.back_office()
        office.find_element(By.ID, "explorer-load").click()
        wait(office, lambda: office.find_elements(By.CSS_SELECTOR, "details.operation"), "the operations are listed")
        operations = office.find_elements(By.CSS_SELECTOR, "details.operation")
        status, spec = call("GET", "/openapi.json")
        described = sum(len([m for m in ops if m in ("get", "put", "post", "delete")]) for ops in spec["paths"].values())
        self.assertEqual(len(operations), described)
        get_sku = [each for each in operations
                   if each.find_element(By.CSS_SELECTOR, ".method").text == "GET"
                   and each.find_element(By.CSS_SELECTOR, "code").text == "/v1/skus/{sku}"][0]
        get_sku.find_element(By.CSS_SELECTOR, "summary").click()
        get_sku.find_element(By.CSS_SELECTOR, 'input[data-name="sku"]').send_keys("mug")
        get_sku.find_element(By.CSS_SELECTOR, "button").click()
        wait(office, lambda: get_sku.find_element(By.CSS_SELECTOR, "pre").text.startswith("200"), "the explorer's request is answered")
        self.assertIn('"on_hand"', get_sku.find_element(By.CSS_SELECTOR, "pre").text, "sent with the credential: staff counters")
        shot(office, "11-api-explorer", "api")

    def test_7_a_phone_sized_screen(self):
        shop = self.storefront(*PHONE)
        self.assertEqual(shop.execute_script("return window.innerWidth"), PHONE[0])
        self.assert_accessible(shop)
        shot(shop, "12-storefront-phone")
        office = self.back_office(*PHONE)
        wait(office, lambda: office.find_elements(By.CSS_SELECTOR, "#stock-rows tr"), "the stock shows")
        self.assert_accessible(office)
        shot(office, "13-back-office-phone")

    def test_9_the_storefront_works_from_the_keyboard_alone(self):
        shop = self.storefront()
        body = shop.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        first = shop.switch_to.active_element
        self.assertEqual(first.text, "Skip to the products", "the first stop skips to the products")
        self.assertNotEqual(first.value_of_css_property("left"), "-999px", "and shows itself when focused")
        # Tab on to the first "Add to cart": every stop on the way is visibly focused.
        for _ in range(30):
            shop.switch_to.active_element.send_keys(Keys.TAB)
            focused = shop.switch_to.active_element
            self.assertNotEqual(focused.value_of_css_property("outline-style"), "none",
                                "%s shows where the focus is" % focused.get_attribute("outerHTML")[:60])
            if "add" in (focused.get_attribute("class") or "").split():
                break
        else:
            self.fail("no Add to cart button within 30 tab stops")
        sku = shop.execute_script("return document.activeElement.closest('.product').dataset.sku")
        focused.send_keys(Keys.ENTER)
        wait(shop, lambda: shop.find_elements(By.CSS_SELECTOR, '.cart-line[data-sku="%s"]' % sku), "Enter adds it to the cart")
        shot(shop, "16-keyboard")
        shop.find_element(By.CSS_SELECTOR, '.cart-line[data-sku="%s"] button.remove' % sku).send_keys(Keys.ENTER)
        wait(shop, lambda: not shop.find_elements(By.CSS_SELECTOR, ".cart-line"), "Enter on Remove empties the cart")

    def test_8_the_order_page_says_when_it_reconnects_and_resumes_after_what_it_saw(self):
        if RESTART is None or not QUIET:
            self.skipTest("needs scripts/ui-check, which can restart its second server")
        status, cart = call("POST", "/v1/carts", {}, token=None, base=QUIET)
        call("PUT", "/v1/carts/%s/items/mug" % cart["cart_id"], {"qty": 1}, token=cart["cart_token"], base=QUIET)
        status, order = call("POST", "/v1/carts/%s/checkout" % cart["cart_id"], {}, token=cart["cart_token"], base=QUIET)
        order_id = order["order_id"]
        page = self.open("/", base=QUIET)
        page.execute_script("localStorage.setItem('stockroom.orders', JSON.stringify({[arguments[0]]: arguments[1]}))",
                            order_id, cart["cart_token"])
        page.get(QUIET + "/orders/" + order_id)
        wait(page, lambda: text(page, "connection") == "Live", "the order page is live")
        self.assertIn("payment service", text(page, "payment-text"), "no demo payments here: the page says who pays")
        self.assertFalse(page.find_element(By.ID, "pay").is_displayed())
        RESTART(lambda: wait(page, lambda: "reconnecting" in text(page, "connection"), "the page says it is reconnecting"))
        shot(page, "14-order-reconnecting")
        wait(page, lambda: "resumed after update 1" in text(page, "connection"), "the page resumes after what it saw",
             timeout=40)
        self.assertEqual(call("POST", "/v1/orders/%s/pay" % order_id, {"payment_ref": "psp-2"}, base=QUIET)[0], 200)
        wait(page, lambda: text(page, "status") == "paid", "the change after the restart arrives")
        seqs = [item.get_attribute("data-seq") for item in page.find_elements(By.CSS_SELECTOR, "#history li")]
        self.assertEqual(seqs, ["1", "2"], "each change once, in order")
        shot(page, "15-order-resumed")


if __name__ == "__main__":
    unittest.main()
