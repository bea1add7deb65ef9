"""``invoke chaos``: the driver (``driver``), its settings, the stack it seeds, the checker."""
