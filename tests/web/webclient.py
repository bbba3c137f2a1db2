"""A page object for the browser client: what a person does, through stable data-testids."""

from __future__ import annotations

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.support.server import SipimProcess

TIMEOUT_MS = 15_000


class BrowserUser:
    """One browser (its own profile: cookies, localStorage) showing the sipim web client."""

    def __init__(self, browser: Browser, server: SipimProcess, *, storage_state: dict | None = None) -> None:
        # The server's certificate comes from its private CA, which this throw-away
        # profile does not trust; a real browser trusts the CA (see the README).
        self.context: BrowserContext = browser.new_context(ignore_https_errors=True, storage_state=storage_state)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.url = f"https://127.0.0.1:{server.ports['wss']}/"
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, fragment: str = "") -> "BrowserUser":
        self.page.goto(self.url + fragment)
        return self

    def sign_in_with_password(self, user: str, password: str) -> "BrowserUser":
        page = self.page
        page.get_by_test_id("signin-user").fill(user)
        page.get_by_test_id("signin-password").fill(password)
        page.get_by_test_id("signin-submit").click()
        return self

    def wait_registered(self) -> "BrowserUser":
        expect(self.page.get_by_test_id("status")).to_have_attribute("data-state", "registered",
                                                                   timeout=TIMEOUT_MS)
        expect(self.page.get_by_test_id("signin")).to_be_hidden()
        return self

    def open_chat(self, peer: str) -> None:
        self.page.get_by_test_id("new-chat").fill(peer)
        self.page.get_by_test_id("new-chat-submit").click()
        expect(self.page.get_by_test_id("compose-input")).to_be_visible()

    def open_conversation(self, peer_aor: str) -> None:
        self.page.locator(f'[data-testid="conversation"][data-peer="{peer_aor}"] button').click()
        expect(self.page.get_by_test_id("chat-peer")).to_have_attribute("data-peer", peer_aor)

    def send(self, text: str) -> Locator:
        self.page.get_by_test_id("compose-input").fill(text)
        self.page.get_by_test_id("compose-send").click()
        return self.message(text)

    def message(self, text: str) -> Locator:
        return self.page.get_by_test_id("message").filter(has_text=text)

    def expect_message(self, text: str, direction: str) -> Locator:
        message = self.message(text)
        expect(message).to_have_count(1, timeout=TIMEOUT_MS)
        expect(message).to_have_attribute("data-direction", direction)
        return message

    def expect_tick(self, text: str, status: str) -> None:
        expect(self.message(text).get_by_test_id("tick")).to_have_attribute("data-status", status,
                                                                             timeout=TIMEOUT_MS)

    def instance(self) -> str | None:
        return self.page.evaluate("localStorage.getItem('sipim.instance')")

    def close(self) -> None:
        self.context.close()
