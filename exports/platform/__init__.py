"""The external platform the exports are sent to: the interface, its errors and the in-process
fake (client), the HTTP client on asyncio and httptools (http), and the one the settings choose
(factory)."""
