"""llmatic."""
