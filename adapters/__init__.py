"""Built-in partner adapters, each registered through the ``mta.adapters`` entry point."""
