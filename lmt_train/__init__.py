"""Training code for LOMIT-style exemplar-guided local image translation."""

__version__ = "0.1.0"
