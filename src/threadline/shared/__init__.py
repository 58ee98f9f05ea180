"""The state several processes share besides the database: rate-limit windows, cache
invalidation, live runs and their ownership.

Why a package of its own: the services see only ports (`domain/ports.py`: `RateLimiter`,
`Invalidations`, `RunFeed`). `local.py` implements them for one process (nothing leaves
its memory); the `redis_*` modules implement them on Redis when `redis_url` is set, and fall
back to the local behaviour while Redis is unreachable (`redis_link.py`)."""
