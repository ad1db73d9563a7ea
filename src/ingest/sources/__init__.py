"""Sources: YAML specifications and the runners that pull them."""
