"""What the exports show the operator: the dead letters page's reads, the panels added to other
apps' admin pages, and an order's trace (trace, trace_output)."""
