"""The HTTP face's shared plumbing: FastAPI dependencies every room's router uses."""
