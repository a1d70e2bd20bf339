"""omnimargin: chains."""
