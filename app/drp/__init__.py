"""The Data Rights Protocol (v0.9.x) face: authorized agents exercise the deletion right."""
