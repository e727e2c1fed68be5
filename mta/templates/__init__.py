"""Files ``mta init`` writes (package data: the wheel ships no ``examples/``)."""
