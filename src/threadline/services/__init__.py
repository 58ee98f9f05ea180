"""Use cases. Each service takes its collaborators (ports) in its constructor."""
