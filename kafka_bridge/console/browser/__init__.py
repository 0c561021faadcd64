"""The admin's topic browser: reading records for people (reading), what a read gives back
(records), the machinery under it (scan), and its pages (views)."""
