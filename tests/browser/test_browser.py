"""The operator's path in a real browser (Debian's headless Chromium, driven by Selenium through
Debian's chromedriver; nothing downloads a browser): log into the admin, confirm an order with
the admin action, open the Kafka status page, and see the group Stable with lag 0 once the
order is exported.

With SAVE_SCREENSHOTS=<folder>, the status page's screenshot is kept there (the README's
picture comes from this test)."""

import os
import shutil
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from exports.models import OrderExport
from orders.services import LineInput, order_create
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def group_row(driver, group: str) -> tuple[str, str] | None:
    """(state, total lag) of the group's heading on the status page, or None."""
    for heading in driver.find_elements(By.CSS_SELECTOR, "h3.consumer-group"):
        if heading.get_attribute("data-group") == group:
            return (
                heading.find_element(By.CSS_SELECTOR, ".group-state").text,
                heading.find_element(By.CSS_SELECTOR, ".total-lag").text,
            )
    return None


def test_an_operator_confirms_in_the_admin_and_sees_the_group_stable_with_lag_0(
    browser, live_server, running_export_consumer, export_group, fresh_publisher, tmp_path
):
    get_user_model().objects.create_superuser(username="operator", password="s3cret-pw", email="o@example.com")
    order = order_create(
        customer_id="c-browser", lines=[LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("10.00"))]
    )

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("s3cret-pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "Site administration" in browser.page_source, timeout=20, message="login failed")

    browser.get(f"{live_server.url}/admin/orders/order/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{order.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("mark_confirmed")
    browser.find_element(By.NAME, "index").click()
    wait_until(
        lambda: f"Confirmed 1 order(s): #{order.pk}." in browser.page_source,
        timeout=20,
        message="the action did not report the confirmation",
    )

    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message="the order was not exported",
    )
    assert running_export_consumer.received_order_ids() == [order.pk]

    def stable_with_lag_0():
        browser.get(f"{live_server.url}/admin/kafka-status/")
        return group_row(browser, export_group) == ("Stable", "0")

    wait_until(
        stable_with_lag_0,
        timeout=30,
        interval=0.5,
        message=lambda: f"status page shows {group_row(browser, export_group)} for {export_group}",
    )
    assert "active controller" in browser.page_source
    shot = tmp_path / "kafka-status.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOTS"):
        shutil.copy(shot, os.path.join(os.environ["SAVE_SCREENSHOTS"], "kafka-status.png"))
