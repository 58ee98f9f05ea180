"""HTTP: the ASGI app, shared plumbing (auth, errors, middleware) and one package per
dialect under `dialects/`."""
