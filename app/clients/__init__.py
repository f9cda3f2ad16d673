"""API client management (keys are issued here; authentication lives in core)."""
