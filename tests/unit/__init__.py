"""Tests that need no broker and start no process: `make test-fast` runs these alone."""
