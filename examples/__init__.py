"""Sample data and sample custom code for BatchSpot (see examples/README.md)."""
