"""Example adapter programs for ``lock-conformance --adapter process``."""
