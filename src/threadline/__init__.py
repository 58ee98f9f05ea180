"""Threadline: a self-hosted conversation API server.

One conversation store and one chat engine behind several vendors' API shapes
("dialects"). See docs/ and the README for the picture.
"""

__version__ = "0.1.0"
