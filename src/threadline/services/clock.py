"""Moved to `threadline.domain.clock` (storage reads the clock too, and may not import
services). Kept as an alias while branches that still import it are merged; new code
imports `threadline.domain.clock`."""

from threadline.domain.clock import utcnow

__all__ = ["utcnow"]
