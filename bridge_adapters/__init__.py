"""omnimargin: bridge_adapters."""
