"""NAS-Bench-201: the cell search space, benchmark tables and lookups (issue 7)."""
