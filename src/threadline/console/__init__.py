"""The web console's static files (see threadline.api.console)."""
