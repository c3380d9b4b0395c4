"""Quality monitors: scheduled checks on production tables that raise incidents (``incidents/``)."""
