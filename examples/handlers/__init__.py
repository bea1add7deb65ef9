"""Python custom code, plugged in with ``HANDLER=examples.handlers.<module>:<function>``."""
