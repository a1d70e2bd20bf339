"""omnimargin: aggregator."""
