"""The admin's pages in a headless Chromium, against the real broker."""
