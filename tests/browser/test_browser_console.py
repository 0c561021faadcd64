"""The operator's console in a real browser (headless Chromium, the `browser` fixture): confirm an
order in the admin, find its record by key in the topic browser, follow it to the order's page
and its Delivery panel, open the trace; and a dead letter: refused for good by the platform,
seen on the DLT page and in the panel, redriven from the DLT page until it is exported.

The consumer exports over HTTP to `platform_stub`, so every attempt the panel lists is a real
call the stub answered."""

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from exports.models import OrderExport
from exports.platform.http import HttpExternalPlatformClient
from orders.models import Order
from orders.services import LineInput, order_create
from tests.support.consumers import export_consumer_running
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

OPERATOR, PASSWORD = "operator", "s3cret-pw"
DEAD_LETTERS_PATH = "/admin/exports/orderexport/dead-letters/"


@pytest.fixture
def stub_consumer(export_topics, export_group, platform_stub, fresh_publisher, transactional_db):
    """The export consumer exporting over HTTP to `platform_stub` (which accepts until told
    otherwise)."""
    client = HttpExternalPlatformClient(url=platform_stub.url, timeout=5)
    with export_consumer_running(client):
        yield platform_stub
    client.close()


def new_order(customer_id: str) -> Order:
    line = LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("10.00"))
    return order_create(customer_id=customer_id, lines=[line])


def log_in(driver: WebDriver, base_url: str) -> None:
    get_user_model().objects.create_superuser(username=OPERATOR, password=PASSWORD, email="o@example.com")
    driver.get(f"{base_url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys(OPERATOR)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "Site administration" in driver.page_source, timeout=20, message="login failed")


def confirm_in_admin(driver: WebDriver, base_url: str, orders: list[Order]) -> None:
    """Tick the orders on the change list and run the "Mark confirmed" action on them."""
    driver.get(f"{base_url}/admin/orders/order/")
    for order in orders:
        driver.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{order.pk}']").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("mark_confirmed")
    driver.find_element(By.NAME, "index").click()
    ids = ", ".join(f"#{order.pk}" for order in orders)
    wait_until(
        lambda: f"Confirmed {len(orders)} order(s): {ids}." in driver.page_source,
        timeout=20,
        message="the action did not report the confirmation",
    )


def admin_messages(driver: WebDriver) -> list[str]:
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]


def wait_for_export(order: Order, status: str) -> OrderExport:
    return wait_until(
        lambda: OrderExport.objects.filter(order=order, status=status).first(),
        timeout=30,
        message=lambda: (
            f"the export of order {order.pk} is not {status}: "
            f"{list(OrderExport.objects.filter(order=order).values('status', 'last_error'))}"
        ),
    )


@dataclass(frozen=True)
class ShownRecord:
    partition: int
    offset: int
    key: str
    headers: list[str]
    link: str | None


def shown_records(driver: WebDriver) -> list[ShownRecord]:
    """The records a topic browser page lists (or the one record it shows whole)."""
    shown = []
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.record"):
        links = row.find_elements(By.CSS_SELECTOR, "td.key a.record-link")
        shown.append(
            ShownRecord(
                partition=int(row.get_attribute("data-partition")),
                offset=int(row.get_attribute("data-offset")),
                key=row.find_element(By.CSS_SELECTOR, "td.key").text,
                headers=[item.text for item in row.find_elements(By.CSS_SELECTOR, "td.headers li")],
                link=links[0].get_attribute("href") if links else None,
            )
        )
    return shown


@dataclass(frozen=True)
class DeliveryPanel:
    heading: str
    # (step, whether it happened: its row is not `pending`), in the panel's order
    steps: list[tuple[str, bool]]
    status: str
    attempts: list[str]
    redrives: list[str]
    trace_record: str | None
    trace_dead_letter: str | None


def delivery_panel(driver: WebDriver) -> DeliveryPanel:
    """What the Delivery panel of the order page open in `driver` shows."""
    panel = driver.find_element(By.CSS_SELECTOR, "div.module#delivery")

    def href(selector: str) -> str | None:
        found = panel.find_elements(By.CSS_SELECTOR, selector)
        assert len(found) <= 1, f"{len(found)} links {selector} in the Delivery panel"
        return found[0].get_attribute("href") if found else None

    return DeliveryPanel(
        heading=panel.find_element(By.CSS_SELECTOR, "h2").text,
        steps=[
            (row.get_attribute("data-step"), "pending" not in (row.get_attribute("class") or "").split())
            for row in panel.find_elements(By.CSS_SELECTOR, "table.delivery-steps tr[data-step]")
        ],
        status=panel.find_element(By.CSS_SELECTOR, "span.export-status").get_attribute("data-status"),
        attempts=[
            row.get_attribute("data-outcome")
            for row in panel.find_elements(By.CSS_SELECTOR, "table.delivery-attempts tr.export-attempt")
        ],
        redrives=[
            row.get_attribute("data-action")
            for row in panel.find_elements(By.CSS_SELECTOR, "table.delivery-redrives tr.redrive")
        ],
        trace_record=href("tr[data-step=on-topic] a.trace-record"),
        trace_dead_letter=href("tr[data-step=dead-lettered] a.trace-dead-letter"),
    )


def order_page_path(order: Order) -> str:
    return f"/admin/orders/order/{order.pk}/change/"


@dataclass(frozen=True)
class DeadLetterRow:
    position: str | None  # the checkbox's "P:O"; None once replayed (no checkbox)
    export_status: str
    error: str
    replayed: str


def dead_letter_rows_of(driver: WebDriver, order: Order) -> list[DeadLetterRow]:
    """The DLT page's rows about `order` (the page open in `driver`)."""
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "table#dead-letters tbody tr"):
        if not row.find_elements(By.CSS_SELECTOR, f"a[href$='{order_page_path(order)}']"):
            continue
        cells = row.find_elements(By.TAG_NAME, "td")
        boxes = row.find_elements(By.CSS_SELECTOR, "input[type=checkbox][name=position]")
        rows.append(
            DeadLetterRow(
                position=boxes[0].get_attribute("value") if boxes else None,
                export_status=cells[4].text,
                error=cells[5].text,
                replayed=cells[8].text,
            )
        )
    return rows


def test_an_operator_finds_a_confirmed_orders_record_by_key_and_traces_its_delivery(
    browser, live_server, stub_consumer
):
    platform = stub_consumer
    order, other = new_order("c-console"), new_order("c-console-other")
    log_in(browser, live_server.url)
    # Two orders on the topic: the key filter must pick the one asked for.
    confirm_in_admin(browser, live_server.url, [order, other])
    export = wait_for_export(order, "exported")
    wait_for_export(other, "exported")
    assert sorted(platform.exported_order_ids()) == sorted([order.pk, other.pk])

    browser.get(f"{live_server.url}/admin/kafka/topics/{settings.ORDER_EXPORT_TOPIC}/")
    browser.find_element(By.ID, "id_key").send_keys(str(order.pk))
    browser.find_element(By.CSS_SELECTOR, "#records-query input[type=submit]").click()
    # The page before the search lists the newest records too: wait for the search's own.
    wait_until(
        lambda: f"key={order.pk}" in browser.current_url and browser.find_elements(By.ID, "records-summary"),
        timeout=20,
        message=lambda: f"no search result on {browser.current_url}",
    )
    records = shown_records(browser)
    order_url = f"{live_server.url}{order_page_path(order)}"
    assert [(r.key, r.link) for r in records] == [(str(order.pk), order_url)], records
    (record,) = records
    assert f"event_id={export.event_id}" in record.headers, record.headers

    browser.find_element(By.CSS_SELECTOR, "tr.record a.record-link").click()
    wait_until(
        lambda: browser.current_url == order_url,
        timeout=20,
        message=lambda: f"the record's link led to {browser.current_url}",
    )
    panel = delivery_panel(browser)
    assert panel.heading == "Delivery"
    assert panel.steps == [("confirmed", True), ("outbox", True), ("on-topic", True), ("exported", True)], panel
    assert panel.status == "exported"
    assert panel.attempts == ["exported"]
    assert panel.redrives == []
    assert panel.trace_dead_letter is None

    # The trace: the on-topic step leads to the very record the key search found.
    assert panel.trace_record, panel
    browser.get(panel.trace_record)
    traced = wait_until(
        lambda: shown_records(browser), timeout=20, message=lambda: f"no record shown at {browser.current_url}"
    )
    assert [(r.partition, r.offset, r.key) for r in traced] == [(record.partition, record.offset, str(order.pk))]
    assert f"event_id={export.event_id}" in traced[0].headers


def test_an_operator_redrives_a_dead_letter_from_the_dlt_page_until_it_is_exported(browser, live_server, stub_consumer):
    platform = stub_consumer
    # A 4xx other than 408/429 is a permanent refusal: dead-lettered at the first attempt.
    platform.down_status, platform.down_body = 422, b"unknown customer"
    order = new_order("c-console-dlt")
    log_in(browser, live_server.url)
    confirm_in_admin(browser, live_server.url, [order])
    export = wait_for_export(order, "failed")
    assert "HTTP 422" in export.last_error
    assert [(call.order_id, call.status) for call in platform.calls] == [(order.pk, 422)]

    def dead_letters_of_order():
        browser.get(f"{live_server.url}{DEAD_LETTERS_PATH}")
        return dead_letter_rows_of(browser, order)

    (letter,) = wait_until(dead_letters_of_order, timeout=20, message="the order is not on the DLT page")
    assert letter.position and letter.export_status == "failed" and letter.replayed == "no", letter
    assert "HTTP 422" in letter.error

    browser.get(f"{live_server.url}{order_page_path(order)}")
    panel = delivery_panel(browser)
    assert panel.steps == [
        ("confirmed", True),
        ("outbox", True),
        ("on-topic", True),
        ("dead-lettered", True),
        ("exported", False),
    ], panel
    assert panel.status == "failed"
    assert panel.attempts == ["failed"]
    assert panel.redrives == []
    # The trace of the dead letter leads to its record on the DLT.
    assert panel.trace_dead_letter, panel
    browser.get(panel.trace_dead_letter)
    partition, offset = map(int, letter.position.split(":"))
    traced = wait_until(
        lambda: shown_records(browser), timeout=20, message=lambda: f"no record shown at {browser.current_url}"
    )
    assert [(r.partition, r.offset, r.key) for r in traced] == [(partition, offset, str(order.pk))]

    # The platform takes the order now: redrive it from the DLT page.
    platform.down_status = None
    browser.get(f"{live_server.url}{DEAD_LETTERS_PATH}")
    browser.find_element(By.CSS_SELECTOR, f"input[name=position][value='{letter.position}']").click()
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value='Redrive the selected dead letters']").click()
    wait_until(
        lambda: "Redrove 1 dead letter(s)" in browser.page_source,
        timeout=30,
        message=lambda: f"the redrive was not reported: {admin_messages(browser)}",
    )
    wait_for_export(order, "exported")
    assert platform.exported_order_ids() == [order.pk]
    assert [(call.order_id, call.status) for call in platform.calls] == [(order.pk, 422), (order.pk, 201)]

    browser.get(f"{live_server.url}{DEAD_LETTERS_PATH}")
    assert [(row.position, row.export_status, row.replayed) for row in dead_letter_rows_of(browser, order)] == [
        (None, "exported", "yes")
    ]

    browser.get(f"{live_server.url}{order_page_path(order)}")
    panel = delivery_panel(browser)
    assert panel.steps == [
        ("confirmed", True),
        ("outbox", True),
        ("on-topic", True),
        ("dead-lettered", True),
        ("redriven", True),
        ("exported", True),
    ], panel
    assert panel.status == "exported"
    assert panel.attempts == ["failed", "exported"]
    assert panel.redrives == ["replay_dlt"]
